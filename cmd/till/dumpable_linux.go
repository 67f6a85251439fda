package main

import "golang.org/x/sys/unix"

// noCoreDumps marks the process non-dumpable: no core file, and no ptrace
// or /proc/PID/mem reads by other processes of the same user, so the keys
// in memory do not end up on disk after a crash. Its core size limit goes
// to 0 as well: with fs.suid_dumpable=2 (Ubuntu's apport), the kernel
// still writes a root-only core of a non-dumpable process, but none
// beyond that limit. Helpers till starts (exec sources) inherit it.
func noCoreDumps() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return err
	}
	return unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{})
}
