package test

// Faults of the Redis that limits.redis names: frozen, cut, stopped and
// resumed, refusing a password. Each test states the contract it checks.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// frozenRedis accepts connections and never answers: a Redis that froze.
func frozenRedis(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go io.Copy(io.Discard, c) // read, never answer
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

// redisProxy sits between till and a real Redis and can cut it: while
// down, every connection is closed and new ones are closed at once.
type redisProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]bool
}

func newRedisProxy(t *testing.T, target string) *redisProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &redisProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.down {
				p.mu.Unlock()
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns[c], p.conns[up] = true, true
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close(); c.Close() }()
			go func() { io.Copy(c, up); up.Close(); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.setDown(true) })
	return p
}

func (p *redisProxy) addr() string { return p.ln.Addr().String() }

func (p *redisProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

// startRedisProc is startRedis, keeping the process so that a test can
// stop (SIGSTOP) and resume (SIGCONT) it: a Redis that freezes, then
// carries on with what it was sent meanwhile.
func startRedisProc(t *testing.T) (string, *os.Process) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed")
	}
	var cmd *exec.Cmd
	addrs, _ := startListening(t, 1, "Address already in use",
		func(addrs []string) *exec.Cmd {
			_, port, _ := net.SplitHostPort(addrs[0])
			cmd = exec.Command(bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no", "--dir", t.TempDir())
			return cmd
		},
		func(out string, _ []string) bool { return strings.Contains(out, "Ready to accept connections") })
	p := cmd.Process
	t.Cleanup(func() { p.Signal(syscall.SIGCONT) })
	return addrs[0], p
}

// farRedis forwards to the Redis at target over a link whose round trip
// is rtt: each way, every chunk arrives rtt/2 after it was sent.
func farRedis(t *testing.T, target string, rtt time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go delayCopy(up, c, rtt/2)
			go delayCopy(c, up, rtt/2)
		}
	}()
	return ln.Addr().String()
}

// delayCopy copies src to dst, each chunk d after it was read, and closes
// dst once src ends and the chunks read are written.
func delayCopy(dst, src net.Conn, d time.Duration) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	ch := make(chan chunk, 1024)
	go func() {
		for c := range ch {
			time.Sleep(time.Until(c.at))
			dst.Write(c.b)
		}
		dst.Close()
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			ch <- chunk{append([]byte(nil), buf[:n]...), time.Now().Add(d)}
		}
		if err != nil {
			close(ch)
			return
		}
	}
}

// TestFarRedisDecides: a Redis 100 ms away (a round trip; farRedis
// connects at once) answers a decision in one round trip, within the
// 250 ms a decision waits, and a new connection's in two (HELLO, then the
// script). A new connection spent three: go-redis sent its client name
// too (CLIENT SETINFO, which Redis before 7.2 refuses): 300 ms, so every
// decision on a new connection failed, and the connection it timed out
// on was closed, so the next was new too: on_redis_error decided every
// request for good.
func TestFarRedisDecides(t *testing.T) {
	redisAddr, _ := startRedis(t)
	up := newUpstream(t, &fakeLLM{})
	tl := redisTill(t, up, farRedis(t, redisAddr, 100*time.Millisecond), "deny", "", "  - {name: hourly, window: 1h, requests: 1000}\n")
	var got []string
	for range 12 {
		code, e := postChat(t, tl, chat)
		got = append(got, fmt.Sprint(code, e))
	}
	// The first ones may time out loading the scripts into Redis, or
	// on a connection new to a slow machine.
	for _, g := range got[7:] {
		if g != "200" {
			t.Errorf("with Redis 100 ms away: %v, want the last five 200", got)
			break
		}
	}
}

// redisTill runs a till on the Redis at redisAddr with one OpenAI route
// (with route settings extra, e.g. ", rate: 100/s") and the budgets.
func redisTill(t *testing.T, up *upstream, redisAddr, onError, extra, budgets string) *till {
	t.Helper()
	cfg := "version: 1\nadmin: {listen: 127.0.0.1:0}\nlimits: {redis: \"redis://" + redisAddr + "/0\", on_redis_error: " + onError + "}\n" +
		"routes:\n  - {name: openai, preset: openai, upstream: \"" + up.URL + "\"" + extra + "}\nbudgets:\n" + budgets
	return startTill(t, cfg, map[string]string{"openai": openaiKey}, up.caFile)
}

