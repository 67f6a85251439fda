package budget

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// lockedBuffer is a bytes.Buffer safe for a child's output and a reader.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// redisServer is a throwaway redis-server: its address, and its process.
type redisServer struct {
	addr string
	proc *os.Process
	stop func()
}

// startRedis runs a throwaway redis-server on a free loopback port until
// the test ends, as test/redis_test.go does. Without redis-server the test
// is skipped, or fails under CI=true (.ci/run installs it).
func startRedis(tb testing.TB) (addr string, stop func()) {
	tb.Helper()
	r := startRedisServer(tb)
	return r.addr, r.stop
}

// startRedisServer is startRedis, with the server's process.
func startRedisServer(tb testing.TB) redisServer {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatal("redis-server is missing: .ci/run must install it")
		}
		tb.Skip("redis-server is not installed")
	}
	// redis-server cannot be told to bind port 0 and say which it got: take
	// a port free a moment ago, and another if it was taken meanwhile.
	for attempt := 1; ; attempt++ {
		r, out, up := runRedis(tb, bin)
		switch {
		case up:
			return r
		case attempt < 5 && strings.Contains(out, "Address already in use"):
			tb.Logf("%s was taken: trying another port", r.addr)
		default:
			tb.Fatalf("redis-server did not start:\n%s", out)
		}
	}
}

// runRedis runs bin on a port free a moment ago and says whether it came
// up, or else what it printed.
func runRedis(tb testing.TB, bin string) (r redisServer, out string, up bool) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	r.addr = l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(r.addr)
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no", "--dir", tb.TempDir())
	var buf lockedBuffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	r.proc = cmd.Process
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	r.stop = sync.OnceFunc(func() { cmd.Process.Kill(); <-exited })
	tb.Cleanup(r.stop)
	deadline := time.After(15 * time.Second)
	for !strings.Contains(buf.String(), "Ready to accept connections") {
		select {
		case <-exited:
			return r, buf.String(), false
		case <-deadline:
			r.stop()
			return r, buf.String(), false
		case <-time.After(10 * time.Millisecond):
		}
	}
	return r, "", true
}

// newClient is a client of the Redis at addr, closed when the test ends.
func newClient(tb testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	tb.Cleanup(func() { c.Close() })
	return c
}

func TestRedis(t *testing.T) {
	addr, _ := startRedis(t)
	client := newClient(t, addr)
	testStore(t, func(t *testing.T) Store { return NewRedis(client, nil, "test:"+t.Name()) })
}

// TestRedisShared: two tills on one Redis share counters.
func TestRedisShared(t *testing.T) {
	addr, _ := startRedis(t)
	a, b := NewRedis(newClient(t, addr), nil, ""), NewRedis(newClient(t, addr), nil, "")
	spec := rolling("b", time.Hour)
	spec.Tokens = 1000
	settle(t, a, t0, mustTake(t, a, t0, 0, one("web", spec)), 1000, 0)
	mustDeny(t, b, t0, 0, one("web", spec), deny(spec, "web", KindTokens, time.Hour+time.Minute))
	if got := used(t, b, t0, spec, "web", KindTokens); got != 1000 {
		t.Errorf("the other store sees %v tokens used, want 1000", got)
	}
	other := NewRedis(newClient(t, addr), nil, "other")
	mustTake(t, other, t0, 0, one("web", spec))
}

// TestRedisKeys: keys are named after the budget, window, counter and
// kind, escaped, and expire a bucket after their newest bucket stops
// counting, as does each counter's markKey. Every kind is counted, limited
// or not, so that a limit a reload adds finds what was spent.
func TestRedisKeys(t *testing.T) {
	addr, _ := startRedis(t)
	client := newClient(t, addr)
	s := NewRedis(client, nil, "{till}:budget")
	hourly, daily := rolling("hourly", time.Hour), calendar("daily:usd", "day")
	hourly.Requests, hourly.Tokens = 10, 10000
	daily.USD = 10
	tk := mustTake(t, s, t0, 100, one("team:a{1}", hourly, daily))
	settle(t, s, t0, tk, 50, 0.25)
	ctx := context.Background()
	untilMidnight := 14 * time.Hour
	for key, ttl := range map[string]time.Duration{
		"{till}:budget:hourly:3600s:team%3Aa%7B1%7D:requests":    time.Hour + 2*time.Minute,
		"{till}:budget:hourly:3600s:team%3Aa%7B1%7D:tokens":      time.Hour + 2*time.Minute,
		"{till}:budget:hourly:3600s:team%3Aa%7B1%7D:usd":         time.Hour + 2*time.Minute,
		"{till}:budget:hourly:3600s:counters":                    time.Hour + 2*time.Minute,
		"{till}:budget:daily%3Ausd:day:team%3Aa%7B1%7D:requests": untilMidnight + time.Minute,
		"{till}:budget:daily%3Ausd:day:team%3Aa%7B1%7D:tokens":   untilMidnight + time.Minute,
		"{till}:budget:daily%3Ausd:day:team%3Aa%7B1%7D:usd":      untilMidnight + time.Minute,
		"{till}:budget:daily%3Ausd:day:counters":                 untilMidnight + time.Minute,
		"{till}:budget:hourly:3600s:team%3Aa%7B1%7D:layout":      time.Hour + 2*time.Minute,
		"{till}:budget:daily%3Ausd:day:team%3Aa%7B1%7D:layout":   untilMidnight + time.Minute,
	} {
		got, err := client.TTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		// Redis counts the TTL down in real time.
		if got <= ttl-5*time.Second || got > ttl {
			t.Errorf("%s: TTL %v, want %v", key, got, ttl)
		}
	}
	day := strconv.FormatInt(time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC).Unix(), 10)
	if got := client.HGet(ctx, "{till}:budget:daily%3Ausd:day:team%3Aa%7B1%7D:usd", day).Val(); got != "250000" {
		t.Errorf("usd bucket of 2026-11-03: %q, want 250000 micro-dollars", got)
	}
	keys, err := client.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	keys = slices.DeleteFunc(keys, func(k string) bool { return strings.HasPrefix(k, "{till}:budget:taken:") }) // 10 s each
	if len(keys) != 10 {
		t.Errorf("keys: %v, want the 10 above (a reservation settled leaves none of its own)", keys)
	}
	// Buckets no longer live are deleted as the next Take reads them.
	mustTake(t, s, at(3*time.Hour), 0, one("team:a{1}", hourly))
	if n := client.HLen(ctx, "{till}:budget:hourly:3600s:team%3Aa%7B1%7D:requests").Val(); n != 1 {
		t.Errorf("%d buckets left in the requests hash, want 1", n)
	}
}

