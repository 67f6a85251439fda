package vault_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/tillgw/till/vault"
)

// Example stores a secret and reads it back. Printing a Secret never shows
// its value; only Value does.
func Example() {
	dir, err := os.MkdirTemp("", "till-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	key, err := vault.LoadKeyFile(filepath.Join(dir, "till.key"), true)
	if err != nil {
		log.Fatal(err)
	}
	v := vault.Open(filepath.Join(dir, "till.vault"), key)

	value, err := vault.CleanValue([]byte("sk-test\n")) // as read from stdin
	if err != nil {
		log.Fatal(err)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := v.Set(vault.NewSecret("openai", value, now)); err != nil {
		log.Fatal(err)
	}

	secrets, err := v.Load()
	if err != nil {
		log.Fatal(err)
	}
	s := secrets["openai"]
	fmt.Println(s)
	fmt.Println(s.Status(now, 90*24*time.Hour))
	got, _ := s.Value()
	fmt.Println(got == "sk-test")
	// Output:
	// vault.Secret{name=openai fp=sha256:f3abf2a6cc4f0098 value=REDACTED}
	// ok
	// true
}
