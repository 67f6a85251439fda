//go:build unix

package main

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// TestAdminTokenOnlyThroughPrivateSocket: with admin.listen: unix:PATH,
// health, usage and test ask the socket; TILL_ADMIN_TOKEN goes through it
// only when its folder is writable by its owner alone. In a shared folder
// another user could have put a socket of their own at that name while
// till was down, and would be sent the token; under a shared folder they
// could move the private one away. till check refuses such a folder as
// serve does.
func TestAdminTokenOnlyThroughPrivateSocket(t *testing.T) {
	const token = "admin-token-0123456789abcdef"
	c := newCLI(t)
	c.env["TILL_ADMIN_TOKEN"] = token
	run := filepath.Join(c.dir, "run")
	os.Mkdir(run, 0o755)
	if err := os.Chmod(run, 0o777); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", filepath.Join(run, "admin.sock"))
	if err != nil {
		t.Fatal(err)
	}
	var sent atomic.Value
	sent.Store("")
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := r.Header.Get("Authorization"); a != "" {
			sent.Store(a)
		}
		if r.URL.Path == "/readyz" {
			w.Write([]byte(`{"status":"ready"}`))
			return
		}
		w.Write([]byte(`[]`))
	}))
	defer ln.Close()
	os.WriteFile("till.yaml", []byte("version: 1\nadmin: {listen: \"unix:run/admin.sock\", token_sha256: "+sha256Hex(token)+"}\nroutes: []\nbudgets: [{name: daily, window: day, requests: 5}]\n"), 0o644)

	_, errOut, code := c.run("", "usage")
	if code != 1 || sent.Load() != "" || !strings.Contains(errOut, "TILL_ADMIN_TOKEN not sent") {
		t.Fatalf("usage through a socket in a folder of mode 0777: exit %d, token sent: %q: %s", code, sent.Load(), errOut)
	}
	if strings.Contains(errOut, token) {
		t.Errorf("the refusal shows the token: %s", errOut)
	}
	if _, errOut, code := c.run("", "check"); code != 1 || !strings.Contains(errOut, "writable by its group or others") {
		t.Errorf("check of a socket in a shared folder: exit %d: %s", code, errOut)
	}
	if out, errOut, code := c.run("", "health"); code != 0 || !strings.Contains(out, "ready") {
		t.Errorf("health through the socket (no token sent): exit %d: %s%s", code, out, errOut)
	}

	if err := os.Chmod(run, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"usage"}, {"usage", "--url", "unix:run/admin.sock"}} {
		sent.Store("")
		if _, errOut, code := c.run("", args...); code != 0 || sent.Load() != "Bearer "+token {
			t.Errorf("%s through a private folder's socket: exit %d, token sent: %q: %s", args, code, sent.Load(), errOut)
		}
	}

	// A private folder under a shared one: another user could move it
	// away and put a folder and socket of their own in its place.
	if err := os.Mkdir("shared", 0o755); err != nil || os.Chmod("shared", 0o777) != nil || os.Rename(run, filepath.Join("shared", "run")) != nil {
		t.Fatal("cannot move run into a shared folder")
	}
	sent.Store("")
	_, errOut, code = c.run("", "usage", "--url", "unix:shared/run/admin.sock")
	if code != 1 || sent.Load() != "" || !strings.Contains(errOut, "TILL_ADMIN_TOKEN not sent") || !strings.Contains(errOut, "on the way to") {
		t.Errorf("usage through a socket under a shared folder: exit %d, token sent: %q: %s", code, sent.Load(), errOut)
	}
}
