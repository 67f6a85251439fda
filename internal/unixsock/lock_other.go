//go:build !unix

package unixsock

import "os"

// lock does nothing here (Listen refuses first on Windows).
func lock(string) (*os.File, error) { return nil, nil }

// unlock does nothing here.
func unlock(*os.File) {}
