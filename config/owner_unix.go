//go:build unix

package config

import (
	"io/fs"
	"syscall"
)

// ownerOf returns the uid that owns the file whose state is st.
func ownerOf(st fs.FileInfo) (uint32, bool) {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return sys.Uid, true
}
