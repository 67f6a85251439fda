//go:build unix

package atomicfile

import "syscall"

// NoFollow makes an open fail on a symbolic link at the name.
const NoFollow = syscall.O_NOFOLLOW