// TestRedisKeysSayPer: a budget per route or for all counts in keys of its
// own, so that a route named like a client never finds its counts, while
// one per client keeps the keys stores wrote before per was in them: an
// upgrade keeps what clients spent.
func TestRedisKeysSayPer(t *testing.T) {
	addr, _ := startRedis(t)
	client := newClient(t, addr)
	ctx := context.Background()
	s := NewRedis(client, nil, "")
	bucket := strconv.FormatInt(t0.Unix(), 10)
	// What a store before this one counted for the client web.
	if err := client.HSet(ctx, "till:budget:b:3600s:web:requests", bucket, 2).Err(); err != nil {
		t.Fatal(err)
	}
	if err := client.ZAdd(ctx, "till:budget:b:3600s:counters", redis.Z{Score: float64(t0.Unix()), Member: "web"}).Err(); err != nil {
		t.Fatal(err)
	}
	perClient := rolling("b", time.Hour)
	perClient.Requests = 2
	mustDeny(t, s, t0, 0, one("web", perClient), deny(perClient, "web", KindRequests, time.Hour+time.Minute))
	for per, key := range map[Per]string{
		PerRoute: "till:budget:b:3600s/route:web:requests",
		PerAll:   "till:budget:b:3600s/all:web:requests",
	} {
		spec := rolling("b", time.Hour)
		spec.Requests, spec.Per = 2, per
		mustTake(t, s, t0, 0, one("web", spec))
		if got := client.HGet(ctx, key, bucket).Val(); got != "1" {
			t.Errorf("per %s: %s holds %q at t0, want 1", per, key, got)
		}
		if rows := usage(t, s, t0, spec); len(rows) != 1 || rows[0].Used != 1 {
			t.Errorf("per %s: usage %s, want web's 1 request alone", per, rowsString(rows))
		}
	}
}

// TestRedisClockStepBack: what a clock counted ahead before it was
// stepped back (a till's without UseRedisClock, or Redis's own, which
// every till then follows) is not forgiven, but counts for a window from
// the step, not until the clock gets there again: the budget used to stay
// spent for the step plus its window. A request taken before the step and
// settled after is counted once, in the same window.
func TestRedisClockStepBack(t *testing.T) {
	addr, _ := startRedis(t)
	s := NewRedis(newClient(t, addr), nil, "")
	// Redis counts by its own clock, which is now: the till's runs 5 h
	// ahead, then is set right.
	now := time.Now().Truncate(time.Minute)
	ahead := now.Add(5 * time.Hour)
	reqs, toks := rolling("hourly", time.Hour), rolling("tokens", time.Hour)
	reqs.Requests, toks.Tokens = 3, 1000
	for range 3 {
		mustTake(t, s, ahead, 0, one("web", reqs))
	}
	tk := mustTake(t, s, ahead, 500, one("web", toks))

	mustDeny(t, s, now, 0, one("web", reqs), deny(reqs, "web", KindRequests, time.Hour+time.Minute))
	mustTake(t, s, now, 0, one("web", toks)) // moves the reservation
	settle(t, s, now, tk, 100, 0)
	if got := used(t, s, now, toks, "web", KindTokens); got != 100 {
		t.Errorf("used %v tokens once the clock was set right, want the 100 settled in place of the 500 reserved", got)
	}
	half := now.Add(30 * time.Minute)
	mustDeny(t, s, half, 0, one("web", reqs), deny(reqs, "web", KindRequests, 31*time.Minute))
	later := now.Add(time.Hour + time.Minute)
	mustTake(t, s, later, 0, one("web", reqs))
	if got := used(t, s, later, toks, "web", KindTokens); got > 0 {
		t.Errorf("used %v tokens a window after the step, want none", got)
	}
}

// TestRedisDown: a Redis that cannot answer is an error, not a decision.
func TestRedisDown(t *testing.T) {
	addr, stop := startRedis(t)
	s := NewRedis(newClient(t, addr), nil, "")
	spec := rolling("b", time.Hour)
	spec.Requests = 10
	tk := mustTake(t, s, t0, 0, one("web", spec))
	stop()
	ctx := context.Background()
	if tk, d, err := s.Take(ctx, t0, one("web", spec), 0); err == nil {
		t.Errorf("take with Redis down: %v %v, want an error", tk, d)
	}
	if err := s.Settle(ctx, t0, tk, 1, 0); err == nil {
		t.Error("settle with Redis down: no error")
	}
	if _, err := s.Usage(ctx, t0, []*Spec{spec}); err == nil {
		t.Error("usage with Redis down: no error")
	}
}

func BenchmarkRedis(b *testing.B) {
	addr, _ := startRedis(b)
	benchmarkStore(b, NewRedis(newClient(b, addr), nil, ""))
}

// productionClients are the clients proxy.NewRedisLimits makes: one bounded
// by a request's deadline (250 ms for everything), and the late one.
func productionClients(t *testing.T, addr string) (bounded, late *redis.Client) {
	const d = 250 * time.Millisecond
	bounded = redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, ContextTimeoutEnabled: true,
		DialTimeout: d, ReadTimeout: d, WriteTimeout: d, PoolTimeout: d})
	late = redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, ContextTimeoutEnabled: true,
		DialTimeout: lateTimeout, ReadTimeout: lateTimeout, WriteTimeout: lateTimeout, PoolTimeout: lateTimeout})
	t.Cleanup(func() { bounded.Close(); late.Close() })
	return bounded, late
}

// TestRedisTakeAnsweredLate: a Take whose answer comes after its caller
// gave up (a busy Redis runs it later, past the request's deadline and
// past the deadline's client's timeouts) is taken back: the caller had an
// error and no ticket to settle, so it must not stay counted.
func TestRedisTakeAnsweredLate(t *testing.T) {
	r := startRedisServer(t)
	addr := r.addr
	client := newClient(t, addr)
	bounded, late := productionClients(t, addr)
	s := NewRedis(bounded, late, "")
	b := rolling("b", time.Hour)
	b.Tokens = 1000
	b.Requests = 10
	ctx := context.Background()
	mustTake(t, s, t0, 0, one("other", b)) // the script is loaded, as in steady state
	done := busyRedis(t, r)
	tctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
	defer cancel()
	if _, _, err := s.Take(tctx, t0, one("web", b), 300); err == nil {
		t.Fatal("a Take under a busy Redis did not fail")
	}
	done()
	s.pending.Wait()
	if listed, _ := client.ZScore(ctx, s.indexKey(b.Name, b.Window, PerClient), "web").Result(); listed == 0 {
		t.Error("the late Take never ran: this test tests nothing")
	}
	if got := used(t, s, t0, b, "web", KindTokens); got > 0 {
		t.Errorf("%v tokens stay reserved by a Take that failed", got)
	}
	if got := used(t, s, t0, b, "web", KindRequests); got > 0 {
		t.Errorf("%v requests stay counted by a Take that failed", got)
	}
}

