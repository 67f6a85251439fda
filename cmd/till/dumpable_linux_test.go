package main

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestNoCoreDumps(t *testing.T) {
	if err := noCoreDumps(); err != nil {
		t.Fatal(err)
	}
	if v := dumpable(t); v != 0 {
		t.Errorf("PR_GET_DUMPABLE: got %d, want 0", v)
	}
}

// TestEveryCommandDisablesCoreDumps: not serve only, every command that
// may read a key (secret set holds one while it waits for the rest of
// stdin) makes the process non-dumpable before it starts.
func TestEveryCommandDisablesCoreDumps(t *testing.T) {
	c := newCLI(t)
	for _, args := range [][]string{{"secret", "set", "openai"}, {"secret", "list"}, {"check"}, {"help"}} {
		if err := unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0); err != nil {
			t.Fatal(err)
		}
		c.run(key+"\n", args...)
		if v := dumpable(t); v != 0 {
			t.Errorf("till %v left the process dumpable (%d)", args, v)
		}
	}
}

// dumpable returns the process's PR_GET_DUMPABLE.
func dumpable(t *testing.T) int {
	t.Helper()
	v, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
