package test

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// TestProcessKeepsItsName: till serve executes itself again at start (for
// its timer slack); ps, top and pgrep -x must still show it as till.
func TestProcessKeepsItsName(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	tl := startTill(t, "", nil, "")
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(tl.cmd.Process.Pid) + "/comm")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(comm)); got != "till" {
		t.Errorf("process name: got %q, want %q", got, "till")
	}
}