// TestRedisUndoBeforeTake: an undo that runs before its Take (both wait in
// a frozen Redis, and it thaws in another order) keeps the Take from
// counting.
func TestRedisUndoBeforeTake(t *testing.T) {
	addr, _ := startRedis(t)
	s := NewRedis(newClient(t, addr), nil, "")
	b := rolling("b", time.Hour)
	b.Tokens, b.Requests = 1000, 10
	id := s.prefix + ":taken:early"
	s.undo(id, t0, one("web", b), 300)
	s.pending.Wait()
	if _, _, err := s.take(context.Background(), t0, one("web", b), 300, id); err == nil {
		t.Error("a Take run after its undo reported success")
	}
	if got := used(t, s, t0, b, "web", KindRequests); got > 0 {
		t.Errorf("%v requests counted by a Take its undo ran before", got)
	}
	s.undo(id, t0, one("web", b), 300) // again: nothing to take back
	s.pending.Wait()
	mustTake(t, s, t0, 0, one("web", b))
	if got := used(t, s, t0, b, "web", KindRequests); got != 1 {
		t.Errorf("%v requests counted after one Take, want 1: an undo took back what it never counted", got)
	}
}

// TestRedisReservedReleased: what a Take reserved, kept apart for a
// denial's wait, is released by its undo as by a settlement, and what a
// till stopped mid-request left goes once its bucket no longer counts,
// not kept on by the counter's next Takes.
func TestRedisReservedReleased(t *testing.T) {
	addr, _ := startRedis(t)
	client := newClient(t, addr)
	s := NewRedis(client, nil, "")
	b := rolling("b", time.Hour)
	b.Tokens = 1000
	ctx := context.Background()
	key := s.reservedKey(b.Name, b.Window, PerClient, "web")
	id := s.prefix + ":taken:undone"
	if _, _, err := s.take(ctx, t0, one("web", b), 1000, id); err != nil {
		t.Fatal(err)
	}
	s.undo(id, t0, one("web", b), 1000)
	s.pending.Wait()
	if got := client.HGetAll(ctx, key).Val(); len(got) != 0 {
		t.Errorf("an undone Take left its reservation: %v", got)
	}
	mustTake(t, s, t0, 600, one("web", b)) // never settled: its till stopped
	mustTake(t, s, at(2*time.Hour), 100, one("web", b))
	if got := client.HGetAll(ctx, key).Val(); len(got) != 1 || got[strconv.FormatInt(at(2*time.Hour).Unix(), 10)] != "100" {
		t.Errorf("reserved %v, want the 100 of the live bucket alone", got)
	}
}

// TestRedisSettleAnsweredLate: a Settle that fails (a busy Redis answers
// past its deadline) is tried again, and counts once, whether the first
// try ran late or not.
func TestRedisSettleAnsweredLate(t *testing.T) {
	r := startRedisServer(t)
	bounded, late := productionClients(t, r.addr)
	s := NewRedis(bounded, late, "")
	b := rolling("b", time.Hour)
	b.Tokens = 100000
	ctx := context.Background()
	tk := mustTake(t, s, t0, 500, one("web", b))
	done := busyRedis(t, r)
	sctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
	defer cancel()
	if err := s.Settle(sctx, t0, tk, 1200, 0); err == nil {
		t.Fatal("a Settle under a busy Redis did not fail")
	}
	done()
	s.pending.Wait()
	if got := used(t, s, t0, b, "web", KindTokens); got != 1200 {
		t.Errorf("%v tokens counted, want the 1,200 used, once", got)
	}
	// Run again (as a late try would be after the first ran), it counts
	// nothing.
	tk.settled.Store(false)
	if err := s.Settle(ctx, t0, tk, 1200, 0); err != nil {
		t.Fatal(err)
	}
	if got := used(t, s, t0, b, "web", KindTokens); got != 1200 {
		t.Errorf("%v tokens counted after the settlement ran twice, want 1,200", got)
	}
}

// TestRedisKeysOfAnotherType: a key of a type the scripts cannot count in
// (another program's, a hand edit) fails a Take and a Settle before they
// write anything (Redis does not roll back a failed script), and the
// Take's undo takes back nothing of the counter's real use.
func TestRedisKeysOfAnotherType(t *testing.T) {
	addr, _ := startRedis(t)
	client := newClient(t, addr)
	s := NewRedis(client, nil, "")
	b := rolling("b", time.Hour)
	b.Requests, b.Tokens, b.USD = 100, 100000, 100
	ctx := context.Background()
	for range 3 {
		settle(t, s, t0, mustTake(t, s, t0, 0, one("web", b)), 1000, 0.5)
	}
	tk := mustTake(t, s, t0, 0, one("web", b))
	index := s.indexKey(b.Name, b.Window, PerClient)
	if err := client.Set(ctx, index, "garbage", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, _, err := s.Take(ctx, t0, one("web", b), 500); err == nil {
			t.Fatal("a Take over an index that is a string did not fail")
		}
	}
	if err := s.Settle(ctx, t0, tk, 1000, 0.5); err == nil {
		t.Fatal("a Settle over an index that is a string did not fail")
	}
	s.pending.Wait()
	sum := func(k int) (n int64) {
		for _, v := range client.HGetAll(ctx, s.counterKey(b.Name, b.Window, PerClient, "web", k)).Val() {
			x, _ := strconv.ParseInt(v, 10, 64)
			n += x
		}
		return n
	}
	if r, k, u := sum(reqs), sum(toks), sum(usd); r != 4 || k != 3000 || u != 1_500_000 {
		t.Errorf("after failed Takes and a failed Settle: %v requests, %v tokens, %v micro-dollars counted; want 4, 3000 and 1,500,000", r, k, u)
	}
}

// triesHook signals each command its client ran that Redis answered with
// an error starting with prefix.
type triesHook struct {
	prefix string
	failed chan struct{}
}

