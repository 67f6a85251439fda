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
