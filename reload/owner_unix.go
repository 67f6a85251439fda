//go:build unix

package reload

import (
	"os"
	"syscall"
)

// sameOwner reports whether two states of a file have the same owner and
// group. A vault renamed in with the wrong owner fails to load; the chown
// that mends it changes nothing else that Watch compares.
func sameOwner(a, b os.FileInfo) bool {
	sa, ok1 := a.Sys().(*syscall.Stat_t)
	sb, ok2 := b.Sys().(*syscall.Stat_t)
	if !ok1 || !ok2 {
		return true
	}
	return sa.Uid == sb.Uid && sa.Gid == sb.Gid
}
