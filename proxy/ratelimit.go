package proxy

import (
	"github.com/tillgw/till/budget"

	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/tillgw/till/config"
)

// RateLimiter counts requests against a route's rate. It answers whether
// one more request under key is allowed now and, if not, how many seconds
// to wait; an error means the store could not decide.
type RateLimiter interface {
	// Allow takes one request from the bucket of rate r and burst of
	// key, a route and client, and of source, the address of an
	// anonymous caller ("" for a configured client).
	Allow(ctx context.Context, key, source string, r config.Rate, burst int) (wait int, ok bool, err error)
}

// maxLimiters bounds the buckets kept in memory, of configured clients and
// of anonymous callers' addresses each.
const maxLimiters = 10000

// MemoryLimits keeps one token bucket (golang.org/x/time/rate) per route
// and client, in bounded LRU caches: one for configured clients and one
// for anonymous callers' addresses, so that callers from many addresses
// cannot push a client's bucket out, to come back full. It lives in the
// Gateway, not the snapshot, so a reload keeps the buckets of the routes
// it keeps, under their new rate and burst when it changes them.
type MemoryLimits struct {
	clients, sources *lru.Cache[string, *rate.Limiter]
}

var _ RateLimiter = (*MemoryLimits)(nil)

// NewMemoryLimits returns an empty set of in-memory buckets.
func NewMemoryLimits() *MemoryLimits {
	clients, _ := lru.New[string, *rate.Limiter](maxLimiters) // size is positive
	sources, _ := lru.New[string, *rate.Limiter](maxLimiters)
	return &MemoryLimits{clients: clients, sources: sources}
}

// Allow takes one request from the bucket of key and source.
func (l *MemoryLimits) Allow(_ context.Context, key, source string, r config.Rate, burst int) (int, bool, error) {
	cache := l.clients
	if source != "" {
		cache, key = l.sources, key+"\x00"+source
	}
	lim, ok := cache.Get(key)
	if !ok {
		lim = rate.NewLimiter(rate.Every(r.Per/time.Duration(r.Count)), burst)
		// Concurrent first requests share the bucket one of them made.
		if prev, found, _ := cache.PeekOrAdd(key, lim); found {
			lim = prev
		}
	}
	now := time.Now()
	if limit := rate.Every(r.Per / time.Duration(r.Count)); lim.Limit() != limit || lim.Burst() != burst {
		// A reload changed the route's rate: the bucket goes on at the
		// new one with what it holds (no more than the new burst), as
		// in Redis (bucketScript), rather than starting full.
		lim.SetLimitAt(now, limit)
		lim.SetBurstAt(now, burst)
	}
	// Decided without a reservation: cancelling the reservations of
	// refusals that overlap returns the wrong number of tokens
	// (golang/go#69419), leaving the bucket in debt or in credit.
	if lim.AllowN(now, 1) {
		return 0, true, nil
	}
	missing := 1 - lim.TokensAt(now)
	return max(1, int(math.Ceil(missing/float64(lim.Limit())))), false, nil
}

// redisTimeout bounds one rate decision in Redis, however many wait for
// one: a slow, absent or frozen Redis must not stall requests
// (limits.on_redis_error decides then).
const redisTimeout = 250 * time.Millisecond

// RedisLimits counts limits in Redis with the token bucket of
// [MemoryLimits], atomically in one script ([bucketScript]), so that
// several till instances share them and a reload that changes a route's
// rate or burst does to a caller's bucket what it does in memory.
type RedisLimits struct {
	client *redis.Client
	late   *redis.Client // for what runs after a request gave up waiting
}

var _ RateLimiter = (*RedisLimits)(nil)

