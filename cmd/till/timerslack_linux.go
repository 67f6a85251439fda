package main

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// timerSlack is how late Linux may wake till's sleeping threads. The Go
// runtime's monitor thread (sysmon) sleeps whenever till is idle and is
// woken by the first system call after that, then polls every 20 µs plus
// the slack until till is idle again. At 2,000 req/s on one core, with the
// default 50 µs slack, that cycle ran once per request and took a fifth of
// till's CPU; with 500 µs, a tenth; with 5 ms it runs about once per ten
// requests. Network I/O is not delayed (it does not sleep on timers); what
// may fire up to 5 ms late are timers, and till's own (idle connections,
// reload polling, shutdown) count in hundreds of milliseconds or more.
const timerSlack = 5 * time.Millisecond

// raiseTimerSlack gives till serve its timer slack. A thread inherits its
// slack from the thread that starts it, and the runtime starts sysmon
// before main runs, so the slack is set on this thread and the binary
// executed again in place (same PID, arguments, environment and open
// files). It returns when the slack is already set, or cannot be: till
// then runs as it is.
func raiseTimerSlack() {
	b, err := os.ReadFile("/proc/self/timerslack_ns")
	if err != nil {
		return
	}
	if ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err != nil || ns >= timerSlack.Nanoseconds() {
		return
	}
	runtime.LockOSThread() // prctl sets this thread's slack; execve must carry it
	defer runtime.UnlockOSThread()
	if unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(timerSlack.Nanoseconds()), 0, 0, 0) != nil {
		return
	}
	// The binary's own path, not /proc/self/exe: the kernel names a
	// process after the file it executes, and ps, top and pgrep -x must
	// still show till.
	self, err := os.Executable()
	if err != nil {
		return
	}
	_ = syscall.Exec(self, os.Args, os.Environ()) // returns only on failure
}
