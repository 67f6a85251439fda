package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests in this file send hostile requests over raw TCP, as no client
// library would send them, and check that till refuses each with a clear
// error, that nothing reaches the upstream, and that till keeps serving.

// hostileConfig is providerConfig plus a route with a 1 KB body limit.
func hostileConfig(u *upstream, extra string) string {
	return providerConfig(u, fmt.Sprintf(`  - name: small
    preset: openai
    upstream: %s
    secret: openai
    max_body: 1KB
%s`, u.URL, extra))
}

// rawSend writes raw on a new connection to addr and reads one response.
// The write runs in its own goroutine so that a server that answers (and
// hangs up) before it has read everything does not block the test. It
// returns the response and its body, or the error when no response came.
func rawSend(t *testing.T, addr, raw string) (*http.Response, string, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	go io.WriteString(c, raw)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body), nil
}

// refusal records what till answered a hostile request, so that its audit
// record can be checked afterwards.
type refusal struct {
	name, id, code string
}

// checkRefused fails unless resp is one of the statuses in want. An answer
// from till itself (rather than from Go's HTTP server, which answers
// malformed requests with a plain-text 400 before till sees them) must be
// till's JSON error with code; it is returned for the audit check.
func checkRefused(t *testing.T, name string, resp *http.Response, body string, err error, code string, want ...int) *refusal {
	t.Helper()
	if err != nil {
		t.Errorf("%s: no response (%v), want %v", name, err, want)
		return nil
	}
	ok := false
	for _, s := range want {
		ok = ok || resp.StatusCode == s
	}
	if !ok {
		t.Errorf("%s: got %d %q, want %v", name, resp.StatusCode, body, want)
	}
	if resp.Header.Get("X-Till-Error") == "" {
		if resp.Header.Get("X-Till-Request-Id") != "" {
			t.Errorf("%s: till answered %d without its error format: %q", name, resp.StatusCode, body)
		}
		t.Logf("%s: %d from Go's HTTP server (till never saw it, so no audit record)", name, resp.StatusCode)
		return nil
	}
	if got := tillError(t, resp, []byte(body)); got != code {
		t.Errorf("%s: code: got %q, want %q", name, got, code)
	}
	id := resp.Header.Get("X-Till-Request-Id")
	if id == "" {
		t.Errorf("%s: till's error has no X-Till-Request-Id", name)
		return nil
	}
	return &refusal{name: name, id: id, code: code}
}

// auditByID waits for the audit record with the request id id.
func (tl *till) auditByID(id string) auditRecord {
	tl.t.Helper()
	// Only the lines naming id are decoded: after a long run (tens of
	// thousands of records, under -race) decoding them all would take
	// the whole wait.
	needle := `"id":` + strconv.Quote(id)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for line := range strings.Lines(tl.stdout.String()) {
			if !strings.Contains(line, needle) {
				continue
			}
			var r auditRecord
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				tl.t.Fatalf("audit line is not JSON: %q", line)
			}
			if r["event"] == "request" && r["id"] == id {
				return r
			}
		}
	}
	tl.t.Fatalf("no audit record with id %q\nstdout:\n%s", id, tl.stdout.String())
	return nil
}

// checkRefusalsAudited checks that each refusal has one complete audit
// record saying why.
func checkRefusalsAudited(t *testing.T, tl *till, refusals []*refusal) {
	t.Helper()
	for _, rf := range refusals {
		if rf == nil {
			continue
		}
		r := tl.auditByID(rf.id)
		checkAuditFields(t, r)
		if r["outcome"] != "denied" || r["reason"] != rf.code || r["event"] != "request" {
			t.Errorf("%s: audit record: %v", rf.name, r)
		}
	}
}

// stillServes checks that a normal request on a new connection still works.
func stillServes(t *testing.T, tl *till) {
	t.Helper()
	resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
	if resp.StatusCode != 200 || string(body) != `{"ok":true}` {
		t.Errorf("a normal request after the hostile ones: got %d %q, want 200", resp.StatusCode, body)
	}
}

