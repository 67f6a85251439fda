//go:build unix

package unixsock

import (
	"errors"
	"fmt"
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
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("folder holds %d entries, want the socket and its lock file alone", len(entries))
	}
	ln.Close()
	for _, p := range []string{path, path + ".lock"} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there after Close: %v", p, err)
		}
	}
}

// TestListenRefusesSharedFolders: a folder its group or others may write
// to (/tmp included: a sticky bit still lets them create the name) is
// refused, since another user could take the socket's name while till is
// down and be sent the admin token.
func TestListenRefusesSharedFolders(t *testing.T) {
	for _, mode := range []os.FileMode{0o775, 0o757, 0o777, 0o777 | os.ModeSticky} {
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
	// A server that takes no lock (not till, or an older one) is found
	// by asking it, and the refused Listen leaves no lock file.
	plainPath := filepath.Join(dir, "plain.sock")
	plain, err := net.Listen("unix", plainPath)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if ln, err := Listen(plainPath); err == nil {
		ln.Close()
		t.Error("Listen took the socket a server without a lock answers on")
	} else if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "a server answers there") {
		t.Errorf("Listen on a server without a lock: %v", err)
	}
	if _, err := os.Lstat(plainPath + ".lock"); !os.IsNotExist(err) {
		t.Errorf("a refused Listen left its lock file: %v", err)
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

	// Close removes its own socket and lock file only, never those that
	// took their place.
	os.Remove(path)
	os.Remove(path + ".lock")
	other, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	live.Close()
	for _, p := range []string{path, path + ".lock"} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("Close removed the %s that took its place: %v", p, err)
		}
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

// TestCheckFolderWalksEveryParent: a folder of mode 0755 is no place for
// the socket when a folder above it may be written to by its group or
// others (without the sticky bit), belongs to another user, or is
// reached through a symbolic link that another user could swap (one of
// theirs, in a sticky shared folder): they could move the folders below
// and put a socket of their own at the name, and the CLI would send it
// TILL_ADMIN_TOKEN. A sticky shared parent (/tmp) whose entry on the way
// is the user's own, and a link in a folder only its owner writes, pass.
func TestCheckFolderWalksEveryParent(t *testing.T) {
	base := privateDir(t)
	mkdir := func(path string, mode os.FileMode) string {
		t.Helper()
		if err := os.MkdirAll(path, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		return path
	}
	shared := mkdir(filepath.Join(base, "shared"), 0o777)
	mkdir(filepath.Join(shared, "run"), 0o755)
	sticky := mkdir(filepath.Join(base, "sticky"), 0o777|os.ModeSticky)
	mkdir(filepath.Join(sticky, "run"), 0o755)
	private := mkdir(filepath.Join(base, "private", "run"), 0o755)
	if err := os.Symlink(private, filepath.Join(base, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(private, filepath.Join(sticky, "link")); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path, want string // want "": passes
	}{
		{filepath.Join(shared, "run", "admin.sock"), fmt.Sprintf("folder %q", shared)},
		{filepath.Join(shared, "..", "private", "run", "admin.sock"), ""},
		{filepath.Join(sticky, "run", "admin.sock"), ""},
		{filepath.Join(base, "link", "admin.sock"), ""},
		{filepath.Join(sticky, "link", "admin.sock"), ""},
		{filepath.Join(private, "admin.sock"), ""},
	} {
		err := CheckFolder(tt.path)
		if tt.want == "" && err != nil {
			t.Errorf("%s: %v", tt.path, err)
		}
		if tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "writable by its group or others")) {
			t.Errorf("%s: got %v, want a refusal naming %s", tt.path, err, tt.want)
		}
	}
	if ln, err := Listen(filepath.Join(shared, "run", "admin.sock")); err == nil {
		ln.Close()
		t.Error("Listen under a shared parent: listened, want a refusal")
	}

	// Another user's: a parent, a link or a folder in the sticky one.
	if err := os.Chown(filepath.Join(base, "private"), 4242, -1); err != nil {
		t.Skipf("needs root to give a folder to another user: %v", err)
	}
	defer func(f func() int) { geteuid = f }(geteuid)
	geteuid = func() int { return 1000 }
	for _, path := range []string{private, filepath.Join(base, "link")} {
		if err := CheckFolder(filepath.Join(path, "admin.sock")); err == nil || !strings.Contains(err.Error(), "belongs to user 4242") {
			t.Errorf("%s under a parent of user 4242: got %v, want a refusal naming the owner", path, err)
		}
	}
	os.Chown(filepath.Join(base, "private"), 1000, -1)
	for _, entry := range []string{"run", "link"} {
		os.Lchown(filepath.Join(sticky, entry), 4242, -1)
		if err := CheckFolder(filepath.Join(sticky, entry, "admin.sock")); err == nil || !strings.Contains(err.Error(), "belongs to user 4242") {
			t.Errorf("%s of user 4242 in a sticky shared folder: got %v, want a refusal naming the owner", entry, err)
		}
	}
	// Root trusts the socket folder's owner (till's user) above it too,
	// but no third user.
	geteuid = func() int { return 0 }
	os.Chown(private, 1000, -1)
	if err := CheckFolder(filepath.Join(private, "admin.sock")); err != nil {
		t.Errorf("root, a folder of user 1000 under one of user 1000: %v", err)
	}
	os.Chown(filepath.Join(base, "private"), 4242, -1)
	if err := CheckFolder(filepath.Join(private, "admin.sock")); err == nil || !strings.Contains(err.Error(), "belongs to user 4242") {
		t.Errorf("root, a folder of user 1000 under one of user 4242: got %v, want a refusal", err)
	}
}

// TestListenRefusesASecondTillWhileTheFirstStarts: two tills started
// together on one socket path. The second, binding between the first's
// check that the path is free and its move into place, is refused,
// naming the path and the till that holds it (its pid), and the first's
// socket is the one at the path: without that, the first moved its own
// socket over the second's, which served on, unreachable, while the CLI
// asked the first. A lock file a killed till left is taken over.
func TestListenRefusesASecondTillWhileTheFirstStarts(t *testing.T) {
	dir := privateDir(t)
	path := filepath.Join(dir, "admin.sock")
	// A killed till's: unlocked, naming a process long gone.
	if err := os.WriteFile(path+".lock", []byte("999999999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var second error
	defer func(f func()) { beforeMove = f }(beforeMove)
	beforeMove = func() {
		beforeMove = func() {}
		ln, err := Listen(path)
		if err == nil {
			ln.Close()
			err = errors.New("listened")
		}
		second = err
	}
	first, err := Listen(path)
	if err != nil {
		t.Fatalf("the first till: %v", err)
	}
	defer first.Close()
	want := fmt.Sprintf("%q is in use by another till (pid %d)", path, os.Getpid())
	if second == nil || !strings.Contains(second.Error(), want) || !errors.Is(second, ErrInUse) {
		t.Errorf("the second till: got %v, want %s", second, want)
	}
	accepted := make(chan struct{})
	go func() {
		if c, err := first.Accept(); err == nil {
			c.Close()
			close(accepted)
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial the socket: %v", err)
	}
	c.Close()
	<-accepted
}

// TestRootTrustsNoNameInASharedFolder: any user may create a name in a
// sticky shared folder (/tmp, /dev/shm), so a folder there says nothing
// of who was meant to have it. Root, which trusts the socket folder's
// owner, must not trust the owner of such a name: another user who made
// /tmp/till before till's user did would own the socket folder, be
// trusted as till's user, and be sent TILL_ADMIN_TOKEN by a root CLI.
func TestRootTrustsNoNameInASharedFolder(t *testing.T) {
	sticky := filepath.Join(privateDir(t), "tmp")
	if err := os.Mkdir(sticky, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sticky, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	theirs := filepath.Join(sticky, "till")
	if err := os.Mkdir(theirs, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(theirs, 4242, -1); err != nil {
		t.Skipf("needs root to give a folder to another user: %v", err)
	}
	home := privateDir(t) // theirs, under a folder of root's
	if err := os.Chown(home, 4242, -1); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(sticky, "link")
	if err := os.Symlink(home, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(link, 4242, -1); err != nil {
		t.Fatal(err)
	}
	defer func(f func() int) { geteuid = f }(geteuid)
	geteuid = func() int { return 0 }
	for _, path := range []string{filepath.Join(theirs, "admin.sock"), filepath.Join(link, "admin.sock")} {
		if err := CheckFolder(path); err == nil || !strings.Contains(err.Error(), "belongs to user 4242") {
			t.Errorf("root, %s: got %v, want a refusal naming user 4242", path, err)
		}
	}
	// The user who made the name may use it.
	geteuid = func() int { return 4242 }
	if err := CheckFolder(filepath.Join(theirs, "admin.sock")); err != nil {
		t.Errorf("user 4242, its own folder in a sticky one: %v", err)
	}
}

// TestLockFileNeverWritesThroughALink: a lock file that is a hard link
// to another file (one the socket folder's owner, whom root trusts, made
// to a file of root's) is refused before till writes its pid in it: a
// root serve would otherwise cut that file short.
func TestLockFileNeverWritesThroughALink(t *testing.T) {
	dir := privateDir(t)
	path := filepath.Join(dir, "admin.sock")
	victim := filepath.Join(privateDir(t), "shadow")
	if err := os.WriteFile(victim, []byte("root:kept\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(victim, path+".lock"); err != nil {
		t.Skipf("cannot make a hard link here: %v", err)
	}
	ln, err := Listen(path)
	if err == nil {
		ln.Close()
		t.Error("listened with a lock file linked to another file, want a refusal")
	} else if !strings.Contains(err.Error(), "lock file") {
		t.Errorf("got %v, want a refusal naming the lock file", err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "root:kept\n" {
		t.Errorf("the file the lock file links to now holds %q", b)
	}
}
