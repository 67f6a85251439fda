package vault

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"filippo.io/age"

	"github.com/tillgw/till/internal/regfile/regfiletest"
)

func init() {
	// age's default scrypt cost takes about a second; tests do not need it.
	scryptWorkFactor = 10
}

func newKeyFile(t *testing.T) (*Key, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "till.key")
	k, err := LoadKeyFile(path, true)
	if err != nil {
		t.Fatalf("LoadKeyFile: %v", err)
	}
	return k, path
}

func TestLoadKeyFileCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "folder")
	path := filepath.Join(dir, "till.key")
	k, err := LoadKeyFile(path, true)
	if err != nil {
		t.Fatalf("LoadKeyFile: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), fs.FileMode(0o600); got != want {
		t.Errorf("key file mode: got %q, want %q", got, want)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := di.Mode().Perm(), fs.FileMode(0o700); got != want {
		t.Errorf("key folder mode: got %q, want %q", got, want)
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), "AGE-SECRET-KEY-1") || !strings.Contains(string(data), "# public key: age1") {
		t.Errorf("key file: got %q, want an age identity with a public key comment", data)
	}

	// Loading again reads the same key instead of replacing it.
	k2, err := LoadKeyFile(path, true)
	if err != nil {
		t.Fatal(err)
	}
	data2, _ := os.ReadFile(path)
	if string(data2) != string(data) {
		t.Errorf("second LoadKeyFile rewrote the key file")
	}
	f := Open(filepath.Join(t.TempDir(), "till.vault"), k)
	if err := f.Set(NewSecret("a", "b", t0)); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(f.Path(), k2).Load(); err != nil {
		t.Errorf("Load with the reloaded key: %v", err)
	}
}

func TestLoadKeyFileErrors(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := age.GenerateX25519Identity()
	tests := []struct {
		name     string
		content  *string // nil: no file
		create   bool
		wantErr  string
		noLeakOf string
	}{
		{name: "missing", wantErr: "no vault key: key file"},
		{name: "empty", content: ptr(""), wantErr: "holds no key"},
		{name: "comments only", content: ptr("# nothing\n\n"), wantErr: "holds no key"},
		{name: "garbage line", content: ptr("# c\nsk-NOTAKEY-12345\n"), wantErr: "line 2 is not an age X25519 identity", noLeakOf: "NOTAKEY"},
		{name: "mangled key", content: ptr(id.String()[:40] + "\n"), wantErr: "line 1 is not an age X25519 identity", noLeakOf: id.String()[16:40]},
		{name: "two keys", content: ptr(id.String() + "\n" + other.String() + "\n"), wantErr: "line 2 is a second key", noLeakOf: other.String()[16:]},
		{name: "existing file not replaced by create", content: ptr("junk\n"), create: true, wantErr: "line 1 is not"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "till.key")
			if tt.content != nil {
				if err := os.WriteFile(path, []byte(*tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := LoadKeyFile(path, tt.create)
			if err == nil {
				t.Fatalf("got no error, want %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), path) {
				t.Errorf("got %q, want it to contain %q and the path", err, tt.wantErr)
			}
			if tt.noLeakOf != "" && strings.Contains(err.Error(), tt.noLeakOf) {
				t.Errorf("got %q, want no %q in it", err, tt.noLeakOf)
			}
		})
	}
}

func TestLoadKeyFileComments(t *testing.T) {
	id, _ := age.GenerateX25519Identity()
	path := filepath.Join(t.TempDir(), "till.key")
	content := "# created: today\r\n\n  " + id.String() + "  \r\n# trailing\n"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	k, err := LoadKeyFile(path, false)
	if err != nil {
		t.Fatalf("LoadKeyFile: %v", err)
	}
	raw := id.String()
	type holder struct {
		k  Key
		pk *Key
	}
	for _, v := range []any{k, *k, holder{*k, k}, &holder{*k, k}, []Key{*k}} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
			got := fmt.Sprintf(verb, v)
			if strings.Contains(got, "AGE-SECRET-KEY") || strings.Contains(got, "secretKey") || strings.Contains(got, "X25519Identity{") || strings.Contains(got, "Identity=&{") {
				t.Errorf("%s: got %q, want no key in it", verb, got)
			}
		}
	}
	if raw == "" {
		t.Fatal("no identity")
	}
}

func TestPassphraseKey(t *testing.T) {
	if _, err := PassphraseKey(""); err == nil {
		t.Errorf("PassphraseKey(\"\"): got no error, want one")
	}
	k, err := PassphraseKey("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []any{k, *k, struct{ k Key }{*k}, struct{ k *Key }{k}} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x"} {
			if got := fmt.Sprintf(verb, v); strings.Contains(got, "horse") || strings.Contains(got, "686f727365") || strings.Contains(got, "104 111 114 115 101") || strings.Contains(got, "Identity=&{") {
				t.Errorf("%s: got %q, want no passphrase in it", verb, got)
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }

func ageEncrypt(dst *bytes.Buffer, r age.Recipient) (io.WriteCloser, error) {
	return age.Encrypt(dst, r)
}

// TestLoadKeyFileCreateRace: processes creating the key file at once end
// with one key, and none of them, nor a reader, sees it empty or half
// written.
func TestLoadKeyFileCreateRace(t *testing.T) {
	for range 20 {
		path := filepath.Join(t.TempDir(), "till.key")
		keys := make([]string, 8)
		var wg sync.WaitGroup
		for i := range keys {
			wg.Go(func() {
				k, err := LoadKeyFile(path, i%2 == 0) // half of them only read
				if errors.Is(err, ErrNoKey) {
					return // not there yet: fine for a reader
				}
				if err != nil {
					t.Errorf("LoadKeyFile: %v", err)
					return
				}
				r, _ := k.recipient()
				keys[i] = fmt.Sprint(r)
			})
		}
		wg.Wait()
		first := ""
		for _, k := range keys {
			if k != "" && first != "" && k != first {
				t.Fatalf("two keys: %s and %s", first, k)
			}
			if first == "" {
				first = k
			}
		}
		if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".till.key.*")); len(left) > 0 {
			t.Errorf("temp files left: %v", left)
		}
	}
}

// TestOversizedFilesRefused: a vault or key file larger than till would
// hold in memory is refused, not read on; the error names the file and
// its limit, and asks whether it is the right file.
func TestOversizedFilesRefused(t *testing.T) {
	key, _ := newKeyFile(t)
	for name, tt := range map[string]struct {
		size int64
		read func(path string) error
		want string
	}{
		"vault": {maxVaultSize + 1, func(path string) error { _, err := Open(path, key).Load(); return err },
			"cannot read the vault: %s is larger than 16 MiB: is it the right file?"},
		"key": {maxKeyFileSize + 1, func(path string) error { _, err := LoadKeyFile(path, false); return err },
			"cannot read the key file: %s is larger than 64 KiB: is it the right file?"},
	} {
		t.Run(name, func(t *testing.T) {
			path := regfiletest.Sized(t, tt.size)
			if err, want := tt.read(path), fmt.Sprintf(tt.want, path); err == nil || err.Error() != want {
				t.Errorf("got %v, want %q", err, want)
			}
		})
	}
}
