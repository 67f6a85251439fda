//go:build unix

package unixsock

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// privateDir is a folder only this user may write to (t.TempDir's mode
// follows the umask).
func privateDir(t *testing.T) string {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestListenSocketIsPrivate: the socket is 0600 at the path asked for,
// answers there, leaves no temporary folder, and is gone once closed.
func TestListenSocketIsPrivate(t *testing.T) {
	dir := privateDir(t)
	path := filepath.Join(dir, "admin.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Type() != os.ModeSocket || st.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket of mode 0600", st.Mode())
	}
	if got := ln.Addr().String(); got != path {
		t.Errorf("Addr %q, want %q", got, path)
	}
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial the socket: %v", err)
	}
	c.Close()
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("folder holds %d entries, want the socket alone", len(entries))
	}
	ln.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket still there after Close: %v", err)
	}
}

// TestListenRefusesSharedFolders: a folder its group or others may write
// to (/tmp included: a sticky bit still lets them create the name) is
// refused, since another user could take the socket's name while till is
// down and be sent the admin token.
func TestListenRefusesSharedFolders(t *testing.T) {
	for _, mode := range []os.FileMode{0o775, 0o757, 0o777, 0o1777} {
		dir := t.TempDir()
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "admin.sock")
		if ln, err := Listen(path); err == nil {
			ln.Close()
			t.Errorf("mode %04o: listened, want a refusal", mode)
		} else if !strings.Contains(err.Error(), "writable by its group or others") {
			t.Errorf("mode %04o: %v", mode, err)
		}
		if err := CheckFolder(path); err == nil {
			t.Errorf("mode %04o: CheckFolder passed", mode)
		}
	}
	if err := CheckFolder(filepath.Join(privateDir(t), "admin.sock")); err != nil {
		t.Errorf("folder of mode 0755: %v", err)
	}
}

// TestListenTakesOnlyAStaleSocket: a socket a killed till left behind is
// replaced; one a server answers on, or a file that is not a socket, is
// refused and left as it was; a path too long for a socket is refused.
func TestListenTakesOnlyAStaleSocket(t *testing.T) {
	dir := privateDir(t)
	path := filepath.Join(dir, "admin.sock")
	live, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := live.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if ln, err := Listen(path); err == nil {
		ln.Close()
		t.Fatal("a second Listen took a live socket")
	}
	// A killed till: its listener closed without removing the file.
	stale, err := net.Listen("unix", filepath.Join(dir, "stale.sock"))
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	ln, err := Listen(filepath.Join(dir, "stale.sock"))
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln.Close()

	file := filepath.Join(dir, "notes.txt")
	os.WriteFile(file, []byte("kept"), 0o644)
	if ln, err := Listen(file); err == nil {
		ln.Close()
		t.Fatal("listened in place of a regular file")
	}
	if b, _ := os.ReadFile(file); string(b) != "kept" {
		t.Errorf("the regular file was changed: %q", b)
	}
	if _, err := Listen(filepath.Join(dir, strings.Repeat("a", MaxPath))); err == nil || !strings.Contains(err.Error(), "bytes long") {
		t.Errorf("a path too long: %v", err)
	}

	// Close removes its own socket only, never one that took its place.
	os.Remove(path)
	other, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	live.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("Close removed the socket that took its place: %v", err)
	}
}

// TestCheckFolderRefusesAnotherUsersFolder: a folder of another user,
// even of mode 0755, is refused; one of the asking user or of root is
// taken, and root takes any owner's.
func TestCheckFolderRefusesAnotherUsersFolder(t *testing.T) {
	dir := privateDir(t)
	if err := os.Chown(dir, 4242, -1); err != nil {
		t.Skipf("needs root to give a folder to another user: %v", err)
	}
	path := filepath.Join(dir, "admin.sock")
	defer func(f func() int) { geteuid = f }(geteuid)
	for _, tt := range []struct {
		euid int
		ok   bool
	}{{1000, false}, {4242, true}, {0, true}} {
		geteuid = func() int { return tt.euid }
		err := CheckFolder(path)
		if tt.ok && err != nil {
			t.Errorf("user %d: %v", tt.euid, err)
		}
		if !tt.ok && (err == nil || !strings.Contains(err.Error(), "belongs to user 4242")) {
			t.Errorf("user %d: got %v, want a refusal naming the owner", tt.euid, err)
		}
	}
	if err := os.Chown(dir, 0, -1); err != nil {
		t.Fatal(err)
	}
	geteuid = func() int { return 1000 }
	if err := CheckFolder(path); err != nil {
		t.Errorf("a folder of root: %v", err)
	}
}

// TestListenTakesEveryPathBindLenAllows: a path as long as BindLen allows
// is bound, though the private folder it is bound in first is longer
// than the path when its name is short; one byte more is refused, saying
// so, before anything is made.
func TestListenTakesEveryPathBindLenAllows(t *testing.T) {
	dir := privateDir(t)
	sub := filepath.Join(dir, strings.Repeat("d", MaxPath-len(dir)-len("/.till")-10-len("/s")-1))
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(sub, "s")
	if BindLen(path) != MaxPath {
		t.Fatalf("BindLen %d, want %d", BindLen(path), MaxPath)
	}
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("a path BindLen allows: %v", err)
	}
	ln.Close()
	// Under MaxPath itself, but its private folder would take the socket
	// past what Linux binds (108 bytes): once "bind: invalid argument".
	for _, folder := range []string{sub + "d", sub + strings.Repeat("d", 12)} {
		if err := os.Mkdir(folder, 0o755); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(folder, "s")
		if _, err := Listen(p); err == nil || !strings.Contains(err.Error(), "bound in first") {
			t.Errorf("a path of %d bytes: %v", len(p), err)
		}
	}
}
