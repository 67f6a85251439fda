package test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startTillAuditPipe runs till serve in dir with its stdout (the audit
// sink) on a pipe, copied into tl.stdout until closeAudit closes the
// pipe's end that reads: from then on every audit write fails, as it does
// when a container's log driver goes away.
func startTillAuditPipe(t *testing.T, dir, caFile string) (tl *till, closeAudit func(), err error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	tl = &till{t: t, dir: dir, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	tl.cmd = exec.Command(tillBin, "serve", "--listen", "127.0.0.1:0")
	tl.cmd.Dir = dir
	env := []string{}
	if caFile != "" {
		env = append(env, "SSL_CERT_FILE="+caFile)
	}
	tl.cmd.Env = tillEnv(env...)
	tl.cmd.Stdout, tl.cmd.Stderr = w, tl.stderr
	if err := tl.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	copied := make(chan struct{})
	go func() { io.Copy(tl.stdout, r); close(copied) }()
	go func() { tl.exit = tl.cmd.Wait(); close(tl.done) }()
	closeAudit = func() { r.Close(); <-copied }
	t.Cleanup(tl.stop)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if tl.addr = tl.logged("till listening", "addr"); tl.addr != "" {
			return tl, closeAudit, nil
		}
		select {
		case <-tl.done:
			return nil, nil, fmt.Errorf("%w: %v\n%s", errExited, tl.exit, tl.stderr.String())
		default:
		}
	}
	t.Fatalf("till did not listen\n%s", tl.stderr.String())
	return nil, nil, nil
}

// TestHealthCommand drives `till health` against a running till: exit 0
// while /readyz answers 200, 1 with one line on stderr when it answers 503
// (audit sink failing) or when nothing listens. With no --url it asks the
// config's admin.listen, as the image's HEALTHCHECK does.
func TestHealthCommand(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := t.TempDir()
	setSecret(t, dir, "openai", openaiKey)

	// The default URL needs a fixed admin port: one found free, tried
	// again if another process takes it first.
	var (
		tl         *till
		closeAudit func()
		admin      string
	)
	for try := 1; ; try++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		admin = ln.Addr().String()
		ln.Close()
		cfg := fmt.Sprintf("version: 1\nadmin: {listen: %s}\naudit: {file: \"-\"}\nroutes:\n  - {name: openai, preset: openai, upstream: %q}\n", admin, u.URL)
		if err := os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		tl, closeAudit, err = startTillAuditPipe(t, dir, u.caFile)
		if err == nil {
			break
		}
		if try == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
	}
	if got := tl.adminAddr(); got != admin {
		t.Fatalf("admin listener on %s, want %s", got, admin)
	}
	health := func(want int, args ...string) (string, string) {
		t.Helper()
		out, errOut, code := runTill(t, dir, "", nil, append([]string{"health"}, args...)...)
		if code != want {
			t.Fatalf("till health %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out, errOut)
		}
		if want == 1 && strings.Count(errOut, "\n") != 1 {
			t.Errorf("till health %s: want one line of reason on stderr, got %q", strings.Join(args, " "), errOut)
		}
		return out, errOut
	}

	if out, _ := health(0); !strings.Contains(out, "http://"+admin+"/readyz: ready") {
		t.Errorf("till health (admin.listen): stdout %q", out)
	}
	health(0, "--url", "http://"+admin)
	health(0, "--url", "http://"+admin+"/readyz")
	// The apps' proxy settings do not reach till's own probe.
	if out, errOut, code := runTill(t, dir, "", []string{"HTTP_PROXY=http://127.0.0.1:1", "http_proxy=http://127.0.0.1:1", "NO_PROXY="}, "health"); code != 0 {
		t.Errorf("till health with HTTP_PROXY set: exit %d\n%s%s", code, out, errOut)
	}
	if resp, _ := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil)); resp.StatusCode != 200 {
		t.Fatalf("got %d before the audit sink fails", resp.StatusCode)
	}

	// The audit sink fails: requests get 503 audit_unavailable, and so
	// does /readyz.
	closeAudit()
	resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
	if resp.StatusCode != 503 || tillError(t, resp, body) != "audit_unavailable" {
		t.Fatalf("with the audit sink failing: got %d %s, want 503 audit_unavailable", resp.StatusCode, body)
	}
	_, errOut := health(1)
	if !strings.Contains(errOut, "till: error: http://"+admin+"/readyz: 503 Service Unavailable: audit sink failing") {
		t.Errorf("till health while the audit sink fails: stderr %q", errOut)
	}
	health(1, "--url", "http://"+admin)

	// Admin listener down: till stopped.
	tl.stop()
	if _, errOut := health(1); !strings.Contains(errOut, "connection refused") {
		t.Errorf("till health with nothing listening: stderr %q", errOut)
	}
}

// TestReadyWhileAuditFileImmutable: an audit file made immutable
// (chattr +i) while till is idle turns /readyz to 503 before any request
// comes, requests get 503 audit_unavailable with no key sent, and both
// recover once the file takes writes again.
func TestReadyWhileAuditFileImmutable(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := t.TempDir()
	setSecret(t, dir, "openai", openaiKey)
	cfg := fmt.Sprintf("version: 1\nadmin: {listen: 127.0.0.1:0}\naudit: {file: audit.log}\nroutes:\n  - {name: openai, preset: openai, upstream: %q}\n", u.URL)
	if err := os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	tl := startTillIn(t, dir, u.caFile)
	admin := tl.adminAddr()
	ready := func() int { return readyz(t, admin) }
	get := func() int {
		resp, _ := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
		return resp.StatusCode
	}
	if got := get(); got != 200 {
		t.Fatalf("before: got %d", got)
	}
	auditFile := filepath.Join(dir, "audit.log")
	if out, err := exec.Command("chattr", "+i", auditFile).CombinedOutput(); err != nil {
		t.Skipf("chattr +i: %v %s (needs root and a file system that has the flag)", err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", auditFile).Run() })
	sent := len(u.requests())
	waitFor(t, 5*time.Second, "/readyz 503 with the audit file immutable, idle", func() bool { return ready() == 503 })
	if got := get(); got != 503 {
		t.Errorf("with the audit file immutable: got %d, want 503", got)
	}
	if n := len(u.requests()); n != sent {
		t.Errorf("%d request(s) reached the upstream while the audit file took no writes", n-sent)
	}
	if err := exec.Command("chattr", "-i", auditFile).Run(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "/readyz 200 once the file takes writes", func() bool { return ready() == 200 })
	if got := get(); got != 200 {
		t.Errorf("after: got %d, want 200", got)
	}
}

// readyz is the status of GET /readyz on the admin listener at admin.
func readyz(t *testing.T, admin string) int {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
