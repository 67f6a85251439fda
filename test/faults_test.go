package test

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The tests in this file break the upstream side: refused connections,
// resets, stalls, bad certificates, old TLS, and responses that are large or
// long.

// issueCert is pki.issue with a chosen validity period.
func issueCert(t *testing.T, p *pki, notBefore, notAfter time.Time, names ...string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// newFaultUpstream starts a recording TLS upstream on 127.0.0.1 with cert,
// speaking HTTP/2 or only HTTP/1.1; tweak (if not nil) adjusts its TLS
// config.
func newFaultUpstream(t *testing.T, p *pki, h http.Handler, h2 bool, cert tls.Certificate, tweak func(*tls.Config)) *upstream {
	t.Helper()
	u := &upstream{caFile: p.caFile}
	srv := httptest.NewUnstartedServer(u.recorder(h))
	srv.EnableHTTP2 = h2
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	if tweak != nil {
		tweak(srv.TLS)
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	u.Server = srv
	return u
}

// partialThenReset writes the status, 1000 of the 100000 bytes it announces,
// then resets the connection (HTTP/1.1) or the stream (HTTP/2).
func partialThenReset(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	if r.URL.Query().Get("length") != "" {
		w.Header().Set("Content-Length", "100000")
	}
	w.WriteHeader(200)
	w.Write(bytes.Repeat([]byte("r"), 1000))
	w.(http.Flusher).Flush()
	if r.ProtoMajor == 2 {
		// Flush returns once the DATA frames are written to the
		// connection, and the RST_STREAM follows them on it.
		panic(http.ErrAbortHandler)
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn() // no close_notify
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		// A close with RST drops whatever the peer has not acknowledged:
		// wait until till's side has the first bytes.
		waitAcked(tcp)
		tcp.SetLinger(0) // close with RST
		tcp.Close()
		return
	}
	conn.Close()
}

// waitAcked waits, for at most 10 s, until the peer has acknowledged every
// byte written to c: the kernel's send queue (SIOCOUTQ) is empty.
func waitAcked(c *net.TCPConn) {
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		queued := -1
		raw.Control(func(fd uintptr) { queued, _ = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) })
		if queued == 0 {
			return
		}
	}
}

// refusingAddr returns a loopback address that refuses connections for as
// long as the test runs. A socket holds the port, bound but never
// listening, so that no other process can start listening there; a port
// merely found free could be taken by one.
func refusingAddr(t *testing.T) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
}

// faultHandler serves the healthy upstream's fault paths.
func faultHandler(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/reset":
		partialThenReset(w, r)
	case "/stall-headers":
		select { // never answers; till's route timeout must
		case <-r.Context().Done():
		case <-time.After(20 * time.Second):
		}
	case "/stall-stream":
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select { // three times the route's timeout
		case <-r.Context().Done():
			return
		case <-time.After(1500 * time.Millisecond):
		}
		io.WriteString(w, "data: last\n\n")
	default:
		okHandler(w, r)
	}
}

