package test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Operations: signals, stopping, audit files that move, vault leftovers.

// stopTime sends SIGTERM to tl and returns how long it took to exit 0.
func stopTime(t *testing.T, tl *till) time.Duration {
	t.Helper()
	start := time.Now()
	if err := tl.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tl.done:
	case <-time.After(15 * time.Second):
		t.Fatal("till did not stop within 15s of SIGTERM")
	}
	took := time.Since(start)
	if tl.exit != nil {
		t.Errorf("till exited with %v after SIGTERM, want 0", tl.exit)
	}
	return took
}

// TestIdleStopIsPrompt stops an idle till on SIGTERM, in reverse mode and
// in forward mode with an intercepted (HTTP/2) connection kept alive by
// its client: with nothing in flight, neither has anything to wait for.
func TestIdleStopIsPrompt(t *testing.T) {
	get := func(c *http.Client, url string) {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: got %d, want 200", url, resp.StatusCode)
		}
	}

	u := newUpstream(t, http.HandlerFunc(okHandler))
	rev := startTill(t, providerConfig(u, ""), providerSecrets, u.caFile)
	get(&http.Client{}, rev.url("/openai/v1/models")) // its connection stays open, idle
	reverse := stopTime(t, rev)

	f := startForward(t, "deny", false, false)
	c := f.goClient(t)
	get(c, f.providerURL+"/v1/models")
	forward := stopTime(t, f.tl)
	t.Logf("idle stop: reverse %v, forward with an intercepted connection %v", reverse.Round(time.Millisecond), forward.Round(time.Millisecond))
	// Both take well under 100 ms when nothing waits; the bound is
	// generous for a loaded machine, and far under the second that a
	// lingering connection costs.
	for mode, took := range map[string]time.Duration{"reverse": reverse, "forward": forward} {
		if took > 700*time.Millisecond {
			t.Errorf("%s mode: an idle till took %v to stop, want under 700ms", mode, took.Round(time.Millisecond))
		}
	}
}

// TestShutdownCutRecordsSayShutdown stops till while a request waits for
// its upstream longer than the grace period: till cuts it, and its record
// says so (499, reason shutdown), not that the app went away.
func TestShutdownCutRecordsSayShutdown(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // till cuts it
	}))
	tl := startTill(t, providerConfig(u, "shutdown_grace: 300ms\n"), providerSecrets, u.caFile)
	go http.Get(tl.url("/openai/v1/models"))
	waitFor(t, 10*time.Second, "the request to reach the upstream", func() bool { return len(u.requests()) > 0 })
	stopTime(t, tl)
	recs := tl.audit()
	if len(recs) != 1 || recs[0]["status"] != 499.0 || recs[0]["reason"] != "shutdown" || recs[0]["outcome"] != "error" {
		t.Errorf("audit after a shutdown cut a request: got %v, want one record with status 499, outcome error, reason shutdown", recs)
	}
}

// TestSignalsAtStart sends SIGHUP or SIGUSR1 the moment till says it
// listens, 200 times: till must reload (or reopen its audit file) and
// keep serving, never die of the signal's default action.
func TestSignalsAtStart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts till 200 times")
	}
	const tries, parallel = 200, 4
	dir := t.TempDir() // no config: built-in defaults
	signals := []struct {
		sig  syscall.Signal
		done string // what till logs once it handled sig
	}{{syscall.SIGHUP, `"message":"reloaded"`}, {syscall.SIGUSR1, `"message":"reopened the audit file"`}}
	try := func(i int) error {
		s := signals[i%len(signals)]
		cmd := exec.Command(tillBin, "serve", "--listen", "127.0.0.1:0")
		cmd.Dir, cmd.Env = dir, tillEnv()
		stderr, err := cmd.StderrPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		// A signal that till ignores would leave it running.
		kill := time.AfterFunc(10*time.Second, func() { _ = cmd.Process.Kill() })
		defer kill.Stop()
		sc := bufio.NewScanner(stderr)
		handled := false
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, `"message":"till listening"`) {
				_ = cmd.Process.Signal(s.sig)
			}
			if strings.Contains(line, s.done) {
				handled = true
				_ = cmd.Process.Signal(syscall.SIGTERM)
			}
		}
		err = cmd.Wait()
		if !handled || err != nil {
			return fmt.Errorf("%v right after \"till listening\": handled %v, exit %v", s.sig, handled, err)
		}
		return nil
	}
	var mu sync.Mutex
	var failed []string
	var wg sync.WaitGroup
	next := make(chan int)
	for range parallel {
		wg.Go(func() {
			for i := range next {
				if err := try(i); err != nil {
					mu.Lock()
					failed = append(failed, err.Error())
					mu.Unlock()
				}
			}
		})
	}
	for i := range tries {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(failed) > 0 {
		t.Errorf("%d of %d tries failed, e.g.: %s", len(failed), tries, failed[0])
	}
}

