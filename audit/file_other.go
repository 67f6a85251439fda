//go:build !unix

package audit

import "os"

// lock does nothing here: a second till on the same audit file is not
// refused.
func lock(*os.File) error { return nil }

// unlinked cannot tell a removed file from a renamed one here: it says
// removed, so a record may be written twice but is never lost.
func unlinked(*os.File) bool { return true }

func currentName(f *os.File) string { return f.Name() }

// names reports whether path names the file id describes, and the size
// of the file at path.
func names(path string, id os.FileInfo) (bool, int64) {
	st, err := os.Stat(path)
	if err != nil {
		return false, 0
	}
	return os.SameFile(st, id), st.Size()
}