func (h triesHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h triesHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h triesHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err != nil && strings.HasPrefix(err.Error(), h.prefix) {
			select {
			case h.failed <- struct{}{}:
			default:
			}
		}
		return err
	}
}

// TestRedisSettleOutlastsFailover: a settlement refused by a Redis that
// became a read-only replica (a failover, READONLY), that is loading its
// data after a restart (LOADING), or that stopped writes because its last
// snapshot failed (a full disk, MISCONF), is tried again until Redis takes
// it, like one that went unanswered. Given up at the first refusal, what
// the request used beyond its reservation was never counted, and a client
// could overspend its budget by every answer that ended meanwhile.
func TestRedisSettleOutlastsFailover(t *testing.T) {
	addr, _ := startRedis(t)
	client := newClient(t, addr)
	ctx := context.Background()
	for _, tt := range []struct {
		code       string
		stop, undo func(t *testing.T)
	}{
		{"READONLY", func(t *testing.T) {
			// A replica of a primary that is not there: it keeps its data
			// and refuses every write.
			if err := client.Do(ctx, "REPLICAOF", "127.0.0.1", "1").Err(); err != nil {
				t.Fatal(err)
			}
		}, func(t *testing.T) {
			if err := client.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
				t.Fatal(err)
			}
		}},
		{"MISCONF", func(t *testing.T) { failSnapshot(t, client) }, func(t *testing.T) {
			if err := client.ConfigSet(ctx, "stop-writes-on-bgsave-error", "no").Err(); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tt.code, func(t *testing.T) {
			late := newClient(t, addr)
			hook := triesHook{prefix: tt.code, failed: make(chan struct{}, 1)}
			late.AddHook(hook)
			s := NewRedis(client, late, "test:"+t.Name())
			b := rolling("b", time.Hour)
			b.Tokens = 100000
			tk := mustTake(t, s, t0, 500, one("web", b))
			tt.stop(t)
			if err := s.Settle(ctx, t0, tk, 1200, 0); err == nil || !strings.Contains(err.Error(), tt.code) {
				t.Fatalf("Settle: got %v, want a %s error", err, tt.code)
			}
			<-hook.failed // the late try was refused too
			tt.undo(t)
			s.pending.Wait()
			if got := used(t, s, t0, b, "web", KindTokens); got != 1200 {
				t.Errorf("%v tokens counted, want the 1,200 used: a settlement refused with %s was dropped", got, tt.code)
			}
		})
	}
}

// failSnapshot makes the Redis of client refuse writes with MISCONF, as
// one does when its last RDB snapshot failed (a full disk): it is told to
// save, and its folder is removed before it does.
func failSnapshot(t *testing.T, client *redis.Client) {
	t.Helper()
	ctx := context.Background()
	dir, err := client.ConfigGet(ctx, "dir").Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := client.ConfigSet(ctx, "save", "3600 1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir["dir"]); err != nil {
		t.Fatal(err)
	}
	if err := client.BgSave(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		info := client.Info(ctx, "persistence").Val()
		if strings.Contains(info, "rdb_bgsave_in_progress:0") && strings.Contains(info, "rdb_last_bgsave_status:err") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the snapshot did not fail:\n%s", info)
		}
	}
}

// TestRedisClockAheadKeepsOthersCounts: a till whose clock runs ahead
// (an hour, a day: a VM restored from a snapshot, NTP gone) takes buckets
// that still count for the others as gone; it must not delete them. When
// it did, each of its requests wiped the shared counters, and every till
// with the right time could spend the budget again as often as it liked.
func TestRedisClockAheadKeepsOthersCounts(t *testing.T) {
	addr, _ := startRedis(t)
	client := newClient(t, addr)
	// The tills with the right time agree with Redis's clock.
	now := time.Now()
	for _, tt := range []struct {
		name  string
		spec  *Spec
		ahead time.Duration
	}{
		{"rolling hour, 2h ahead", rolling("hourly", time.Hour), 2 * time.Hour},
		{"calendar day, a day ahead", calendar("daily", "day"), 24 * time.Hour},
		{"calendar month, 32 days ahead", calendar("monthly", "month"), 32 * 24 * time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			right, wrong := NewRedis(client, nil, "test:"+t.Name()), NewRedis(client, nil, "test:"+t.Name())
			tt.spec.Requests = 3
			for range 3 {
				mustTake(t, right, now, 0, one("web", tt.spec))
			}
			mustTake(t, wrong, now.Add(tt.ahead), 0, one("web", tt.spec))
			if tk, d, err := right.Take(context.Background(), now, one("web", tt.spec), 0); err != nil || d == nil {
				t.Errorf("a 4th request of 3 allowed: ticket %v, denial %v, error %v: the till whose clock is ahead wiped the counts", tk, d, err)
			}
		})
	}
}

// TestRedisCountsSaturate: a counter near Redis's integer limit (thousands
// of requests in flight, each reserving the most a hostile max_tokens
// reserves, under a budget that only warns) takes more without failing
// the Take. Redis fails HINCRBY on overflow halfway through the script,
// after it counted part of the Take: the store failed, limits.on_redis_error
// (allow by default) let every request after it by uncounted, those under
// the budgets that block included.
func TestRedisCountsSaturate(t *testing.T) {
	addr, _ := startRedis(t)
	client := newClient(t, addr)
	s := NewRedis(client, nil, "")
	warn := rolling("warn", time.Hour)
	warn.Tokens, warn.Warn = 1000, true
	block := rolling("block", time.Hour)
	block.Requests = 10
	mustTake(t, s, t0, 0, one("web", warn, block))
	ctx := context.Background()
	bucket := strconv.FormatInt(warn.Window.at(t0).bucket, 10)
	if err := client.HSet(ctx, s.counterKey(warn.Name, warn.Window, PerClient, "web", toks), bucket, int64(1<<63-1-maxAmount/2)).Err(); err != nil {
		t.Fatal(err)
	}
	tk := mustTake(t, s, t0, maxAmount, one("web", warn, block))
	if len(tk.Exceeded) != 1 {
		t.Errorf("exceeded %v, want the warning of %s", tk.Exceeded, warn.Name)
	}
	if got := used(t, s, t0, block, "web", KindRequests); got != 2 {
		t.Errorf("%v requests counted under the blocking budget, want 2", got)
	}
	settle(t, s, t0, tk, maxAmount, 0)
	// A settlement that fails halfway was marked settled: never counted.
	tk = mustTake(t, s, t0, 0, one("web", warn, block))
	if err := client.HSet(ctx, s.counterKey(warn.Name, warn.Window, PerClient, "web", toks), bucket, int64(1<<63-1-maxAmount/2)).Err(); err != nil {
		t.Fatal(err)
	}
	settle(t, s, t0, tk, maxAmount, 0)
	if got := used(t, s, t0, warn, "web", KindTokens); got < 1<<62 {
		t.Errorf("%v tokens counted, want the counter saturated", got)
	}
}

