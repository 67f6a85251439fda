package proxy

import (
	"math"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"

	"github.com/tillgw/till/config"
)

// maxLimiters bounds the per-client, per-route limiters kept in memory.
const maxLimiters = 10000

// limiters keeps one token bucket per route, client and rate. It lives in
// the Gateway, not the snapshot, so a reload keeps the buckets of unchanged
// routes.
type limiters struct {
	cache *lru.Cache[string, *rate.Limiter]
}

func newLimiters() *limiters {
	c, _ := lru.New[string, *rate.Limiter](maxLimiters) // size is positive
	return &limiters{cache: c}
}

// allow takes one request from the bucket of key; when it is empty it
// returns how many seconds to wait (for Retry-After).
func (l *limiters) allow(key string, r config.Rate, burst int, now time.Time) (int, bool) {
	lim, ok := l.cache.Get(key)
	if !ok {
		lim = rate.NewLimiter(rate.Every(r.Per/time.Duration(r.Count)), burst)
		l.cache.Add(key, lim)
	}
	res := lim.ReserveN(now, 1)
	if !res.OK() {
		return 1, false
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return int(math.Ceil(d.Seconds())), false
	}
	return 0, true
}
