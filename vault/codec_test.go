package vault

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDecodeTestdata(t *testing.T) {
	tests := []struct {
		file    string
		secrets int
		wantErr string
	}{
		{file: "single.json", secrets: 1},
		{file: "fields.json", secrets: 1},
		{file: "empty.json", secrets: 0},
		{file: "version2.json", wantErr: "unsupported vault version 2"},
		{file: "unknown-field.json", wantErr: `unknown field "extra"`},
		{file: "control-char.json", wantErr: `secret "openai": secret value contains a control character at byte 3`},
		{file: "value-and-fields.json", wantErr: `secret "x" has both a value and fields`},
		{file: "bad-name.json", wantErr: `invalid secret name (3 characters)`},
		{file: "truncated.json", wantErr: "JSON ends too early"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "plaintext", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := decode(data)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if len(got) != tt.secrets {
				t.Fatalf("got %d secrets, want %d", len(got), tt.secrets)
			}
			checkReencode(t, got)
		})
	}
}

// checkReencode asserts that encoding decoded secrets and decoding again
// gives the same secrets.
func checkReencode(t *testing.T, secrets map[string]Secret) {
	t.Helper()
	plain, err := encode(secrets)
	if err != nil {
		t.Fatalf("encode of decoded secrets: %v", err)
	}
	again, err := decode(plain)
	if err != nil {
		t.Fatalf("decode of encoded secrets: %v", err)
	}
	if len(again) != len(secrets) {
		t.Fatalf("got %d secrets after re-encoding, want %d", len(again), len(secrets))
	}
	for name, s := range secrets {
		a := again[name]
		if a.Fingerprint() != s.Fingerprint() || !a.Created.Equal(s.Created) || !a.Updated.Equal(s.Updated) || !a.Expires.Equal(s.Expires) {
			t.Errorf("%s: got %v, want %v", name, a, s)
		}
	}
}

func seedDir(f *testing.F, dir string) {
	f.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
}

// FuzzLoad feeds arbitrary plaintext to the vault decoder, which must never
// panic, and whose accepted input must survive a re-encode.
func FuzzLoad(f *testing.F) {
	seedDir(f, filepath.Join("testdata", "plaintext"))
	f.Fuzz(func(t *testing.T, data []byte) {
		secrets, err := decode(data)
		if err != nil {
			return
		}
		checkReencode(t, secrets)
	})
}

// FuzzCleanValue checks that any accepted value is clean and stable.
func FuzzCleanValue(f *testing.F) {
	seedDir(f, filepath.Join("testdata", "values"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		v, err := CleanValue(raw)
		if err != nil {
			return
		}
		if v == "" || len(v) > MaxValueSize || !utf8.ValidString(v) {
			t.Fatalf("accepted %q", v)
		}
		for i := 0; i < len(v); i++ {
			if v[i] < 0x20 || v[i] == 0x7f {
				t.Fatalf("accepted a control character at byte %d", i)
			}
		}
		if !bytes.HasPrefix(raw, []byte(v)) {
			t.Fatalf("got %q, want a prefix of the input", v)
		}
		if again, err := CleanValue([]byte(v)); err != nil || again != v {
			t.Fatalf("CleanValue of a clean value: got %q, %v; want %q", again, err, v)
		}
	})
}
