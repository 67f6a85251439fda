// Package unixsock serves till's admin listener on a Unix socket that only
// till's user can connect to, at a path that no other user can take while
// till is down. A loopback TCP port cannot promise that: any local process
// may bind it when till is not running, and would be sent the admin token
// by the CLI that asks it.
package unixsock

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// MaxPath is the longest socket path every Unix system binds: sun_path
// holds 104 bytes on the BSDs and macOS (108 on Linux), a NUL included.
const MaxPath = 103

// geteuid is the user whose folders CheckFolder trusts (a variable for
// tests).
var geteuid = os.Geteuid

// beforeMove runs just before a bound socket is moved into place (a
// variable for tests).
var beforeMove = func() {}

// ErrInUse is the error Listen returns when another server holds the
// socket's path.
var ErrInUse = errors.New("in use")

// tempPrefix names the private folder a socket is bound in before it is
// moved into place; os.MkdirTemp adds up to 10 digits to it.
const tempPrefix = ".till"

// BindLen is the longest path Listen binds for a socket at path: path
// itself, or the socket in the private folder beside it, whichever is
// longer. Neither may be longer than MaxPath.
func BindLen(path string) int {
	return max(len(path), len(filepath.Dir(path))+len("/"+tempPrefix)+10+len("/s"))
}

// Listen serves on a Unix socket at path, mode 0600, once CheckFolder
// passes. The socket is bound inside a fresh folder of mode 0700 beside
// path and then renamed to path, so no other user can connect between the
// bind and the chmod, whatever the umask. The lock file PATH.lock is
// held meanwhile and as long as the listener is open: another till on
// the same path is refused (ErrInUse), naming this one, even when both
// start at once and each found the path free. A socket left at path by a
// till that was killed is replaced, as is its lock file; one a server
// still answers on, or a file that is no socket, is left alone and
// refused. Closing the listener removes the socket and its lock file.
func Listen(path string) (net.Listener, error) {
	if n := BindLen(path); n > MaxPath {
		return nil, fmt.Errorf("%q is %d bytes long with the private folder it is bound in first, more than a socket's path may be (%d)", path, n, MaxPath)
	}
	if err := CheckFolder(path); err != nil {
		return nil, err
	}
	lk, err := lock(path)
	if err != nil {
		return nil, err
	}
	ln, err := bindAt(path)
	if err != nil {
		unlock(lk)
		return nil, err
	}
	ln.lock = lk
	return ln, nil
}

// bindAt binds the socket and moves it to path, which the caller holds
// the lock of.
func bindAt(path string) (*listener, error) {
	if err := free(path); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), tempPrefix)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	bound := filepath.Join(tmp, "s")
	ln, err := net.Listen("unix", bound)
	if err != nil {
		return nil, err
	}
	// Its bound name moves, so the listener must not remove it: Close does.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err = os.Chmod(bound, 0o600); err == nil {
		beforeMove()
		err = os.Rename(bound, path)
	}
	var st fs.FileInfo
	if err == nil {
		st, err = os.Lstat(path)
	}
	if err != nil {
		ln.Close()
		return nil, err
	}
	return &listener{Listener: ln, path: path, file: st}, nil
}

// free refuses a path that holds anything but a socket nothing answers on.
func free(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%q exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%q is %w: a server answers there already (another till?)", path, ErrInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%q: cannot tell whether a server answers there: %w", path, err)
	}
	return nil
}

// listener is a Unix listener at path, its socket file, that Addr names
// and that Close removes.
type listener struct {
	net.Listener
	path string
	file fs.FileInfo
	lock *os.File // held while it serves (lock)
}

// Addr is the socket's path, not the temporary one it was bound at.
func (l *listener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

// Close stops listening and removes the socket, unless another has taken
// its place.
func (l *listener) Close() error {
	err := l.Listener.Close()
	if st, serr := os.Lstat(l.path); serr == nil && os.SameFile(st, l.file) {
		_ = os.Remove(l.path)
	}
	unlock(l.lock)
	return err
}
