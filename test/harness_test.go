// Package test holds black-box end-to-end tests: they build ./cmd/till and
// drive the binary as a process, with real clients, against local TLS
// upstreams that record what they received.
package test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tillgw/till/test/internal/tillbin"
)

// tillBin is the binary under test, built once by TestMain.
var tillBin string

func TestMain(m *testing.M) {
	if os.Getenv("TILL_TEST_CHILD") != "" {
		os.Exit(m.Run()) // a client run as a child process needs no binary
	}
	bin, remove, err := tillbin.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tillBin = bin
	code := m.Run()
	if leaks := suiteLeaks.check(); leaks != "" {
		fmt.Fprintln(os.Stderr, "FAIL: keys leaked during the suite:\n"+leaks)
		code = 1
	}
	if races := tillbin.Races(bin); races != "" {
		fmt.Fprintln(os.Stderr, "FAIL: till found data races (TILL_E2E_RACE=1):\n"+races)
		code = 1
	}
	remove()
	os.Exit(code)
}

// suiteLeaks gathers, over the whole end-to-end suite, every key stored in
// a vault and everything till wrote or answered: stdout, stderr, audit
// files, every response (headers and body) read through do, metrics and
// admin answers included. TestMain fails the run if any key appears there,
// in clear, base64, URL-encoded or hex form.
var suiteLeaks = &leakLog{}

type leakLog struct {
	mu    sync.Mutex
	keys  map[string]bool
	texts []leakText
}

type leakText struct{ where, text string }

func (l *leakLog) key(k string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.keys == nil {
		l.keys = map[string]bool{}
	}
	for _, part := range keyParts(k) {
		l.keys[part] = true
	}
}

// keyParts is the secret itself, or each field value of a --json secret.
func keyParts(k string) []string {
	k = strings.TrimSuffix(k, "\n")
	var fields map[string]string
	if json.Unmarshal([]byte(k), &fields) == nil {
		var out []string
		for _, v := range fields {
			out = append(out, v)
		}
		return out
	}
	return []string{k}
}

func (l *leakLog) text(where, text string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.texts = append(l.texts, leakText{where, text})
}

func (l *leakLog) check() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var found strings.Builder
	for k := range l.keys {
		for _, form := range leakForms(k) {
			for _, t := range l.texts {
				if strings.Contains(t.text, form) {
					fmt.Fprintf(&found, "  a form of a %d-character key in %s\n", len(k), t.where)
				}
			}
		}
	}
	return found.String()
}

// seen is one request as an upstream received it.
type seen struct {
	Proto  int // HTTP major version
	Method string
	Host   string
	Path   string
	Query  url.Values
	Header http.Header
	Body   []byte
}

// upstream is a local TLS server that records every request it receives.
type upstream struct {
	*httptest.Server
	caFile string
	mu     sync.Mutex
	got    []seen
}

// newUpstream starts a TLS (HTTP/2-capable) server running h behind a
// recorder, and writes its certificate where SSL_CERT_FILE can name it.
func newUpstream(t *testing.T, h http.Handler) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server, u.caFile = newTLSServer(t, u.recorder(h))
	return u
}

// recorder records each request, then lets h answer it.
func (u *upstream) recorder(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.got = append(u.got, seen{r.ProtoMajor, r.Method, r.Host, r.URL.Path, r.URL.Query(), r.Header.Clone(), body})
		u.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(w, r)
	})
}

// newHTTPServer starts a plain-HTTP server running h.
func newHTTPServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// plainUpstreams makes the suite's upstreams plain HTTP (TILL_TEST_UPSTREAM
// =http): till sends to those through its own HTTP/1.1 transport, to https
// ones through net/http's, and CI runs the suite both ways.
var plainUpstreams = os.Getenv("TILL_TEST_UPSTREAM") == "http"

// needsTLSUpstream skips a test about TLS upstreams when they are plain.
func needsTLSUpstream(t *testing.T) {
	t.Helper()
	if plainUpstreams {
		t.Skip("about TLS upstreams; TILL_TEST_UPSTREAM=http")
	}
}

// newTLSServer starts a TLS (HTTP/2-capable) server running h and returns
// it with a file holding its certificate, for SSL_CERT_FILE. Under
// TILL_TEST_UPSTREAM=http the server is plain HTTP.
func newTLSServer(t *testing.T, h http.Handler) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	t.Cleanup(srv.Close)
	if plainUpstreams {
		srv.Start()
		return srv, ""
	}
	srv.EnableHTTP2 = true
	srv.StartTLS()
	caFile := filepath.Join(t.TempDir(), "upstream-ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return srv, caFile
}

func (u *upstream) requests() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seen(nil), u.got...)
}

func (u *upstream) last(t *testing.T) seen {
	t.Helper()
	got := u.requests()
	if len(got) == 0 {
		t.Fatal("upstream received no request")
	}
	return got[len(got)-1]
}

