//go:build unix

package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckFileModes: whoever can write the config (or replace it in its
// folder) chooses where keys go, and whoever reads a config that holds
// limits.redis's password can reset every budget. Every user's write is
// refused, a group's is warned about, and a sticky folder (a Kubernetes
// ConfigMap's, /tmp) is no one's to replace the file in.
func TestCheckFileModes(t *testing.T) {
	for _, tt := range []struct {
		name       string
		file, dir  os.FileMode
		redis      string
		refused    string
		warnedWith string
	}{
		{name: "private", file: 0o600, dir: 0o700},
		{name: "readable", file: 0o644, dir: 0o755},
		{name: "world-writable file", file: 0o666, dir: 0o700, refused: "writable by every user"},
		{name: "world-writable folder", file: 0o644, dir: 0o777, refused: "folder"},
		{name: "sticky world-writable folder", file: 0o644, dir: 0o777 | os.ModeSticky},
		{name: "group-writable file", file: 0o664, dir: 0o700, warnedWith: "writable by its group"},
		{name: "group-writable folder", file: 0o644, dir: 0o770, warnedWith: "folder"},
		{name: "readable Redis password", file: 0o640, dir: 0o700, redis: "redis://:pw@127.0.0.1:6379", warnedWith: "password"},
		{name: "private Redis password", file: 0o600, dir: 0o700, redis: "redis://:pw@127.0.0.1:6379"},
		{name: "readable Redis without password", file: 0o644, dir: 0o700, redis: "redis://127.0.0.1:6379"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "conf")
			path := filepath.Join(dir, "till.yaml")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte("version: 1\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			// chmod, not the create mode: the umask must not soften them.
			if err := os.Chmod(path, tt.file); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tt.dir); err != nil {
				t.Fatal(err)
			}
			defer os.Chmod(dir, 0o700)
			c := &Config{Limits: Limits{Redis: tt.redis}}
			warnings, err := CheckFileModes(path, c)
			switch {
			case tt.refused != "" && (err == nil || !strings.Contains(err.Error(), tt.refused)):
				t.Errorf("error %v, want one saying %q", err, tt.refused)
			case tt.refused == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.warnedWith != "" && (len(warnings) != 1 || !strings.Contains(warnings[0], tt.warnedWith)):
				t.Errorf("warnings %q, want one saying %q", warnings, tt.warnedWith)
			case tt.warnedWith == "" && len(warnings) > 0:
				t.Errorf("warned: %q", warnings)
			}
			if err != nil && strings.Contains(err.Error(), "pw") || strings.Contains(strings.Join(warnings, ""), ":pw@") {
				t.Errorf("the password shown: %v %q", err, warnings)
			}
		})
	}
}

// TestSourceFileModes: a files source's folder, and the program an exec
// source runs (or its folder), that every user can write are refused as
// the config is. Whoever writes there chose the key each request carried
// (their own, so that the app's prompts and answers land in their
// account) or ran their code as till, which holds every key; only the
// config's own mode was checked.
func TestSourceFileModes(t *testing.T) {
	for _, tt := range []struct {
		name              string
		secrets, bin, exe os.FileMode
		bare              bool // the command is a bare name found in PATH
		refused           string
	}{
		{name: "private", secrets: 0o700, bin: 0o755, exe: 0o755},
		{name: "files folder every user writes", secrets: 0o777, bin: 0o755, exe: 0o755, refused: "writable by every user"},
		{name: "sticky files folder (a Kubernetes volume)", secrets: 0o777 | os.ModeSticky, bin: 0o755, exe: 0o755},
		{name: "helper every user writes", secrets: 0o700, bin: 0o755, exe: 0o777, refused: "writable by every user"},
		{name: "helper in a folder every user writes", secrets: 0o700, bin: 0o777, exe: 0o755, refused: "writable by every user"},
		{name: "helper found in PATH in a folder every user writes", secrets: 0o700, bin: 0o777, exe: 0o755, bare: true, refused: "writable by every user"},
		{name: "helper found in PATH", secrets: 0o700, bin: 0o755, exe: 0o755, bare: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "till.yaml")
			secrets, bin := filepath.Join(dir, "secrets"), filepath.Join(dir, "bin")
			exe := filepath.Join(bin, "get-key")
			for _, d := range []string{secrets, bin} {
				if err := os.Mkdir(d, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o700); err != nil {
				t.Fatal(err)
			}
			for p, m := range map[string]os.FileMode{secrets: tt.secrets, bin: tt.bin, exe: tt.exe} {
				if err := os.Chmod(p, m); err != nil {
					t.Fatal(err)
				}
			}
			y := "version: 1\nsources:\n  - {name: mounted, type: files, dir: secrets}\n  - {name: op, type: exec, command: [./bin/get-key]}\n"
			if tt.bare {
				t.Setenv("PATH", bin)
				y = "version: 1\nsources:\n  - {name: mounted, type: files, dir: secrets}\n  - {name: op, type: exec, command: [get-key]}\n"
			}
			if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			_, err = CheckFileModes(path, c)
			switch {
			case tt.refused != "" && (err == nil || !strings.Contains(err.Error(), tt.refused)):
				t.Errorf("error %v, want one saying %q", err, tt.refused)
			case tt.refused == "" && err != nil:
				t.Errorf("refused: %v", err)
			}
		})
	}
}

