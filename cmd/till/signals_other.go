//go:build !unix

package main

import (
	"os"

	"golang.org/x/term"
)

// notifyReopen does nothing where there is no SIGUSR1.
func notifyReopen(chan<- os.Signal) {}

// keepRaw does nothing where there is no job control.
func keepRaw(int, *term.State, *term.State) (stop func()) { return func() {} }
