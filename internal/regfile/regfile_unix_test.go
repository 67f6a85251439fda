//go:build unix

package regfile

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
)

// TestRead: a regular file is read whole; a named pipe is
// refused at once, without waiting for a writer (should Read wait, one is
// given to it, and the test fails instead of hanging), and so are a
// folder and a device.
func TestRead(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "a")
	os.WriteFile(file, []byte("0123456789"), 0o600)
	if got, err := Read(file, 10); err != nil || string(got) != "0123456789" {
		t.Errorf("got %q, %v; want 0123456789", got, err)
	}
	fifo := filepath.Join(dir, "pipe")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := Read(fifo, 100)
		done <- err
	}()
	var err error
wait:
	for {
		select {
		case err = <-done:
			break wait
		default:
		}
		if w, werr := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); werr == nil {
			w.WriteString("version: 1\n")
			w.Close()
			err = <-done
			break
		}
		runtime.Gosched()
	}
	fifoErr := err
	for path, want := range map[string]string{fifo: "a named pipe", dir: "a folder", os.DevNull: "a device"} {
		err := fifoErr
		if path != fifo {
			_, err = Read(path, 100)
		}
		var nr *NotRegularError
		if !errors.As(err, &nr) || nr.Kind != want || nr.Error() != path+" is not a regular file but "+want {
			t.Errorf("%s: got %v, want %s", path, err, want)
		}
	}
}
