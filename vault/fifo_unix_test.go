//go:build unix

package vault

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tillgw/till/internal/regfile/regfiletest"
)

// TestNamedPipesRefused: a vault or key file path that names a named
// pipe is refused at once, not waited on: the open would hold a reload,
// and with it the reload lock, until someone wrote to the pipe. Were it
// waited on, the test writes to the pipe to end the wait, and the
// refusal it then gets is not the named pipe's.
func TestNamedPipesRefused(t *testing.T) {
	key, _ := newKeyFile(t)
	for name, read := range map[string]func(path string) error{
		"vault": func(path string) error { _, err := Open(path, key).Load(); return err },
		"key":   func(path string) error { _, err := LoadKeyFile(path, false); return err },
	} {
		t.Run(name, func(t *testing.T) {
			fifo := filepath.Join(t.TempDir(), "fifo")
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Skip(err)
			}
			done := make(chan error, 1)
			go func() { done <- read(fifo) }()
			err := regfiletest.Fed(fifo, "not a vault\n", done)
			if err == nil || !strings.Contains(err.Error(), "is not a regular file but a named pipe") {
				t.Errorf("got %v, want the named pipe refused", err)
			}
		})
	}
}
