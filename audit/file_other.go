//go:build !unix

package audit

import "os"

// unlinked cannot tell a removed file from a renamed one here: it says
// removed, so a record may be written twice but is never lost.
func unlinked(*os.File) bool { return true }

func currentName(f *os.File) string { return f.Name() }

// names reports whether path names the file id describes.
func names(path string, id os.FileInfo) bool {
	st, err := os.Stat(path)
	return err == nil && os.SameFile(st, id)
}
