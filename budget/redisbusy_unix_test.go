//go:build unix

package budget

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// busyRedis holds the Redis r runs (SIGSTOP), as a slow script or a
// stalled host would: the commands sent meanwhile wait in its sockets,
// and run once done lets it go on (SIGCONT), those of clients that gave
// up and hung up meanwhile too. It returns once the process has stopped,
// so that no call made after it can be answered before done; done also
// runs when the test ends. (A probe that took a PING unanswered for 20 ms
// as the sign of a busy script took a slow machine for one as well.)
func busyRedis(t *testing.T, r redisServer) (done func()) {
	t.Helper()
	if err := r.proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	done = sync.OnceFunc(func() { _ = r.proc.Signal(syscall.SIGCONT) })
	t.Cleanup(done)
	for deadline := time.Now().Add(10 * time.Second); !stopped(r.proc.Pid); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("redis-server did not stop within 10s of SIGSTOP")
		}
	}
	return done
}

// stopped reports whether the process pid is stopped by a signal, as far
// as /proc tells; where there is no /proc, kill(2) is all there is to go by.
func stopped(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// "pid (comm) state ...": comm may hold spaces and parentheses.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] == "T"
}
