//go:build unix

package proxy

import (
	"os"
	"syscall"
)

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
