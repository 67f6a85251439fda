//go:build !unix

package atomicfile

// noFollow makes an open fail on a symbolic link at the name, where the
// system has such a flag.
const noFollow = 0