func postChat(t *testing.T, tl *till, body string) (int, string) {
	t.Helper()
	resp, b := do(t, newRequest(t, "POST", tl.url("/openai/v1/chat/completions"), strings.NewReader(body)))
	if resp.StatusCode != 200 {
		return resp.StatusCode, tillError(t, resp, b)
	}
	return 200, ""
}

// TestFrozenRedisCostsOneDeadline: a request on a route with a rate and a
// budget, against a Redis that never answers, waits one 250 ms deadline
// for both decisions, not one for each (on_redis_error: allow).
func TestFrozenRedisCostsOneDeadline(t *testing.T) {
	up := newUpstream(t, &fakeLLM{})
	tl := redisTill(t, up, frozenRedis(t), "allow", ", rate: 100/s", "  - {name: hourly, window: 1h, requests: 1000}\n")
	var took []time.Duration
	for range 5 {
		start := time.Now()
		if code, e := postChat(t, tl, chat); code != 200 {
			t.Fatalf("on_redis_error: allow with a frozen Redis: %d %s", code, e)
		}
		took = append(took, time.Since(start))
	}
	// The median, with a margin short of a second deadline for a loaded
	// machine's scheduling.
	slices.Sort(took)
	const deadline = 250 * time.Millisecond
	if median := took[len(took)/2]; median > deadline*19/10 {
		t.Errorf("a request against a frozen Redis took %v (median of %v), want one %v deadline", median, took, deadline)
	}
}

// lostSettleUpstream answers a chat completion with 1000 tokens of usage,
// once release is closed; started gets a value when a request arrives.
type lostSettleUpstream struct {
	started chan struct{}
	release chan struct{}
}

func (u *lostSettleUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.started <- struct{}{}
	<-u.release
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini-2024-07-18",`+
		`"choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],`+
		`"usage":{"prompt_tokens":900,"completion_tokens":100,"total_tokens":1000}}`)
}

// TestRedisBlipAtSettleCounted: Redis is cut between a request's Take and
// its Settle (a blip while the answer streams). Once Redis is back, the
// 1000 tokens the answer used are counted, so the next request over the
// 200-token budget is refused: the request that crosses a limit goes
// through, the next does not.
func TestRedisBlipAtSettleCounted(t *testing.T) {
	redisAddr, _ := startRedis(t)
	proxy := newRedisProxy(t, redisAddr)
	h := &lostSettleUpstream{started: make(chan struct{}, 10), release: make(chan struct{})}
	up := newUpstream(t, h)
	tl := redisTill(t, up, proxy.addr(), "deny", "", "  - {name: hourly, window: 1h, tokens: 200}\n")

	first := make(chan int, 1)
	go func() {
		resp, _ := do(t, newRequest(t, "POST", tl.url("/openai/v1/chat/completions"), strings.NewReader(chat)))
		first <- resp.StatusCode
	}()
	<-h.started // the Take has counted: the request reached the upstream
	proxy.setDown(true)
	close(h.release)
	if code := <-first; code != 200 {
		t.Fatalf("first request: %d", code)
	}
	if !tl.waitLog("budget store unavailable") {
		t.Fatalf("the failed settle was not logged:\n%s", tl.stderr.String())
	}
	proxy.setDown(false)

	rc := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rc.Close()
	waitFor(t, 10*time.Second, "the settlement to be tried again", func() bool {
		return sumHash(rc, "till:budget:hourly:3600s:anonymous:tokens") >= 1000
	})
	if code, e := postChat(t, tl, chat); code != 429 {
		t.Errorf("after an answer of 1000 tokens against a 200-token budget: next request got %d %s, want 429 budget_exceeded", code, e)
	}
}

