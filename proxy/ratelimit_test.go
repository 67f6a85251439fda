package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tillgw/till/config"
)

// fakeRedis is a TCP listener that speaks just enough RESP for go-redis and
// redis_rate while answering is on, and reads without ever answering once
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
			// redis_rate's script: allowed, remaining, retry_after, reset_after.
			reply = "*4\r\n:1\r\n:9\r\n$2\r\n-1\r\n$1\r\n0\r\n"
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
						if _, ok, err := l.Allow(context.Background(), "k"+strconv.Itoa(i), rt, 10); err != nil || !ok {
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
					_, _, errs[i] = l.Allow(context.Background(), "k"+strconv.Itoa(i), rt, 10)
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
