//go:build unix

package source

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tillgw/till/internal/regfile/regfiletest"
)

// TestVaultKVFilesMustBeRegular: a Vault source's token, role id, secret
// id or service-account token file, or its ca_file, that names a named
// pipe or a device is refused at once. A pipe would hold the open, and
// with it the reload (for ca_file) or the login lock and every fetch
// waiting on it (for a credential), until someone wrote to it; a device
// such as /dev/zero would be read until memory ran out. Were a pipe
// waited on, the test writes to it to end the wait, and what the reader
// then gets is not the named pipe's refusal.
func TestVaultKVFilesMustBeRegular(t *testing.T) {
	for name, read := range map[string]func(path string) error{
		"credential": func(path string) error { _, err := readCredential(path, "token"); return err },
		"ca_file": func(path string) error {
			_, err := NewVaultKV(VaultKVOptions{Address: "https://127.0.0.1:1", CAFile: path})
			return err
		},
	} {
		t.Run(name+" named pipe", func(t *testing.T) {
			fifo := filepath.Join(t.TempDir(), "fifo")
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Skip(err)
			}
			done := make(chan error, 1)
			go func() { done <- read(fifo) }()
			if err := regfiletest.Fed(fifo, "s.token\n", done); err == nil || !strings.Contains(err.Error(), "is not a regular file but a named pipe") {
				t.Errorf("got %v, want the named pipe refused", err)
			}
		})
		t.Run(name+" device", func(t *testing.T) {
			if err := read(os.DevNull); err == nil || !strings.Contains(err.Error(), "is not a regular file but a device") {
				t.Errorf("got %v, want the device refused", err)
			}
		})
	}
}