// TestShutdownWaitsForLateSettlement: a settlement Redis missed (a blip
// as the answer ended) is still being tried when till is told to stop.
// till waits for it, within its grace period, and once Redis is back the
// 1000 tokens the answer used are counted. Stopping at once, as it did,
// dropped them: a failover that moved Redis as a node drain restarted
// till (both on one node) let every answer that ended meanwhile go
// uncounted.
func TestShutdownWaitsForLateSettlement(t *testing.T) {
	redisAddr, _ := startRedis(t)
	proxy := newRedisProxy(t, redisAddr)
	h := &lostSettleUpstream{started: make(chan struct{}, 10), release: make(chan struct{})}
	up := newUpstream(t, h)
	tl := redisTill(t, up, proxy.addr(), "deny", "", "  - {name: hourly, window: 1h, tokens: 200}\n")

	first := make(chan int, 1)
	go func() {
		resp, _ := do(t, newRequest(t, "POST", tl.url("/openai/v1/chat/completions"), strings.NewReader(chat)))
		first <- resp.StatusCode
	}()
	<-h.started
	proxy.setDown(true)
	close(h.release)
	if code := <-first; code != 200 {
		t.Fatalf("first request: %d", code)
	}
	if !tl.waitLog("budget store unavailable") {
		t.Fatalf("the failed settle was not logged:\n%s", tl.stderr.String())
	}
	if err := tl.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !tl.waitLog("waiting for Redis to take what it missed") {
		t.Fatalf("till did not wait for the settlement Redis missed:\n%s", tl.stderr.String())
	}
	proxy.setDown(false)
	<-tl.done
	rc := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rc.Close()
	if got := sumHash(rc, "till:budget:hourly:3600s:anonymous:tokens"); got != 1000 {
		t.Errorf("%d tokens counted once till stopped, want the 1000 the answer used", got)
	}
}

// sumHash adds up the amounts in a budget counter's hash.
func sumHash(rc *redis.Client, key string) int64 {
	var sum int64
	for _, v := range rc.HGetAll(context.Background(), key).Val() {
		n, _ := strconv.ParseInt(v, 10, 64)
		sum += n
	}
	return sum
}