// NewRedisLimits connects to the redis:// or rediss:// URL lazily: a Redis
// that is down at start is an error per request, not at start.
func NewRedisLimits(rawURL string) (*RedisLimits, error) {
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		// Not wrapped: url.Parse's error quotes the URL, password and all.
		return nil, errors.New("limits.redis: not a URL the Redis client takes")
	}
	if opt.TLSConfig != nil && opt.TLSConfig.InsecureSkipVerify {
		// config refuses ?skip_verify: a URL from elsewhere cannot have it.
		return nil, errors.New("limits.redis: skip_verify: Redis's certificate is always verified")
	}
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = redisTimeout, redisTimeout, redisTimeout
	opt.PoolTimeout = redisTimeout
	opt.MaxRetries = -1
	// Without this, go-redis bounds socket reads and writes by ReadTimeout
	// and WriteTimeout alone, counted from when a connection is had: once
	// more decisions wait than the pool has connections, a wait for one
	// (up to PoolTimeout) came on top, and a frozen Redis cost twice
	// redisTimeout. With it, Allow's deadline bounds the pool wait, the
	// handshake, the write and the read together.
	opt.ContextTimeoutEnabled = true
	// A new connection's setup counts against a decision's deadline too:
	// it sends HELLO, not go-redis's client name as well (CLIENT SETINFO,
	// which Redis before 7.2 refuses), a round trip more.
	opt.DisableIdentity = true
	client := redis.NewClient(opt)
	// Taking back a charge Redis ran after till gave up, and settling
	// what a request used, must outlast a busy Redis: their client waits
	// seconds, not a request's deadline.
	lateOpt := *opt
	lateOpt.DialTimeout, lateOpt.ReadTimeout, lateOpt.WriteTimeout = lateTimeout, lateTimeout, lateTimeout
	lateOpt.PoolTimeout, lateOpt.PoolSize = lateTimeout, 4
	redisLog.Do(func() { redis.SetLogger(quietRedis{}) })
	return &RedisLimits{client: client, late: redis.NewClient(&lateOpt)}, nil
}

// lateTimeout bounds each try of what runs after a request gave up.
const lateTimeout = 5 * time.Second

// redisLog silences go-redis's own logger once: it writes plain text to
// stderr, a line for each failed dial, which breaks the JSON log and
// floods it while Redis is down. Till logs a store's failure itself, at
// most every 10 seconds.
var redisLog sync.Once

// quietRedis is go-redis's logger, writing nothing.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// Budgets returns a budget store in the same Redis, shared like the
// rates by every till that uses it. It counts by Redis's clock when this
// till's is more than clockTolerance off it, as the rates (bucketScript
// reads Redis's TIME) always do.
func (l *RedisLimits) Budgets() budget.Store {
	s := budget.NewRedis(l.client, l.late, "")
	s.UseRedisClock(clockTolerance)
	return s
}

// clockTolerance is how far this till's clock may be from Redis's before
// budgets are counted by Redis's: more than the second a Unix time's
// truncation and a round trip can make of clocks that agree.
const clockTolerance = 2 * time.Second

// bucketScript takes one request from a token bucket as golang.org/x/time/rate
// does in [MemoryLimits], by Redis's clock (microseconds): the bucket
// (KEYS[1], a hash) holds tokens as of last, refilled at one per
// interval up to burst, the interval and burst it was last taken at.
// ARGV: the interval (microseconds) and burst now. A bucket taken at
// another interval or burst (a reload changed them) is refilled at the old
// ones up to now, then goes on at the new ones with what it holds, at
// most the new burst. A clock stepped back refills nothing until it moves
// on again, and takes nothing back. Without the hash, the bucket is full;
// the hash expires when it would be full again. Returns {1, 0} when
// taken, else {0, the microseconds until a token is there}.
var bucketScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'last', 'interval', 'burst')
local tokens = burst
if b[1] then
  local last, was, wasBurst = tonumber(b[2]), tonumber(b[3]), tonumber(b[4])
  tokens = math.min(wasBurst, tonumber(b[1]) + math.max(0, now - last) / was)
end
tokens = math.min(burst, tokens)
local taken = 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'last', string.format('%.17g', now), 'interval', ARGV[1], 'burst', ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * interval / 1000) + 1)
if taken == 1 then return {1, 0} end
return {0, math.ceil((1 - tokens) * interval)}
`)

// Allow takes one request from key's shared bucket.
func (l *RedisLimits) Allow(ctx context.Context, key, source string, r config.Rate, burst int) (int, bool, error) {
	if source != "" {
		key += "\x00" + source
	}
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	interval := strconv.FormatFloat(float64(r.Per)/float64(r.Count)/float64(time.Microsecond), 'g', -1, 64)
	res, err := bucketScript.Run(ctx, l.client, []string{"till:rate:" + key}, interval, burst).Int64Slice()
	if err != nil {
		return 0, false, err
	}
	if len(res) != 2 {
		return 0, false, fmt.Errorf("rate limit: redis: unexpected answer %v", res)
	}
	if res[0] == 0 {
		return max(1, int(math.Ceil(float64(res[1])/1e6))), false, nil
	}
	return 0, true, nil
}

// Close closes the connections to Redis.
func (l *RedisLimits) Close() error { return errors.Join(l.client.Close(), l.late.Close()) }
