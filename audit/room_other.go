//go:build !linux

package audit

import "os"

// reserve tells nothing here: a full disk is found by the first record
// that cannot be written.
func reserve(*os.File, int64, int64) error { return nil }