func TestHostileSmuggling(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	tl := startTill(t, hostileConfig(u, ""), providerSecrets, u.caFile)
	const post = "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
	tests := []struct {
		name, raw string
		want      []int // statuses accepted
	}{
		{"duplicate differing Content-Length",
			post + "Content-Length: 5\r\nContent-Length: 50\r\n\r\nhello", []int{400}},
		{"Content-Length list",
			post + "Content-Length: 5, 50\r\n\r\nhello", []int{400}},
		{"negative Content-Length",
			post + "Content-Length: -5\r\n\r\nhello", []int{400}},
		{"Content-Length with a sign",
			post + "Content-Length: +5\r\n\r\nhello", []int{400}},
		{"space before the colon",
			post + "Content-Length : 5\r\n\r\nhello", []int{400}},
		{"CR in a header value",
			post + "X-Bad: a\rInjected: b\r\nContent-Length: 5\r\n\r\nhello", []int{400}},
		{"NUL in a header value",
			post + "X-Bad: a\x00b\r\nContent-Length: 5\r\n\r\nhello", []int{400}},
		{"NUL in a header name",
			post + "X-B\x00ad: a\r\nContent-Length: 5\r\n\r\nhello", []int{400}},
		{"unknown transfer coding",
			post + "Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", []int{400, 501}},
		{"Transfer-Encoding twice",
			post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", []int{400, 501}},
		{"Transfer-Encoding with a tab",
			post + "Transfer-Encoding:\tchunked\x0b\r\n\r\n5\r\nhello\r\n0\r\n\r\n", []int{400, 501}},
		{"HTTP/1.1 without Host",
			"GET /openai/v1/models HTTP/1.1\r\n\r\n", []int{400}},
		{"two Host headers",
			"GET /openai/v1/models HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", []int{400}},
	}
	var refusals []*refusal
	for _, tt := range tests {
		resp, body, err := rawSend(t, tl.addr, tt.raw)
		refusals = append(refusals, checkRefused(t, tt.name, resp, body, err, "bad_request", tt.want...))
	}
	if got := u.requests(); len(got) != 0 {
		t.Errorf("upstream received %d hostile requests, want 0; first: %s %s body %q", len(got), got[0].Method, got[0].Path, got[0].Body)
	}
	checkRefusalsAudited(t, tl, refusals)
	stillServes(t, tl)
	tl.stop()
	tl.assertNoLeak(allKeys)
}

// TestHostileLineFolding: RFC 9112, section 5.2, lets a server reject
// obsolete line folding with 400 or replace each fold with spaces before
// interpreting the field. Either way the field must not reach the upstream
// with a line break in it, and a folded Transfer-Encoding must frame the
// body the way it was read.
func TestHostileLineFolding(t *testing.T) {
	u := newBodyUpstream(t)
	tl := startTill(t, hostileConfig(u.upstream, ""), providerSecrets, u.caFile)
	const post = "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
	for _, tt := range []struct{ name, raw, header, value string }{
		{"folded header", post + "X-Folded: a\r\n b\r\nContent-Length: 5\r\n\r\nhello", "X-Folded", "a b"},
		{"folded with a tab", post + "X-Folded: a\r\n\tb\r\nContent-Length: 5\r\n\r\nhello", "X-Folded", "a b"},
		{"folded Transfer-Encoding", post + "Transfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "", ""},
	} {
		n := len(u.requests())
		resp, body, err := rawSend(t, tl.addr, tt.raw)
		if err != nil {
			t.Errorf("%s: no response: %v", tt.name, err)
			continue
		}
		if resp.StatusCode != 200 {
			checkRefused(t, tt.name, resp, body, nil, "bad_request", 400)
			if len(u.requests()) != n {
				t.Errorf("%s: refused, yet the upstream received it", tt.name)
			}
			continue
		}
		got := u.requests()
		if len(got) != n+1 {
			t.Errorf("%s: the upstream received %d requests, want 1", tt.name, len(got)-n)
			continue
		}
		if string(got[n].Body) != "hello" {
			t.Errorf("%s: upstream body: got %q, want %q", tt.name, got[n].Body, "hello")
		}
		if tt.header != "" {
			if v := got[n].Header.Values(tt.header); len(v) != 1 || strings.Join(strings.Fields(v[0]), " ") != tt.value || strings.ContainsAny(v[0], "\r\n") {
				t.Errorf("%s: upstream %s: got %q, want one value %q", tt.name, tt.header, v, tt.value)
			}
		}
	}
	stillServes(t, tl)
	tl.stop()
	tl.assertNoLeak(allKeys)
}

// TestHostileBadChunkedBody: a chunked body that breaks the chunked coding
// is the app's error (400 bad_request, outcome denied), not the upstream's,
// and the upstream never receives a complete request from it.
func TestHostileBadChunkedBody(t *testing.T) {
	u := newBodyUpstream(t)
	tl := startTill(t, hostileConfig(u.upstream, ""), providerSecrets, u.caFile)
	const post = "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
	var refusals []*refusal
	for _, tt := range []struct{ name, body string }{
		{"bad chunk size", "zz\r\nhello\r\n0\r\n\r\n"},
		{"negative chunk size", "-5\r\nhello\r\n0\r\n\r\n"},
		{"overflowing chunk size", "fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"},
		{"chunk shorter than its size", "5\r\nhel\r\n0\r\n\r\n"},
		{"chunk without its CRLF", "5\r\nhelloXX0\r\n\r\n"},
	} {
		resp, body, err := rawSend(t, tl.addr, post+tt.body)
		refusals = append(refusals, checkRefused(t, tt.name, resp, body, err, "bad_request", 400))
	}
	for _, rd := range u.reads() {
		if rd.err == nil {
			t.Errorf("the upstream read a complete %d-byte body from a malformed chunked request", rd.n)
		}
	}
	checkRefusalsAudited(t, tl, refusals)
	stillServes(t, tl)
	tl.stop()
	tl.assertNoLeak(allKeys)
}

// TestHostileContentLengthAndTransferEncoding sends a request with both,
// whose body, read by Content-Length, hides a second request. RFC 9112,
// section 6.1: the server may reject it, or process it by
// Transfer-Encoding alone, and must then close the connection after
// responding, so that the hidden request is never served.
func TestHostileContentLengthAndTransferEncoding(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	tl := startTill(t, hostileConfig(u, ""), providerSecrets, u.caFile)
	hidden := "GET /openai/v1/smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"
	body := "0\r\n\r\n" + hidden
	for _, order := range []string{"CL first", "TE first"} {
		t.Run(order, func(t *testing.T) {
			cl := fmt.Sprintf("Content-Length: %d\r\n", len(body))
			te := "Transfer-Encoding: chunked\r\n"
			head := cl + te
			if order == "TE first" {
				head = te + cl
			}
			c, err := net.Dial("tcp", tl.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"+head+"\r\n"+body)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no response: %v", err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 400 {
				// Processed by Transfer-Encoding: the connection must end here.
				c.SetReadDeadline(time.Now().Add(3 * time.Second))
				if second, err := http.ReadResponse(br, nil); err == nil {
					t.Errorf("the request hidden in the body was served (%d): the connection stayed open after a request with both Content-Length and Transfer-Encoding", second.StatusCode)
				}
			}
		})
	}
	for _, r := range u.requests() {
		if strings.Contains(r.Path, "smuggled") {
			t.Errorf("the upstream received the smuggled request %s %s", r.Method, r.Path)
		}
		if len(r.Body) != 0 {
			t.Errorf("the upstream received a body %q, want none (the chunked body is empty)", r.Body)
		}
	}
	stillServes(t, tl)
	tl.stop()
	tl.assertNoLeak(allKeys)
}

// TestHostileConnectionNamesHeaders: a header the request's Connection
// header names is hop-by-hop, never sent upstream, so till judges the
// request without it. A Content-Type named there would have till read a
// body as JSON (no top-level _method) that the upstream, given no
// Content-Type, reads as a form (Rack), whose _method makes the POST a
// DELETE on a route that allows POST only.
func TestHostileConnectionNamesHeaders(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	tl := startTill(t, hostileConfig(u, fmt.Sprintf(`  - name: items
    upstream: %s
    secret: openai
    inject: {header: Authorization, format: "Bearer {secret}"}
    allow: {methods: [POST]}
`, u.URL)), providerSecrets, u.caFile)
	const body = `{"a": "&_method=DELETE&"}`
	head := fmt.Sprintf("POST /items/posts/7 HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\nX-Hop: 1\r\n", len(body))
	resp, answer, err := rawSend(t, tl.addr, head+"Connection: keep-alive, Content-Type\r\n\r\n"+body)
	rf := checkRefused(t, "Connection: Content-Type", resp, answer, err, "method_not_allowed", 403)
	if got := u.requests(); len(got) != 0 {
		t.Errorf("the upstream received %s %s with Content-Type %q, want nothing sent", got[0].Method, got[0].Path, got[0].Header.Values("Content-Type"))
	}
	checkRefusalsAudited(t, tl, []*refusal{rf})
	resp, answer, err = rawSend(t, tl.addr, head+"Connection: X-Hop\r\n\r\n"+strings.Replace(body, "_method", "xmethod", 1))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("Connection: X-Hop: got %v %q, want 200", err, answer)
	}
	if got := u.last(t); got.Header.Get("X-Hop") != "" || got.Header.Get("Content-Type") != "application/json" {
		t.Errorf("upstream headers: X-Hop %q (want none), Content-Type %q", got.Header.Get("X-Hop"), got.Header.Get("Content-Type"))
	}
	tl.stop()
	tl.assertNoLeak(allKeys)
}

func TestHostileOversized(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	tl := startTill(t, hostileConfig(u, ""), providerSecrets, u.caFile)
	big := strings.Repeat("a", 70<<10)
	var many strings.Builder
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&many, "X-Many-%d: %s\r\n", i, strings.Repeat("b", 32))
	}
	tests := []struct{ name, raw string }{
		{"one header over 64 KiB", "GET /openai/v1/models HTTP/1.1\r\nHost: localhost\r\nX-Big: " + big + "\r\n\r\n"},
		{"many headers over 64 KiB", "GET /openai/v1/models HTTP/1.1\r\nHost: localhost\r\n" + many.String() + "\r\n"},
		{"URL over 64 KiB", "GET /openai/v1/" + big + " HTTP/1.1\r\nHost: localhost\r\n\r\n"},
		{"query over 64 KiB", "GET /openai/v1/models?q=" + big + " HTTP/1.1\r\nHost: localhost\r\n\r\n"},
		{"header name over 64 KiB", "GET /openai/v1/models HTTP/1.1\r\nHost: localhost\r\nX-" + big + ": 1\r\n\r\n"},
	}
	var refusals []*refusal
	for _, tt := range tests {
		resp, body, err := rawSend(t, tl.addr, tt.raw)
		refusals = append(refusals, checkRefused(t, tt.name, resp, body, err, "bad_request", 400, 414, 431))
	}
	if n := len(u.requests()); n != 0 {
		t.Errorf("upstream received %d oversized requests, want 0", n)
	}
	checkRefusalsAudited(t, tl, refusals)
	stillServes(t, tl)
	tl.stop()
	tl.assertNoLeak(allKeys)
}

