//go:build unix

package test

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAuditFileNamedPipeRefused: a named pipe at audit.file, there at
// start (a mistake: a log shipper's pipe) or put in the file's place
// later by whoever can write its folder, made serve take the first key
// use's record into the pipe and fail to cut it back (503), then write
// every kept record into it again at each retry, until its buffer
// filled: from then on every request hung on its use record, /readyz
// could not say why, and SIGTERM never ended till. check said ok. Now
// check and serve refuse it, and a pipe left at the path of a removed
// file gets 503 audit_unavailable, at once, until a file can be made.
func TestAuditFileNamedPipeRefused(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := t.TempDir()
	// Not *.log: the harness reads those when till stops, a pipe for good.
	tillDirIn(t, dir, providerConfig(u, "audit: {file: audit.jsonl}\n"))
	path := filepath.Join(dir, "audit.jsonl")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skip("no named pipes here:", err)
	}
	out, errOut, code := runTill(t, dir, "", nil, "check")
	if code != 1 || !strings.Contains(errOut, "not a regular file but a named pipe") || !strings.Contains(errOut, "audit.file: -") {
		t.Errorf("till check with audit.file a named pipe: exit %d, want 1 naming it and the hint\n%s%s", code, out, errOut)
	}
	if tl, err := tryStartTillCmd(t, dir, u.caFile, nil, nil, "serve", "--listen", "127.0.0.1:0"); !errors.Is(err, errExited) {
		if err == nil {
			tl.stop()
		}
		t.Errorf("till serve with audit.file a named pipe: %v, want it to exit before listening", err)
	}

	os.Remove(path)
	tl := startTillIn(t, dir, u.caFile)
	client := &http.Client{Timeout: 5 * time.Second}
	get := func(name string) (int, error) {
		resp, err := client.Get(tl.url("/openai/v1/models/" + name))
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if st, err := get("before"); st != 200 {
		t.Fatalf("before the pipe: %d %v", st, err)
	}
	os.Remove(path)
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range 200 { // past a pipe's buffer: its records are ~1 KB a request
		st, err := get(fmt.Sprint("piped-", i))
		if err != nil {
			t.Fatalf("request %d with a named pipe at the audit file's path: %v", i, err)
		}
		if st != 503 {
			t.Fatalf("request %d with a named pipe at the audit file's path: %d, want 503", i, st)
		}
	}
	tl.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-tl.done:
	case <-time.After(10 * time.Second):
		t.Error("till did not stop within 10 s of SIGTERM")
	}
}
