//go:build !linux

package test

import (
	"os"
	"testing"
)

// openPTY skips the test: the pseudo-terminal tests run on Linux.
func openPTY(t *testing.T) (ptm, tty *os.File) {
	t.Helper()
	t.Skip("pseudo-terminals are opened on Linux only")
	return nil, nil
}