// TestHostileSlowloris holds connections open with headers that never end:
// one stalled in a header line, one dripping a byte every 500 ms (which a
// per-read timeout would never catch). till must close both within its
// 10 s ReadHeaderTimeout, and serve others meanwhile.
func TestHostileSlowloris(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: waits for the header timeout")
	}
	u := newUpstream(t, http.HandlerFunc(okHandler))
	tl := startTill(t, hostileConfig(u, ""), providerSecrets, u.caFile)
	const limit = 15 * time.Second
	var wg, holding sync.WaitGroup // holding: both connections hold a request open
	for _, drip := range []bool{false, true} {
		wg.Add(1)
		holding.Add(1)
		go func() {
			defer wg.Done()
			holdingOnce := sync.OnceFunc(holding.Done)
			defer holdingOnce()
			name := map[bool]string{false: "stalled", true: "dripping"}[drip]
			c, err := net.Dial("tcp", tl.addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			start := time.Now()
			c.SetDeadline(start.Add(limit + 5*time.Second))
			io.WriteString(c, "GET /openai/v1/models HTTP/1.1\r\nHost: localhost\r\nX-Slow: a")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if drip {
				go func() {
					for {
						select {
						case <-ctx.Done():
							return
						case <-time.After(500 * time.Millisecond): // the scenario: a byte every 500 ms
						}
						if _, err := c.Write([]byte("a")); err != nil {
							return
						}
						holdingOnce() // it has dripped
					}
				}()
			} else {
				holdingOnce()
			}
			// Go's server may answer 408 before closing, or just close.
			b, err := io.ReadAll(c)
			took := time.Since(start)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Errorf("%s: the connection was still open after %v", name, took)
				return
			}
			if took > limit {
				t.Errorf("%s: closed after %v, want within %v", name, took, limit)
			}
			if len(b) > 0 && !strings.HasPrefix(string(b), "HTTP/1.1 408") && !strings.HasPrefix(string(b), "HTTP/1.1 400") {
				t.Errorf("%s: got %q before the close", name, b)
			}
		}()
	}
	holding.Wait()
	stillServes(t, tl) // the stalled connections do not block others
	wg.Wait()
	if n := len(u.requests()); n != 1 {
		t.Errorf("upstream received %d requests, want only the normal one", n)
	}
	stillServes(t, tl)
	tl.stop()
	tl.assertNoLeak(allKeys)
}

