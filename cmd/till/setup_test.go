package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tillgw/till/vault"
)

// TestMissingNamedVault: a vault the config names (vault.path) that does
// not exist is an error, not an empty vault that hides a typo or a
// volume not mounted; a vault left at its default is still empty until
// secret set creates it.
func TestMissingNamedVault(t *testing.T) {
	c := newCLI(t)
	os.WriteFile("till.yaml", []byte("version: 1\nvault: {path: data/till.vault}\n"), 0o644)
	for _, args := range [][]string{{"check"}, {"secret", "list"}, {"test", "GET", "/openai/v1/models"}} {
		_, errOut, code := c.run("", args...)
		want := "till: error: the vault file data/till.vault does not exist (vault.path in till.yaml)\n" +
			"till: hint: till secret set NAME creates it; if the vault is elsewhere, fix vault.path in till.yaml\n"
		if code != 1 || errOut != want {
			t.Errorf("till %s: exit %d, stderr:\n%s\nwant:\n%s", strings.Join(args, " "), code, errOut, want)
		}
	}
	if _, errOut, code := c.run(key, "secret", "set", "openai"); code != 0 {
		t.Fatalf("secret set: exit %d: %s", code, errOut)
	}
	if out, errOut, code := c.run("", "check"); code != 0 || !strings.Contains(out, "1 secret(s) in data/till.vault") {
		t.Errorf("check once secret set made the vault: exit %d: %s%s", code, out, errOut)
	}

	// Defaults, with a config file or without: an empty vault.
	for _, cfg := range []string{"version: 1\n", "version: 1\nvault: {key_file: my.key}\n", ""} {
		c := newCLI(t)
		if cfg != "" {
			os.WriteFile("till.yaml", []byte(cfg), 0o644)
		}
		if out, errOut, code := c.run("", "check"); code != 0 || !strings.Contains(out, "0 secret(s) in till.vault") {
			t.Errorf("check with %q: exit %d: %s%s", cfg, code, out, errOut)
		}
	}
}

// TestWrongKeyHintNamesSetting: with a config file, the key file is its
// vault.key_file (TILL_KEY_FILE does not apply), and the hint says so;
// without one, TILL_KEY_FILE.
func TestWrongKeyHintNamesSetting(t *testing.T) {
	c := newCLI(t)
	os.WriteFile("till.yaml", []byte("version: 1\nvault: {key_file: keys/till.key}\n"), 0o644)
	if _, errOut, code := c.run(key, "secret", "set", "openai"); code != 0 {
		t.Fatalf("secret set: exit %d: %s", code, errOut)
	}
	other := filepath.Join(t.TempDir(), "other.key")
	if _, err := vault.LoadKeyFile(other, true); err != nil {
		t.Fatal(err)
	}
	os.Rename(filepath.Join("keys", "till.key"), "good.key")
	os.Rename(other, filepath.Join("keys", "till.key"))
	_, errOut, code := c.run("", "secret", "list")
	if want := "till: hint: point vault.key_file in till.yaml at the key file this vault was created with\n"; code != 1 || !strings.HasSuffix(errOut, want) {
		t.Errorf("wrong key file: exit %d: %s\nwant the hint %q", code, errOut, want)
	}
	c.env["TILL_KEY_FILE"] = "good.key"
	if _, errOut, _ := c.run("", "secret", "list"); !strings.Contains(errOut, "(TILL_KEY_FILE applies only without a config file)") {
		t.Errorf("TILL_KEY_FILE beside a config: %s", errOut)
	}
	delete(c.env, "TILL_KEY_FILE")
	os.Remove(filepath.Join("keys", "till.key"))
	if _, errOut, _ := c.run("", "secret", "list"); !strings.HasSuffix(errOut, "till: hint: point vault.key_file in till.yaml at the vault's key file, or set TILL_PASSPHRASE\n") {
		t.Errorf("missing key file: %s", errOut)
	}

	// Without a config, TILL_KEY_FILE is the setting.
	c = newCLI(t)
	c.run(key, "secret", "set", "openai")
	os.Rename("till.key", "good.key")
	if _, err := vault.LoadKeyFile("till.key", true); err != nil {
		t.Fatal(err)
	}
	if _, errOut, _ := c.run("", "secret", "list"); !strings.Contains(errOut, "till: hint: set TILL_KEY_FILE") {
		t.Errorf("wrong key, no config: %s", errOut)
	}
}
