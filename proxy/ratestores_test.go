package proxy

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
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
// refused every caller that had taken anything for that hour. A bucket
// kept by a till from before (GCRA's time) counts what it took: an
// upgrade hands no one a fresh burst.
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
	// gcraTime is how GCRA wrote a moment: seconds from 2017.
	gcraTime := func(t time.Time) string {
		return strconv.FormatFloat(float64(t.UnixMicro())/1e6-1483228800, 'f', 6, 64)
	}
	fast := config.Rate{Count: 10, Per: time.Second}
	hour := now.Add(time.Hour)
	for _, tt := range []struct {
		name, key string
		state     func(key string) error
	}{
		{"a till from before", "before", func(key string) error {
			// 10 taken at 10/s with Redis's clock an hour ahead.
			return c.Set(ctx, "rate:till:rate:"+key, gcraTime(hour.Add(time.Second)), time.Hour).Err()
		}},
		{"this till", "this", func(key string) error {
			return c.HSet(ctx, "till:rate:"+key, "tokens", 0, "last", hour.UnixMicro(), "interval", 100000, "burst", 10).Err()
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.state(tt.key); err != nil {
				t.Fatal(err)
			}
			if wait, ok, err := l.Allow(ctx, tt.key, "", fast, 10); err != nil || ok || wait != 1 {
				t.Errorf("at once: wait %d, taken %v, err %v; want a wait of 1 s, the bucket empty", wait, ok, err)
			}
			time.Sleep(150 * time.Millisecond)
			if wait, ok, err := l.Allow(ctx, tt.key, "", fast, 10); err != nil || !ok {
				t.Errorf("0.15 s on at 10/s: wait %d, taken %v, err %v; want taken (held back for the step?)", wait, ok, err)
			}
		})
	}
	t.Run("upgrade keeps what was taken", func(t *testing.T) {
		// 3 taken at 3/h: GCRA's time is an hour on.
		if err := c.Set(ctx, "rate:till:rate:spent", gcraTime(hour), time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		if wait, ok, err := l.Allow(ctx, "spent", "", config.Rate{Count: 3, Per: time.Hour}, 3); err != nil || ok || wait != 1200 {
			t.Errorf("wait %d, taken %v, err %v; want a wait of 1200 s: the 3 taken count", wait, ok, err)
		}
	})
}

// TestRedisRateCarriesOverOnce: a bucket a till from before kept (GCRA's
// time, here an hour ahead: Redis's clock was stepped back) is carried
// over once, at the first decision: a caller that waits the Retry-After
// it was given, past when its new bucket is full and expires, is not
// held back by GCRA's time again. It was read whenever the bucket had
// expired, so a caller that paused a second was refused for the hour.
func TestRedisRateCarriesOverOnce(t *testing.T) {
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
	tat := strconv.FormatFloat(float64(now.Add(time.Hour).UnixMicro())/1e6-1483228800, 'f', 6, 64)
	if err := c.Set(ctx, "rate:till:rate:before", tat, 2*time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	fast := config.Rate{Count: 10, Per: time.Second}
	wait, ok, err := l.Allow(ctx, "before", "", fast, 10)
	if err != nil || ok {
		t.Fatalf("at once: wait %d, taken %v, err %v; want refused, the bucket empty", wait, ok, err)
	}
	time.Sleep(time.Duration(wait)*time.Second + 100*time.Millisecond)
	if wait, ok, err := l.Allow(ctx, "before", "", fast, 10); err != nil || !ok {
		t.Errorf("after the Retry-After: wait %d, taken %v, err %v; want taken", wait, ok, err)
	}
}
