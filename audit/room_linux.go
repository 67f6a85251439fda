//go:build linux

package audit

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// reserve asks the file system for the blocks that n more bytes appended
// to f, now off bytes long, would take (fallocate with
// FALLOC_FL_KEEP_SIZE: the size stays, and the next records use the
// blocks). A full disk or quota refuses it, as it would refuse the
// records. A file system that cannot preallocate tells nothing: nil.
func reserve(f *os.File, off, n int64) error {
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, off, n)
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		return err
	}
	return nil
}
