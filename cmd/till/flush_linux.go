package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// flushInput drops what the terminal f holds typed but unread.
func flushInput(f *os.File) { _ = unix.IoctlSetInt(int(f.Fd()), unix.TCFLSH, unix.TCIFLUSH) }
