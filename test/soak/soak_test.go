//go:build soak

// Package soak holds till's soak test: minutes of steady, mixed load on
// loopback (keep-alive and fresh connections, Server-Sent Events,
// absolute-form requests and intercepted CONNECTs), after which till's
// goroutines, file descriptors and memory must be back where they started
// and every request must have exactly one audit record.
//
//	go test -tags soak -run TestSoak ./test/soak -timeout 30m -soak.duration 10m
//
// TILL_SOAK_DURATION and TILL_SOAK_RATE override the flags' defaults.
package soak

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tillgw/till/test/internal/tillbin"
)

var (
	duration = flag.Duration("soak.duration", envDuration("TILL_SOAK_DURATION", 10*time.Minute), "how long to keep the load on")
	rate     = flag.Int("soak.rate", envInt("TILL_SOAK_RATE", 200), "requests per second")
	workers  = flag.Int("soak.workers", 32, "requests in flight at most")
)

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return d
	}
	return def
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return n
	}
	return def
}

// tillBin is the binary under test, built by TestMain.
var tillBin string

func TestMain(m *testing.M) {
	flag.Parse()
	bin, remove, err := tillbin.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tillBin = bin
	code := m.Run()
	if races := tillbin.Races(bin); races != "" {
		fmt.Fprintln(os.Stderr, "FAIL: till found data races (TILL_E2E_RACE=1):\n"+races)
		code = 1
	}
	remove()
	os.Exit(code)
}

// sumValues adds up the counts of m.
func sumValues(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// tillEnv is the environment every till process runs with: none of the
// caller's variables but PATH, HOME and a race build's GORACE.
func tillEnv() []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	return append(env, tillbin.Env()...)
}

const (
	soakKey   = "sk-soak-0123456789abcdefSOAKKEY"
	sseEvents = 5
)

