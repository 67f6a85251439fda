package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

func TestPoolPick(t *testing.T) {
	p := &pool{cooldown: time.Minute}
	for range 3 {
		p.members = append(p.members, &member{injection: &injection{}, restUntil: new(atomic.Int64)})
	}
	now := time.Now()
	got := map[*member]int{}
	for range 6 {
		got[p.pick(&p.next, "", nil, now)]++
	}
	for _, m := range p.members {
		if got[m] != 2 {
			t.Errorf("round robin: a member taken %d times of 6, want 2", got[m])
		}
	}
	p.members[0].rest(now, time.Second)
	p.members[1].rest(now, 2*time.Second)
	for range 4 {
		if m := p.pick(&p.next, "", nil, now); m != p.members[2] {
			t.Fatal("a resting member was picked while another was ready")
		}
	}
	p.members[2].rest(now, 3*time.Second)
	if m := p.pick(&p.next, "", nil, now); m != p.members[0] {
		t.Error("with every member resting, want the one whose rest ends first")
	}
	if m := p.pick(&p.next, "", p.members, now); m != nil {
		t.Error("with every member tried, want none")
	}
	p.members[0].rest(now, -time.Hour) // a shorter rest does not shorten it
	if p.members[0].restUntil.Load() != now.Add(time.Second).UnixNano() {
		t.Error("rest shortened a longer rest")
	}

	sticky := &pool{sticky: true, members: p.members}
	later := now.Add(time.Hour)
	first := sticky.pick(&sticky.next, "web", nil, later)
	for range 5 {
		if sticky.pick(&sticky.next, "web", nil, later) != first {
			t.Fatal("sticky: one caller moved between keys")
		}
	}
}

func TestPoolRestFor(t *testing.T) {
	p := &pool{cooldown: time.Minute}
	now := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	res := func(code int, retry string) *http.Response {
		h := http.Header{}
		if retry != "" {
			h.Set("Retry-After", retry)
		}
		return &http.Response{StatusCode: code, Header: h}
	}
	for _, tt := range []struct {
		name string
		res  *http.Response
		err  error
		d    time.Duration
		ok   bool
	}{
		{"429 with seconds", res(429, "7"), nil, 7 * time.Second, true},
		{"429 with a date", res(429, now.Add(90*time.Second).Format(http.TimeFormat)), nil, 90 * time.Second, true},
		{"429 bad header", res(429, "soon"), nil, time.Minute, true},
		{"402", res(402, ""), nil, time.Minute, true},
		{"529", res(529, ""), nil, time.Minute, true},
		{"401", res(401, ""), nil, 10 * time.Minute, true},
		{"403", res(403, "5"), nil, 10 * time.Minute, true},
		{"huge retry", res(429, "99999999"), nil, maxRetryAfter, true},
		{"200", res(200, ""), nil, 0, false},
		{"500", res(500, ""), nil, 0, false},
		{"refused", nil, &netOpError{syscall.ECONNREFUSED}, time.Minute, true},
		{"timeout", nil, errors.New("timeout"), time.Minute, false},
	} {
		d, ok := p.restFor(tt.res, tt.err, now)
		if d != tt.d && tt.ok || ok != tt.ok {
			t.Errorf("%s: got %v %v, want %v %v", tt.name, d, ok, tt.d, tt.ok)
		}
	}
}

// netOpError wraps an errno as the transport's dial errors do.
type netOpError struct{ errno syscall.Errno }

func (e *netOpError) Error() string { return "dial tcp: " + e.errno.Error() }
func (e *netOpError) Unwrap() error { return e.errno }

// hookAudit is an audit sink that calls on for every line it writes.
type hookAudit struct {
	lockedBuffer
	on func(line string)
}

func (h *hookAudit) Write(p []byte) (int, error) {
	if h.on != nil {
		h.on(string(p))
	}
	return h.lockedBuffer.Write(p)
}

// TestRefusedConnectionAfterWrittenRequestNotRetried: a refused
// connection moves the request to the next key only when nothing of the
// attempt was written. A POST with Idempotency-Key (Stainless SDKs send
// one on every POST) goes with key b on a reused connection; the provider
// acts on it, the connection drops before the answer, and its address
// refuses new connections for a moment. net/http resends the replayable
// request on its own and its dial is refused. The breach caught: till
// read ECONNREFUSED as "nothing was sent" and sent the POST again with key
// a, another account for which the Idempotency-Key means nothing: the
// provider acted on it twice.
func TestRefusedConnectionAfterWrittenRequestNotRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	var mu sync.Mutex
	var acted []string // the key of each POST the provider acted on
	var cur net.Listener = ln
	t.Cleanup(func() { mu.Lock(); cur.Close(); mu.Unlock() })
	serve := func(l net.Listener) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body) // read whole: acted on
					if req.Method != "POST" {
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
						continue
					}
					mu.Lock()
					acted = append(acted, req.Header.Get("Authorization"))
					first := len(acted) == 1
					mu.Unlock()
					if first {
						// Acted on; then the instance goes away: its
						// port refuses, and this connection drops.
						l.Close()
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}")
				}
			}()
		}
	}
	go serve(ln)

	now := time.Now()
	sec := map[string]vault.Secret{
		"a": vault.NewSecret("a", "sk-pool-a-0123456789", now),
		"b": vault.NewSecret("b", "sk-pool-b-0123456789", now),
	}
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: http://" + addr + ", secret: [a, b], pool: {cooldown: 1m}}\n"
	cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sink := &hookAudit{}
	sink.on = func(line string) {
		// The instance is back by the time till's pool retries (the
		// retry's pool_retry record is written first).
		if strings.Contains(line, `"pool_retry"`) {
			l, err := net.Listen("tcp", addr)
			if err != nil {
				t.Errorf("re-listen: %v", err)
				return
			}
			mu.Lock()
			cur = l
			mu.Unlock()
			go serve(l)
		}
	}
	gw := New(NewSnapshot(cfg, sec), Options{Audit: testAudit(sink), Log: zerolog.Nop()})
	front := httptest.NewServer(gw)
	defer front.Close()

	// A first request leaves a keep-alive connection to the provider.
	resp, err := http.Get(front.URL + "/openai/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	req, _ := http.NewRequest("POST", front.URL+"/openai/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"pay invoice 42"}]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "stainless-python-retry-7d1c")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	mu.Lock()
	defer mu.Unlock()
	if len(acted) > 1 {
		t.Errorf("the provider acted on one POST %d times, with keys %q: a refused redial after net/http's own replay "+
			"of a delivered request is not proof that nothing was sent; the pool must not resend it with another key "+
			"(app got %d)", len(acted), acted, resp.StatusCode)
	}
	t.Logf("app got %d; uses: %d", resp.StatusCode, len(sink.uses(t)))
}
