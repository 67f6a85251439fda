package config

import (
	"io/fs"
	"syscall"

	"golang.org/x/sys/unix"
)

// sealedByMount reports whether the file or folder at path, whose state
// is st, is root's on a read-only mount: no one can write it through that
// mount, and no one but root can make the mount writable. Kubernetes
// mounts a ConfigMap's folder so: 0777 (2777 with fsGroup), root's, and
// read-only in the pod. A folder of another user's mounted read-only (a
// checkout bind-mounted into a container) may still be written on the
// host, and is judged by its mode.
func sealedByMount(path string, st fs.FileInfo) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || sys.Uid != 0 {
		return false
	}
	var sfs unix.Statfs_t
	return unix.Statfs(path, &sfs) == nil && sfs.Flags&unix.ST_RDONLY != 0
}
