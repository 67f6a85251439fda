package proxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/tillgw/till/config"
)

// fakeRedis is a TCP listener that speaks just enough RESP for go-redis and
// bucketScript while answering is on, and reads without ever answering once
// it is frozen: a Redis stuck in a long command, a full disk or SIGSTOP.
type fakeRedis struct {
	ln     net.Listener
	frozen atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func newFakeRedis(t *testing.T, frozen bool) *fakeRedis {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRedis{ln: ln}
	f.frozen.Store(frozen)
	t.Cleanup(f.close)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns = append(f.conns, c)
			f.mu.Unlock()
			go f.serve(c)
		}
	}()
	return f
}

func (f *fakeRedis) url() string { return "redis://" + f.ln.Addr().String() + "/0" }

func (f *fakeRedis) close() {
	f.ln.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
}

// serve answers each command (an array of bulk strings) until frozen:
// HELLO with an error (go-redis then speaks RESP2), a script with
// "allowed", anything else with OK.
func (f *fakeRedis) serve(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		args, err := readCommand(br)
		if err != nil {
			return
		}
		if f.frozen.Load() {
			continue
		}
		var reply string
		switch strings.ToUpper(args[0]) {
		case "HELLO":
			reply = "-ERR unknown command 'HELLO'\r\n"
		case "EVALSHA", "EVAL":
			// bucketScript's: taken, no wait.
			reply = "*2\r\n:1\r\n:0\r\n"
		default:
			reply = "+OK\r\n"
		}
		if _, err := io.WriteString(c, reply); err != nil {
			return
		}
	}
}

func readCommand(br *bufio.Reader) ([]string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "*")))
	if err != nil || n < 1 {
		return nil, fmt.Errorf("not a RESP array: %q", line)
	}
	args := make([]string, n)
	for i := range args {
		if line, err = br.ReadString('\n'); err != nil {
			return nil, err
		}
		size, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "$")))
		if err != nil || size < 0 {
			return nil, fmt.Errorf("not a RESP bulk string: %q", line)
		}
		b := make([]byte, size+2)
		if _, err := io.ReadFull(br, b); err != nil {
			return nil, err
		}
		args[i] = string(b[:size])
	}
	return args, nil
}

// TestFrozenRedisCostsOneTimeout: however many decisions wait on a Redis
// that accepts and never answers (or answered, then froze), each one ends
// with an error within redisTimeout, not after a pool wait plus a read
// timeout. The bound is one timeout for the median decision, with room
// for a loaded machine's scheduling short of a second timeout stacked on
// the first.
func TestFrozenRedisCostsOneTimeout(t *testing.T) {
	const callers = 100
	margin := redisTimeout * 9 / 10
	rt := config.Rate{Count: 1000, Per: time.Second}
	for _, tt := range []struct {
		name   string
		frozen bool // from the start; else after a first round of answers
	}{
		{"never answers", true},
		{"answers then freezes", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeRedis(t, tt.frozen)
			l, err := NewRedisLimits(f.url())
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if !tt.frozen {
				// Warm the pool with connections that have answered.
				var wg sync.WaitGroup
				for i := range callers {
					wg.Go(func() {
						// A loaded machine may time some out: the pool is
						// warm all the same.
						if _, ok, err := l.Allow(context.Background(), "k"+strconv.Itoa(i), "", rt, 10); err != nil || !ok {
							t.Logf("before the freeze: ok=%v err=%v", ok, err)
						}
					})
				}
				wg.Wait()
				f.frozen.Store(true)
			}
			var wg sync.WaitGroup
			took := make([]time.Duration, callers)
			errs := make([]error, callers)
			for i := range callers {
				wg.Go(func() {
					start := time.Now()
					_, _, errs[i] = l.Allow(context.Background(), "k"+strconv.Itoa(i), "", rt, 10)
					took[i] = time.Since(start)
				})
			}
			wg.Wait()
			for i := range callers {
				if errs[i] == nil {
					t.Errorf("caller %d: no error from a frozen Redis", i)
				}
			}
			// The median, not the slowest: a busy machine (CI under
			// -race) delays a few callers past any margin, while the
			// fault this guards against (a pool wait stacked on a read
			// timeout) delays most of them, the pool holding 20.
			slices.Sort(took)
			if median := took[callers/2]; median > redisTimeout+margin {
				t.Errorf("the median of %d decisions took %v, want at most %v (+%v margin)", callers, median, redisTimeout, margin)
			}
			t.Logf("decisions took %v (median) to %v (slowest)", took[callers/2], took[callers-1])
		})
	}
}

