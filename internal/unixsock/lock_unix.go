//go:build unix

package unixsock

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// lockSuffix names the lock file beside a socket: PATH.lock.
const lockSuffix = ".lock"

// lock takes the lock beside the socket at path, which a till holds as
// long as it serves there, and writes its pid in it: a second till given
// the same path is refused, naming the first, before it touches the
// socket (as the audit file's lock refuses a second writer). The kernel
// drops the lock of a till that is killed, so a lock file it leaves
// behind is taken over. A file system without locks refuses nothing.
func lock(path string) (*os.File, error) {
	name := path + lockSuffix
	for range 3 {
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); errors.Is(err, syscall.EWOULDBLOCK) {
			holder := lockHolder(f)
			f.Close()
			return nil, fmt.Errorf("%q is %w by another till (%s), which holds its lock %q: with two tills on one socket the CLI would ask either", path, ErrInUse, holder, name)
		}
		// A till that stopped removed the file between the open and the
		// lock: the lock is on a file no other till will open.
		if st, err := os.Lstat(name); err != nil || !sameFile(f, st) {
			f.Close()
			continue
		}
		if !plainFile(f) {
			f.Close()
			return nil, fmt.Errorf("lock file %q is not a regular file of one link, as till makes it (a hard link to another file?): till writes its pid there, so it is not opened; remove it", name)
		}
		// The pid only names this till to a second one: not written, it
		// is "pid unknown" there.
		if f.Truncate(0) == nil {
			_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		}
		return f, nil
	}
	return nil, fmt.Errorf("%q: its lock file keeps being removed by another till", path)
}

// plainFile reports whether f is a regular file with no other name: a
// hard link planted at the lock's name (by the socket folder's owner,
// whom root trusts) would have a root till cut another file short.
func plainFile(f *os.File) bool {
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return false
	}
	s, ok := st.Sys().(*syscall.Stat_t)
	return ok && uint64(s.Nlink) == 1
}

// lockHolder reads the pid a till wrote in its lock file, shown as
// "pid N", or says it cannot tell.
func lockHolder(f *os.File) string {
	b := make([]byte, 16)
	n, _ := f.ReadAt(b, 0)
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:n])))
	if err != nil || pid <= 0 {
		return "pid unknown"
	}
	return "pid " + strconv.Itoa(pid)
}

// sameFile reports whether f is the file st describes.
func sameFile(f *os.File, st os.FileInfo) bool {
	fst, err := f.Stat()
	return err == nil && os.SameFile(fst, st)
}

// unlock removes the lock file, unless another has taken its place,
// then drops the lock.
func unlock(f *os.File) {
	if f == nil {
		return
	}
	if st, err := os.Lstat(f.Name()); err == nil && sameFile(f, st) {
		_ = os.Remove(f.Name())
	}
	f.Close()
}