// TestRedisClockOffCountsInRedisTime: with UseRedisClock, a till whose
// clock is off Redis's (behind or ahead, by more than a window) counts in
// the same buckets as the others. Counting by its own clock, one behind
// counted where the others no longer look (and their next Take dropped
// it), one ahead where they did not yet: either way its clients could
// spend the budget again.
func TestRedisClockOffCountsInRedisTime(t *testing.T) {
	addr, _ := startRedis(t)
	client := newClient(t, addr)
	now := time.Now() // Redis's clock, as the right tills' are
	for _, tt := range []struct {
		name string
		spec *Spec
		off  time.Duration
	}{
		{"rolling hour, 2h behind", rolling("hourly", time.Hour), -2 * time.Hour},
		{"rolling hour, 2h ahead", rolling("hourly", time.Hour), 2 * time.Hour},
		{"calendar day, a day behind", calendar("daily", "day"), -24 * time.Hour},
		{"calendar day, a day ahead", calendar("daily", "day"), 24 * time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			right, off := NewRedis(client, nil, "test:"+t.Name()), NewRedis(client, nil, "test:"+t.Name())
			right.UseRedisClock(2 * time.Second)
			off.UseRedisClock(2 * time.Second)
			tt.spec.Requests = 3
			mustTake(t, right, now, 0, one("web", tt.spec))
			mustTake(t, off, now.Add(tt.off), 0, one("web", tt.spec))
			mustTake(t, off, now.Add(tt.off), 0, one("web", tt.spec))
			for _, s := range []*Redis{right, off} {
				at := now
				if s == off {
					at = now.Add(tt.off)
				}
				if tk, d, err := s.Take(context.Background(), at, one("web", tt.spec), 0); err != nil || d == nil {
					t.Errorf("a 4th request of 3 allowed: ticket %v, denial %v, error %v", tk, d, err)
				}
			}
			if got := used(t, off, now.Add(tt.off), tt.spec, "web", KindRequests); got != 3 {
				t.Errorf("the till whose clock is off reads %v requests used, want 3", got)
			}
			// till usage on a machine whose clock is off.
			cli := NewRedis(client, nil, "test:"+t.Name())
			cli.UseRedisClock(2 * time.Second)
			if got := used(t, cli, now.Add(tt.off), tt.spec, "web", KindRequests); got != 3 {
				t.Errorf("usage read on a machine whose clock is off: %v requests used, want 3", got)
			}
		})
	}
}

// undoHook notes the Takes whose undo its client runs (a script's first
// key is the Take's).
type undoHook struct {
	mu    *sync.Mutex
	takes map[any]bool
}

func (h undoHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h undoHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h undoHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if args := cmd.Args(); len(args) > 3 {
			h.mu.Lock()
			h.takes[args[3]] = true
			h.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}

// TestRedisUnsentTakeNotTakenBack: a Take that never left till (Redis
// down, its TLS refused, no connection free before the deadline) counted
// nothing, so nothing is taken back. Each one started an undo, tried for
// 30 s by a goroutine of its own: with Redis down, every request did, and
// a till under load grew by a goroutine a request until Redis came back
// or memory ran out.
func TestRedisUnsentTakeNotTakenBack(t *testing.T) {
	r := startRedisServer(t)
	addr := r.addr
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := l.Addr().String()
	l.Close()
	// A server that answers a TLS handshake in plain text, and hangs up.
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	go func() {
		for {
			c, err := plain.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("-ERR not TLS\r\n"))
			c.Close()
		}
	}()
	b := rolling("b", time.Hour)
	b.Requests = 10
	opts := func(addr string) *redis.Options {
		const d = 250 * time.Millisecond
		return &redis.Options{Addr: addr, MaxRetries: -1, ContextTimeoutEnabled: true,
			DialTimeout: d, ReadTimeout: d, WriteTimeout: d, PoolTimeout: d}
	}
	// Redis down, or its TLS refused: once as many dials as the pool has
	// connections failed, each Take fails at once, with the last dial's
	// error (one try a dial gets there sooner).
	unreachable := func(addr string, tlsConfig *tls.Config) *redis.Options {
		o := opts(addr)
		o.DialerRetries, o.TLSConfig = 1, tlsConfig
		return o
	}
	// One connection, held by a Take that waits for a busy Redis: the
	// others wait for it until their deadline, or the pool's timeout.
	held := func(poolTimeout time.Duration) *redis.Options {
		o := opts(addr)
		o.PoolSize, o.PoolTimeout, o.ReadTimeout = 1, poolTimeout, 5*time.Second
		return o
	}
	for _, tt := range []struct {
		name string
		opt  *redis.Options
		held bool
	}{
		{"redis down", unreachable(down, nil), false},
		{"TLS refused", unreachable(plain.Addr().String(), &tls.Config{ServerName: "127.0.0.1"}), false},
		{"no connection free by the deadline", held(5 * time.Second), true},
		{"no connection free by the pool's timeout", held(100 * time.Millisecond), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			client := redis.NewClient(tt.opt)
			lateOpt := *tt.opt
			lateOpt.PoolSize = 0
			late := redis.NewClient(&lateOpt)
			undone := undoHook{&sync.Mutex{}, map[any]bool{}}
			late.AddHook(undone)
			defer func() { client.Close(); late.Close() }()
			s := NewRedis(client, late, "test:"+t.Name())
			var wg, heldTake sync.WaitGroup
			done := func() {}
			take := func() {
				ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
				defer cancel()
				if _, _, err := s.Take(ctx, t0, one("web", b), 0); err == nil {
					t.Error("a Take succeeded")
				}
			}
			if tt.held {
				mustTake(t, s, t0, 0, one("web", b)) // the script is loaded
				done = busyRedis(t, r)
				heldTake.Go(func() { s.Take(context.Background(), t0, one("web", b), 0) })
				for deadline := time.Now().Add(5 * time.Second); client.PoolStats().IdleConns != 0; time.Sleep(time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatal("no Take held the connection")
					}
				}
			}
			for range 100 {
				if tt.held {
					wg.Go(take)
				} else {
					take()
				}
			}
			wg.Wait()
			done()
			heldTake.Wait()
			s.pending.Wait()
			if n := len(undone.takes); n > 0 {
				t.Errorf("%d of 100 Takes that never reached Redis were taken back, want none", n)
			}
		})
	}
}

