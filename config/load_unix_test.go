//go:build unix

package config

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tillgw/till/internal/regfile/regfiletest"
)

// TestLoadRefusesNamedPipe: a config that is a named pipe held Load in
// open until a writer came, and with it a reload, and serve's loop, which
// then never handled SIGTERM. It is refused at once. Should Load wait in
// open, a writer is given to it, with a config that parses: the test then
// fails instead of hanging.
func TestLoadRefusesNamedPipe(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "till.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := Load(fifo)
		done <- err
	}()
	err := regfiletest.Fed(fifo, "version: 1\nroutes: []\n", done)
	if err == nil || !strings.Contains(err.Error(), "is not a regular file but a named pipe") {
		t.Errorf("got %v, want the named pipe refused", err)
	}
}

// TestLoadRefusesFolderAndDevice: Load names what the path is when it is
// no regular file.
func TestLoadRefusesFolderAndDevice(t *testing.T) {
	for path, want := range map[string]string{t.TempDir(): "a folder", os.DevNull: "a device"} {
		if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "is not a regular file but "+want) {
			t.Errorf("%s: got %v, want %q", path, err, want)
		}
	}
}
