//go:build unix

package audit

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tillgw/till/internal/regfile"
)

// TestNamedPipeAuditFileRefused: a named pipe at audit.file (a mistake,
// or put there by whoever can write the folder) took the first records,
// failed to cut them back (a pipe cannot be truncated) and wrote them
// again at every retry, until the pipe's buffer filled: then a write
// blocked with the sink's lock held, every request waited on its use
// record for good, and till never finished its shutdown. A file that is
// not a regular one is refused when opened, at start and when followed.
func TestNamedPipeAuditFileRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skip("no named pipes here:", err)
	}
	var nr *regfile.NotRegularError
	if err := Check(path); !errors.As(err, &nr) {
		t.Errorf("Check of a named pipe: %v, want a *regfile.NotRegularError", err)
	}
	if s, err := Open(Options{Path: path, Fsync: FsyncNone}); !errors.As(err, &nr) {
		if err == nil {
			s.Close()
		}
		t.Errorf("Open of a named pipe: %v, want a *regfile.NotRegularError", err)
	}

	// At run time: the file is removed and a pipe put in its place.
	os.Remove(path)
	s, err := Open(Options{Path: path, Fsync: FsyncNone, OnError: func(error, []byte) {}})
	if err != nil {
		t.Fatal(err)
	}
	s.Write(record("1"))
	os.Remove(path)
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan bool)
	go func() {
		ok := false
		for i := range 1000 { // 1000 records: past any pipe's buffer
			ok = s.WriteNow(record(string(rune('a'+i%26)))) || ok
		}
		done <- ok
	}()
	select {
	case ok := <-done:
		if ok {
			t.Error("a use record was taken while a named pipe stood at the audit file's path")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the sink blocked writing to a named pipe at the audit file's path")
	}
	s.Close()
}
