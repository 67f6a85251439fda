//go:build unix

package vault

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestRootKeepsTheVaultsOwner: root rotating a vault that another user
// owns (the uid a container's till runs as) leaves vault and lock file
// that user's, mode 0600, so that their till can still read and rotate it.
func TestRootKeepsTheVaultsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root can give a file away")
	}
	const uid, gid = 65532, 65533
	key, _ := newKeyFile(t)
	f := Open(filepath.Join(t.TempDir(), "till.vault"), key)
	if err := f.Set(NewSecret("openai", "sk-one", time.Now())); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{f.Path(), f.Path() + ".lock"} {
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	check := func(when string) {
		t.Helper()
		for _, p := range []string{f.Path(), f.Path() + ".lock"} {
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if sys := st.Sys().(*syscall.Stat_t); sys.Uid != uid || sys.Gid != gid {
				t.Errorf("%s: %s owned by %d:%d, want %d:%d", when, filepath.Base(p), sys.Uid, sys.Gid, uid, gid)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("%s: %s: mode %v, want 0600", when, filepath.Base(p), st.Mode().Perm())
			}
		}
	}
	if err := f.Set(NewSecret("openai", "sk-two", time.Now())); err != nil {
		t.Fatal(err)
	}
	check("after root rotated it")

	// A lock file root creates (the old one removed) goes to the vault's
	// owner too.
	if err := os.Remove(f.Path() + ".lock"); err != nil {
		t.Fatal(err)
	}
	if err := f.Set(NewSecret("openai", "sk-three", time.Now())); err != nil {
		t.Fatal(err)
	}
	check("after root made a new lock file")
}
