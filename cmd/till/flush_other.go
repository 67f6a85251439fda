//go:build !linux && !darwin && !freebsd && !netbsd && !openbsd && !dragonfly

package main

import "os"

// flushInput would drop what the terminal f holds typed but unread; here
// (Windows) a paste's unread rest stays for the shell.
func flushInput(*os.File) {}