// auditIDs returns the ids of the records in an audit file.
func auditIDs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read the audit file: %v", err)
	}
	suiteLeaks.text(path, string(b))
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var r auditRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%s: line %q is not a record", path, line)
		}
		if r["event"] == "request" {
			ids = append(ids, r["id"].(string))
		}
	}
	return ids
}

// TestAuditFileFollowed removes and renames the audit file while till
// serves, as rm and logrotate do: every record must be in a file that can
// be read, and the records after each move in a new file at the path
// (mode 0600). SIGUSR1 reopens the file on demand.
func TestAuditFileFollowed(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	tl := startTill(t, providerConfig(u, "audit: {file: audit.log}\n"), providerSecrets, u.caFile)
	path := filepath.Join(tl.dir, "audit.log")
	get := func() string {
		t.Helper()
		resp, _ := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
		if resp.StatusCode != 200 {
			t.Fatalf("got %d, want 200", resp.StatusCode)
		}
		return resp.Header.Get("X-Till-Request-Id")
	}
	check := func(file string, want ...string) {
		t.Helper()
		if got := auditIDs(t, file); !slices.Equal(got, want) {
			t.Errorf("%s: got records %v, want %v", filepath.Base(file), got, want)
		}
	}
	first := get()

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	afterRm := []string{get(), get()}
	check(path, afterRm...)

	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	// The use record of the next request goes into the renamed file,
	// and the records after it to a new one at the path.
	intoRenamed, afterMv := get(), get()
	check(path+".1", afterRm...)
	check(path, intoRenamed, afterMv)

	if err := os.Rename(path, path+".2"); err != nil {
		t.Fatal(err)
	}
	tl.cmd.Process.Signal(syscall.SIGUSR1)
	if !tl.waitLog("reopened the audit file") {
		t.Fatalf("no reopen logged after SIGUSR1:\n%s", tl.stderr.String())
	}
	afterReopen := get()
	check(path+".2", intoRenamed, afterMv)
	check(path, afterReopen)
	// The files chain, oldest first, from the file made after the rm.
	out, errOut, code := runTill(t, tl.dir, "", nil, "audit", "verify", path+".1", path+".2", path)
	if code != 0 || !strings.Contains(out, "ok: ") || !strings.Contains(out, "follows audit.log") {
		t.Errorf("till audit verify: exit %d\n%s%s", code, out, errOut)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("the new audit file: %v, mode %v, want 0600", err, st.Mode().Perm())
	}
	_ = first // in the removed file: rm is the operator's to answer for
}

// TestCommandsRemoveVaultLeftovers leaves a temp file beside the vault, as
// a secret set killed before its rename does (an encrypted copy of an
// older vault, holding keys since rotated): every command that opens the
// vault removes it.
func TestCommandsRemoveVaultLeftovers(t *testing.T) {
	dir := t.TempDir()
	setSecret(t, dir, "openai", openaiKey)
	leftover := filepath.Join(dir, ".till.vault.tmp-4242")
	leave := func() {
		t.Helper()
		if err := os.WriteFile(leftover, []byte("an older vault"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"secret", "list"}, {"check"}, {"test", "GET", "/openai/v1/models"}} {
		leave()
		runTill(t, dir, "", nil, args...)
		if _, err := os.Stat(leftover); err == nil {
			t.Errorf("till %s left the vault's temp file in place", strings.Join(args, " "))
		}
	}
	leave()
	startTillIn(t, dir, "")
	if _, err := os.Stat(leftover); err == nil {
		t.Error("till serve left the vault's temp file in place")
	}
}

// TestSecondSignalCutsAtOnce sends SIGTERM, then SIGINT (a second
// Ctrl-C, a supervisor that will not wait) while a request waits for its
// upstream and the grace period has an hour to run: till must cut the
// request at once and stop, its record saying shutdown, rather than make
// the operator reach for SIGKILL, which would lose that record.
func TestSecondSignalCutsAtOnce(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // till cuts it
	}))
	tl := startTill(t, providerConfig(u, "shutdown_grace: 1h\n"), providerSecrets, u.caFile)
	go http.Get(tl.url("/openai/v1/models"))
	waitFor(t, 10*time.Second, "the request to reach the upstream", func() bool { return len(u.requests()) > 0 })
	if err := tl.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !tl.waitLog(`"message":"shutting down: letting requests in flight finish"`) {
		t.Fatalf("till did not start its shutdown:\n%s", tl.stderr.String())
	}
	if err := tl.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tl.done:
	case <-time.After(20 * time.Second):
		t.Fatal("till still waits out its hour of grace after a second signal")
	}
	if tl.exit != nil {
		t.Errorf("till exited with %v, want 0", tl.exit)
	}
	recs := tl.audit()
	if len(recs) != 1 || recs[0]["status"] != 499.0 || recs[0]["reason"] != "shutdown" {
		t.Errorf("audit after a second signal: got %v, want one record with status 499, reason shutdown", recs)
	}
}