// TestMemoryLimitsUnderContention: many callers on one bucket at once get
// what its rate allows, no more and no less, and the bucket is whole
// again after a pause: refusals that overlap leave it neither in debt (a
// Retry-After of minutes on a 10/s route) nor in credit.
func TestMemoryLimitsUnderContention(t *testing.T) {
	const burst, per = 10, 10 // 10 a second, bursts of 10
	l := NewMemoryLimits()
	rt := config.Rate{Count: per, Per: time.Second}
	var allowed, worstWait atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for time.Since(start) < 500*time.Millisecond {
				wait, ok, err := l.Allow(context.Background(), "k", "", rt, burst)
				switch {
				case err != nil:
					t.Error(err)
					return
				case ok:
					allowed.Add(1)
				case int64(wait) > worstWait.Load():
					worstWait.Store(int64(wait))
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if most := int64(burst + per*elapsed.Seconds() + 1); allowed.Load() > most || allowed.Load() < burst {
		t.Errorf("%d allowed in %v, want %d to %d", allowed.Load(), elapsed, burst, most)
	}
	if worstWait.Load() > 1 {
		t.Errorf("a refusal said to wait %d s on a %d/s route", worstWait.Load(), per)
	}
	time.Sleep(time.Second + 100*time.Millisecond) // the bucket refills
	for i := range burst {
		if _, ok, _ := l.Allow(context.Background(), "k", "", rt, burst); !ok {
			t.Fatalf("after a pause, request %d of a burst of %d refused: the bucket was left in debt", i+1, burst)
		}
	}
}

// TestAppGoneIsNoStoreError: an app that leaves while its rate is decided
// in Redis is recorded as gone (client_closed), not refused, and is no
// failure of the store: no error counted, nothing logged.
func TestAppGoneIsNoStoreError(t *testing.T) {
	f := newFakeRedis(t, false)
	l, err := NewRedisLimits(f.url())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	records, logs := &lockedBuffer{}, &lockedBuffer{}
	m := NewMetrics(testAudit(io.Discard))
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: https://api.example.com, rate: 10/s}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	g := New(NewSnapshot(cfg, secrets(time.Now())), Options{Audit: testAudit(records), Log: zerolog.New(logs), Limits: l, Metrics: m})
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the app went away
	g.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/openai/v1/models", nil).WithContext(ctx))
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "till_rate_limit_store_errors_total" && mf.GetMetric()[0].GetCounter().GetValue() != 0 {
			t.Errorf("till_rate_limit_store_errors_total = %v after an app left; Redis is healthy", mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
	logs.mu.Lock()
	if strings.Contains(logs.b.String(), "store unavailable") {
		t.Errorf("logged a store failure: %s", logs.b.String())
	}
	logs.mu.Unlock()
	if recs := records.records(t); len(recs) != 1 || recs[0]["reason"] != codeClientClosed {
		t.Errorf("records %v, want one of a client that went away", recs)
	}
}

// TestRateBucketNotResetByOtherSources: a client over its rate stays
// over it however many other callers come meanwhile: anonymous callers
// from 10000 addresses (a /48 holds 65536 /64s), refused after they are
// counted (secret_missing, nothing upstream), cannot push the bucket of
// client web on a route only web may use out of memory, to come back full.
func TestRateBucketNotResetByOtherSources(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "{}") }))
	defer up.Close()
	sum := sha256.Sum256([]byte(connectToken))
	gw, _ := newTestGateway(t, `version: 1
clients:
  - name: web
    token_sha256: `+hex.EncodeToString(sum[:])+`
routes:
  - name: strict
    preset: openai
    prefix: /strict
    upstream: {{UP}}
    secret: openai
    clients: [web]
    rate: 1/h
  - name: open
    preset: openai
    prefix: /open
    upstream: {{UP}}
    secret: absent
    clients: any
    rate: 1/h
`, up.URL, secrets(time.Now()))
	web := func() int {
		r := httptest.NewRequest("GET", "/strict/v1/models", nil)
		r.Header.Set("Authorization", "Bearer "+connectToken)
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, r)
		return w.Code
	}
	if c := web(); c != 200 {
		t.Fatalf("web's first request: %d, want 200", c)
	}
	if c := web(); c != 429 {
		t.Fatalf("web's second request within the hour: %d, want 429", c)
	}
	for i := range maxLimiters {
		r := httptest.NewRequest("GET", "/open/v1/models", nil)
		r.RemoteAddr = fmt.Sprintf("[2001:db8:%x:%x::1]:4000", i>>16, i&0xffff)
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, r)
		if w.Code != 503 {
			t.Fatalf("anonymous request %d: %d, want 503 secret_missing", i, w.Code)
		}
	}
	if c := web(); c != 429 {
		t.Errorf("web's third request within the hour, after %d anonymous sources: %d, want 429 (its bucket was evicted and started full)", maxLimiters, c)
	}
}

