//go:build unix

package audit

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// lock takes f's exclusive lock, which holds while f is open: a second
// till given the same audit file refuses it before it writes to it (its
// own chain, a checkpoint at start or records, would break the first
// till's). A file system without locks refuses nothing.
func lock(f *os.File) error {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); errors.Is(err, syscall.EWOULDBLOCK) {
		return fmt.Errorf("%s is %w: two tills on one file would break its chain", f.Name(), ErrHeld)
	}
	return nil
}

// unlinked reports whether f has no name left in any folder (it was
// removed), so that what is written to it can never be read.
func unlinked(f *os.File) bool {
	st, err := f.Stat()
	if err != nil {
		return true
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	return !ok || sys.Nlink == 0
}

// names reports whether path names the file id describes, and the size
// of the file at path. It runs after every record, so it keeps nothing
// on the heap.
func names(path string, id os.FileInfo) (bool, int64) {
	want, ok := id.Sys().(*syscall.Stat_t)
	if !ok {
		st, err := os.Stat(path)
		if err != nil {
			return false, 0
		}
		return os.SameFile(st, id), st.Size()
	}
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		return false, 0
	}
	return st.Dev == want.Dev && st.Ino == want.Ino, st.Size
}

// currentName is the path f has now, which follows renames where the
// system says (Linux's /proc), and is the one it was opened with elsewhere.
func currentName(f *os.File) string {
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if err != nil || strings.HasSuffix(p, " (deleted)") {
		return f.Name()
	}
	return p
}