// bodyUpstream is a TLS upstream that records how much of each request
// body it could read, and whether the body ended cleanly.
type bodyUpstream struct {
	*upstream
	mu     sync.Mutex
	bodies []bodyRead
}

type bodyRead struct {
	path string
	n    int64
	err  error
}

func newBodyUpstream(t *testing.T) *bodyUpstream {
	b := &bodyUpstream{upstream: &upstream{}}
	b.Server, b.caFile = newTLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		b.mu.Lock()
		b.bodies = append(b.bodies, bodyRead{r.URL.Path, int64(len(body)), err})
		b.mu.Unlock()
		b.upstream.mu.Lock()
		b.got = append(b.got, seen{r.ProtoMajor, r.Method, r.Host, r.URL.Path, r.URL.Query(), r.Header.Clone(), body})
		b.upstream.mu.Unlock()
		okHandler(w, r)
	}))
	return b
}

func (b *bodyUpstream) reads() []bodyRead {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]bodyRead(nil), b.bodies...)
}

func TestHostileBodyLimit(t *testing.T) {
	// max_body: 1KB is 1000 bytes (KB is a power of 1000, KiB of 1024).
	u := newBodyUpstream(t)
	tl := startTill(t, hostileConfig(u.upstream, ""), providerSecrets, u.caFile)
	var responses []string

	t.Run("body at the limit passes", func(t *testing.T) {
		resp, body := do(t, newRequest(t, "POST", tl.url("/small/v1/files"), strings.NewReader(strings.Repeat("x", 1000))))
		responses = append(responses, dump(resp, body))
		if resp.StatusCode != 200 {
			t.Errorf("a 1000-byte body on a 1KB route: got %d %s, want 200", resp.StatusCode, body)
		}
		if r := u.reads(); len(r) != 1 || r[0].n != 1000 || r[0].err != nil {
			t.Errorf("upstream read %+v, want one 1000-byte body", r)
		}
	})
	before := len(u.reads())

	overLimit := func(t *testing.T, name, raw string) {
		t.Helper()
		start := time.Now()
		resp, body, err := rawSend(t, tl.addr, raw)
		rf := checkRefused(t, name, resp, body, err, "bad_request", 400)
		if rf == nil {
			t.Fatal("not refused by till")
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("refused after %v", took)
		}
		responses = append(responses, body)
		r := tl.auditByID(rf.id)
		checkAuditFields(t, r)
		if r["outcome"] != "denied" || r["reason"] != "bad_request" || r["route"] != "small" || r["key_fp"] != "" {
			t.Errorf("audit record: %v", r)
		}
		if n := len(u.reads()); n != before {
			t.Errorf("upstream received %d requests, want none", n-before)
		}
	}
	const head = "POST /small/v1/files HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1001\r\n"
	t.Run("Content-Length over the limit", func(t *testing.T) {
		overLimit(t, "Content-Length 1001", head+"\r\n"+strings.Repeat("z", 1001))
	})
	t.Run("Content-Length over the limit, expecting 100-continue", func(t *testing.T) {
		overLimit(t, "Content-Length 1001, Expect", head+"Expect: 100-continue\r\n\r\n")
		resp, body, err := rawSend(t, tl.addr, "POST /nowhere HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
		checkRefused(t, "route_not_found, Expect", resp, body, err, "route_not_found", 404)
	})
	t.Run("Content-Length over the limit, body withheld", func(t *testing.T) {
		overLimit(t, "Content-Length 1001, no body", head+"\r\n")
	})

	t.Run("endless chunked body", func(t *testing.T) {
		c, err := net.Dial("tcp", tl.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(c, "POST /small/v1/files HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // an app that never stops sending
			defer wg.Done()
			chunk := fmt.Sprintf("%x\r\n%s\r\n", 4096, strings.Repeat("y", 4096))
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := io.WriteString(c, chunk); err != nil {
					return
				}
			}
		}()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			close(stop)
			t.Fatalf("no response to an endless body: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		close(stop)
		c.Close()
		wg.Wait()
		responses = append(responses, dump(resp, body))
		rf := checkRefused(t, "endless body", resp, string(body), nil, "bad_request", 400)
		if rf == nil {
			t.Fatal("not refused by till")
		}
		r := tl.auditByID(rf.id)
		checkAuditFields(t, r)
		if r["outcome"] != "denied" || r["reason"] != "bad_request" || r["route"] != "small" {
			t.Errorf("audit record: %v", r)
		}
		if in, _ := r["bytes_in"].(float64); in > 1000+4096 {
			t.Errorf("bytes_in %v: till read far past max_body", in)
		}
		// The body is streamed, so the upstream may have seen the start of
		// the request; it must never see a complete one, nor more than the
		// limit.
		for _, rd := range u.reads()[before:] {
			if rd.err == nil {
				t.Errorf("upstream read a complete body of %d bytes on a 1KB route", rd.n)
			}
			if rd.n > 1000 {
				t.Errorf("upstream read %d bytes on a 1KB route", rd.n)
			}
		}
	})

	t.Run("keeps serving", func(t *testing.T) {
		resp, body := do(t, newRequest(t, "POST", tl.url("/small/v1/files"), strings.NewReader("small")))
		responses = append(responses, dump(resp, body))
		if resp.StatusCode != 200 {
			t.Errorf("got %d %s, want 200", resp.StatusCode, body)
		}
	})
	tl.stop()
	tl.assertNoLeak(allKeys, responses...)
}

func TestHostilePaths(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	tl := startTill(t, hostileConfig(u, ""), providerSecrets, u.caFile)
	var refusals []*refusal

	// Refused outright: by till (bad_request) or by Go's server.
	for _, tt := range []struct{ name, target string }{
		{"encoded NUL", "/openai/v1/models%00"},
		{"encoded NUL then dot dot", "/openai/v1/%00/../../x"},
		{"raw NUL", "/openai/v1/mo\x00dels"},
		{"encoded CR LF", "/openai/v1/models%0d%0aX-Injected:%20yes"},
		{"raw DEL", "/openai/v1/mo\x7fdels"},
		{"double-encoded dot dot", "/openai/v1/%252e%252e/x"},
		{"invalid percent-encoding", "/openai/v1/%zz"},
		{"truncated percent-encoding", "/openai/v1/models%"},
	} {
		raw := "GET " + tt.target + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
		resp, body, err := rawSend(t, tl.addr, raw)
		refusals = append(refusals, checkRefused(t, tt.name, resp, body, err, "bad_request", 400))
	}
	if n := len(u.requests()); n != 0 {
		t.Errorf("upstream received %d requests with hostile paths, want 0", n)
	}
	checkRefusalsAudited(t, tl, refusals)

	// Invalid UTF-8 is opaque bytes: refused, or forwarded exactly as sent
	// (never normalised into something else).
	for _, tt := range []struct{ name, target, upstreamPath string }{
		{"encoded invalid UTF-8", "/openai/v1/%ff%fe", "/v1/\xff\xfe"},
		{"raw invalid UTF-8", "/openai/v1/\xff\xfe", "/v1/\xff\xfe"},
		{"overlong dot dot", "/openai/v1/%c0%ae%c0%ae/x", "/v1/\xc0\xae\xc0\xae/x"},
		{"raw overlong dot dot", "/openai/v1/\xc0\xae\xc0\xae/x", "/v1/\xc0\xae\xc0\xae/x"},
	} {
		n := len(u.requests())
		resp, body, err := rawSend(t, tl.addr, "GET "+tt.target+" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
		if err != nil {
			t.Errorf("%s: no response: %v", tt.name, err)
			continue
		}
		switch resp.StatusCode {
		case 200:
			got := u.requests()
			if len(got) != n+1 {
				t.Errorf("%s: 200 but the upstream received %d requests", tt.name, len(got)-n)
				continue
			}
			if p := got[n].Path; p != tt.upstreamPath {
				t.Errorf("%s: upstream path: got %q, want %q", tt.name, p, tt.upstreamPath)
			}
			r := tl.auditByID(resp.Header.Get("X-Till-Request-Id"))
			checkAuditFields(t, r)
			if r["outcome"] != "forwarded" || r["route"] != "openai" {
				t.Errorf("%s: audit record: %v", tt.name, r)
			}
		default:
			if rf := checkRefused(t, tt.name, resp, body, nil, "bad_request", 400); rf != nil {
				checkRefusalsAudited(t, tl, []*refusal{rf})
			}
			if len(u.requests()) != n {
				t.Errorf("%s: refused, yet the upstream received it", tt.name)
			}
		}
	}
	stillServes(t, tl)
	tl.stop()
	tl.assertNoLeak(allKeys)
}

func TestHostileRequestForms(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	tl := startTill(t, hostileConfig(u, ""), providerSecrets, u.caFile)
	upstreamHost := u.Listener.Addr().String()

	t.Run("HTTP/1.0 without Host", func(t *testing.T) {
		// Reverse mode routes by path alone: the Host is the upstream's.
		resp, body, err := rawSend(t, tl.addr, "GET /openai/v1/models HTTP/1.0\r\n\r\n")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || body != `{"ok":true}` {
			t.Fatalf("got %d %q, want 200", resp.StatusCode, body)
		}
		got := u.last(t)
		if got.Host != upstreamHost || got.Header.Get("Authorization") != "Bearer "+openaiKey {
			t.Errorf("upstream got Host %q (want %q) and the key: %v", got.Host, upstreamHost, got.Header.Get("Authorization") != "")
		}
		r := tl.auditByID(resp.Header.Get("X-Till-Request-Id"))
		checkAuditFields(t, r)
		if r["outcome"] != "forwarded" || r["host"] != upstreamHost {
			t.Errorf("audit record: %v", r)
		}
	})
	n := len(u.requests())

	// forward.enabled is false: absolute-form and CONNECT are refused.
	var refusals []*refusal
	for _, tt := range []struct{ name, raw string }{
		{"absolute-form to a foreign host", "GET http://evil.example/openai/v1/models HTTP/1.1\r\nHost: evil.example\r\n\r\n"},
		{"absolute-form to the upstream", "GET https://" + upstreamHost + "/v1/models HTTP/1.1\r\nHost: " + upstreamHost + "\r\n\r\n"},
		{"absolute-form to till itself", "GET http://" + tl.addr + "/openai/v1/models HTTP/1.1\r\nHost: " + tl.addr + "\r\n\r\n"},
		{"absolute-form with userinfo", "GET http://user:pass@" + upstreamHost + "/v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n"},
		{"HTTP/1.0 absolute-form", "GET http://" + upstreamHost + "/v1/models HTTP/1.0\r\n\r\n"},
		{"CONNECT", "CONNECT " + upstreamHost + " HTTP/1.1\r\nHost: " + upstreamHost + "\r\n\r\n"},
	} {
		resp, body, err := rawSend(t, tl.addr, tt.raw)
		rf := checkRefused(t, tt.name, resp, body, err, "bad_request", 400)
		if rf == nil && err == nil && resp.StatusCode == 400 {
			t.Errorf("%s: refused by Go's server, want till's bad_request", tt.name)
		}
		refusals = append(refusals, rf)
	}
	if got := len(u.requests()); got != n {
		t.Errorf("upstream received %d absolute-form or CONNECT requests in reverse mode", got-n)
	}
	checkRefusalsAudited(t, tl, refusals)
	stillServes(t, tl)
	tl.stop()
	tl.assertNoLeak(allKeys)
}

// rawConnect sends CONNECT with the given request target and Host header.
func rawConnect(t *testing.T, addr, target, host string) (*http.Response, string, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, host)
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "CONNECT"})
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body), nil
}