// TestFrozenRedisRefusalsNotCounted: a Redis that stops (SIGSTOP), then
// resumes, runs the Takes it was sent while stopped. Every one of those
// requests was refused (on_redis_error: deny) and sent nothing, so once
// Redis resumes they are taken back, not left to lock the budget.
func TestFrozenRedisRefusalsNotCounted(t *testing.T) {
	redisAddr, proc := startRedisProc(t)
	up := newUpstream(t, &fakeLLM{})
	tl := redisTill(t, up, redisAddr, "deny", "", "  - {name: hourly, window: 1h, requests: 40}\n")

	// Steady state: concurrent requests leave idle connections in the pool.
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if code, e := postChat(t, tl, chat); code != 200 {
				t.Errorf("before the freeze: %d %s", code, e)
			}
		})
	}
	wg.Wait()
	forwarded := len(up.requests())

	if err := proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int32
	for range 20 {
		wg.Go(func() {
			if code, _ := postChat(t, tl, chat); code == 429 {
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	if n := len(up.requests()); n != forwarded || refused.Load() != 20 {
		t.Fatalf("with Redis stopped and on_redis_error deny: %d refused, %d forwarded in all", refused.Load(), n)
	}
	// Past the connections' timeouts, as a real freeze outlasts them.
	time.Sleep(700 * time.Millisecond)
	if err := proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rc.Close()
	key := "till:budget:hourly:3600s:anonymous:requests"
	waitFor(t, 40*time.Second, "the refused requests to be taken back", func() bool {
		return sumHash(rc, key) == int64(forwarded)
	})
	if code, e := postChat(t, tl, chat); code != 200 {
		t.Errorf("after Redis resumed, with %d of 40 requests ever forwarded: got %d %s, want 200", forwarded, code, e)
	}
}

// TestRedisPasswordNeverPrinted: the password in limits.redis appears in
// nothing till prints or answers, whatever goes wrong with Redis: a wrong
// password, no Redis at all, a URL the client refuses.
func TestRedisPasswordNeverPrinted(t *testing.T) {
	const pw = "Zq8redisPASSWORDxk2"
	redisAddr, _ := startRedis(t) // no password set: AUTH fails
	dead := freeAddr(t)
	up := newUpstream(t, &fakeLLM{})
	var seen []string
	for _, rawURL := range []string{
		"redis://:" + pw + "@" + redisAddr + "/0",
		"redis://user:" + pw + "@" + redisAddr + "/0",
		"redis://:" + pw + "@" + dead + "/0",
		"rediss://:" + pw + "@" + redisAddr + "/0",
	} {
		cfg := "version: 1\nadmin: {listen: 127.0.0.1:0}\nlimits: {redis: \"" + rawURL + "\", on_redis_error: deny}\n" +
			"routes:\n  - {name: openai, preset: openai, upstream: \"" + up.URL + "\", rate: 10/s}\nbudgets:\n  - {name: hourly, window: 1h, requests: 10}\n"
		tl := startTill(t, cfg, map[string]string{"openai": openaiKey}, up.caFile)
		resp, body := do(t, newRequest(t, "POST", tl.url("/openai/v1/chat/completions"), strings.NewReader(chat)))
		seen = append(seen, dump(resp, body))
		_, usageBody := adminGet(t, tl.adminAddr(), "/admin/usage", "")
		seen = append(seen, usageBody)
		o, e, _ := runTill(t, tl.dir, "", nil, "usage")
		seen = append(seen, o, e)
		o, e, _ = runTill(t, tl.dir, "", nil, "check")
		seen = append(seen, o, e)
		tl.stop()
		seen = append(seen, tl.stderr.String(), tl.stdout.String())
	}
	for _, bad := range []string{"redis://:" + pw + "@127.0.0.1:1/x", "redis://:" + pw + "@127.0.0.1:1/0?pool_size=zz", "redis://:" + pw + "@/0"} {
		dir := t.TempDir()
		os.WriteFile(dir+"/till.yaml", []byte("version: 1\nlimits: {redis: \""+bad+"\"}\nroutes:\n  - {name: openai, preset: openai}\n"), 0o644)
		o, e, _ := runTill(t, dir, "", nil, "check")
		seen = append(seen, o, e)
		o, e, _ = runTill(t, dir, "", nil, "serve", "--listen", "127.0.0.1:0")
		seen = append(seen, o, e)
	}
	for i, s := range seen {
		if strings.Contains(s, pw) {
			t.Errorf("output %d holds the Redis password: %s", i, s)
		}
	}
}

// TestRedisFaultLogsAreJSON: whatever Redis does, till's operational log
// stays one JSON object a line (log.format json, the default): no line of
// the Redis client's own logger slips in.
func TestRedisFaultLogsAreJSON(t *testing.T) {
	redisAddr, _ := startRedis(t)
	up := newUpstream(t, &fakeLLM{})
	for _, rawURL := range []string{"rediss://" + redisAddr + "/0", "redis://" + frozenRedis(t) + "/0", "redis://" + freeAddr(t) + "/0"} {
		cfg := "version: 1\nlimits: {redis: \"" + rawURL + "\", on_redis_error: allow}\n" +
			"routes:\n  - {name: openai, preset: openai, upstream: \"" + up.URL + "\", rate: 10/s}\nbudgets:\n  - {name: hourly, window: 1h, requests: 10}\n"
		tl := startTill(t, cfg, map[string]string{"openai": openaiKey}, up.caFile)
		for range 3 {
			postChat(t, tl, chat)
		}
		tl.stop()
		for _, line := range strings.Split(strings.TrimSpace(tl.stderr.String()), "\n") {
			if !strings.HasPrefix(line, "{") {
				t.Errorf("%s: a log line that is not JSON: %q", rawURL, line)
			}
		}
	}
}

// TestRedisDownAtStartRecovers: Redis down when till starts, then up:
// till counts in it again without a restart, rates and budgets alike.
func TestRedisDownAtStartRecovers(t *testing.T) {
	redisAddr, _ := startRedis(t)
	proxy := newRedisProxy(t, redisAddr)
	proxy.setDown(true)
	up := newUpstream(t, &fakeLLM{})
	tl := redisTill(t, up, proxy.addr(), "deny", ", rate: 2/m", "  - {name: hourly, window: 1h, requests: 1}\n")
	if code, e := postChat(t, tl, chat); code != 429 {
		t.Fatalf("Redis down, deny: %d %s", code, e)
	}
	proxy.setDown(false)
	var got []string
	for range 3 {
		code, e := postChat(t, tl, chat)
		got = append(got, fmt.Sprint(code, e))
	}
	if fmt.Sprint(got) != "[200 429budget_exceeded 429rate_limited]" {
		t.Errorf("after Redis came up: %v", got)
	}
}