func TestFaultUpstreams(t *testing.T) {
	p := newPKI(t)
	now := time.Now()
	good := newFaultUpstream(t, p, http.HandlerFunc(faultHandler), true, p.issue(t, "127.0.0.1"), nil)
	h1 := newFaultUpstream(t, p, http.HandlerFunc(faultHandler), false, p.issue(t, "127.0.0.1"), nil)
	// The same faults over plain HTTP, through till's own transport.
	plain := &upstream{}
	plain.Server = httptest.NewServer(plain.recorder(http.HandlerFunc(faultHandler)))
	t.Cleanup(plain.Close)
	expired := newFaultUpstream(t, p, http.HandlerFunc(okHandler), true, issueCert(t, p, now.Add(-48*time.Hour), now.Add(-24*time.Hour), "127.0.0.1"), nil)
	notYet := newFaultUpstream(t, p, http.HandlerFunc(okHandler), true, issueCert(t, p, now.Add(24*time.Hour), now.Add(48*time.Hour), "127.0.0.1"), nil)
	wrongName := newFaultUpstream(t, p, http.HandlerFunc(okHandler), true, p.issue(t, "api.other.test"), nil)
	untrusted := newFaultUpstream(t, p, http.HandlerFunc(okHandler), true, issueCert(t, newPKI(t), now.Add(-time.Hour), now.Add(time.Hour), "127.0.0.1"), nil)
	oldTLS := newFaultUpstream(t, p, http.HandlerFunc(okHandler), false, p.issue(t, "127.0.0.1"), func(c *tls.Config) {
		c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	})
	weakCiphers := newFaultUpstream(t, p, http.HandlerFunc(okHandler), false, p.issue(t, "127.0.0.1"), func(c *tls.Config) {
		c.MaxVersion = tls.VersionTLS12
		c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_RC4_128_SHA} // refused by any modern client
	})
	plainOnTLS := newPlainUpstream(t, http.HandlerFunc(okHandler)) // plain HTTP where TLS is expected
	refused := refusingAddr(t)

	route := func(name, upstream, extra string) string {
		return fmt.Sprintf("  - name: %s\n    preset: openai\n    upstream: %s\n    secret: openai\n    timeout: 500ms\n%s", name, upstream, extra)
	}
	cfg := "version: 1\nroutes:\n" +
		route("good", good.URL, "") +
		route("h1", h1.URL, "") +
		route("plain", plain.URL, "") +
		route("refused", "https://"+refused, "") +
		route("expired", expired.URL, "") +
		route("notyet", notYet.URL, "") +
		route("wrongname", wrongName.URL, "") +
		route("untrusted", untrusted.URL, "") +
		route("oldtls", oldTLS.URL, "") +
		route("weakciphers", weakCiphers.URL, "") +
		route("plainontls", "https://"+strings.TrimPrefix(plainOnTLS.URL, "http://"), "")
	tl := startTill(t, cfg, map[string]string{"openai": openaiKey}, p.caFile)
	var responses []string
	client := &http.Client{Timeout: 20 * time.Second}

	healthy := func(t *testing.T) {
		t.Helper()
		resp, body := do(t, newRequest(t, "GET", tl.url("/good/v1/models"), nil))
		responses = append(responses, dump(resp, body))
		if resp.StatusCode != 200 {
			t.Errorf("a healthy request after the fault: got %d %s", resp.StatusCode, body)
		}
	}
	// recordOf returns the audit record of the response.
	recordOf := func(t *testing.T, resp *http.Response) auditRecord {
		t.Helper()
		id := resp.Header.Get("X-Till-Request-Id")
		if id == "" {
			t.Fatalf("response without X-Till-Request-Id")
		}
		r := tl.auditByID(id)
		checkAuditFields(t, r)
		return r
	}

	t.Run("refused", func(t *testing.T) {
		resp, body := do(t, newRequest(t, "GET", tl.url("/refused/v1/models"), nil))
		responses = append(responses, dump(resp, body))
		if resp.StatusCode != 502 || tillError(t, resp, body) != "upstream_unreachable" {
			t.Errorf("got %d %s, want 502 upstream_unreachable", resp.StatusCode, body)
		}
		r := recordOf(t, resp)
		if r["outcome"] != "error" || r["reason"] != "upstream_unreachable" || r["status"] != 502.0 || r["key_fp"] == "" {
			t.Errorf("audit record: %v", r)
		}
		healthy(t)
	})

	// The app must see the failure: a 502 from till when none of the
	// response had reached it yet (a short body with a Content-Length,
	// held back), or the upstream's status and a body that ends in an
	// error once some had (a stream, flushed as it comes).
	for _, tt := range []struct {
		name, path string
		u          *upstream
		status     int
	}{
		{"reset mid-body over HTTP/2", "/good/reset", good, 200},
		{"reset mid-body over HTTP/2, with Content-Length", "/good/reset?length=1", good, 502},
		{"reset mid-body over HTTP/1.1", "/h1/reset", h1, 200},
		{"reset mid-body over HTTP/1.1, with Content-Length", "/h1/reset?length=1", h1, 502},
		{"reset mid-body over plain HTTP", "/plain/reset", plain, 200},
		{"reset mid-body over plain HTTP, with Content-Length", "/plain/reset?length=1", plain, 502},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := len(tt.u.requests())
			path, _, _ := strings.Cut(tt.path, "?")
			before := len(recordsFor(tl, path))
			var body []byte
			// A fresh connection: Go's client retries a GET whose reused
			// connection closes without a response, which would hide
			// whether till retried.
			fresh := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			resp, err := fresh.Get(tl.url(tt.path))
			if err != nil {
				t.Fatalf("the app got no response at all (%v): till should answer 502 when nothing has reached the app", err)
			}
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			responses = append(responses, dump(resp, body))
			if resp.StatusCode != tt.status {
				t.Errorf("got %d, want %d", resp.StatusCode, tt.status)
			}
			switch resp.StatusCode {
			case 502:
				if err != nil || tillError(t, resp, body) != "upstream_unreachable" {
					t.Errorf("got 502 %s (read error %v), want a complete upstream_unreachable answer", body, err)
				}
			case 200:
				if err == nil {
					t.Errorf("the app read a complete %d-byte response from a reset upstream: the truncation was hidden", len(body))
				}
			default:
				t.Fatalf("got %d %s, want the upstream's 200 then a cut, or till's 502", resp.StatusCode, body)
			}
			if len(body) > 1000 {
				t.Errorf("the app read %d bytes, want at most the 1000 sent before the reset", len(body))
			}
			if got := len(tt.u.requests()); got != n+1 {
				t.Errorf("the upstream received %d requests, want 1 (no retry)", got-n)
			}
			var r auditRecord
			for deadline := time.Now().Add(10 * time.Second); r == nil && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if recs := recordsFor(tl, path); len(recs) > before {
					r = recs[len(recs)-1]
				}
			}
			if r == nil {
				t.Fatalf("no audit record for %s", tt.path)
			}
			checkAuditFields(t, r)
			t.Logf("app: %d, %d bytes; audit: status %v, bytes_out %v, reason %v", resp.StatusCode, len(body), r["status"], r["bytes_out"], r["reason"])
			if r["outcome"] != "error" || r["reason"] != "upstream_unreachable" || r["key_fp"] == "" {
				t.Errorf("audit record: %v", r)
			}
			if r["status"] != float64(resp.StatusCode) {
				t.Errorf("audit status %v, but the app got %d", r["status"], resp.StatusCode)
			}
			if out, _ := r["bytes_out"].(float64); int(out) < len(body) || out > 1000 {
				t.Errorf("audit bytes_out %v, the app read %d of the 1000 bytes sent", r["bytes_out"], len(body))
			}
			healthy(t)
		})
	}

	t.Run("stall before headers", func(t *testing.T) {
		start := time.Now()
		resp, body := do(t, newRequest(t, "GET", tl.url("/good/stall-headers"), nil))
		took := time.Since(start)
		responses = append(responses, dump(resp, body))
		if resp.StatusCode != 504 || tillError(t, resp, body) != "upstream_timeout" {
			t.Errorf("got %d %s, want 504 upstream_timeout", resp.StatusCode, body)
		}
		if took < 400*time.Millisecond || took > 5*time.Second {
			t.Errorf("answered after %v, want about the route's 500ms timeout", took)
		}
		r := recordOf(t, resp)
		if r["outcome"] != "error" || r["reason"] != "upstream_timeout" || r["status"] != 504.0 || r["key_fp"] == "" {
			t.Errorf("audit record: %v", r)
		}
		healthy(t)
	})

	t.Run("stall mid-stream outlasts the timeout", func(t *testing.T) {
		resp, err := client.Get(tl.url("/good/stall-stream"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("got %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		br := bufio.NewReader(resp.Body)
		if line, err := br.ReadString('\n'); err != nil || line != "data: first\n" {
			t.Fatalf("first line: %q %v", line, err)
		}
		rest, err := io.ReadAll(br)
		if err != nil || !strings.Contains(string(rest), "data: last") {
			t.Errorf("after a 1.5s stall on a route with a 500ms timeout: got %q, %v; want the stream to go on", rest, err)
		}
		r := recordOf(t, resp)
		if r["outcome"] != "forwarded" || r["status"] != 200.0 {
			t.Errorf("audit record: %v", r)
		}
	})

	// TLS that must not be accepted: nothing reaches these upstreams, so
	// the key never leaves.
	for _, tt := range []struct {
		name, route string
		u           *upstream
	}{
		{"expired certificate", "expired", expired},
		{"certificate not yet valid", "notyet", notYet},
		{"certificate for another name", "wrongname", wrongName},
		{"certificate from an untrusted CA", "untrusted", untrusted},
		{"TLS 1.0 and 1.1 only", "oldtls", oldTLS},
		{"only a broken cipher suite", "weakciphers", weakCiphers},
		{"plain HTTP on an https upstream", "plainontls", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, newRequest(t, "POST", tl.url("/"+tt.route+"/v1/chat/completions"), strings.NewReader(`{"model":"x"}`)))
			responses = append(responses, dump(resp, body))
			if resp.StatusCode != 502 || tillError(t, resp, body) != "upstream_unreachable" {
				t.Errorf("got %d %s, want 502 upstream_unreachable", resp.StatusCode, body)
			}
			if tt.u != nil {
				if n := len(tt.u.requests()); n != 0 {
					t.Errorf("the upstream received %d requests over TLS that should have been refused", n)
				}
			} else if n := len(plainOnTLS.requests()); n != 0 {
				t.Errorf("the plain-HTTP server received %d requests", n)
			}
			r := recordOf(t, resp)
			if r["outcome"] != "error" || r["reason"] != "upstream_unreachable" || r["status"] != 502.0 || r["route"] != tt.route {
				t.Errorf("audit record: %v", r)
			}
			healthy(t)
		})
	}
	if !tl.waitLog("certificate") {
		t.Errorf("the log does not say a certificate was refused:\n%s", tl.stderr.String())
	}
	tl.stop()
	tl.assertNoLeak([]string{openaiKey}, responses...)
}

