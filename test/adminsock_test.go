//go:build unix

package test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAdminSocket: admin.listen: unix:PATH serves the admin endpoints on
// a socket of mode 0600 that the CLI asks (health, usage with
// TILL_ADMIN_TOKEN), so no other local process can stand in for till
// while it is down and be sent the token, as one can on a loopback port.
// A second till is refused the socket while the first answers on it,
// naming the path and the first till's pid; a socket (and lock file) left
// by a killed till is taken over; a stopped till removes both.
func TestAdminSocket(t *testing.T) {
	const token = "admin-token-0123456789abcdef"
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	setSecret(t, dir, "openai", openaiKey)
	cfg := fmt.Sprintf("version: 1\nadmin: {listen: \"unix:admin.sock\", token_sha256: %x}\naudit: {file: \"-\"}\n"+
		"budgets: [{name: daily, window: day, requests: 5}]\nroutes:\n  - {name: openai, preset: openai, upstream: %q}\n", sha256.Sum256([]byte(token)), u.URL)
	if err := os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "admin.sock")
	tl := startTillIn(t, dir, u.caFile)
	if got := tl.adminAddr(); got != sock {
		t.Fatalf("admin listener on %q, want %q", got, sock)
	}
	if st, err := os.Lstat(sock); err != nil || st.Mode().Type() != os.ModeSocket || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket: %v, %v; want a socket of mode 0600", st.Mode(), err)
	}

	if out, errOut, code := runTill(t, dir, "", nil, "health"); code != 0 || !strings.Contains(out, "ready") {
		t.Errorf("till health: exit %d: %s%s", code, out, errOut)
	}
	if resp, _ := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil)); resp.StatusCode != 200 {
		t.Fatalf("a request through till: %d", resp.StatusCode)
	}
	if out, errOut, code := runTill(t, dir, "", []string{"TILL_ADMIN_TOKEN=" + token}, "usage", "--json"); code != 0 || !strings.Contains(out, `"budget": "daily"`) {
		t.Errorf("till usage: exit %d: %s%s", code, out, errOut)
	}
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	for auth, want := range map[string]int{"": 401, "bearer " + token: 200} {
		req := newRequest(t, "GET", "http://localhost/metrics", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET /metrics over the socket: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET /metrics over the socket, Authorization %q: %d, want %d", auth, resp.StatusCode, want)
		}
	}

	second, err := tryStartTillCmd(t, dir, u.caFile, nil, nil, "serve", "--listen", "127.0.0.1:0")
	if err == nil {
		second.stop()
		t.Fatal("a second till took the socket the first answers on")
	}
	if want := fmt.Sprintf("%q is in use by another till (pid %d)", sock, tl.cmd.Process.Pid); !strings.Contains(err.Error(), want) {
		t.Errorf("second till: %v; want an error saying %s", err, want)
	}

	// Killed, till leaves its socket behind; the next one takes it over.
	tl.cmd.Process.Kill()
	<-tl.done
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("no socket left by the killed till: %v", err)
	}
	tl = startTillIn(t, dir, u.caFile)
	tl.adminAddr()
	if _, errOut, code := runTill(t, dir, "", nil, "health"); code != 0 {
		t.Errorf("till health after a restart over a stale socket: exit %d: %s", code, errOut)
	}
	tl.stop()
	for _, p := range []string{sock, sock + ".lock"} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there after till stopped: %v", p, err)
		}
	}
}
