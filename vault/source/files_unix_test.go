//go:build unix

package source

import (
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFilesNamedPipe: a named pipe in the folder is refused at once, not
// waited on (a fetch stuck on it would hold the ref for every request).
func TestFilesNamedPipe(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o600); err != nil {
		t.Skip("no named pipes here:", err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := Files{Dir: dir}.Fetch(context.Background(), "pipe")
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("fetch of a named pipe: %v, want not a regular file", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the fetch of a named pipe is stuck")
	}
}