// recordsFor returns the audit records of requests for path.
func recordsFor(tl *till, path string) []auditRecord {
	var recs []auditRecord
	for _, r := range tl.audit() {
		if r["path"] == path {
			recs = append(recs, r)
		}
	}
	return recs
}

// patternBlock is the 1 MiB block a large response repeats.
func patternBlock() []byte {
	b := make([]byte, 1<<20)
	r := mrand.NewChaCha8([32]byte{'t', 'i', 'l', 'l'})
	r.Read(b)
	return b
}

// procStatus reads a field (in kB) of /proc/PID/status.
func procStatus(pid int, field string) (int64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// TestFaultLargeResponse streams a response far larger than till should
// hold in memory; it must arrive whole, be counted, and leave till's
// memory flat.
func TestFaultLargeResponse(t *testing.T) {
	blocks := 200 // MiB
	if testing.Short() {
		blocks = 32
	}
	block := patternBlock()
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/big" {
			okHandler(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		if r.URL.Query().Get("length") != "" {
			w.Header().Set("Content-Length", strconv.Itoa(blocks*len(block)))
		}
		for i := 0; i < blocks; i++ {
			if _, err := w.Write(block); err != nil {
				return
			}
		}
	}))
	tl := startTill(t, providerConfig(u, ""), providerSecrets, u.caFile)
	stillServes(t, tl) // warm up: pools, TLS, HTTP/2
	pid := tl.cmd.Process.Pid
	baseline, haveProc := procStatus(pid, "VmRSS")

	want := sha256.New()
	for i := 0; i < blocks; i++ {
		want.Write(block)
	}
	wantSum := want.Sum(nil)
	total := int64(blocks * len(block))

	for _, path := range []string{"/openai/v1/big", "/openai/v1/big?length=1"} {
		t.Run(path, func(t *testing.T) {
			var peak atomic.Int64
			stop := make(chan struct{})
			sampled := make(chan struct{})
			go func() { // sample till's resident memory during the transfer
				defer close(sampled)
				for {
					if rss, ok := procStatus(pid, "VmRSS"); ok && rss > peak.Load() {
						peak.Store(rss)
					}
					select {
					case <-stop:
						return
					case <-time.After(50 * time.Millisecond):
					}
				}
			}()
			start := time.Now()
			resp, err := (&http.Client{Timeout: 5 * time.Minute}).Get(tl.url(path))
			if err != nil {
				close(stop)
				t.Fatal(err)
			}
			got := sha256.New()
			n, err := io.Copy(got, resp.Body)
			resp.Body.Close()
			close(stop)
			<-sampled
			t.Logf("%d MiB in %v; till RSS %d kB before, peak %d kB", blocks, time.Since(start).Round(time.Millisecond), baseline, peak.Load())
			if err != nil || n != total {
				t.Fatalf("read %d of %d bytes: %v", n, total, err)
			}
			if !bytes.Equal(got.Sum(nil), wantSum) {
				t.Error("the response arrived altered")
			}
			r := tl.auditByID(resp.Header.Get("X-Till-Request-Id"))
			checkAuditFields(t, r)
			if r["outcome"] != "forwarded" || r["bytes_out"] != float64(total) {
				t.Errorf("audit record: bytes_out %v, want %d: %v", r["bytes_out"], total, r)
			}
			if haveProc {
				if growth := peak.Load() - baseline; growth > 100<<10 {
					t.Errorf("till's RSS grew by %d MiB while streaming %d MiB: the response was buffered", growth>>10, blocks)
				}
			}
		})
	}
	if hwm, ok := procStatus(pid, "VmHWM"); ok && haveProc {
		t.Logf("till VmHWM %d kB (baseline RSS %d kB)", hwm, baseline)
		if growth := hwm - baseline; growth > 100<<10 {
			t.Errorf("till's peak RSS was %d MiB above its baseline: the response was buffered", growth>>10)
		}
	}
	tl.stop()
	tl.assertNoLeak(allKeys)
}

