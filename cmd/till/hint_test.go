package main

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tillgw/till/vault"
)

func TestHints(t *testing.T) {
	plain := errors.New("plain")
	tests := []struct {
		name string
		err  error
		want []string
	}{
		{"none", plain, nil},
		{"attached", withHint(plain, "do this"), []string{"do this"}},
		{"wrapped", fmt.Errorf("context: %w", withHint(plain, "do this")), []string{"do this"}},
		{"joined, each once", errors.Join(withHint(plain, "a"), plain, withHint(plain, "b"), withHint(plain, "a")), []string{"a", "b"}},
		{"no key", fmt.Errorf("till.vault: %w", vault.ErrNoKey), []string{`run "till init", or set TILL_KEY_FILE or TILL_PASSPHRASE to the vault's key`}},
		{"locked", fmt.Errorf("till.vault: %w; gave up after 10s", vault.ErrLocked), []string{"retry when it finishes"}},
		{"not found has none", fmt.Errorf("secret %q %w", "x", vault.ErrNotFound), nil},
		{"passphrase vault, key file", &vault.WrongKeyError{KeyFile: "till.key", VaultPassphrase: true}, []string{"set TILL_PASSPHRASE"}},
		{"key file vault, passphrase", &vault.WrongKeyError{}, []string{"unset TILL_PASSPHRASE and set TILL_KEY_FILE to the vault's key file"}},
		{"wrong passphrase", &vault.WrongKeyError{VaultPassphrase: true}, []string{"set TILL_PASSPHRASE to the passphrase this vault was created with"}},
		{"wrong key file", fmt.Errorf("x: %w", &vault.WrongKeyError{KeyFile: "other.key"}), []string{"set TILL_KEY_FILE or TILL_PASSPHRASE to the key this vault was created with"}},
		{"attached and vault", errors.Join(withHint(plain, "a"), vault.ErrLocked), []string{"a", "retry when it finishes"}},
		// With a config file, its vault.key_file names the key, not
		// TILL_KEY_FILE, which then does not apply.
		{"wrong key file, config", keySource{config: "till.yaml"}.wrap(fmt.Errorf("x: %w", &vault.WrongKeyError{KeyFile: "other.key"})),
			[]string{"point vault.key_file in till.yaml at the key file this vault was created with"}},
		{"wrong key file, config, TILL_KEY_FILE set", keySource{config: "/etc/till/till.yaml", envIgnored: true}.wrap(&vault.WrongKeyError{KeyFile: "other.key"}),
			[]string{"point vault.key_file in /etc/till/till.yaml at the key file this vault was created with (TILL_KEY_FILE applies only without a config file)"}},
		{"key file vault, passphrase, config", keySource{config: "till.yaml"}.wrap(&vault.WrongKeyError{}),
			[]string{"unset TILL_PASSPHRASE, so that till reads the key file that vault.key_file in till.yaml names"}},
		{"passphrase vault, key file, config", keySource{config: "till.yaml"}.wrap(&vault.WrongKeyError{KeyFile: "till.key", VaultPassphrase: true}), []string{"set TILL_PASSPHRASE"}},
		{"no key, config", keySource{config: "till.yaml"}.wrap(fmt.Errorf("till.vault: %w", vault.ErrNoKey)),
			[]string{"point vault.key_file in till.yaml at the vault's key file, or set TILL_PASSPHRASE"}},
		{"no key, defaults", keySource{}.wrap(fmt.Errorf("till.vault: %w", vault.ErrNoKey)), []string{`run "till init", or set TILL_KEY_FILE or TILL_PASSPHRASE to the vault's key`}},
		{"locked, config", keySource{config: "till.yaml", envIgnored: true}.wrap(vault.ErrLocked), []string{"retry when it finishes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := hints(tt.err); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestReportPrintsEachHintOnce(t *testing.T) {
	var stderr bytes.Buffer
	err := errors.Join(withHint(errors.New("one"), "fix it"), withHint(errors.New("two"), "fix it"))
	if code := report(err, &stderr); code != exitError {
		t.Errorf("got exit %d, want %d", code, exitError)
	}
	want := "till: error: one\ntwo\ntill: hint: fix it\n"
	if got := stderr.String(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestVaultKey(t *testing.T) {
	keyPath := filepath.Join(t.TempDir(), "till.key")
	if _, err := vault.LoadKeyFile(keyPath, true); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     map[string]string
		keyFile string
		want    string
	}{
		{"passphrase wins", map[string]string{"TILL_PASSPHRASE": "pw"}, keyPath, "vault.Key{passphrase}"},
		{"empty passphrase ignored", map[string]string{"TILL_PASSPHRASE": ""}, keyPath, fmt.Sprintf("vault.Key{key file %q}", keyPath)},
		{"key file", nil, keyPath, fmt.Sprintf("vault.Key{key file %q}", keyPath)},
		{"missing key file", nil, filepath.Join(t.TempDir(), "none.key"), "error: no vault key"},
		{"no key file", nil, "", "error: no vault key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := vaultKey(&env{getenv: func(k string) string { return tt.env[k] }}, tt.keyFile, false)
			got := fmt.Sprint(k)
			if err != nil {
				if !errors.Is(err, vault.ErrNoKey) {
					t.Fatalf("got %v, want an error wrapping %v", err, vault.ErrNoKey)
				}
				got = "error: " + vault.ErrNoKey.Error()
			}
			if !strings.HasPrefix(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
