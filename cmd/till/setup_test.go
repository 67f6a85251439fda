package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// TestVaultFolderMustExist: till creates a vault and its key, never their
// folder. A config whose vault.path names a folder that does not exist
// here (a sidecar's /var/lib/till, given to till on the host) gets an
// error and a hint, and nothing is created anywhere.
func TestVaultFolderMustExist(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "var", "lib", "till")
	tests := []struct {
		name   string
		config string
		want   []string
		absent string
	}{
		{"container path", "vault: {path: " + missing + "/till.vault, key_file: " + missing + "/till.key}",
			[]string{"the vault folder " + missing + " does not exist; not creating a vault there",
				"hint: create the folder first, or fix vault.path in till.yaml",
				"hint: a container's path exists only inside it: run till there (docker compose exec till till ...)"}, missing},
		{"relative path", "vault: {path: secrets/till.vault}",
			[]string{"the vault folder secrets does not exist", "fix vault.path in till.yaml"}, "secrets"},
		{"key folder", "vault: {key_file: keys/till.key}",
			[]string{"the key folder keys does not exist", "fix vault.key_file in till.yaml"}, "keys"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCLI(t)
			os.WriteFile("till.yaml", []byte("version: 1\n"+tt.config+"\n"), 0o644)
			_, errOut, code := c.run("sk-test-value", "secret", "set", "openai")
			if code != 1 {
				t.Fatalf("secret set: exit %d, want 1\n%s", code, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
			if _, err := os.Stat(tt.absent); err == nil {
				t.Errorf("%s was created", tt.absent)
			}
			if _, err := os.Stat(filepath.Dir(missing)); err == nil {
				t.Errorf("%s was created", filepath.Dir(missing))
			}
		})
	}

	// The folders exist: the vault and key are created in them.
	c := newCLI(t)
	os.Mkdir("data", 0o700)
	os.WriteFile("till.yaml", []byte("version: 1\nvault: {path: data/till.vault, key_file: data/till.key}\n"), 0o644)
	if _, errOut, code := c.run("sk-test-value", "secret", "set", "openai"); code != 0 {
		t.Fatalf("secret set with the folder there: exit %d\n%s", code, errOut)
	}
	for _, f := range []string{"data/till.vault", "data/till.key"} {
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}
	// With a passphrase there is no key file, so its folder does not matter.
	c = newCLI(t)
	c.env["TILL_PASSPHRASE"] = "correct horse battery staple"
	os.WriteFile("till.yaml", []byte("version: 1\nvault: {key_file: keys/till.key}\n"), 0o644)
	cfg, err := config.Load("till.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openVault(cfg, &env{getenv: func(k string) string { return c.env[k] }}, true); err != nil {
		t.Errorf("a passphrase vault whose key_file folder is missing: %v", err)
	}
}

// TestVaultFolderHint: a vault whose folder is read-only (a single file
// mounted into a container) gets a hint to mount the folder instead.
func TestVaultFolderHint(t *testing.T) {
	const want = "the folder /var/lib/till must be writable by this user; in a container, mount that folder"
	tests := []struct {
		name string
		err  error
		hint bool
	}{
		{"lock on a read-only root", fmt.Errorf("/var/lib/till/till.vault: cannot lock vault: %w",
			&fs.PathError{Op: "open", Path: "/var/lib/till/till.vault.lock", Err: syscall.EROFS}), true},
		{"temp file, no permission", fmt.Errorf("/var/lib/till/till.vault: cannot write vault: %w",
			&fs.PathError{Op: "createtemp", Path: "/var/lib/till/.till.vault.tmp-*", Err: syscall.EACCES}), true},
		{"another file", &fs.PathError{Op: "open", Path: "/var/lib/till/audit.log", Err: syscall.EROFS}, false},
		{"another error", &fs.PathError{Op: "open", Path: "/var/lib/till/till.vault.lock", Err: syscall.ENOSPC}, false},
	}
	for _, tt := range tests {
		got := strings.Join(hints(tt.err), "\n")
		if strings.Contains(got, want) != tt.hint {
			t.Errorf("%s: got hints %q, want the folder hint: %v", tt.name, got, tt.hint)
		}
	}
}

