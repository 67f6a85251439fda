//go:build darwin || freebsd || netbsd || openbsd || dragonfly

package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// fread selects the input queue for TIOCFLUSH (FREAD in <sys/fcntl.h>).
const fread = 1

// flushInput drops what the terminal f holds typed but unread.
func flushInput(f *os.File) { _ = unix.IoctlSetPointerInt(int(f.Fd()), unix.TIOCFLUSH, fread) }
