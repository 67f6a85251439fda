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

// TestRootsReadKeepsTheLockTheVaultsOwner: a read that finds temp files
// a killed writer left takes the lock to remove them, creating the lock
// file when there is none. Root's read (till check or secret list on the
// host, of a container's vault) made it root's, mode 0600: the vault's
// owner could no longer open it, and each of their secret set failed
// with "permission denied" and a hint about the folder. The lock file
// a read creates goes to the vault's owner, as a write's does.
func TestRootsReadKeepsTheLockTheVaultsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root can give a file away")
	}
	const uid, gid = 65532, 65533
	key, _ := newKeyFile(t)
	f := Open(filepath.Join(t.TempDir(), "till.vault"), key)
	if err := f.Set(NewSecret("openai", "sk-one", time.Now())); err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(filepath.Dir(f.Path()), ".till.vault.tmp-123")
	if err := os.WriteFile(leftover, []byte("an older vault"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(f.Path() + ".lock"); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(f.Path(), uid, gid); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Load(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftover); err == nil {
		t.Error("the temp file left is still there")
	}
	st, err := os.Stat(f.Path() + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != uid || sys.Gid != gid {
		t.Errorf("the lock file a read made is owned by %d:%d, want the vault's %d:%d", sys.Uid, sys.Gid, uid, gid)
	}
}