func TestHostileConnectTargets(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	// Forward mode without interception (no CA needed); unknown hosts would
	// be tunnelled, so a garbage target that parsed would reach the dialler.
	cfg := hostileConfig(u, "forward: {enabled: true, intercept: false, unknown_hosts: tunnel}\n")
	tl := startTill(t, cfg, providerSecrets, u.caFile)
	_, upstreamPort, _ := net.SplitHostPort(u.Listener.Addr().String())
	var refusals []*refusal
	for _, tt := range []struct{ name, target string }{
		{"no port", "example.com"},
		{"port 0", "example.com:0"},
		{"port too large", "example.com:65536"},
		{"negative port", "example.com:-1"},
		{"port with a sign", "example.com:+443"},
		{"non-numeric port", "example.com:https"},
		{"empty port", "example.com:"},
		{"no host", ":443"},
		{"colons", "::::"},
		{"two ports", "example.com:443:443"},
		{"unclosed bracket", "[::1:443"},
		{"empty", ""},
		{"path", "/openai/v1/models"},
		{"URL", "http://example.com:443/"},
		{"userinfo", "user@127.0.0.1:" + upstreamPort},
		{"percent-encoded host", "%31%32%37.0.0.1:" + upstreamPort},
		{"NUL in host", "exa\x00mple.com:443"},
	} {
		resp, body, err := rawConnect(t, tl.addr, tt.target, tt.target)
		refusals = append(refusals, checkRefused(t, "CONNECT "+tt.name, resp, body, err, "bad_request", 400))
	}
	for _, rf := range refusals {
		if rf == nil {
			continue
		}
		r := tl.auditByID(rf.id)
		if r["method"] != "CONNECT" || r["mode"] != "forward" || r["key_fp"] != "" {
			t.Errorf("%s: audit record: %v", rf.name, r)
		}
	}
	checkRefusalsAudited(t, tl, refusals)
	if n := len(u.requests()); n != 0 {
		t.Errorf("upstream received %d requests, want 0", n)
	}
	stillServes(t, tl)
	tl.stop()
	tl.assertNoLeak(allKeys)
}

