//go:build unix

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPlantedVaultRefused: root, in a folder every user can add files to
// (/tmp), finds a key and a vault another user left there. secret set
// stored the key in their vault, under their key, and kept the vault
// theirs: they read it back. init made a vault sealed with their key. Both
// now refuse, and store nothing.
func TestPlantedVaultRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root can give a file away")
	}
	const other = 65534
	c := newCLI(t)
	shared := filepath.Join(c.dir, "shared")
	if err := os.Mkdir(shared, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Chdir(shared)
	c.must("x\n", "secret", "set", "theirs") // the other user's key and vault
	for _, f := range []string{"till.key", "till.vault", "till.vault.lock"} {
		if err := os.Chown(f, other, other); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(shared, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile("till.vault")
	if _, errOut, code := c.run(key+"\n", "secret", "set", "openai"); code != 1 || !strings.Contains(errOut, "is owned by uid 65534") {
		t.Errorf("secret set: exit %d, want 1 and the vault refused\n%s", code, errOut)
	}
	if after, _ := os.ReadFile("till.vault"); string(after) != string(before) {
		t.Error("secret set wrote the other user's vault")
	}
	os.Remove("till.vault")
	if _, errOut, code := c.run("", "init"); code != 1 || !strings.Contains(errOut, "till.key, of vault.key_file, is owned by uid 65534") {
		t.Errorf("init: exit %d, want 1 and the key refused\n%s", code, errOut)
	}
	if _, err := os.Stat("till.vault"); err == nil {
		t.Error("init made a vault sealed with the other user's key")
	}
}
