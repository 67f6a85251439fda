//go:build unix

package atomicfile

import (
	"os"
	"syscall"
)

// MatchOwner gives the file at path the owner and group of the file at
// like, when both exist and differ. Only root may give a file away, so for
// anyone else it is a no-op, and its failure is not an error: the file is
// then owned as before. It lets root replace a file that another user's
// till reads (the uid a container runs as) without taking it from them.
func MatchOwner(path, like string) {
	want, ok := owner(like)
	if !ok {
		return
	}
	if have, ok := owner(path); !ok || have == want {
		return
	}
	_ = os.Lchown(path, int(want[0]), int(want[1]))
}

// owner returns the uid and gid of the file at path, or of its target
// when it is a symbolic link.
func owner(path string) ([2]uint32, bool) {
	st, err := os.Stat(path)
	if err != nil {
		return [2]uint32{}, false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return [2]uint32{}, false
	}
	return [2]uint32{sys.Uid, sys.Gid}, true
}