// upstreamHandler answers like a provider, after checking that till
// attached the key: /v1/ok, /v1/echo (the body back) and /v1/sse (a short
// event stream).
func upstreamHandler(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+soakKey {
		http.Error(w, "no key", http.StatusUnauthorized)
		return
	}
	switch r.URL.Path {
	case "/v1/ok":
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`)
	case "/v1/echo":
		// Read it all first: Go's HTTP/1 server may close a request body
		// once the response has started (io.Copy to w starts it early).
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(body)
	case "/v1/sse":
		w.Header().Set("Content-Type", "text/event-stream")
		f := w.(http.Flusher)
		for i := 0; i < sseEvents; i++ {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			f.Flush()
			time.Sleep(20 * time.Millisecond) // paced on purpose: a stream that lasts
		}
	default:
		http.NotFound(w, r)
	}
}

// proc is the till process and the figures read from it.
type proc struct {
	cmd       *exec.Cmd
	pid       int
	addr      string // the gateway listener's
	adminAddr string
	done      chan struct{}
	exit      error
}

// figures is one reading of till's resources.
type figures struct {
	goroutines int
	fds        int
	rssKB      int64
}

func (f figures) String() string {
	return fmt.Sprintf("goroutines %d, fds %d, RSS %d KiB", f.goroutines, f.fds, f.rssKB)
}

var goroutinesRe = regexp.MustCompile(`(?m)^go_goroutines (\d+)`)

func (p *proc) figures(t *testing.T) figures {
	t.Helper()
	var f figures
	// A connection of its own, closed after the reading, so that till holds
	// no connection of ours between readings.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + p.adminAddr + "/metrics")
	if err != nil {
		t.Fatalf("admin /metrics: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := goroutinesRe.FindSubmatch(body)
	if m == nil {
		t.Fatalf("no go_goroutines in /metrics")
	}
	f.goroutines, _ = strconv.Atoi(string(m[1]))
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.pid))
	if err != nil {
		t.Fatalf("open fds: %v", err)
	}
	f.fds = len(fds)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f.rssKB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return f
}

// accepted counts the connections till holds that it accepted on its
// listeners (TCP sockets among its file descriptors, not listening, whose
// local port is a listener's).
func (p *proc) accepted(t *testing.T) int {
	t.Helper()
	ports := map[uint64]bool{}
	for _, addr := range []string{p.addr, p.adminAddr} {
		_, port, _ := net.SplitHostPort(addr)
		n, _ := strconv.ParseUint(port, 10, 16)
		ports[n] = true
	}
	sockets := map[string]bool{} // inodes
	fdDir := fmt.Sprintf("/proc/%d/fd", p.pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		t.Fatalf("open fds: %v", err)
	}
	for _, fd := range fds {
		link, _ := os.Readlink(filepath.Join(fdDir, fd.Name()))
		if inode, ok := strings.CutPrefix(link, "socket:["); ok {
			sockets[strings.TrimSuffix(inode, "]")] = true
		}
	}
	n := 0
	for _, table := range []string{"tcp", "tcp6"} {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", p.pid, table))
		// sl local_address rem_address st ... inode: "0100007F:1F90" is
		// 127.0.0.1:8080, st 0A is LISTEN.
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || !sockets[f[9]] || f[3] == "0A" {
				continue
			}
			_, hexPort, _ := strings.Cut(f[1], ":")
			if port, err := strconv.ParseUint(hexPort, 16, 16); err == nil && ports[port] {
				n++
			}
		}
	}
	return n
}

func runTill(t *testing.T, dir, stdin string, args ...string) {
	t.Helper()
	cmd := exec.Command(tillBin, args...)
	cmd.Dir = dir
	cmd.Env = tillEnv()
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("till %v: %v\n%s", args, err, out)
	}
}

// startTill writes the config, stores the key, creates the CA and runs till
// serve, returning once it listens.
func startTill(t *testing.T, dir, upstream string) (*proc, string) {
	t.Helper()
	// Both listeners take a port the kernel picks, and the log says which:
	// a port found free beforehand could be taken before till binds it.
	cfg := fmt.Sprintf(`version: 1
listen: 127.0.0.1:0
shutdown_grace: 10s
admin:
  listen: 127.0.0.1:0
audit:
  file: audit.log
forward:
  enabled: true
  intercept: true
  unknown_hosts: deny
routes:
  - name: soak
    prefix: /soak
    upstream: %s
    secret: soak
    inject: {header: Authorization, format: "Bearer {secret}"}
    timeout: 10s
`, upstream)
	if err := os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	runTill(t, dir, soakKey, "secret", "set", "soak")
	runTill(t, dir, "", "ca", "init")

	stderr, err := os.Create(filepath.Join(dir, "till.stderr"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stderr.Close() })
	p := &proc{done: make(chan struct{})}
	p.cmd = exec.Command(tillBin, "serve")
	p.cmd.Dir = dir
	p.cmd.Env = tillEnv()
	p.cmd.Stdout, p.cmd.Stderr = stderr, stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.pid = p.cmd.Process.Pid
	go func() { p.exit = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	var listen string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(stderr.Name())
		listen, p.adminAddr = logged(b, "till listening", "addr"), logged(b, "admin listening", "admin_addr")
		if listen != "" && p.adminAddr != "" {
			break
		}
		select {
		case <-p.done:
			t.Fatalf("till exited: %v\n%s", p.exit, b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("till did not start:\n%s", b)
		}
	}
	p.addr = listen
	return p, "http://" + listen
}

// logged returns the field of the first JSON log line in b whose message is
// msg, or "" when there is none yet.
func logged(b []byte, msg, field string) string {
	for _, line := range bytes.Split(b, []byte("\n")) {
		var ev map[string]any
		if json.Unmarshal(line, &ev) == nil && ev["message"] == msg {
			v, _ := ev[field].(string)
			return v
		}
	}
	return ""
}

// kind is one sort of request in the mix.
type kind int

const (
	reverseKeepAlive kind = iota
	reversePost
	reverseFresh
	reverseSSE
	interceptKeepAlive
	interceptFresh
	interceptSSE
	forwardAbsolute
	numKinds
)

var kindNames = [numKinds]string{"reverse keep-alive", "reverse POST", "reverse fresh connection",
	"reverse SSE", "intercept keep-alive", "intercept fresh CONNECT", "intercept SSE", "forward absolute-form"}

// mix is the order in which kinds are sent, per 20 requests: half plain
// keep-alive, the rest spread over the other kinds.
var mix = []kind{
	reverseKeepAlive, reversePost, reverseFresh, interceptKeepAlive, reverseKeepAlive,
	forwardAbsolute, reverseKeepAlive, reverseSSE, interceptFresh, reverseKeepAlive,
	reversePost, reverseKeepAlive, reverseFresh, interceptKeepAlive, reverseKeepAlive,
	interceptSSE, reverseKeepAlive, reverseKeepAlive, reverseKeepAlive, reverseKeepAlive,
}

// load sends the mix through till and keeps what it got.
type load struct {
	tillURL   string
	upstream  string // http://127.0.0.1:PORT
	secureURL string // https://127.0.0.1:PORT, through CONNECT
	clients   [numKinds]*http.Client

	mu     sync.Mutex
	ids    map[string]kind
	sent   [numKinds]int
	errors map[string]int
	sample []string // the first errors, in full
}

func newLoad(tillURL, upstream string, roots *x509.CertPool) *load {
	proxyURL, _ := url.Parse(tillURL)
	l := &load{
		tillURL:   tillURL,
		upstream:  upstream,
		secureURL: "https://" + strings.TrimPrefix(upstream, "http://"),
		ids:       map[string]kind{},
		errors:    map[string]int{},
	}
	tr := func(keepAlive, viaProxy bool) *http.Transport {
		t := &http.Transport{
			DisableKeepAlives:   !keepAlive,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     60 * time.Second,
			DisableCompression:  true,
			TLSClientConfig:     &tls.Config{RootCAs: roots},
		}
		if viaProxy {
			t.Proxy = http.ProxyURL(proxyURL)
		}
		return t
	}
	direct, fresh, proxied, proxiedFresh := tr(true, false), tr(false, false), tr(true, true), tr(false, true)
	for k := range l.clients {
		t := direct
		switch kind(k) {
		case reverseFresh:
			t = fresh
		case interceptKeepAlive, interceptSSE, forwardAbsolute:
			t = proxied
		case interceptFresh:
			t = proxiedFresh
		}
		l.clients[k] = &http.Client{Transport: t, Timeout: 20 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	return l
}

// closeIdle closes every idle client connection (and so every tunnel).
func (l *load) closeIdle() {
	for _, c := range l.clients {
		c.CloseIdleConnections()
	}
}

func (l *load) fail(k kind, format string, args ...any) {
	msg := kindNames[k] + ": " + fmt.Sprintf(format, args...)
	l.mu.Lock()
	defer l.mu.Unlock()
	key := msg
	if i := strings.IndexAny(key, "0123456789"); i > 0 {
		key = key[:i] // group errors that differ only by numbers
	}
	l.errors[key]++
	if len(l.sample) < 20 {
		l.sample = append(l.sample, msg)
	}
}

// send makes one request of kind k and checks its answer.
func (l *load) send(k kind, n int) {
	var req *http.Request
	var want string
	switch k {
	case reverseKeepAlive, reverseFresh:
		req, _ = http.NewRequest("GET", l.tillURL+"/soak/v1/ok?n="+strconv.Itoa(n), nil)
		want = `{"ok":true}`
	case reversePost:
		want = strings.Repeat(fmt.Sprintf("body %d;", n), 64)
		req, _ = http.NewRequest("POST", l.tillURL+"/soak/v1/echo", strings.NewReader(want))
	case reverseSSE:
		req, _ = http.NewRequest("GET", l.tillURL+"/soak/v1/sse", nil)
	case interceptKeepAlive, interceptFresh:
		req, _ = http.NewRequest("GET", l.secureURL+"/v1/ok", nil)
		want = `{"ok":true}`
	case interceptSSE:
		req, _ = http.NewRequest("GET", l.secureURL+"/v1/sse", nil)
	case forwardAbsolute:
		req, _ = http.NewRequest("GET", l.upstream+"/v1/ok", nil)
		want = `{"ok":true}`
	}
	l.mu.Lock()
	l.sent[k]++
	l.mu.Unlock()
	resp, err := l.clients[k].Do(req)
	if err != nil {
		l.fail(k, "%v", err)
		return
	}
	defer resp.Body.Close()
	id := resp.Header.Get("X-Till-Request-Id")
	if id != "" {
		l.mu.Lock()
		if _, dup := l.ids[id]; dup {
			l.errors["duplicate request id"]++
		}
		l.ids[id] = k
		l.mu.Unlock()
	} else {
		l.fail(k, "no X-Till-Request-Id (status %d)", resp.StatusCode)
	}
	body, err := io.ReadAll(resp.Body)
	switch {
	case err != nil:
		l.fail(k, "reading the body: %v", err)
	case resp.StatusCode != http.StatusOK:
		l.fail(k, "status %d: %.200s", resp.StatusCode, body)
	case k == reverseSSE || k == interceptSSE:
		if got := strings.Count(string(body), "data: event "); got != sseEvents {
			l.fail(k, "got %d events, want %d", got, sseEvents)
		}
	case string(body) != want:
		l.fail(k, "body of %d bytes %.60q…%q, want %d bytes", len(body), body, body[max(0, len(body)-60):], len(want))
	}
}

// run sends requests at the rate for d, then waits for those in flight.
// It returns the number of ticks skipped because every worker was busy.
func (l *load) run(d time.Duration, next *int, sampleEvery time.Duration, sample func()) int {
	jobs := make(chan int, 4*(*workers))
	var wg sync.WaitGroup
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range jobs {
				l.send(mix[n%len(mix)], n)
			}
		}()
	}
	skipped := 0
	tick := time.NewTicker(time.Second / time.Duration(*rate))
	end := time.After(d)
	var sampleC <-chan time.Time
	if sampleEvery > 0 {
		st := time.NewTicker(sampleEvery)
		defer st.Stop()
		sampleC = st.C
	}
loop:
	for {
		select {
		case <-end:
			break loop
		case <-sampleC:
			sample()
		case <-tick.C:
			select {
			case jobs <- *next:
				*next++
			default:
				skipped++
			}
		}
	}
	tick.Stop()
	close(jobs)
	wg.Wait()
	return skipped
}

func TestSoak(t *testing.T) {
	if *duration < time.Minute {
		t.Logf("soak.duration %v is short: figures may say little", *duration)
	}
	dir := t.TempDir()
	up := httptest.NewServer(http.HandlerFunc(upstreamHandler))
	defer up.Close()
	p, tillURL := startTill(t, dir, up.URL)

	caPEM, err := os.ReadFile(filepath.Join(dir, "till-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("till-ca.pem holds no certificate")
	}
	l := newLoad(tillURL, up.URL, roots)

	// quiesce ends every connection, client and upstream side, and waits
	// until till has closed its side of those the load opened to it, so
	// that a reading counts what till holds on to by itself.
	quiesce := func() figures {
		l.closeIdle()
		up.CloseClientConnections()
		for deadline := time.Now().Add(30 * time.Second); p.accepted(t) > 0; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("till still holds %d connections 30s after their clients closed them", p.accepted(t))
			}
		}
		return p.figures(t)
	}

	warm := min(30*time.Second, *duration/10)
	next := 0
	began := time.Now()
	skipped := l.run(warm, &next, 0, nil)
	start := quiesce()
	t.Logf("start (after %v warm-up, %d requests, idle): %v", warm, next, start)

	var peak figures
	sampleEvery := min(time.Minute, *duration/5)
	skipped += l.run(*duration-warm, &next, sampleEvery, func() {
		f := p.figures(t)
		peak.goroutines, peak.fds, peak.rssKB = max(peak.goroutines, f.goroutines), max(peak.fds, f.fds), max(peak.rssKB, f.rssKB)
		t.Logf("  at %v under load: %v, %d connections accepted", time.Since(began).Round(time.Second), f, p.accepted(t))
	})
	elapsed := time.Since(began)
	end := quiesce()
	t.Logf("end (after %v, idle): %v", elapsed.Round(time.Second), end)
	t.Logf("peak under load: %v", peak)

	// Stop till: the audit file is flushed and closed.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("till did not stop within 30s of SIGTERM")
	}
	if p.exit != nil {
		t.Errorf("till exited with %v, want 0", p.exit)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	total := 0
	for k, n := range l.sent {
		total += n
		t.Logf("  %-26s %7d", kindNames[k], n)
	}
	t.Logf("requests: %d in %v of load (%.1f/s, %d ticks skipped with every worker busy)", total, *duration,
		float64(total)/duration.Seconds(), skipped)
	nErrors := 0
	var keys []string
	for k, n := range l.errors {
		nErrors += n
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t.Errorf("%d× %s", l.errors[k], k)
	}
	for _, s := range l.sample {
		t.Logf("  error: %s", s)
	}
	t.Logf("unexpected errors: %d", nErrors)

	// Every request has exactly one request record and, since each sends
	// the key, at least one use record before it (net/http may send an
	// idempotent request again, each send recorded); there is no other.
	counts, uses := map[string]int{}, map[string]int{}
	records, bad, other := 0, 0, 0
	f, err := os.Open(filepath.Join(dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r struct{ ID, Event string }
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			bad++
			continue
		}
		switch r.Event {
		case "request":
			records++
			counts[r.ID]++
		case "use":
			if counts[r.ID] > 0 {
				t.Errorf("request %s: a use record after its request record", r.ID)
			}
			uses[r.ID]++
		default:
			other++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("audit records: %d for %d requests (%d responses with an id), %d use records, %d unreadable lines, %d others",
		records, total, len(l.ids), sumValues(uses), bad, other)
	if bad+other > 0 {
		t.Errorf("%d audit lines are not JSON, %d are neither use nor request records", bad, other)
	}
	if records != total {
		t.Errorf("audit records: got %d, want %d (one per request)", records, total)
	}
	unused := 0
	for id := range counts {
		if uses[id] == 0 {
			unused++
		}
	}
	if unused > 0 || len(uses) != len(counts) {
		t.Errorf("use records: %d requests without one, %d ids with one, %d with a request record", unused, len(uses), len(counts))
	}
	missing, dup := 0, 0
	for id := range l.ids {
		switch counts[id] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
	}
	extra := 0
	for id := range counts {
		if _, ok := l.ids[id]; !ok {
			extra++
		}
	}
	if missing+dup+extra > 0 {
		t.Errorf("request ids: %d without a record, %d with several, %d records for no response", missing, dup, extra)
	}

	// Flat: till holds what it held after the warm-up.
	if end.goroutines > start.goroutines+20 {
		t.Errorf("goroutines: %d at the end, %d at the start", end.goroutines, start.goroutines)
	}
	if end.fds > start.fds+20 {
		t.Errorf("open fds: %d at the end, %d at the start", end.fds, start.fds)
	}
	if end.rssKB > 2*start.rssKB {
		t.Errorf("RSS: %d KiB at the end, %d KiB at the start", end.rssKB, start.rssKB)
	}
}