// TestRedisLimitsRefuseUnverifiedTLS: the Redis client never skips
// verifying a rediss:// server's certificate, even for a URL that did not
// pass through config (till usage), and its error for a URL it cannot
// take never quotes the URL: url.Parse's error holds the password.
func TestRedisLimitsRefuseUnverifiedTLS(t *testing.T) {
	for _, u := range []string{"rediss://:hunter2@redis.internal:6380/0?skip_verify=true", "redis://:hunter2@redis.internal:port/0", "redis://:hunter2@redis.internal/x"} {
		l, err := NewRedisLimits(u)
		if err == nil {
			l.Close()
			t.Errorf("%s: taken, want an error", u)
		} else if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: error %q prints the password", u, err)
		}
	}
}

// TestReloadTighteningRateKeepsTheBucket: a reload that tightens a
// route's rate (or its burst) does not hand every caller a full bucket
// at the new rate: what was taken under the old one still counts, so a
// client that spent its hour at 3/h gets nothing more at 2/h, or with a
// burst of 1, and an anonymous caller likewise.
func TestReloadTighteningRateKeepsTheBucket(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "{}") }))
	defer up.Close()
	sum := sha256.Sum256([]byte(connectToken))
	conf := func(rate string) string {
		return `version: 1
clients:
  - name: web
    token_sha256: ` + hex.EncodeToString(sum[:]) + `
routes:
  - name: strict
    preset: openai
    prefix: /strict
    upstream: {{UP}}
    secret: openai
    clients: [web]
    ` + rate + `
  - name: open
    preset: openai
    prefix: /open
    upstream: {{UP}}
    secret: openai
    clients: any
    ` + rate + `
`
	}
	keys := secrets(time.Now())
	gw, _ := newTestGateway(t, conf("rate: 3/h"), up.URL, keys)
	get := func(path string, token bool) int {
		r := httptest.NewRequest("GET", path, nil)
		if token {
			r.Header.Set("Authorization", "Bearer "+connectToken)
		}
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, r)
		return w.Code
	}
	for i := range 3 {
		if c, d := get("/strict/v1/models", true), get("/open/v1/models", false); c != 200 || d != 200 {
			t.Fatalf("request %d within the rate: web %d, anonymous %d, want 200", i+1, c, d)
		}
	}
	for _, tighter := range []string{"rate: 2/h", "rate: 3/h\n    burst: 1", "rate: 1/m"} {
		cfg, err := config.Parse("till.yaml", []byte(strings.ReplaceAll(conf(tighter), "{{UP}}", up.URL)), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		gw.Swap(NewSnapshot(cfg, keys))
		if c := get("/strict/v1/models", true); c != 429 {
			t.Errorf("web, over 3/h, after a reload to %q: %d, want 429 (its bucket started full)", tighter, c)
		}
		if c := get("/open/v1/models", false); c != 429 {
			t.Errorf("an anonymous caller, over 3/h, after a reload to %q: %d, want 429 (its bucket started full)", tighter, c)
		}
	}
}
