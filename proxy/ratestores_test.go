package proxy

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tillgw/till/config"
)

// startRedis runs a throwaway redis-server on a free loopback port until
// the test ends, as test/redis_test.go does. Without redis-server the test
// is skipped, or fails under CI=true (.ci/run installs it).
func startRedis(t *testing.T) (addr string) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server is missing: .ci/run must install it")
		}
		t.Skip("redis-server is not installed")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server did not listen on %s", addr)
		}
	}
}

// rateStep is a round of requests at one rate and burst: how many are
// taken, and the wait (seconds) the refusal after them says, 0 for no
// request more.
type rateStep struct {
	rate  config.Rate
	burst int
	taken int
	wait  int
}

// TestRateStoresAgreeOnReload: a reload that changes a route's rate or
// burst leaves each caller the tokens it holds, at most the new burst,
// refilled at the new rate, in memory and in Redis alike. Redis used to
// keep GCRA's time owed at the old rate: a rate loosened from 1/h left a
// caller refused for the rest of the hour, a higher burst was open at
// once, and a lower one held a caller back for the old burst's time.
func TestRateStoresAgreeOnReload(t *testing.T) {
	perHour := func(n int) config.Rate { return config.Rate{Count: n, Per: time.Hour} }
	for _, tt := range []struct {
		name  string
		steps []rateStep
	}{
		{"looser rate", []rateStep{{perHour(1), 1, 1, 3600}, {config.Rate{Count: 1, Per: time.Second}, 1, 0, 1}}},
		{"tighter rate", []rateStep{{perHour(3), 3, 3, 1200}, {perHour(2), 2, 0, 1800}}},
		{"higher burst", []rateStep{{perHour(2), 2, 2, 1800}, {perHour(2), 5, 0, 1800}}},
		{"lower burst, all spent", []rateStep{{perHour(10), 10, 10, 360}, {perHour(10), 2, 0, 360}}},
		{"lower burst, half spent", []rateStep{{perHour(10), 10, 5, 0}, {perHour(10), 2, 2, 360}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, store := range []string{"memory", "redis"} {
				var l RateLimiter = NewMemoryLimits()
				if store == "redis" {
					rl, err := NewRedisLimits("redis://" + startRedis(t) + "/0")
					if err != nil {
						t.Fatal(err)
					}
					defer rl.Close()
					l = rl
				}
				var got []string
				for _, s := range tt.steps {
					taken, wait := 0, 0
					tries := s.taken
					if s.wait > 0 {
						tries++ // the refusal
					}
					for range tries {
						w, ok, err := l.Allow(context.Background(), "route\x00web", "", s.rate, s.burst)
						if err != nil {
							t.Fatal(err)
						}
						if !ok {
							wait = w
							break
						}
						taken++
					}
					got = append(got, fmt.Sprintf("%s burst %d: %d taken, wait %d", s.rate, s.burst, taken, wait))
				}
				var want []string
				for _, s := range tt.steps {
					want = append(want, fmt.Sprintf("%s burst %d: %d taken, wait %d", s.rate, s.burst, s.taken, s.wait))
				}
				if g, w := strings.Join(got, "; "), strings.Join(want, "; "); g != w {
					t.Errorf("%s:\n got %s\nwant %s", store, g, w)
				}
			}
		})
	}
}

// TestRedisRateClockSteppedBack: a Redis clock stepped back (a VM
// restored, NTP mending a clock that ran ahead) refills nothing for the
// step but holds no caller back for it either: the bucket goes on from
// what it held, as in memory, whose monotonic clock a step does not move.
// GCRA kept the time a caller may go again, so a step back of an hour
// refused every caller that had taken anything for that hour.
func TestRedisRateClockSteppedBack(t *testing.T) {
	addr := startRedis(t)
	l, err := NewRedisLimits("redis://" + addr + "/0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx := context.Background()
	now, err := c.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	// 10 taken at 10/s with Redis's clock an hour ahead.
	hour := now.Add(time.Hour)
	if err := c.HSet(ctx, "till:rate:k", "tokens", 0, "last", hour.UnixMicro(), "interval", 100000, "burst", 10).Err(); err != nil {
		t.Fatal(err)
	}
	fast := config.Rate{Count: 10, Per: time.Second}
	if wait, ok, err := l.Allow(ctx, "k", "", fast, 10); err != nil || ok || wait != 1 {
		t.Errorf("at once: wait %d, taken %v, err %v; want a wait of 1 s, the bucket empty", wait, ok, err)
	}
	time.Sleep(150 * time.Millisecond)
	if wait, ok, err := l.Allow(ctx, "k", "", fast, 10); err != nil || !ok {
		t.Errorf("0.15 s on at 10/s: wait %d, taken %v, err %v; want taken (held back for the step?)", wait, ok, err)
	}
}
