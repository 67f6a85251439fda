//go:build unix

package main

import (
	"os"
	"os/signal"
	"syscall"
)

// notifyReopen relays SIGUSR1, which asks till to reopen its audit file
// (after logrotate moved it, say), to c.
func notifyReopen(c chan<- os.Signal) { signal.Notify(c, syscall.SIGUSR1) }
