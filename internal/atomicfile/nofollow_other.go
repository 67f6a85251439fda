//go:build !unix

package atomicfile

// NoFollow makes an open fail on a symbolic link at the name, where the
// system has such a flag.
const NoFollow = 0