// TestRedisWait: Pending counts a settlement Redis missed while it is tried
// again; Wait returns once it is counted, or when its context ends first.
func TestRedisWait(t *testing.T) {
	addr, _ := startRedis(t)
	client := newClient(t, addr)
	late := newClient(t, addr)
	hook := triesHook{prefix: "READONLY", failed: make(chan struct{}, 1)}
	late.AddHook(hook)
	s := NewRedis(client, late, "")
	b := rolling("b", time.Hour)
	b.Tokens = 100000
	ctx := context.Background()
	tk := mustTake(t, s, t0, 500, one("web", b))
	if err := client.Do(ctx, "REPLICAOF", "127.0.0.1", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Settle(ctx, t0, tk, 1200, 0); err == nil {
		t.Fatal("a Settle on a read-only replica did not fail")
	}
	<-hook.failed
	if n := s.Pending(); n != 1 {
		t.Errorf("%d pending, want the settlement", n)
	}
	short, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Wait(short); err == nil {
		t.Error("Wait returned nil with the settlement still pending and its context done")
	}
	if err := client.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if n, got := s.Pending(), used(t, s, t0, b, "web", KindTokens); n != 0 || got != 1200 {
		t.Errorf("after Wait: %d pending, %v tokens counted; want none pending, 1200 counted", n, got)
	}
}

// TestRedisRefusedTakeNotTakenBack: a Take Redis refused (full under
// noeviction, as the docs advise; a replica after a failover) counted
// nothing, and Redis said so: it is not taken back. Each one started an
// undo that Redis refused as well, tried for 30 s by a goroutine of its
// own: a full Redis cost a goroutine a request.
func TestRedisRefusedTakeNotTakenBack(t *testing.T) {
	addr, _ := startRedis(t)
	admin := newClient(t, addr)
	ctx := context.Background()
	b := rolling("b", time.Hour)
	b.Requests, b.Tokens = 10, 1000
	for _, tt := range []struct {
		name      string
		set, undo []any
	}{
		{"full", []any{"CONFIG", "SET", "maxmemory", "1"}, []any{"CONFIG", "SET", "maxmemory", "0"}},
		{"replica", []any{"REPLICAOF", "127.0.0.1", "1"}, []any{"REPLICAOF", "NO", "ONE"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := NewRedis(newClient(t, addr), nil, "test:"+t.Name())
			mustTake(t, s, t0, 0, one("web", b)) // the script is loaded
			if err := admin.Do(ctx, tt.set...).Err(); err != nil {
				t.Fatal(err)
			}
			defer admin.Do(ctx, tt.undo...)
			for range 100 {
				if _, _, err := s.Take(ctx, t0, one("web", b), 100); err == nil {
					t.Fatal("a Take succeeded")
				}
			}
			if n := s.Pending(); n > 0 {
				t.Errorf("%d of 100 Takes Redis refused are being taken back, want none", n)
			}
			admin.Do(ctx, tt.undo...)
			s.pending.Wait()
			for k, want := range map[Kind]float64{KindRequests: 1, KindTokens: 0} {
				if got := used(t, s, t0, b, "web", k); got != want {
					t.Errorf("%v %s used after the refusals, want %v", got, k, want)
				}
			}
		})
	}
}

// TestRedisHandEditedCounts: a count that is not a whole number as till
// writes it ("0x10", "1e3", " 7": a hand edit) fails a Take, a Settle and
// Usage with an error that names the key, before anything is written.
// Lua read "0x10" as 16, then Redis's HINCRBY refused it halfway through
// the script, after the other budget's counts were written, which no undo
// took back; Usage skipped it, and said less was used than Take counted.
func TestRedisHandEditedCounts(t *testing.T) {
	addr, _ := startRedis(t)
	client := newClient(t, addr)
	ctx := context.Background()
	bucket := strconv.FormatInt(rolling("x", time.Hour).Window.at(t0).bucket, 10)
	for _, tt := range []struct{ name, field, value string }{
		{"hex", bucket, "0x10"},
		{"exponent", bucket, "1e3"},
		{"word", bucket, "abc"},
		{"leading zero", bucket, "05"},
		{"space", bucket, " 7"},
		{"negative", bucket, "-3"},
		{"above 2^62", bucket, "9300000000000000000"},
		{"field", "x", "1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := NewRedis(client, nil, "test:"+t.Name())
			a, b := rolling("a", time.Hour), rolling("b", time.Hour)
			a.Requests, a.Tokens, b.Requests, b.Tokens = 100, 100000, 100, 100000
			both := []Charge{{Spec: a, Counter: "web"}, {Spec: b, Counter: "web"}}
			settle(t, s, t0, mustTake(t, s, t0, 0, both), 1000, 0)
			tk := mustTake(t, s, t0, 0, both)
			for _, k := range []int{reqs, toks} {
				if err := client.HSet(ctx, s.counterKey("b", b.Window, PerClient, "web", k), tt.field, tt.value).Err(); err != nil {
					t.Fatal(err)
				}
			}
			bad := s.counterKey("b", b.Window, PerClient, "web", reqs)
			if _, _, err := s.Take(ctx, t0, both, 100); err == nil || !strings.Contains(err.Error(), bad) {
				t.Errorf("Take: got %v, want an error naming %s", err, bad)
			}
			if tt.field == bucket {
				if err := s.Settle(ctx, t0, tk, 500, 0); err == nil || !strings.Contains(err.Error(), s.counterKey("b", b.Window, PerClient, "web", toks)) {
					t.Errorf("Settle: got %v, want an error naming the tokens key", err)
				}
			}
			s.pending.Wait()
			if r, k := used(t, s, t0, a, "web", KindRequests), used(t, s, t0, a, "web", KindTokens); r != 2 || k != 1000 {
				t.Errorf("budget a: %v requests and %v tokens counted, want 2 and 1000: a failed Take or Settle wrote", r, k)
			}
			if _, err := s.Usage(ctx, t0, []*Spec{b}); err == nil || !strings.Contains(err.Error(), bad) {
				t.Errorf("Usage: got %v, want an error naming %s", err, bad)
			}
		})
	}
}

