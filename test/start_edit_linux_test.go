package test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestEditWhileStartingIsServed: an edit of the config that lands while
// till starts, after it read the config and while it decrypts its
// passphrase vault (scrypt takes most of a second), is a change the
// reload watch sees: the config as edited is served, not the one read at
// start until the next edit.
func TestEditWhileStartingIsServed(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := t.TempDir()
	path := filepath.Join(dir, "till.yaml")
	cfg := fmt.Sprintf("version: 1\nroutes:\n  - name: openai\n    preset: openai\n    upstream: %s\n", u.URL)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"TILL_PASSPHRASE=passphrase-for-a-slow-first-decrypt"}
	suiteLeaks.key(openaiKey)
	if out, errOut, code := runTill(t, dir, openaiKey, env, "secret", "set", "openai"); code != 0 {
		t.Fatalf("till secret set: exit %d\n%s%s", code, out, errOut)
	}

	// The edit is written as soon as till has read the config: while it
	// decrypts the vault.
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		t.Skipf("inotify: %v", err)
	}
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_CLOSE_NOWRITE); err != nil {
		unix.Close(fd)
		t.Skipf("inotify: %v", err)
	}
	edited := make(chan error, 1)
	go func() {
		defer unix.Close(fd)
		buf := make([]byte, 4096)
		_, err := unix.Read(fd, buf) // till closed the config it read
		if err == nil {
			err = os.WriteFile(path, []byte(cfg+"  - name: second\n    preset: openai\n    upstream: "+u.URL+"\n    secret: openai\n"), 0o644)
		}
		edited <- err
	}()
	tl := startTillCmd(t, dir, u.caFile, nil, env, "serve", "--listen", "127.0.0.1:0")
	select {
	case err := <-edited:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("till never read its config")
	}
	for line := range strings.Lines(tl.stderr.String()) {
		if strings.Contains(line, `"message":"till listening"`) && !strings.Contains(line, `"routes":1`) {
			t.Fatalf("setup: the edit landed before till read its config: %s", line)
		}
	}
	served := false
	for deadline := time.Now().Add(5 * time.Second); !served && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, _ := do(t, newRequest(t, "GET", tl.url("/second/v1/models"), nil))
		served = resp.StatusCode == http.StatusOK
	}
	if !served {
		t.Errorf("the route added while till started is not served 5 s later: the edit was missed\n%s", tl.stderr.String())
	}
}