// till is one running till process and everything it printed.
type till struct {
	t      *testing.T
	dir    string
	addr   string
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{}
	exit   error
	// recorded is set once its output went to the suite's leak check.
	recorded bool
}

// syncBuffer is a bytes.Buffer safe for a process to write while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// tillEnv is the environment every till process runs with: none of the
// caller's TILL_ variables or proxies.
func tillEnv(extra ...string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	env = append(env, tillbin.Env()...)
	return append(env, extra...)
}

// runTill runs a till subcommand to completion in dir.
func runTill(t *testing.T, dir, stdin string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(tillBin, args...)
	cmd.Dir = dir
	cmd.Env = tillEnv(env...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	suiteLeaks.text("till "+strings.Join(args, " ")+" stdout", o.String())
	suiteLeaks.text("till "+strings.Join(args, " ")+" stderr", e.String())
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run till %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// setSecret stores a secret in dir's vault through the CLI, as a user would.
func setSecret(t *testing.T, dir, name, value string, args ...string) {
	t.Helper()
	suiteLeaks.key(value)
	out, errOut, code := runTill(t, dir, value, nil, append([]string{"secret", "set", name}, args...)...)
	if code != 0 {
		t.Fatalf("till secret set %s: exit %d\n%s%s", name, code, out, errOut)
	}
}

// startTill writes config (if not empty) into a temp folder with the given
// secrets and runs till serve on a free port, with the upstream's CA as the
// only trusted root.
func startTill(t *testing.T, config string, secrets map[string]string, caFile string) *till {
	t.Helper()
	dir := t.TempDir()
	if config != "" {
		if err := os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, value := range secrets {
		if strings.HasPrefix(value, "{") {
			setSecret(t, dir, name, value, "--json")
		} else {
			setSecret(t, dir, name, value)
		}
	}
	return startTillIn(t, dir, caFile)
}

// startTillIn runs till serve in dir, whose till.yaml and vault are ready,
// on a free port.
func startTillIn(t *testing.T, dir, caFile string, extraEnv ...string) *till {
	t.Helper()
	return startTillCmd(t, dir, caFile, nil, extraEnv, "serve", "--listen", "127.0.0.1:0")
}

// startTillCmd runs till with args in dir, behind the wrapper command
// (nil for none), and waits for it to log its address.
func startTillCmd(t *testing.T, dir, caFile string, wrapper, extraEnv []string, args ...string) *till {
	t.Helper()
	tl, err := tryStartTillCmd(t, dir, caFile, wrapper, extraEnv, args...)
	if err != nil {
		t.Fatal(err)
	}
	return tl
}

// errExited is the error of a till that exited before it listened.
var errExited = errors.New("till exited before listening")

// tryStartTillCmd is startTillCmd, returning an error wrapping errExited
// when till exits before it listens (a port taken, say).
func tryStartTillCmd(t *testing.T, dir, caFile string, wrapper, extraEnv []string, args ...string) (*till, error) {
	t.Helper()
	tl := &till{t: t, dir: dir, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	env := extraEnv
	if caFile != "" {
		env = append(env, "SSL_CERT_FILE="+caFile)
	}
	argv := append(append(append([]string(nil), wrapper...), tillBin), args...)
	tl.cmd = exec.Command(argv[0], argv[1:]...)
	tl.cmd.Dir = dir
	tl.cmd.Env = tillEnv(env...)
	tl.cmd.Stdout = tl.stdout
	tl.cmd.Stderr = tl.stderr
	if err := tl.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { tl.exit = tl.cmd.Wait(); close(tl.done) }()
	t.Cleanup(tl.stop)

	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if tl.addr = tl.logged("till listening", "addr"); tl.addr != "" {
			return tl, nil
		}
		select {
		case <-tl.done:
			return nil, fmt.Errorf("%w: %v\nstderr:\n%s", errExited, tl.exit, tl.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("till did not log its address\nstderr:\n%s", tl.stderr.String())
	return nil, nil
}

// logged returns the field of the first operational log line (stderr)
// whose message is msg, or "" when there is none yet.
func (tl *till) logged(msg, field string) string {
	for _, line := range strings.Split(tl.stderr.String(), "\n") {
		var ev map[string]any
		if json.Unmarshal([]byte(line), &ev) == nil && ev["message"] == msg {
			v, _ := ev[field].(string)
			return v
		}
	}
	return ""
}

// adminAddr waits for till to log the address its admin listener bound,
// and returns it. Configs say "admin: {listen: 127.0.0.1:0}": a port found
// free beforehand could be taken by another process before till binds it.
func (tl *till) adminAddr() string {
	tl.t.Helper()
	var addr string
	waitFor(tl.t, 10*time.Second, "the admin listener's address in the log", func() bool {
		addr = tl.logged("admin listening", "admin_addr")
		return addr != ""
	})
	return addr
}

// waitFor waits until cond holds, checking it every few milliseconds, and
// fails the test if it does not within timeout. what says what cond waits
// for.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", timeout, what)
		}
	}
}

// recordOutput hands what the process printed to the suite's leak check,
// once.
func (tl *till) recordOutput() {
	if tl.recorded {
		return
	}
	tl.recorded = true
	suiteLeaks.text(tl.t.Name()+" stdout", tl.stdout.String())
	suiteLeaks.text(tl.t.Name()+" stderr", tl.stderr.String())
	// The folder is a t.TempDir, gone when the test ends: read its logs now.
	for _, pattern := range []string{"*.log", "*/*.log"} {
		files, _ := filepath.Glob(filepath.Join(tl.dir, pattern))
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil {
				suiteLeaks.text(f, string(b))
			}
		}
	}
}

// url returns the gateway URL of path.
func (tl *till) url(path string) string { return "http://" + tl.addr + path }

func (tl *till) stop() {
	defer tl.recordOutput()
	select {
	case <-tl.done:
		return
	default:
	}
	_ = tl.cmd.Process.Signal(os.Interrupt)
	select {
	case <-tl.done:
	case <-time.After(10 * time.Second):
		_ = tl.cmd.Process.Kill()
		<-tl.done
	}
}

// waitLog waits until the operational log (stderr) contains s.
func (tl *till) waitLog(s string) bool {
	tl.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if strings.Contains(tl.stderr.String(), s) {
			return true
		}
	}
	return false
}

// auditRecord is one line of the audit log.
type auditRecord map[string]any

// audit returns the request records written so far (the audit sink is
// stdout by default).
func (tl *till) audit() []auditRecord { return tl.events("request") }

// uses returns the use records written so far: one per send of a key.
func (tl *till) uses() []auditRecord { return tl.events("use") }

// events returns the audit records of the event written so far.
func (tl *till) events(event string) []auditRecord {
	var recs []auditRecord
	sc := bufio.NewScanner(strings.NewReader(tl.stdout.String()))
	for sc.Scan() {
		var r auditRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			tl.t.Fatalf("audit line is not JSON: %q", sc.Text())
		}
		if r["event"] == event {
			recs = append(recs, r)
		}
	}
	return recs
}