// TestRedisUndoOverHandEditedCount: the undo of a Take whose answer was
// lost fails before it writes when a count it takes back from is not a
// whole number: the Take stays counted in every budget (safe), rather
// than taken back from some and marked undone.
func TestRedisUndoOverHandEditedCount(t *testing.T) {
	addr, _ := startRedis(t)
	client := newClient(t, addr)
	ctx := context.Background()
	s := NewRedis(client, nil, "")
	a, b := rolling("a", time.Hour), rolling("b", time.Hour)
	a.Requests, b.Requests = 100, 100
	both := []Charge{{Spec: a, Counter: "web"}, {Spec: b, Counter: "web"}}
	tk := mustTake(t, s, t0, 0, both)
	bucket := strconv.FormatInt(b.Window.at(t0).bucket, 10)
	if err := client.HSet(ctx, s.counterKey("b", b.Window, PerClient, "web", reqs), bucket, "0x10").Err(); err != nil {
		t.Fatal(err)
	}
	s.undo(tk.id, t0, both, 0)
	s.pending.Wait()
	if got := used(t, s, t0, a, "web", KindRequests); got != 1 {
		t.Errorf("budget a: %v requests counted, want the Take's 1", got)
	}
	if got := client.Get(ctx, tk.id).Val(); got != "1" {
		t.Errorf("the Take's key holds %q, want %q: the undo that failed wrote", got, "1")
	}
}