// TestShutdownClosesInterceptedConnections stops till while a reverse
// request streams (so the listener's own shutdown waits for it), with an
// app's intercepted connection idle between two requests: till must tell
// that connection at once, as net/http tells its own keep-alive ones,
// that it takes no more requests (it closes it), not keep taking key
// uses on it, started after SIGTERM, until the stream ends, which then
// get cut at the end of the grace period.
func TestShutdownClosesInterceptedConnections(t *testing.T) {
	f := startForward(t, "deny", false, false, "shutdown_grace: 1h\n")
	gate, query := newSSEGate(t)
	stream, err := http.Get(f.tl.url("/provider/sse" + query))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	if stream.StatusCode != 200 {
		t.Fatalf("reverse stream: %d", stream.StatusCode)
	}
	first := make([]byte, len("data: first\n\n"))
	if _, err := io.ReadFull(stream.Body, first); err != nil {
		t.Fatal(err)
	}
	var ended atomic.Bool
	go func() {
		io.Copy(io.Discard, stream.Body)
		ended.Store(true)
	}()

	// An app's intercepted connection, idle after one request.
	target := strings.TrimPrefix(f.providerURL, "https://")
	c, br, resp := connect(t, f.tl.addr, target)
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT %s: %d", target, resp.StatusCode)
	}
	pem, err := os.ReadFile(f.caBundle)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	tc := tls.Client(&bufConn{Conn: c, r: br}, &tls.Config{RootCAs: roots, ServerName: "api.provider.test", NextProtos: []string{"http/1.1"}})
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(tc, "GET /v1/models HTTP/1.1\r\nHost: %s\r\n\r\n", target)
	tr := bufio.NewReader(tc)
	inner, err := http.ReadResponse(tr, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, inner.Body)
	inner.Body.Close()
	if inner.StatusCode != 200 || inner.Close {
		t.Fatalf("intercepted request: %d, close %v", inner.StatusCode, inner.Close)
	}

	if err := f.tl.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("the idle intercepted connection after SIGTERM: read %v, want EOF", err)
	}
	if ended.Load() {
		t.Error("the intercepted connection stayed open, taking requests, until the reverse stream ended")
	}
	close(gate.seen)
	select {
	case <-f.tl.done:
	case <-time.After(20 * time.Second):
		t.Fatal("till did not stop once the stream ended")
	}
}

// bufConn reads through r, which may hold bytes read ahead of c.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// interceptedConn opens an intercepted connection to f's provider, as an
// app's HTTP/1.1 client does, and returns it with its reader.
func interceptedConn(t *testing.T, f *forwardEnv) (*tls.Conn, *bufio.Reader, string) {
	t.Helper()
	target := strings.TrimPrefix(f.providerURL, "https://")
	c, br, resp := connect(t, f.tl.addr, target)
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT %s: %d", target, resp.StatusCode)
	}
	pem, err := os.ReadFile(f.caBundle)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	tc := tls.Client(&bufConn{Conn: c, r: br}, &tls.Config{RootCAs: roots, ServerName: "api.provider.test", NextProtos: []string{"http/1.1"}})
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return tc, bufio.NewReader(tc), target
}

// TestShutdownCutsStalledInterceptedUploads stops till while apps'
// uploads inside intercepted connections stall (their bodies half sent):
// once the grace period is over, till must cut them and write their
// records before the audit closes. Reading a body heeds no cut, only a
// closed connection ends it, and till closed intercepted connections only
// after it had waited 5 s more for those requests to end, in vain: its
// stop overran the grace period by that much, and their records raced
// the audit's close.
func TestShutdownCutsStalledInterceptedUploads(t *testing.T) {
	const uploads = 4
	f := startForward(t, "deny", false, false, "shutdown_grace: 200ms\n")
	for range uploads {
		tc, tr, target := interceptedConn(t, f)
		fmt.Fprintf(tc, "POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n", target)
		// net/http says 100 Continue once the handler reads the body.
		resp, err := http.ReadResponse(tr, nil)
		if err != nil || resp.StatusCode != 100 {
			t.Fatalf("the upload's 100 Continue: %v %v", resp, err)
		}
		io.WriteString(tc, `{"model":`)
	}
	if err := f.tl.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.tl.done:
	case <-time.After(30 * time.Second):
		t.Fatal("till did not stop")
	}
	if recs := f.tl.audit(); len(recs) != uploads {
		t.Errorf("%d records of the %d stalled uploads cut at shutdown:\n%s", len(recs), uploads, f.tl.stdout.String())
	}
	for _, r := range f.tl.audit() {
		if r["status"] != 499.0 || r["reason"] != "shutdown" {
			t.Errorf("a stalled upload cut at shutdown: status %v reason %v, want 499 shutdown", r["status"], r["reason"])
		}
	}
	// The grace period's end finds them in flight; the cut must end them.
	if n := strings.Count(f.tl.logged("cut the requests still in flight (reason shutdown in their records)", "error"), "still in flight"); n != 1 {
		t.Errorf("requests still in flight after they were cut (the audit closed before their records):\n%s", f.tl.stderr.String())
	}
}