// TestFaultLongEventStream: a 10,000-event SSE stream arrives complete and
// in order, and its record counts every byte.
func TestFaultLongEventStream(t *testing.T) {
	const events = 10000
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/events" {
			okHandler(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		f := w.(http.Flusher)
		for i := 0; i < events; i++ {
			fmt.Fprintf(w, "id: %d\ndata: {\"n\":%d,\"pad\":\"%s\"}\n\n", i, i, strings.Repeat("x", i%64))
			f.Flush()
		}
		io.WriteString(w, "event: done\ndata: [DONE]\n\n")
	}))
	tl := startTill(t, providerConfig(u, ""), providerSecrets, u.caFile)
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Get(tl.url("/openai/v1/events"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("got %d", resp.StatusCode)
	}
	var read int64
	sc := bufio.NewScanner(io.TeeReader(resp.Body, writerFunc(func(p []byte) { read += int64(len(p)) })))
	next, done := 0, false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			id, err := strconv.Atoi(strings.TrimPrefix(line, "id: "))
			if err != nil || id != next {
				t.Fatalf("event id %q, want %d", line, next)
			}
			next++
		case line == "data: [DONE]":
			done = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("after %d events: %v", next, err)
	}
	if next != events || !done {
		t.Fatalf("got %d events (done: %v), want %d and the end marker", next, done, events)
	}
	r := tl.auditByID(resp.Header.Get("X-Till-Request-Id"))
	checkAuditFields(t, r)
	if r["outcome"] != "forwarded" || r["bytes_out"] != float64(read) {
		t.Errorf("audit record: bytes_out %v, want %d: %v", r["bytes_out"], read, r)
	}
	if recs := tl.audit(); len(recs) != 1 {
		t.Errorf("got %d audit records for one stream, want 1", len(recs))
	}
	tl.stop()
	tl.assertNoLeak(allKeys)
}

// writerFunc counts what passes through a TeeReader.
type writerFunc func([]byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }
