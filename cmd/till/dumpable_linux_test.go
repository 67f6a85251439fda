package main

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestNoCoreDumps(t *testing.T) {
	// A core size limit above 0 to start from, as most shells leave it
	// (root may raise it; others keep what they have).
	raised := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 1 << 20, Max: 1 << 20}) == nil
	if err := noCoreDumps(); err != nil {
		t.Fatal(err)
	}
	if v := dumpable(t); v != 0 {
		t.Errorf("PR_GET_DUMPABLE: got %d, want 0", v)
	}
	var core unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &core); err != nil {
		t.Fatal(err)
	}
	if !raised {
		t.Log("could not raise RLIMIT_CORE first: the check below proves less")
	}
	if core.Cur != 0 || core.Max != 0 {
		t.Errorf("RLIMIT_CORE: got %d/%d, want 0/0 (a core written despite PR_SET_DUMPABLE, as with suid_dumpable=2, would hold the keys)", core.Cur, core.Max)
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
