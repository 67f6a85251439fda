package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tillgw/till/vault"
)

// TestSameValueIsNoRotation: vault.max_age makes a key not rotated for
// that long count as expired. Storing the very same value again (a script
// run twice) says so and is no rotation: the max_age clock goes on, and
// the key stays expired.
func TestSameValueIsNoRotation(t *testing.T) {
	c := newCLI(t)
	if err := os.WriteFile("till.yaml", []byte("version: 1\nvault: {path: till.vault, key_file: till.key, max_age: 90d, on_expired: block}\nroutes:\n  - {name: openai, preset: openai}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.must(key, "secret", "set", "openai")
	// The key was stored 100 days ago and never rotated since.
	k, err := vault.LoadKeyFile(filepath.Join(c.dir, "till.key"), false)
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-100 * 24 * time.Hour)
	if err := vault.Open(filepath.Join(c.dir, "till.vault"), k).Update(func(m map[string]vault.Secret) error {
		s := m["openai"]
		s.Created, s.Updated = old, old
		m["openai"] = s
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := c.run("", "check"); code != 1 || !strings.Contains(errOut, "expired") {
		t.Fatalf("a key 100 days old under max_age 90d: check exit %d, want 1 (expired): %s", code, errOut)
	}
	// The same value, stored again.
	out, errOut, code := c.run(key, "secret", "set", "openai")
	if code != 0 || !strings.HasPrefix(out, `kept secret "openai"`) || !strings.Contains(out, "not a rotation") {
		t.Errorf("secret set of the same value: exit %d: %s%s", code, out, errOut)
	}
	list, _, _ := c.run("", "secret", "list", "--json")
	if _, errOut, code := c.run("", "check"); code == 0 {
		t.Errorf("the same 100-day-old key, stored again, passes check (exit 0: %s) and is served under on_expired: block; secret list:\n%s", errOut, list)
	}
}
