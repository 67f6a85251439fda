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

// timerSlack is how late Linux may wake till's sleeping threads. The
// default, 50 µs, lets the Go runtime's monitor thread (sysmon) wake every
// 20–70 µs while requests are in flight and sleep again as soon as till is
// idle: at 2,000 req/s on one core, a fifth of till's CPU went to those
// wake-ups. With 500 µs it wakes about ten times less often. Network I/O
// is not delayed (it does not sleep on timers), and till's own timers
// (timeouts of a second or more) cannot tell the difference.
const timerSlack = 500 * time.Microsecond

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
	_ = syscall.Exec("/proc/self/exe", os.Args, os.Environ()) // returns only on failure
}