// TestRedisUpgradeKeepsSpend: a budget per route or for all that a till
// from before per was in the keys counted (under WINDOW alone) keeps its
// spend across the upgrade: the first Take of each counter copies the old
// keys into its own, once, and till usage shows them before that. Once a
// till that keeps pers apart has counted a counter, the old keys are a
// client's and a route of the same name never finds them.
func TestRedisUpgradeKeepsSpend(t *testing.T) {
	addr, _ := startRedis(t)
	client := newClient(t, addr)
	ctx := context.Background()
	s := NewRedis(client, nil, "")
	bucket := strconv.FormatInt(t0.Unix(), 10)
	// What a till before per was in the keys counted: 2 requests of the
	// budget for all, 2 of route web and 1 of route api, 900 tokens of web.
	old := func(budget, counter, kind string, v int64) {
		t.Helper()
		key := "till:budget:" + budget + ":3600s:" + counter + ":" + kind
		if err := client.HSet(ctx, key, bucket, v).Err(); err != nil {
			t.Fatal(err)
		}
		if err := client.Expire(ctx, key, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		if err := client.ZAdd(ctx, "till:budget:"+budget+":3600s:counters", redis.Z{Score: float64(t0.Unix()), Member: counter}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	old("cap", "all", "requests", 2)
	old("routes", "web", "requests", 2)
	old("routes", "web", "tokens", 900)
	old("routes", "api", "requests", 1)
	all := rolling("cap", time.Hour)
	all.Requests, all.Per = 10, PerAll
	routes := rolling("routes", time.Hour)
	routes.Requests, routes.Tokens, routes.Per = 2, 1000, PerRoute

	// Before any Take, usage shows what the next Take counts.
	counts := func(when string, cap, web, webTokens, api float64) {
		t.Helper()
		if got := used(t, s, t0, all, "all", KindRequests); got != cap {
			t.Errorf("%s: budget for all: %v requests counted, want %v", when, got, cap)
		}
		if got := used(t, s, t0, routes, "web", KindRequests); got != web {
			t.Errorf("%s: route web: %v requests counted, want %v", when, got, web)
		}
		if got := used(t, s, t0, routes, "web", KindTokens); got != webTokens {
			t.Errorf("%s: route web: %v tokens counted, want %v", when, got, webTokens)
		}
		if got := used(t, s, t0, routes, "api", KindRequests); got != api {
			t.Errorf("%s: route api: %v requests counted, want %v", when, got, api)
		}
	}
	counts("before any Take", 2, 2, 900, 1)
	mustDeny(t, s, t0, 0, one("web", routes), deny(routes, "web", KindRequests, time.Hour+time.Minute))
	mustTake(t, s, t0, 0, one("api", routes))
	mustDeny(t, s, t0, 0, one("api", routes), deny(routes, "api", KindRequests, time.Hour+time.Minute))
	mustTake(t, s, t0, 0, one("all", all))
	// The old keys are a client's now (a budget per client counts there):
	// the next Take must not copy them again.
	if err := client.HIncrBy(ctx, "till:budget:cap:3600s:all:requests", bucket, 5).Err(); err != nil {
		t.Fatal(err)
	}
	mustTake(t, s, t0, 0, one("all", all))
	counts("after the upgrade", 4, 2, 900, 2)
	if ttl := client.TTL(ctx, "till:budget:routes:3600s/route:web:tokens").Val(); ttl < 50*time.Minute {
		t.Errorf("web's tokens copied with a TTL of %v, want the old key's (1h)", ttl)
	}

	// A client counted by this till, then the budget turned per route: the
	// route of its name does not find its counts.
	perClient := rolling("turned", time.Hour)
	perClient.Requests = 1
	mustTake(t, s, t0, 0, one("web", perClient))
	perRoute := *perClient
	perRoute.Per = PerRoute
	tk := mustTake(t, s, t0, 0, one("web", &perRoute))
	if rows := usage(t, s, t0, &perRoute); len(rows) != 1 || rows[0].Used != 1 {
		t.Errorf("per route after per client: usage %s, want the route's 1 request alone", rowsString(rows))
	}
	// A Settle sets the mark as it extends the counter's keys, so that it
	// lasts as long as they do.
	mark := "till:budget:turned:3600s:web:layout"
	if ttl := client.TTL(ctx, mark).Val(); ttl <= time.Hour {
		t.Errorf("%s: TTL %v after a Take, want the counters' (1h2m)", mark, ttl)
	}
	client.Del(ctx, mark)
	settle(t, s, t0, tk, 0, 0)
	if ttl := client.TTL(ctx, mark).Val(); ttl <= time.Hour {
		t.Errorf("%s: TTL %v after a Settle, want the counters' (1h2m)", mark, ttl)
	}
}

// TestRedisSettleAfterDataLoss: a request in flight while Redis lost its
// data (a restart without persistence, a FLUSHALL) is settled without
// taking back a reservation Redis no longer holds. Settle took it off
// what was counted since, down to 0: the use of the requests after the
// loss was wiped, and the budget could be spent again.
func TestRedisSettleAfterDataLoss(t *testing.T) {
	addr, _ := startRedis(t)
	client := newClient(t, addr)
	s := NewRedis(client, nil, "")
	b := rolling("b", time.Hour)
	b.Tokens = 100000
	early := mustTake(t, s, t0, 5000, one("web", b))
	if err := client.FlushAll(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	settle(t, s, at(time.Second), mustTake(t, s, at(time.Second), 1000, one("web", b)), 800, 0)
	inFlight := mustTake(t, s, at(2*time.Second), 1000, one("web", b))
	settle(t, s, at(3*time.Second), early, 300, 0)
	if got := used(t, s, at(3*time.Second), b, "web", KindTokens); got < 800+300 {
		t.Errorf("used %v tokens once the request from before the loss settled, want the 800 used since and its 300", got)
	}
	settle(t, s, at(4*time.Second), inFlight, 200, 0)
	if got := used(t, s, at(4*time.Second), b, "web", KindTokens); got != 800+300+200 {
		t.Errorf("used %v tokens once all settled, want the 1300 used", got)
	}
}

// TestRedisSettleOverHandEditedCount: a Settle that only gives a
// reservation back (its request used nothing) checks the count it takes
// it from as one that adds does, and fails before it writes.
func TestRedisSettleOverHandEditedCount(t *testing.T) {
	addr, _ := startRedis(t)
	client := newClient(t, addr)
	ctx := context.Background()
	s := NewRedis(client, nil, "")
	a, b := rolling("a", time.Hour), rolling("b", time.Hour)
	a.Tokens, b.Tokens = 100000, 100000
	both := []Charge{{Spec: a, Counter: "web"}, {Spec: b, Counter: "web"}}
	tk := mustTake(t, s, t0, 100, both)
	bucket := strconv.FormatInt(b.Window.at(t0).bucket, 10)
	key := s.counterKey("b", b.Window, PerClient, "web", toks)
	if err := client.HSet(ctx, key, bucket, "abc").Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Settle(ctx, t0, tk, 0, 0); err == nil || !strings.Contains(err.Error(), key) {
		t.Errorf("Settle: got %v, want an error naming %s", err, key)
	}
	s.pending.Wait()
	if got := used(t, s, t0, a, "web", KindTokens); got != 100 {
		t.Errorf("budget a: %v tokens counted, want the 100 reserved: a failed Settle wrote", got)
	}
}

// TestRedisClockStepBackKeepsReservationsApart: what a rolling window
// reserved ahead of a clock since stepped back moves with the tokens it
// is part of, so a budget held only by requests in flight still says
// retry in a second, and each is settled where its reservation went.
// The reservations stayed behind: the Take read the moved tokens as used,
// and said to wait for the window (1h1m here).
func TestRedisClockStepBackKeepsReservationsApart(t *testing.T) {
	addr, _ := startRedis(t)
	s := NewRedis(newClient(t, addr), nil, "")
	// Redis counts by its own clock, which is now: the till's runs 5 h
	// ahead, then is set right.
	now := time.Now().Truncate(time.Minute)
	b := rolling("tokens", time.Hour)
	b.Tokens = 1000
	tk := mustTake(t, s, now.Add(5*time.Hour), 1000, one("web", b))
	mustDeny(t, s, now, 0, one("web", b), deny(b, "web", KindTokens, time.Second)) // moves it
	mustDeny(t, s, now.Add(2*time.Minute), 0, one("web", b), deny(b, "web", KindTokens, time.Second))
	later := now.Add(5 * time.Minute) // in a later bucket than the one it moved to
	settle(t, s, later, tk, 100, 0)
	if got := used(t, s, later, b, "web", KindTokens); got != 100 {
		t.Errorf("used %v tokens, want the 100 settled in place of the 1000 reserved", got)
	}
	// Moved into a bucket that holds use already, a reservation is taken
	// off that bucket's use once: what is used alone is spent, for the
	// window.
	settle(t, s, now, mustTake(t, s, now, 0, one("api", b)), 1200, 0)
	mustTake(t, s, now.Add(5*time.Hour), 1000, one("api", b))
	mustDeny(t, s, now, 0, one("api", b), deny(b, "api", KindTokens, time.Hour+time.Minute))
}

// TestRedisHugeAmountMoved: a Take that moves a huge amount counted ahead
// of a clock since stepped back (a hostile max_tokens reserved, up to
// 2^50) answers it as a whole number. Lua wrote it as 1.1258999068426e+15:
// the answer could not be read, and the Take failed, its request let by
// uncounted under on_redis_error: allow.
func TestRedisHugeAmountMoved(t *testing.T) {
	addr, _ := startRedis(t)
	s := NewRedis(newClient(t, addr), nil, "")
	now := time.Now().Truncate(time.Minute) // Redis's clock; the till's runs 5 h ahead, then is set right
	b := rolling("tokens", time.Hour)
	b.Tokens = 1000
	mustTake(t, s, now.Add(5*time.Hour), maxAmount, one("web", b))
	mustDeny(t, s, now, 0, one("web", b), deny(b, "web", KindTokens, time.Second))
}

// TestRedisHugeSumMoved: a Take that moves what a clock step left ahead
// counts it whole however much it sums to. Requests in flight under a
// budget of requests reserve up to 2^50 tokens each, unrefused: 100 of
// them hold more than 10^17, which Redis passed to HINCRBY as 1.1e+17.
// The script failed halfway, after dropping the buckets it moved: the
// Take failed (its request let by uncounted under on_redis_error: allow)
// and what was counted ahead was lost.
func TestRedisHugeSumMoved(t *testing.T) {
	addr, _ := startRedis(t)
	client := newClient(t, addr)
	s := NewRedis(client, nil, "")
	now := time.Now().Truncate(time.Minute) // Redis's clock; the till's runs 5 h ahead, then is set right
	b := rolling("requests", time.Hour)
	b.Requests = 1000
	for range 100 {
		mustTake(t, s, now.Add(5*time.Hour), maxAmount, one("web", b))
	}
	mustTake(t, s, now, 0, one("web", b)) // moves them
	if got := used(t, s, now, b, "web", KindRequests); got != 101 {
		t.Errorf("%v requests counted, want 101", got)
	}
	key := s.counterKey("requests", b.Window, PerClient, "web", toks)
	bucket := strconv.FormatInt(b.Window.at(now).bucket, 10)
	if got, err := client.HGet(t.Context(), key, bucket).Result(); err != nil || got != strconv.FormatInt(100*maxAmount, 10) {
		t.Errorf("%s field %s: %q, %v; want the %d tokens reserved", key, bucket, got, err, 100*maxAmount)
	}
}
