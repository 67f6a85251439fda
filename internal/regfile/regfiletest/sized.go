// Package regfiletest helps tests check the refusals of a reader of
// regular files: a named pipe refused rather than waited on, a file over
// its limit refused rather than read on.
package regfiletest

import (
	"os"
	"path/filepath"
	"testing"
)

// Sized returns the path of a new file, in a folder of its own, of size
// zero bytes: a hole where the file system allows one, so that a file
// over a reader's limit costs the test no disk.
func Sized(t testing.TB, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sized")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	return path
}
