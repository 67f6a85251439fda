//go:build unix

package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestRotatedClientKeyStaysTheCallers: client rotate, run by root in a
// folder another user can write (/tmp), must not hand the new private key
// to that user. There, before the rotation, the user leaves web.key (a
// symbolic link to a file of theirs) and web.crt of their own; the new
// files must be root's, as client add --cert makes them: the key alone
// proves a cert: true client.
func TestRotatedClientKeyStaysTheCallers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root can give a file away")
	}
	const uid, gid = 65532, 65533
	c := newCLI(t)
	c.must("", "init")
	c.must("", "ca", "init")
	b, _ := os.ReadFile("till.yaml")
	os.WriteFile("till.yaml", append(b, "tls: {names: [till.internal]}\n"...), 0o644)
	c.must("", "client", "add", "web", "--cert", "--write")

	theirs := filepath.Join(t.TempDir(), "mine")
	os.Remove("web.key")
	os.Remove("web.crt")
	for _, f := range []string{theirs, "web.crt"} {
		if err := os.WriteFile(f, []byte("planted"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(f, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(theirs, "web.key"); err != nil {
		t.Fatal(err)
	}
	c.must("", "client", "rotate", "web")
	for _, f := range []string{"web.key", "web.crt"} {
		st, err := os.Lstat(f)
		if err != nil {
			t.Fatal(err)
		}
		if sys := st.Sys().(*syscall.Stat_t); int(sys.Uid) != os.Geteuid() || int(sys.Gid) != os.Getegid() || !st.Mode().IsRegular() {
			t.Errorf("the rotated %s: %v owned by %d:%d, want a file of the caller's, not of the user who left one there", f, st.Mode(), sys.Uid, sys.Gid)
		}
	}
}