// waitAudit waits until n audit records are written and returns them.
func (tl *till) waitAudit(n int) []auditRecord {
	tl.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs := tl.audit()
		if len(recs) >= n || time.Now().After(deadline) {
			if len(recs) < n {
				tl.t.Fatalf("got %d audit records, want %d\nstdout:\n%s", len(recs), n, tl.stdout.String())
			}
			return recs
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// auditFields are the fields every record carries, per the contract.
var auditFields = []string{"time", "level", "event", "id", "mode", "client", "route", "secret",
	"key_fp", "method", "host", "path", "status", "bytes_in", "bytes_out", "duration_ms", "outcome", "reason",
	"attempt", "seq", "prev", "model", "tokens_in", "tokens_out", "cost_usd", "credential"}

func checkAuditFields(t *testing.T, r auditRecord) {
	t.Helper()
	for _, f := range auditFields {
		if _, ok := r[f]; !ok {
			t.Errorf("audit record lacks %q: %v", f, r)
		}
	}
}

// leakForms are the forms of a key that must never appear in till's output.
func leakForms(key string) []string {
	return []string{
		key,
		base64.StdEncoding.EncodeToString([]byte(key)),
		base64.RawURLEncoding.EncodeToString([]byte(key)),
		url.QueryEscape(key),
		hex.EncodeToString([]byte(key)),
	}
}

// assertNoLeak fails if any form of any key appears in what till printed or
// wrote, or in the extra texts (responses).
func (tl *till) assertNoLeak(keys []string, extra ...string) {
	tl.t.Helper()
	texts := append([]string{tl.stdout.String(), tl.stderr.String()}, extra...)
	files, _ := filepath.Glob(filepath.Join(tl.dir, "*.log"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		texts = append(texts, string(b))
	}
	for _, key := range keys {
		for _, form := range leakForms(key) {
			for _, text := range texts {
				if strings.Contains(text, form) {
					tl.t.Errorf("a form of a key (%d chars) appears in till's output or a response", len(form))
				}
			}
		}
	}
}

// dump returns a response as text, headers and body, for leak checks.
func dump(resp *http.Response, body []byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d\n", resp.StatusCode)
	_ = resp.Header.Write(&b)
	b.Write(body)
	return b.String()
}

// get sends a request through till with Go's client and returns the
// response and its body.
func do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	client := &http.Client{
		Timeout:       20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	suiteLeaks.text(t.Name()+" response", dump(resp, body))
	return resp, body
}

func newRequest(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// tillError decodes till's JSON error body.
func tillError(t *testing.T, resp *http.Response, body []byte) string {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type: got %q, want %q", ct, "application/json")
	}
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body is not till's JSON: %q", body)
	}
	if h := resp.Header.Get("X-Till-Error"); h != e.Error.Code {
		t.Errorf("X-Till-Error: got %q, want %q", h, e.Error.Code)
	}
	if e.Error.Message == "" {
		t.Error("error message is empty")
	}
	return e.Error.Code
}
