//go:build linux

package source

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestExecLeavesNoZombies: the children a helper leaves behind are ended
// with it and, when till adopted them (PID 1 in a container without an
// init; here a child subreaper, which plays that part), reaped.
func TestExecLeavesNoZombies(t *testing.T) {
	const prSetChildSubreaper = 36
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		t.Skip("prctl:", errno)
	}
	defer syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 0, 0)
	e := Exec{Name: "op", Command: []string{"sh", "-c", `(sleep 30) >/dev/null 2>&1 & echo value`, "h"}, Timeout: 5 * time.Second, Log: zerolog.Nop()}
	for range 5 {
		if _, _, err := e.Fetch(context.Background(), "x"); err != nil {
			t.Fatal(err)
		}
	}
	var left []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if left = children(); len(left) == 0 {
			return
		}
	}
	t.Errorf("processes left under till after 5 helper runs: %v", left)
}

// children lists this process's children: running or zombies.
func children() []string {
	me := strconv.Itoa(os.Getpid())
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []string
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == me {
			out = append(out, s[:strings.IndexByte(s, ' ')]+" "+f[0]+" "+s[strings.IndexByte(s, '('):strings.LastIndexByte(s, ')')+1])
		}
	}
	return out
}

// TestExecChildHoldingOutput: a helper that prints the value and exits,
// leaving a child that holds its output open (a daemon it starts), gives
// the value, and the child is ended.
func TestExecChildHoldingOutput(t *testing.T) {
	e := Exec{Name: "op", Command: []string{"sh", "-c", `sleep 30 & echo value`, "h"}, Timeout: 5 * time.Second, Log: zerolog.Nop()}
	out, _, err := e.Fetch(context.Background(), "x")
	if err != nil || strings.TrimSpace(string(out)) != "value" {
		t.Errorf("got %q, %v; want the value", out, err)
	}
}
