package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestReplace: the new file has the data and mode asked for, through a
// temp file that does not stay.
func TestReplace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "till.yaml")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Replace(path, []byte("new"), 0o640); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	st, _ := os.Stat(path)
	if string(got) != "new" || st.Mode().Perm() != 0o640 {
		t.Errorf("got %q mode %v, want \"new\" mode 0640", got, st.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("files left beside it: %v", ents)
	}
	if err := Replace(filepath.Join(dir, "missing", "x"), []byte("x"), 0o600); err == nil {
		t.Error("a replace in a missing folder succeeded")
	}
}

// TestLock: a second Lock waits for the first, gives up after its
// timeout with ErrLocked, and succeeds once the first is released.
func TestLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "till.vault")
	unlock, err := Lock(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(path, 50*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Errorf("second lock: %v, want ErrLocked", err)
	}
	unlock()
	unlock2, err := Lock(path, time.Second)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	unlock2()
	if st, err := os.Stat(path + ".lock"); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("lock file: %v, %v; want mode 0600", st, err)
	}
}