// TestMissingNamedVault: a vault the config names (vault.path) that does
// not exist is an error, not an empty vault that hides a typo or a
// volume not mounted; a vault left at its default is still empty until
// secret set creates it.
func TestMissingNamedVault(t *testing.T) {
	c := newCLI(t)
	os.WriteFile("till.yaml", []byte("version: 1\nvault: {path: data/till.vault}\n"), 0o644)
	for _, args := range [][]string{{"check"}, {"secret", "list"}, {"test", "GET", "/openai/v1/models"}} {
		_, errOut, code := c.run("", args...)
		want := "till: error: the vault folder data does not exist (vault.path in till.yaml)\n" +
			"till: hint: till makes the vault, not its folder: create it (mode 0700), or fix vault.path (a container's paths exist only inside it)\n"
		if code != 1 || errOut != want {
			t.Errorf("till %s: exit %d, stderr:\n%s\nwant:\n%s", strings.Join(args, " "), code, errOut, want)
		}
	}
	os.Mkdir("data", 0o700) // till makes the vault, never its folder
	for _, args := range [][]string{{"check"}, {"secret", "list"}} {
		_, errOut, code := c.run("", args...)
		want := "till: error: the vault file data/till.vault does not exist (vault.path in till.yaml)\n" +
			"till: hint: till secret set NAME creates it; if the vault is elsewhere, fix vault.path in till.yaml\n"
		if code != 1 || errOut != want {
			t.Errorf("till %s with its folder made: exit %d, stderr:\n%s\nwant:\n%s", strings.Join(args, " "), code, errOut, want)
		}
	}
	if _, errOut, code := c.run(key, "secret", "set", "openai"); code != 0 {
		t.Fatalf("secret set: exit %d: %s", code, errOut)
	}
	if out, errOut, code := c.run("", "check"); code != 0 || !strings.Contains(out, "1 secret(s) in data/till.vault") {
		t.Errorf("check once secret set made the vault: exit %d: %s%s", code, out, errOut)
	}
	// till's own CA key is not one of the secrets the user stored.
	c.must("", "ca", "init")
	if out, errOut, code := c.run("", "check"); code != 0 || !strings.Contains(out, "1 secret(s) in data/till.vault") {
		t.Errorf("check after ca init: exit %d: %s%s", code, out, errOut)
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
	os.Mkdir("keys", 0o700)
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
	if _, errOut, _ := c.run("", "secret", "list"); !strings.HasSuffix(errOut, "till: hint: point vault.key_file in till.yaml at the key file this vault was created with, or restore it from a backup\n") {
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

// TestConfigFolder: -c naming the folder till init --dir wrote into (a
// new user's likely slip) says so and names the file in it, instead of
// "read DIR: is a directory" with a hint to fix lines there are none of.
func TestConfigFolder(t *testing.T) {
	c := newCLI(t)
	c.must("", "init", "--dir", "data")
	os.Mkdir("empty", 0o700)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"check", "-c", "data"}, "till: error: data is a folder, not a config file\ntill: hint: name the file: -c " + filepath.Join("data", "till.yaml") + "\n"},
		{[]string{"secret", "list", "-c", "data"}, "till: hint: name the file: -c " + filepath.Join("data", "till.yaml") + "\n"},
		{[]string{"check", "-c", "empty"}, "till: error: empty is a folder, not a config file\ntill: hint: -c and $TILL_CONFIG name the config file itself; `till init --dir empty` writes one there\n"},
	} {
		if _, errOut, code := c.run("", tt.args...); code != 1 || !strings.Contains(errOut, tt.want) {
			t.Errorf("till %s: exit %d, want 1 and %q:\n%s", strings.Join(tt.args, " "), code, tt.want, errOut)
		}
	}
	c.env["TILL_CONFIG"] = "data"
	if _, errOut, code := c.run("", "check"); code != 1 || !strings.Contains(errOut, "data is a folder, not a config file") {
		t.Errorf("TILL_CONFIG=data till check: exit %d:\n%s", code, errOut)
	}
}
