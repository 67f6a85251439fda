//go:build unix

package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRootKeepsTheOwner: root replacing (and locking) a file that another
// user owns leaves it, and the lock file, that user's: a config or vault
// only root could read would stop that user's till.
func TestRootKeepsTheOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root can give a file away")
	}
	const uid, gid = 65532, 65533
	path := filepath.Join(t.TempDir(), "till.yaml")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
	unlock, err := Lock(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if err := Replace(path, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + ".lock"} {
		if got, ok := owner(p); !ok || got != [2]uint32{uid, gid} {
			t.Errorf("%s owned by %v, want %d:%d", filepath.Base(p), got, uid, gid)
		}
	}
}
