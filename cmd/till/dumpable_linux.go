package main

import "golang.org/x/sys/unix"

// noCoreDumps marks the process non-dumpable: no core file, and no ptrace
// or /proc/PID/mem reads by other processes of the same user, so the keys
// in memory do not end up on disk after a crash.
func noCoreDumps() error {
	return unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
}