// TestVaultFileModes: the vault, its key, and the folder of either, that
// every user can write are refused (whoever writes there swaps in their
// own key and a vault sealed with it); a sticky folder, as /tmp, is not.
func TestVaultFileModes(t *testing.T) {
	for _, tt := range []struct {
		name       string
		vault, key os.FileMode // the vault's folder, the key's
		vaultFile  os.FileMode
		refused    string
	}{
		{name: "private", vault: 0o700, key: 0o700, vaultFile: 0o600},
		{name: "readable", vault: 0o755, key: 0o755, vaultFile: 0o644},
		{name: "world-writable vault folder", vault: 0o777, key: 0o700, vaultFile: 0o600, refused: "vault.path"},
		{name: "world-writable key folder", vault: 0o700, key: 0o777, vaultFile: 0o600, refused: "vault.key_file"},
		{name: "world-writable vault file", vault: 0o700, key: 0o700, vaultFile: 0o666, refused: "vault.path"},
		{name: "sticky world-writable folders", vault: 0o777 | os.ModeSticky, key: 0o777 | os.ModeSticky, vaultFile: 0o600},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			vaultDir, keyDir := filepath.Join(root, "data"), filepath.Join(root, "keys")
			c := &Config{Vault: Vault{Path: filepath.Join(vaultDir, "till.vault"), KeyFile: filepath.Join(keyDir, "till.key")}}
			for _, d := range []string{vaultDir, keyDir} {
				if err := os.Mkdir(d, 0o700); err != nil {
					t.Fatal(err)
				}
				defer os.Chmod(d, 0o700)
			}
			if err := os.WriteFile(c.Vault.Path, []byte("sealed"), 0o600); err != nil {
				t.Fatal(err)
			}
			// chmod, not the create mode: the umask must not soften them.
			for p, m := range map[string]os.FileMode{c.Vault.Path: tt.vaultFile, vaultDir: tt.vault, keyDir: tt.key} {
				if err := os.Chmod(p, m); err != nil {
					t.Fatal(err)
				}
			}
			err := CheckVaultModes(c)
			if tt.refused != "" && (err == nil || !strings.Contains(err.Error(), tt.refused) || !strings.Contains(err.Error(), "writable by every user")) {
				t.Errorf("error %v, want one naming %s", err, tt.refused)
			}
			if tt.refused == "" && err != nil {
				t.Errorf("refused: %v", err)
			}
		})
	}
}

// TestSourceRefModes: a files source's ref whose file, or a folder the
// fetch looks in on its way from the source's folder (links followed),
// every user can write is refused: whoever writes there swaps in their
// own key, as in a source folder every user writes. A sticky folder lets
// no one replace another's file; a file not there yet is left to the
// fetch.
func TestSourceRefModes(t *testing.T) {
	for _, tt := range []struct {
		name    string
		ref     string
		setup   func(t *testing.T, secrets string)
		refused string
	}{
		{name: "private", ref: "team/openai", setup: func(t *testing.T, s string) { mkfile(t, s, "team/openai", 0o755, 0o644) }},
		{name: "missing", ref: "team/none", setup: func(t *testing.T, s string) { mkfile(t, s, "team/openai", 0o755, 0o644) }},
		{name: "file every user writes", ref: "openai", setup: func(t *testing.T, s string) { mkfile(t, s, "openai", 0o755, 0o666) }, refused: "openai"},
		{name: "subfolder every user writes", ref: "team/openai", setup: func(t *testing.T, s string) { mkfile(t, s, "team/openai", 0o777, 0o644) }, refused: "team"},
		{name: "sticky subfolder", ref: "team/openai", setup: func(t *testing.T, s string) { mkfile(t, s, "team/openai", 0o777|os.ModeSticky, 0o644) }},
		{name: "link through a subfolder every user writes", ref: "openai", setup: func(t *testing.T, s string) {
			mkfile(t, s, "shared/openai", 0o777, 0o644)
			if err := os.Symlink("shared/openai", filepath.Join(s, "openai")); err != nil {
				t.Fatal(err)
			}
		}, refused: "shared"},
		{name: "link found in a subfolder every user writes", ref: "team/openai", setup: func(t *testing.T, s string) {
			mkfile(t, s, "real/openai", 0o755, 0o644)
			mkfile(t, s, "team/x", 0o777, 0o644)
			if err := os.Symlink("../real/openai", filepath.Join(s, "team/openai")); err != nil {
				t.Fatal(err)
			}
		}, refused: "team"},
		{name: "link to a private folder", ref: "openai", setup: func(t *testing.T, s string) {
			mkfile(t, s, "..data/openai", 0o755, 0o644)
			if err := os.Symlink("..data/openai", filepath.Join(s, "openai")); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			secrets := filepath.Join(dir, "secrets")
			if err := os.Mkdir(secrets, 0o755); err != nil {
				t.Fatal(err)
			}
			tt.setup(t, secrets)
			path := filepath.Join(dir, "till.yaml")
			y := "version: 1\nsources:\n  - {name: mounted, type: files, dir: secrets}\nroutes:\n  - {name: a, preset: openai, secret: \"mounted:" + tt.ref + "\"}\n"
			if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			_, err = CheckFileModes(path, c)
			switch {
			case tt.refused != "" && (err == nil || !strings.Contains(err.Error(), tt.refused) || !strings.Contains(err.Error(), "writable by every user")):
				t.Errorf("error %v, want one naming %q as writable by every user", err, tt.refused)
			case tt.refused == "" && err != nil:
				t.Errorf("refused: %v", err)
			}
		})
	}
}

// mkfile makes the file rel under dir, with mode file, in a folder (and
// its parents under dir) of mode folder.
func mkfile(t *testing.T, dir, rel string, folder, file os.FileMode) {
	t.Helper()
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("sk-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	// chmod, not the create mode: the umask must not soften them.
	if err := os.Chmod(p, file); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(p), folder); err != nil {
		t.Fatal(err)
	}
}
