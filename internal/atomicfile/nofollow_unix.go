//go:build unix

package atomicfile

import "syscall"

// noFollow makes an open fail on a symbolic link at the name.
const noFollow = syscall.O_NOFOLLOW