// TestHostileClientGoneMidStream: an app that drops its connection in the
// middle of a server-sent event stream gets exactly one audit record, with
// reason client_closed; the upstream stream is released and till keeps
// serving.
func TestHostileClientGoneMidStream(t *testing.T) {
	released := make(chan struct{}, 1)
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/stream" {
			okHandler(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; ; i++ {
			fmt.Fprintf(w, "id: %d\ndata: {\"n\":%d}\n\n", i, i)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				released <- struct{}{}
				return
			case <-time.After(50 * time.Millisecond):
			}
			if i > 1200 { // a minute: till never released the stream
				return
			}
		}
	}))
	tl := startTill(t, hostileConfig(u, ""), providerSecrets, u.caFile)

	c, err := net.Dial("tcp", tl.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /openai/v1/stream HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("got %d, want 200", resp.StatusCode)
	}
	id := resp.Header.Get("X-Till-Request-Id")
	events := bufio.NewReader(resp.Body)
	for i := 0; i < 3; i++ { // three events, then the app goes away
		for {
			line, err := events.ReadString('\n')
			if err != nil {
				t.Fatalf("event %d: %v", i, err)
			}
			if line == "\n" {
				break
			}
		}
	}
	c.Close()

	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Error("the upstream stream was not released after the app went away")
	}
	r := tl.auditByID(id)
	checkAuditFields(t, r)
	if r["reason"] != "client_closed" || r["outcome"] != "error" || r["key_fp"] == "" || r["route"] != "openai" {
		t.Errorf("audit record: %v", r)
	}
	if out, _ := r["bytes_out"].(float64); out <= 0 {
		t.Errorf("bytes_out: got %v, want the events written before the app left", r["bytes_out"])
	}
	stillServes(t, tl)
	tl.waitAudit(2)
	tl.stop() // every record is written once till has exited: a late duplicate too
	recs := tl.audit()
	streams := 0
	for _, r := range recs {
		checkAuditFields(t, r)
		if r["path"] == "/openai/v1/stream" {
			streams++
		}
	}
	if streams != 1 || len(recs) != 2 {
		t.Errorf("got %d records for the dropped stream and %d in all, want 1 and 2:\n%s", streams, len(recs), tl.stdout.String())
	}
	tl.assertNoLeak(allKeys)
}
