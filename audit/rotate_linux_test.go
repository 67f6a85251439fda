package audit

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// A rotation whose renames were done and whose open of the new file
// failed (no file descriptor left) is finished later without moving the
// files again, which dropped the oldest at every try: the trail keeps as
// many of the last records as its files hold, those written during the
// failure included.
func TestRotationWhoseOpenFailed(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	var failures int
	s, err := Open(Options{Path: path, MaxSize: 4096, MaxFiles: 3, Fsync: FsyncNone, OnError: func(error, []byte) { failures++ }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pad := strings.Repeat("x", 900) // three records a file
	rec := func(id string) []byte {
		return []byte(`{"level":"info","event":"request","id":"` + id + `","pad":"` + pad + "\"}\n")
	}
	for _, id := range strings.Split("A B C D E F G H I J K L", " ") { // the file and .1 to .3 full
		s.Write(rec(id))
	}

	// No descriptor left: the rotation's open fails.
	var limit syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &limit); err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: uint64(len(fds) + 20), Max: limit.Max}); err != nil {
		t.Fatal(err)
	}
	var hog []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		hog = append(hog, f)
	}
	for _, id := range []string{"late0", "late1", "late2"} {
		s.Write(rec(id))
	}
	for _, f := range hog {
		f.Close()
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &limit); err != nil {
		t.Fatal(err)
	}
	if failures == 0 {
		t.Fatal("the open never failed: the test did not use up the descriptors")
	}
	s.Write(rec("after"))
	s.Close()

	var got []string
	re := regexp.MustCompile(`"id":"([^"]+)"`)
	for _, name := range []string{"audit.log.3", "audit.log.2", "audit.log.1", "audit.log"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			got = append(got, m[1])
		}
	}
	// Four files of three records hold the last twelve written: only
	// rotations as many as the records called for dropped any.
	if want := "E F G H I J K L late0 late1 late2 after"; strings.Join(got, " ") != want {
		t.Errorf("the trail holds %v, want %s", got, want)
	}
}
