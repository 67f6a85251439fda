package budget

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis counts budgets in Redis, shared by every till that uses the same
// Redis and prefix. Each Take and each Settle is one Lua script, so they
// are atomic however many tills share the counters. Each till says what
// time it is, so their clocks should agree, or the store count by Redis's
// ([Redis.UseRedisClock]); buckets are dropped only once they no longer
// count by Redis's clock too, so one whose clock runs ahead never wipes
// the others' counts. What a rolling window counted in a bucket more than
// [Window.slack] ahead of both clocks (before the clock was stepped back)
// is moved to now's bucket by the next Take that reads it: it counts a
// window from then, not until the clock gets there again. The part of
// it requests in flight reserved moves with it, and stays apart, so that
// a denial's wait and their Settle find it there. A calendar
// window's periods are the clock's, but a clock stepped back over a
// period's start charges a counter in the later period it holds.
//
// Keys, all starting with the prefix (escaped names: %, :, { and } as %XX):
//
//	PREFIX:BUDGET:SET:COUNTER:KIND       a hash per counter and kind: bucket start (unix seconds) → amount
//	PREFIX:BUDGET:SET:COUNTER:reserved   a hash: bucket start → the part of its tokens requests in flight reserved (">BUCKET" once a clock step moved it there)
//	PREFIX:BUDGET:SET:counters           a sorted set: counter → start of its last Take's bucket, for Usage
//	PREFIX:BUDGET:WINDOW:COUNTER:layout  "per": a store that keeps pers apart counted COUNTER (of any per)
//	PREFIX:taken:ID                      a Take: "1" once it counted ("1 BUCKET..." when in a later period), then "settled", or "undone" (a tombstone)
//
// SET is [Window.String] for a budget per client, and WINDOW/route or
// WINDOW/all for one per route or for all ("86400s/route"), so a budget
// whose window or per changed starts afresh in new keys, and a route
// never finds a client's counts, while one whose limits changed keeps its
// counts. Stores before per was in the keys counted every per under
// WINDOW alone: a budget per client keeps those keys, and the first Take
// of a counter of a budget per route or for all that has no layout key
// copies them into its own (Usage reads them until then), so an upgrade
// keeps what was spent. The layout key lasts as long as the counter's
// keys; while it is there, the counter's keys under WINDOW alone are a
// client's, which a route never reads. A per changed by the upgrade
// itself may find, once, the old per's counts of a counter of the same
// name (over-counting, never forgiving); and stores of both kinds on one
// Redis count a budget per route or for all apart once one of this kind
// has counted its counter. USD
// is kept in whole micro-dollars. Every key expires a bucket after its
// newest bucket stops counting (a minute after the period for a calendar
// window); a Take's key after [takenTTL] (a tombstone after
// [tombstoneTTL]), so Redis holds one for each request of the last 40 s.
// It counts in a single Redis (till gives it one: limits.redis, a single
// Redis or a primary that fails over by DNS), not a Redis Cluster, whose
// slots the keys of one script may span: there a MOVED or CROSSSLOT
// answer fails the call, as any store failure does. Counts are as
// durable as Redis keeps them: an eviction policy that drops keys with a
// TTL (all of these have one), or a restart that loses the data, starts
// them afresh; a request in flight across the loss gives back no more of
// its reservation than the reserved hash still holds, so what was counted
// since is kept.
type Redis struct {
	client redis.UniversalClient
	late   redis.UniversalClient
	prefix string
	// pending counts the undos and settlements being tried late, for
	// Wait; lateRuns, for Pending.
	pending  sync.WaitGroup
	lateRuns atomic.Int64
	// tolerance is how far a caller's clock may be from Redis's before
	// the store counts by Redis's (see [Redis.UseRedisClock]); 0: never.
	tolerance int64
	// offset is Redis's clock minus the caller's, in seconds, as last
	// learned: what the store adds to each now it is given.
	offset atomic.Int64
}

var _ Store = (*Redis)(nil)

// NewRedis returns a store counting in client's Redis under prefix
// ("till:budget" when empty). It does not connect: a Redis that is down is
// an error per call. Bound each call's time with its context.
//
// late, the same Redis through a client whose timeouts are seconds (nil:
// client), runs in the background, for up to [lateFor], what must not be
// lost once a caller gave up waiting: taking back a Take whose answer was
// lost, and a Settle that failed. Both run once however often they are
// tried, and whether the call that failed ran before them or after. A
// Take that never reached Redis (no connection was had for it), or that
// Redis refused, is not taken back: NewRedis adds a hook to client that
// marks its dial errors.
func NewRedis(client, late redis.UniversalClient, prefix string) *Redis {
	if prefix == "" {
		prefix = "till:budget"
	}
	if late == nil {
		late = client
	}
	client.AddHook(dialMarks{})
	return &Redis{client: client, late: late, prefix: prefix}
}

// dialError is the error of a dial (TCP, TLS): no command went out on it.
type dialError struct{ error }

func (e dialError) Unwrap() error { return e.error }

// dialMarks is a go-redis hook that makes its client's dial errors
// dialErrors.
type dialMarks struct{}

func (dialMarks) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			return nil, dialError{err}
		}
		return c, nil
	}
}

func (dialMarks) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (dialMarks) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// unsent reports whether err, a command's, shows that the command never
// left till: no connection was had for it, since a dial failed (Redis
// down or unreachable, its TLS refused) or the wait for a free one ended
// (the pool's timeout, or the deadline: go-redis's reads and writes time
// out as network errors, by the connection's deadline).
func unsent(err error) bool {
	return errors.As(err, new(dialError)) || errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, context.DeadlineExceeded)
}

// UseRedisClock makes the store count by Redis's clock whenever the time
// it is given differs from Redis's by more than tolerance (whole seconds,
// at least one): a Take finds out, without counting, and is run again at
// Redis's time, and later calls add the difference to the time they are
// given. Tills sharing a Redis then count in the same buckets whatever
// their clocks say; without it, one whose clock is off counts in buckets
// the others no longer count (behind) or do not count yet (ahead), and
// its clients can spend the budget again. Call it before the store is used.
func (r *Redis) UseRedisClock(tolerance time.Duration) {
	r.tolerance = max(1, int64(tolerance/time.Second))
}

// clock is now moved by the offset to Redis's clock last learned.
func (r *Redis) clock(now time.Time) time.Time {
	if r.tolerance == 0 {
		return now
	}
	return now.Add(time.Duration(r.offset.Load()) * time.Second)
}

// keyEscaper keeps names from being read as key separators or hash tags.
var keyEscaper = strings.NewReplacer("%", "%25", ":", "%3A", "{", "%7B", "}", "%7D")

// base is the start of the keys of budget's counters of per in window w:
// PREFIX:BUDGET:WINDOW: for PerClient, as before counters said what they
// count, so that an upgrade keeps what clients spent, and
// PREFIX:BUDGET:WINDOW/PER: for the others.
func (r *Redis) base(budget string, w Window, per Per) string {
	set := w.String()
	if per != PerClient {
		set += "/" + string(per)
	}
	return r.prefix + ":" + keyEscaper.Replace(budget) + ":" + set + ":"
}

// counterKey is the hash of counter's amounts of kind k.
func (r *Redis) counterKey(budget string, w Window, per Per, counter string, k int) string {
	return r.base(budget, w, per) + keyEscaper.Replace(counter) + ":" + string(kinds[k])
}

// reservedKey is the hash of the tokens counter's requests in flight
// reserved, by bucket: a part of its tokens hash, which a denial's wait
// leaves out, since a reservation frees when its request ends.
func (r *Redis) reservedKey(budget string, w Window, per Per, counter string) string {
	return r.base(budget, w, per) + keyEscaper.Replace(counter) + ":reserved"
}

// indexKey is the sorted set of budget's counters.
func (r *Redis) indexKey(budget string, w Window, per Per) string {
	return r.base(budget, w, per) + "counters"
}

// markKey says that a till that keeps pers apart counted counter of
// budget in window w (of any per), so that its keys under WINDOW alone,
// counterKey's for PerClient, are a client's: until it exists, they are
// what a till from before per was in the keys counted for counter, of
// any per, and the first Take of a budget per route or for all copies
// them into its own keys (takeScript). It lasts as long as the counter's
// keys do: every Take and Settle of the counter extends it as it extends
// them.
func (r *Redis) markKey(budget string, w Window, counter string) string {
	return r.base(budget, w, PerClient) + keyEscaper.Replace(counter) + ":layout"
}

// badCountFix ends the error of a count that is not a whole number as
// the scripts write them (see isCount).
const badCountFix = " (a hand edit?): every Take and Settle that counts in it fails until it is one again (HSET) or the key is deleted"

// luaHelpers are the scripts' shared functions: extend sets a key's TTL
// to at least ttl; wrongType says why a key's type is not want (or none);
// incr adds d to a hash's field within 0..2^62, since an HINCRBY that
// overflows fails the script halfway, after it wrote (Redis does not roll
// a script back), and a store that fails lets requests by uncounted (a
// Lua number d goes as a whole number: Redis passes one of 10^17 or more
// as 1e+17, which HINCRBY refuses, halfway too);
// badCount says why a hash's field or value is not a count as incr
// writes them (isCount: digits, within int64), and badAt why a field's value is not: Lua reads
// "0x10" or "1e3" as a number, which HINCRBY then refuses halfway, so the
// scripts check what they read and what they add to before they write.
// hold adds d to a field of a reservedKey hash, within 0..2^62 (a field
// at 0 is deleted; given dropBefore, the fields before it too, which a
// till stopped mid-request left); heldLive lists its fields from liveMin
// on, those after ahead (when above 0) in bucket, where the tokens they
// are part of move; moveHeld moves them there, leaving ">" and bucket in
// each field moved, and heldAt follows those to where a reservation is
// held, and says what is held there. None fails on what it cannot read:
// a reservation only tells a denial's wait, and how much a Settle takes
// back.
const luaHelpers = `
local function isCount(s)
  if s == '0' then return true end
  if string.find(s, '^[1-9]%d*$') == nil then return false end
  return #s < 19 or (#s == 19 and s <= '9223372036854775807')
end
local function badCount(key, field, value)
  if not isCount(field) then return 'BADCOUNT ' .. key .. ' has a field that is not a bucket start (whole seconds)` + badCountFix + `' end
  if not isCount(value) then return 'BADCOUNT ' .. key .. ' field ' .. field .. ' holds a value that is not a whole number` + badCountFix + `' end
end
local function badAt(key, field)
  local v = redis.call('HGET', key, field)
  if v then return badCount(key, field, v) end
end
local function incr(key, field, d)
  local v = tonumber(redis.call('HGET', key, field) or '0') + tonumber(d)
  if v >= 4611686018427387904 then
    redis.call('HSET', key, field, '4611686018427387904')
  elseif v <= 0 then
    redis.call('HSET', key, field, 0)
  else
    if type(d) == 'number' then d = string.format('%.0f', d) end
    redis.call('HINCRBY', key, field, d)
  end
end
local function extend(key, ttl)
  if redis.call('TTL', key) < ttl then redis.call('EXPIRE', key, ttl) end
end
local function wrongType(key, want)
  local t = redis.call('TYPE', key).ok
  if t ~= 'none' and t ~= want then return 'WRONGTYPE ' .. key .. ' is a ' .. t .. ', not a ' .. want end
end
local function hold(key, field, d, ttl, dropBefore)
  if wrongType(key, 'hash') then return end
  local v = math.min(math.max(0, (tonumber(redis.call('HGET', key, field) or '0') or 0) + tonumber(d)), 4611686018427387904)
  if v > 0 then
    redis.call('HSET', key, field, string.format('%.0f', v))
    extend(key, ttl)
  else
    redis.call('HDEL', key, field)
  end
  if dropBefore then
    for _, f in ipairs(redis.call('HKEYS', key)) do
      if (tonumber(f) or 0) < dropBefore then redis.call('HDEL', key, f) end
    end
  end
end
local function heldLive(key, liveMin, ahead, bucket)
  local held = {}
  if wrongType(key, 'hash') then return held end
  local flat = redis.call('HGETALL', key)
  for x = 1, #flat, 2 do
    if isCount(flat[x]) and isCount(flat[x + 1]) and tonumber(flat[x]) >= liveMin then
      held[#held + 1] = (ahead > 0 and tonumber(flat[x]) > ahead) and bucket or flat[x]
      held[#held + 1] = flat[x + 1]
    end
  end
  return held
end
local function moveHeld(key, ahead, bucket, ttl)
  if wrongType(key, 'hash') then return end
  local moved = 0
  local flat = redis.call('HGETALL', key)
  for x = 1, #flat, 2 do
    if isCount(flat[x]) and isCount(flat[x + 1]) and tonumber(flat[x]) > ahead then
      moved = moved + tonumber(flat[x + 1])
      redis.call('HSET', key, flat[x], '>' .. bucket)
    end
  end
  if moved > 0 then hold(key, bucket, moved, ttl) end
end
local function heldAt(key, bucket)
  if wrongType(key, 'hash') then return bucket, 0 end
  for _ = 1, 8 do
    local v = redis.call('HGET', key, bucket)
    if not v then return bucket, 0 end
    if string.sub(v, 1, 1) ~= '>' then return bucket, isCount(v) and tonumber(v) or 0 end
    bucket = string.sub(v, 2)
    if not isCount(bucket) then return bucket, 0 end
  end
  return bucket, 0
end
`

// takeScript checks and counts a Take. KEYS: per charge, its index, then
// its requests, tokens and usd hashes, its counter's markKey and the
// requests, tokens and usd hashes of its counter under WINDOW alone (the
// same as its own for a budget per client); then the Take's own key, and
// per charge its reservedKey. ARGV: the
// number of charges, the tokens reserved, then per charge its counter,
// bucket, first live bucket, the TTL of its keys, its limits of requests,
// tokens and micro-dollars (0: none), whether it only warns ("1"),
// [Window.life] and [Window.slack]; last, the TTL of the Take's key, the
// caller's time (unix seconds) and the tolerance of [Redis.UseRedisClock]
// (0: none).
// When the caller's time is further than the tolerance from Redis's, it
// counts nothing and returns {2, Redis's time}. It drops the buckets no
// longer live, by the caller's clock and by Redis's (a till whose clock
// runs ahead must not wipe what still counts for the others), moves what
// a rolling window's buckets hold that start more than its slack ahead of
// both clocks (counted before the clock was stepped back) into the
// charge's bucket, where it counts a window from now (what the
// reservedKey holds of the tokens moved with them, for Settle to find by
// the ">BUCKET" left behind), and
// returns {taken (1 or 0), spent[, buckets]}, spent listing {charge,
// kind, {bucket, amount, ...}, {bucket, reserved, ...}} of each limit
// spent (0-based indexes; what is reserved, of tokens only), and
// buckets, of a Take that counted, the bucket it counted in per charge: a
// calendar window's counter is charged in the period of its last Take
// or Settle when that is later than the charge's and it still holds
// use of any kind there (the clock was stepped back over the period's
// start), so that what the step lets through counts in the period it is
// spent in, not in one that stops counting when the clock gets there
// again; the Take's key then lists them after its "1", for undoScript.
// Nothing is counted
// when a spent budget does not only warn, when undoScript ran first (the
// Take's key is its tombstone), or when a key has a type it cannot count
// in or a count that is not a whole number (checked before anything is
// written: Redis does not roll a failed script back); what is counted sets
// the Take's key, for undoScript.
// A charge of a budget per route or for all whose counter has no markKey
// yet reads each hash it lacks from the counter's hash under WINDOW alone,
// which a till from before per was in the keys wrote, and copies it (with
// its TTL) before it writes, whether it counts or refuses: once, since
// every Take that gets past the checks sets or extends the markKey of
// each charge's counter.
var takeScript = redis.NewScript(luaHelpers + `
if redis.replicate_commands then redis.replicate_commands() end
local clock = tonumber(redis.call('TIME')[1])
local n, reserve = tonumber(ARGV[1]), tonumber(ARGV[2])
local takenTTL = tonumber(ARGV[3 + n * 10])
local tolerance = tonumber(ARGV[5 + n * 10])
if tolerance > 0 and math.abs(clock - tonumber(ARGV[4 + n * 10])) > tolerance then return {2, clock} end
if redis.call('EXISTS', KEYS[n * 8 + 1]) == 1 then return {0, {}} end
local from = {}
for j = 0, n - 1 do
  local b = j * 8
  if KEYS[b + 6] ~= KEYS[b + 2] and redis.call('EXISTS', KEYS[b + 5]) == 0 then
    for k = 2, 4 do
      if redis.call('EXISTS', KEYS[b + k]) == 0 and redis.call('EXISTS', KEYS[b + k + 4]) == 1 then from[b + k] = KEYS[b + k + 4] end
    end
  end
  for k = 1, 4 do
    local bad = wrongType(KEYS[b + k], k == 1 and 'zset' or 'hash')
    if not bad and from[b + k] then bad = wrongType(from[b + k], 'hash') end
    if bad then return redis.error_reply(bad) end
  end
end
local spent, block, drops, moves, heldMoves = {}, false, {}, {}, {}
for j = 0, n - 1 do
  local a = 3 + j * 10
  local liveMin = tonumber(ARGV[a + 2])
  local dropBefore = math.min(liveMin, clock - tonumber(ARGV[a + 8]) + 1)
  local ahead = 0
  if tonumber(ARGV[a + 9]) > 0 then ahead = math.max(clock, tonumber(ARGV[4 + n * 10])) + tonumber(ARGV[a + 9]) end
  for k = 1, 3 do
    local key = KEYS[j * 8 + 1 + k]
    local src = from[j * 8 + 1 + k] or key
    local flat = redis.call('HGETALL', src)
    local live, dead, moved, used = {}, {}, 0, 0
    for x = 1, #flat, 2 do
      local bad = badCount(src, flat[x], flat[x + 1])
      if bad then return redis.error_reply(bad) end
      if ahead > 0 and tonumber(flat[x]) > ahead then
        dead[#dead + 1] = flat[x]
        moved = moved + tonumber(flat[x + 1])
      elseif tonumber(flat[x]) < liveMin then
        if tonumber(flat[x]) < dropBefore then dead[#dead + 1] = flat[x] end
      else
        used = used + tonumber(flat[x + 1])
        live[#live + 1] = flat[x]
        live[#live + 1] = flat[x + 1]
      end
    end
    if moved > 0 then
      moves[#moves + 1] = {key, ARGV[a + 1], moved, tonumber(ARGV[a + 3])}
      if k == 2 then heldMoves[#heldMoves + 1] = {KEYS[n * 8 + 2 + j], ahead, ARGV[a + 1], tonumber(ARGV[a + 3])} end
      used = used + moved
      live[#live + 1] = ARGV[a + 1]
      live[#live + 1] = string.format('%.0f', math.min(moved, 4611686018427387904))
    end
    if #dead > 0 then drops[#drops + 1] = {key, dead} end
    local limit = tonumber(ARGV[a + 3 + k])
    if limit > 0 and used >= limit then
      local held = {}
      if k == 2 then held = heldLive(KEYS[n * 8 + 2 + j], liveMin, moved > 0 and ahead or 0, ARGV[a + 1]) end
      spent[#spent + 1] = {j, k - 1, live, held}
      if ARGV[a + 7] ~= '1' then block = true end
    end
  end
end
for j = 0, n - 1 do
  local b, a = j * 8, 3 + j * 10
  local ttl = tonumber(ARGV[a + 3])
  local copied = false
  for k = 2, 4 do
    if from[b + k] then
      redis.call('COPY', from[b + k], KEYS[b + k])
      copied = true
    end
  end
  if copied then
    redis.call('ZADD', KEYS[b + 1], 'GT', ARGV[a + 1], ARGV[a])
    extend(KEYS[b + 1], ttl)
  end
  if ttl > 0 and redis.call('TTL', KEYS[b + 5]) < ttl then redis.call('SET', KEYS[b + 5], 'per', 'EX', ttl) end
end
for _, d in ipairs(drops) do redis.call('HDEL', d[1], unpack(d[2])) end
for _, m in ipairs(moves) do
  incr(m[1], m[2], m[3])
  extend(m[1], m[4])
end
for _, m in ipairs(heldMoves) do moveHeld(m[1], m[2], m[3], m[4]) end
if block then return {0, spent} end
local buckets, later = {}, false
for j = 0, n - 1 do
  local a = 3 + j * 10
  buckets[j + 1] = ARGV[a + 1]
  if tonumber(ARGV[a + 9]) == 0 then
    local last = redis.call('ZSCORE', KEYS[j * 8 + 1], ARGV[a])
    if last and tonumber(last) > tonumber(ARGV[a + 1]) then
      for k = 2, 4 do
        if redis.call('HEXISTS', KEYS[j * 8 + k], last) == 1 then buckets[j + 1], later = last, true end
      end
    end
  end
end
if later then
  redis.call('SET', KEYS[n * 8 + 1], '1 ' .. table.concat(buckets, ' '), 'EX', takenTTL)
else
  redis.call('SET', KEYS[n * 8 + 1], 1, 'EX', takenTTL)
end
for j = 0, n - 1 do
  local a = 3 + j * 10
  local bucket, ttl = buckets[j + 1], tonumber(ARGV[a + 3])
  local dropBefore = math.min(tonumber(ARGV[a + 2]), clock - tonumber(ARGV[a + 8]) + 1)
  local index = KEYS[j * 8 + 1]
  redis.call('ZADD', index, 'GT', bucket, ARGV[a])
  redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. dropBefore)
  extend(index, ttl)
  incr(KEYS[j * 8 + 2], bucket, 1)
  extend(KEYS[j * 8 + 2], ttl)
  if reserve > 0 then
    incr(KEYS[j * 8 + 3], bucket, ARGV[2])
    extend(KEYS[j * 8 + 3], ttl)
    hold(KEYS[n * 8 + 2 + j], bucket, ARGV[2], ttl, dropBefore)
  end
end
return {1, spent, buckets}
`)

// undoScript takes back a Take whose answer was lost (its caller gave up
// waiting, and took it for failed), if it ran: KEYS: the Take's key, then
// per charge its requests and tokens hashes, then per charge its
// reservedKey. ARGV: the number of charges,
// the tokens reserved, then per charge its bucket, and last the TTL of a
// tombstone. When the Take has not run (yet: it may wait in a busy
// Redis), it leaves a tombstone at the Take's key, which keeps the Take
// from counting; when the Take was taken back already, or did not count,
// it does nothing. It takes back from the buckets the Take's key lists,
// if any, else from those of ARGV. A count that is not a whole number
// fails it before it writes.
var undoScript = redis.NewScript(luaHelpers + `
local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], 'undone', 'EX', ARGV[#ARGV])
  return 0
end
local counted = {}
for w in string.gmatch(v, '%S+') do counted[#counted + 1] = w end
if counted[1] ~= '1' then return 0 end
for j = 0, tonumber(ARGV[1]) - 1 do
  for k = 1, 2 do
    local bad = badAt(KEYS[1 + j * 2 + k], counted[2 + j] or ARGV[3 + j])
    if bad then return redis.error_reply(bad) end
  end
end
redis.call('SET', KEYS[1], 'undone', 'EX', ARGV[#ARGV])
for j = 0, tonumber(ARGV[1]) - 1 do
  local bucket = counted[2 + j] or ARGV[3 + j]
  incr(KEYS[2 + j * 2], bucket, -1)
  if tonumber(ARGV[2]) > 0 then
    incr(KEYS[3 + j * 2], bucket, -tonumber(ARGV[2]))
    hold(KEYS[2 + tonumber(ARGV[1]) * 2 + j], bucket, -tonumber(ARGV[2]), 0)
  end
end
return 1
`)

// lateFor is how long an undo or a settlement that failed is tried again;
// lateTimeout bounds each try.
const (
	lateFor     = 30 * time.Second
	lateTimeout = 5 * time.Second
)

// takenTTL is how long a Take's key lasts, and the key a Settle leaves:
// past every try of its undo or of its settlement. Every Take leaves one.
const takenTTL = lateFor + 2*lateTimeout

// tombstoneTTL is how long an undo that ran before its Take keeps it from
// counting: a Take can wait in a frozen Redis until it thaws. Only a
// failed Take leaves one.
const tombstoneTTL = 10 * time.Minute

// settleScript adds what a request used. KEYS: per charge, its tokens and
// usd hashes, its budget's index and its counter's markKey (set or
// extended as the hashes are); then its Take's key, and per charge its
// reservedKey. ARGV: the
// number of charges, then per charge its bucket, the first live bucket,
// the TTL its keys need, the tokens and micro-dollars used (0: nothing),
// and its counter; then the tokens reserved and per charge the bucket the
// reservation was taken in, which it releases; last, the TTL of the
// Take's key. It takes back no more of the reservation than the
// reservedKey holds where it was taken (or where a clock step moved it):
// what Redis lost (a restart without persistence, a FLUSHALL) is not
// taken again from what was counted since. A bucket no longer
// live is left alone; none goes below 0. The index names the counter as
// charged in the bucket (a stream longer than its window is settled in a
// later one than it was taken in). It runs once: the Take's key says it
// settled. A key of a type it cannot count in, or a count it adds to that
// is not a whole number, fails it before it writes.
var settleScript = redis.NewScript(luaHelpers + `
local n = tonumber(ARGV[1])
local id = KEYS[n * 4 + 1]
local reserve = tonumber(ARGV[2 + n * 6])
if redis.call('GET', id) == 'settled' then return 0 end
local held = {}
for j = 0, n - 1 do
  local a = 2 + j * 6
  local at, v = heldAt(KEYS[n * 4 + 2 + j], ARGV[3 + n * 6 + j])
  held[j + 1] = {at, math.min(reserve, v)}
  for k = 1, 3 do
    local bad = wrongType(KEYS[j * 4 + k], k == 3 and 'zset' or 'hash')
    if not bad and k < 3 and tonumber(ARGV[a + 2 + k]) ~= 0 then bad = badAt(KEYS[j * 4 + k], ARGV[a]) end
    if not bad and k == 1 and held[j + 1][2] > 0 then bad = badAt(KEYS[j * 4 + k], at) end
    if bad then return redis.error_reply(bad) end
  end
end
redis.call('SET', id, 'settled', 'EX', ARGV[#ARGV])
for j = 0, n - 1 do
  local a = 2 + j * 6
  local bucket, liveMin, ttl = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local at, off = held[j + 1][1], held[j + 1][2]
  local used = {tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])}
  if off > 0 then
    hold(KEYS[n * 4 + 2 + j], at, -off, 0)
    if tonumber(at) == tonumber(bucket) then
      used[1] = used[1] - off
    elseif tonumber(at) >= liveMin then
      incr(KEYS[j * 4 + 1], at, string.format('%.0f', -off))
    end
  end
  if tonumber(bucket) >= liveMin then
    for k = 1, 2 do
      if used[k] ~= 0 then
        local key = KEYS[j * 4 + k]
        incr(key, bucket, string.format('%.0f', used[k]))
        extend(key, ttl)
      end
    end
    redis.call('ZADD', KEYS[j * 4 + 3], 'GT', bucket, ARGV[a + 5])
    extend(KEYS[j * 4 + 3], ttl)
    if ttl > 0 and redis.call('TTL', KEYS[j * 4 + 4]) < ttl then redis.call('SET', KEYS[j * 4 + 4], 'per', 'EX', ttl) end
  end
end
return 1
`)

// Take checks every charge and, when none is spent, counts one request and
// reserves reserve tokens in each, in one script. See [Store].
func (r *Redis) Take(ctx context.Context, now time.Time, charges []Charge, reserve int64) (*Ticket, *Denial, error) {
	id := r.prefix + ":taken:" + rand.Text()
	t, d, err := r.take(ctx, r.clock(now), charges, reserve, id)
	var skew errSkew
	if errors.As(err, &skew) {
		// This till's clock is off Redis's by more than the tolerance:
		// count at Redis's time, as every till on it does.
		r.offset.Store(int64(skew) - now.Unix())
		t, d, err = r.take(ctx, r.clock(now), charges, reserve, id)
	}
	return t, d, err
}

// abs is |v|.
func abs(v int64) int64 { return max(v, -v) }

// errSkew is a Take that did not run: the time it gave was too far from
// Redis's, the unix second it holds.
type errSkew int64

func (e errSkew) Error() string {
	return fmt.Sprintf("budget: redis: this till's clock is off Redis's (%v)", time.Unix(int64(e), 0).UTC().Format(time.RFC3339))
}

// take is Take, with id the key the Take leaves.
func (r *Redis) take(ctx context.Context, now time.Time, charges []Charge, reserve int64, id string) (*Ticket, *Denial, error) {
	if err := validate(charges); err != nil {
		return nil, nil, err
	}
	if len(charges) == 0 {
		return &Ticket{}, nil, nil
	}
	reserve = clamp(reserve)
	keys := make([]string, 0, 1+8*len(charges))
	args := make([]any, 0, 3+10*len(charges))
	args = append(args, len(charges), reserve)
	for _, c := range charges {
		s, w := c.Spec, c.Spec.Window
		sp := w.at(now)
		keys = append(keys, r.indexKey(s.Name, w, s.per()))
		for k := range numKinds {
			keys = append(keys, r.counterKey(s.Name, w, s.per(), c.Counter, k))
		}
		keys = append(keys, r.markKey(s.Name, w, c.Counter))
		for k := range numKinds {
			keys = append(keys, r.counterKey(s.Name, w, PerClient, c.Counter, k))
		}
		l := s.limits()
		args = append(args, c.Counter, sp.bucket, sp.liveMin, w.expireAt(sp.bucket)-now.Unix(),
			l[reqs], l[toks], l[usd], boolArg(s.Warn), w.life(), w.slack())
	}
	keys = append(keys, id)
	for _, c := range charges {
		keys = append(keys, r.reservedKey(c.Spec.Name, c.Spec.Window, c.Spec.per(), c.Counter))
	}
	args = append(args, int64(takenTTL/time.Second), now.Unix(), r.tolerance)
	res, err := takeScript.Run(ctx, r.client, keys, args...).Slice()
	if err != nil {
		// The script may have run all the same, or run later (a busy
		// Redis answers after the deadline): what it counted is taken
		// back, since the caller has no ticket to settle it with. One
		// that never left till, or that Redis refused (it fails before
		// it writes), counted nothing: trying its undo for lateFor would
		// cost, while Redis is down or full, a goroutine a request.
		var answered redis.Error
		if !unsent(err) && !errors.As(err, &answered) {
			r.undo(id, now, charges, reserve)
		}
		return nil, nil, fmt.Errorf("budget: redis: %w", err)
	}
	if len(res) == 2 && res[0] == int64(2) {
		clock, _ := res[1].(int64)
		return nil, nil, errSkew(clock)
	}
	ok, spent, buckets, err := parseTake(res, charges, now)
	if err != nil {
		return nil, nil, err
	}
	denial, warnings := decide(spent)
	if !ok && denial == nil {
		return nil, nil, errors.New("budget: redis: the Take was taken back before it ran")
	}
	if !ok {
		return nil, denial, nil
	}
	t := newTicket(now, charges, reserve, warnings)
	for i, b := range buckets {
		t.charges[i].bucket = b
	}
	t.id = id
	return t, nil, nil
}

// undo takes back, in the background, the Take whose key is id, if it
// counted or whenever it does.
func (r *Redis) undo(id string, now time.Time, charges []Charge, reserve int64) {
	keys := make([]string, 0, 1+2*len(charges))
	args := make([]any, 0, 3+len(charges))
	keys = append(keys, id)
	args = append(args, len(charges), reserve)
	for _, c := range charges {
		s, w := c.Spec, c.Spec.Window
		keys = append(keys, r.counterKey(s.Name, w, s.per(), c.Counter, reqs), r.counterKey(s.Name, w, s.per(), c.Counter, toks))
		args = append(args, w.at(now).bucket)
	}
	for _, c := range charges {
		keys = append(keys, r.reservedKey(c.Spec.Name, c.Spec.Window, c.Spec.per(), c.Counter))
	}
	args = append(args, int64(tombstoneTTL/time.Second))
	r.runLate(undoScript, keys, args) // failing for lateFor, the Take stays counted: safe
}

// runLate runs script in the background through the late client until
// Redis answers it, for up to lateFor, waiting longer between tries each
// time (up to 2 s). An error Redis answers is not tried again (a key of
// the wrong type stays so), unless it is [transient].
func (r *Redis) runLate(script *redis.Script, keys []string, args []any) {
	r.pending.Add(1)
	r.lateRuns.Add(1)
	go func() {
		defer r.pending.Done()
		defer r.lateRuns.Add(-1)
		start := time.Now()
		for wait := 50 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
			ctx, cancel := context.WithTimeout(context.Background(), lateTimeout)
			err := script.Run(ctx, r.late, keys, args...).Err()
			cancel()
			var answered redis.Error
			if err == nil || (errors.As(err, &answered) && !transient(err)) || time.Since(start)+wait > lateFor {
				return
			}
			time.Sleep(wait)
		}
	}()
}

// Pending is how many undos and settlements Redis missed are being tried
// again in the background.
func (r *Redis) Pending() int { return int(r.lateRuns.Load()) }

// Wait waits until no undo or settlement is being tried again, or ctx
// ends: a process that exits first loses them.
func (r *Redis) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		r.pending.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// transientErrors are the codes of errors Redis answers while it cannot
// write for now: a primary turned replica by a failover (READONLY), a
// Redis loading its data after a restart (LOADING), one busy with a slow
// script (BUSY), one out of memory for now (OOM), one whose last snapshot
// or AOF write failed, a full disk say (MISCONF), and a replica or a
// cluster without its primary (MASTERDOWN, NOREPLICAS, CLUSTERDOWN,
// TRYAGAIN).
var transientErrors = []string{"READONLY", "LOADING", "BUSY", "OOM", "MISCONF", "MASTERDOWN", "NOREPLICAS", "CLUSTERDOWN", "TRYAGAIN"}

// transient reports whether err is an error Redis answered that a later
// try can get past: one given up at once loses a settlement.
func transient(err error) bool {
	code, _, _ := strings.Cut(err.Error(), " ")
	return slices.Contains(transientErrors, code)
}

// counts reads a field of the counter hash key (a bucket start) and its
// value, or says, as the scripts do, which of them is not a whole number
// as they write them (isCount in luaHelpers).
func counts(key, field, value string) (start, v int64, err error) {
	start, err1 := strconv.ParseInt(field, 10, 64)
	v, err2 := strconv.ParseInt(value, 10, 64)
	switch {
	case err1 != nil || start < 0 || strconv.FormatInt(start, 10) != field:
		return 0, 0, fmt.Errorf("budget: redis: BADCOUNT %s has a field that is not a bucket start (whole seconds)%s", key, badCountFix)
	case err2 != nil || v < 0 || strconv.FormatInt(v, 10) != value:
		return 0, 0, fmt.Errorf("budget: redis: BADCOUNT %s field %s holds a value that is not a whole number%s", key, field, badCountFix)
	}
	return start, v, nil
}

// boolArg is a script's flag.
func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// parseTake reads takeScript's answer: whether it counted, the limits
// spent, and the bucket it counted each charge in (none when it did not
// count).
func parseTake(res []any, charges []Charge, now time.Time) (ok bool, spent []spentLimit, buckets []int64, err error) {
	bad := fmt.Errorf("budget: redis: unexpected answer %v", res)
	if len(res) == 3 {
		list, _ := res[2].([]any)
		if len(list) != len(charges) {
			return false, nil, nil, bad
		}
		for _, b := range list {
			start, err := strconv.ParseInt(fmt.Sprint(b), 10, 64)
			if err != nil {
				return false, nil, nil, bad
			}
			buckets = append(buckets, start)
		}
		res = res[:2]
	}
	if len(res) != 2 {
		return false, nil, nil, bad
	}
	taken, _ := res[0].(int64)
	list, _ := res[1].([]any)
	for _, e := range list {
		entry, _ := e.([]any)
		if len(entry) != 4 {
			return false, nil, nil, bad
		}
		j, _ := entry[0].(int64)
		k, _ := entry[1].(int64)
		if j < 0 || int(j) >= len(charges) || k < 0 || k >= numKinds {
			return false, nil, nil, bad
		}
		live, ok1 := bucketList(entry[2])
		reserved, ok2 := bucketList(entry[3])
		if !ok1 || !ok2 {
			return false, nil, nil, bad
		}
		c := charges[j]
		if d := check(c, int(k), c.Spec.limits()[k], live, reserved, now, nil); d != nil {
			spent = append(spent, spentLimit{d: d, warn: c.Spec.Warn})
		}
	}
	return taken == 1, spent, buckets, nil
}

// bucketList reads a script's {bucket, amount, ...}, oldest first, with
// the amounts of a bucket listed twice (one a clock step moved into)
// summed.
func bucketList(v any) ([]bucketAmount, bool) {
	flat, _ := v.([]any)
	if len(flat)%2 != 0 {
		return nil, false
	}
	out := make([]bucketAmount, 0, len(flat)/2)
	for x := 0; x < len(flat); x += 2 {
		start, err1 := strconv.ParseInt(fmt.Sprint(flat[x]), 10, 64)
		v, err2 := strconv.ParseInt(fmt.Sprint(flat[x+1]), 10, 64)
		if err1 != nil || err2 != nil {
			return nil, false
		}
		out = append(out, bucketAmount{start: start, v: v})
	}
	slices.SortFunc(out, func(a, b bucketAmount) int { return cmp.Compare(a.start, b.start) })
	merged := out[:0]
	for _, b := range out {
		if last := len(merged) - 1; last >= 0 && merged[last].start == b.start {
			merged[last].v = plus(merged[last].v, b.v)
			continue
		}
		merged = append(merged, b)
	}
	return merged, true
}

// Settle replaces the ticket's reservation by what the request used, in
// one script. See [Store].
func (r *Redis) Settle(ctx context.Context, now time.Time, t *Ticket, tokens int64, usdUsed float64) error {
	if t == nil || len(t.charges) == 0 || t.settled.Swap(true) {
		return nil
	}
	now = r.clock(now)
	tokens, cost := clamp(tokens), micros(usdUsed)
	keys := make([]string, 0, 1+4*len(t.charges))
	args := make([]any, 0, 2+6*len(t.charges))
	args = append(args, len(t.charges))
	for _, tk := range t.charges {
		w := tk.window
		keys = append(keys, r.counterKey(tk.budget, w, tk.per, tk.counter, toks), r.counterKey(tk.budget, w, tk.per, tk.counter, usd),
			r.indexKey(tk.budget, w, tk.per), r.markKey(tk.budget, w, tk.counter))
		sp := w.at(now)
		bucket := settledIn(tk.bucket, sp)
		if slack := w.slack(); slack > 0 && bucket > now.Unix()+slack {
			// Taken before the clock was stepped back: what it counted
			// is moved, or will be, to a bucket of now (takeScript),
			// its reservation too, which the script finds there.
			bucket = sp.bucket
		}
		args = append(args, bucket, sp.liveMin, w.expireAt(bucket)-now.Unix(), tokens, cost, tk.counter)
	}
	id := t.id
	if id == "" {
		id = r.prefix + ":taken:" + rand.Text() // a ticket of another store
	}
	keys = append(keys, id)
	args = append(args, t.reserve)
	for _, tk := range t.charges {
		keys = append(keys, r.reservedKey(tk.budget, tk.window, tk.per, tk.counter))
		args = append(args, tk.bucket)
	}
	args = append(args, int64(takenTTL/time.Second))
	if err := settleScript.Run(ctx, r.client, keys, args...).Err(); err != nil {
		// It may have run all the same; if not, it runs late, once.
		r.runLate(settleScript, keys, args)
		return fmt.Errorf("budget: redis: %w (tried again for %v)", err, lateFor)
	}
	return nil
}

// Usage lists the limits of each counter of specs charged within its
// window, read in two round trips. A counter of a budget per route or for
// all that no till keeping pers apart has counted yet (it has no markKey)
// is read as takeScript reads it, from what a till from before per was in
// the keys counted under WINDOW alone: Usage lists what the next Take
// counts. See [Store].
func (r *Redis) Usage(ctx context.Context, now time.Time, specs []*Spec) ([]Row, error) {
	for _, s := range specs {
		if err := s.Validate(); err != nil {
			return nil, err
		}
	}
	if len(specs) == 0 {
		return nil, nil
	}
	now = r.clock(now)
	if r.tolerance > 0 {
		// Often the first call (till usage): learn Redis's clock.
		if t, err := r.client.Time(ctx).Result(); err == nil && abs(t.Unix()-now.Unix()) > r.tolerance {
			r.offset.Add(t.Unix() - now.Unix())
			now = t
		}
	}
	// Per spec, its index, and for one per route or for all the index
	// under WINDOW alone.
	indexes := make([][2]*redis.StringSliceCmd, len(specs))
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, s := range specs {
			live := &redis.ZRangeBy{Min: strconv.FormatInt(s.Window.at(now).liveMin, 10), Max: "+inf"}
			indexes[i][0] = p.ZRangeByScore(ctx, r.indexKey(s.Name, s.Window, s.per()), live)
			if s.per() != PerClient {
				indexes[i][1] = p.ZRangeByScore(ctx, r.indexKey(s.Name, s.Window, PerClient), live)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("budget: redis: %w", err)
	}
	var reads []usageRead
	_, err = r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, s := range specs {
			reads = r.readUsage(ctx, p, reads, s, indexes[i])
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("budget: redis: %w", err)
	}
	rows := make([]Row, 0, len(reads))
	for _, rd := range reads {
		key, fields := rd.key, rd.cmd.Val()
		marked := rd.mark != nil && rd.mark.Val() > 0
		if rd.oldOnly && marked {
			continue // a client's counter, of the keys under WINDOW alone
		}
		if rd.old != nil && !marked && len(fields) == 0 {
			key, fields = rd.oldKey, rd.old.Val()
		}
		liveMin := rd.spec.Window.at(now).liveMin
		var used int64
		for field, value := range fields {
			start, v, err := counts(key, field, value)
			if err != nil {
				return nil, err
			}
			if start >= liveMin {
				used = plus(used, v)
			}
		}
		rows = append(rows, row(rd.spec, rd.counter, rd.kind, rd.spec.limits()[rd.kind], used, now))
	}
	sortRows(rows)
	return rows, nil
}

// usageRead is a read of Usage: a counter's hash of a kind and, for a
// budget per route or for all, its markKey and its hash under WINDOW
// alone, which count for it while the markKey is missing (nil per client).
type usageRead struct {
	spec    *Spec
	counter string
	kind    int
	key     string
	cmd     *redis.MapStringStringCmd
	oldKey  string
	old     *redis.MapStringStringCmd
	mark    *redis.IntCmd
	// oldOnly: the counter is listed under WINDOW alone, not in the
	// spec's own index.
	oldOnly bool
}

// readUsage adds to reads, and queues in p, the reads of the counters of
// s listed in indexes (its own index's; the one under WINDOW alone's, nil
// per client).
func (r *Redis) readUsage(ctx context.Context, p redis.Pipeliner, reads []usageRead, s *Spec, indexes [2]*redis.StringSliceCmd) []usageRead {
	counters := indexes[0].Val()
	own := len(counters)
	if indexes[1] != nil {
		listed := make(map[string]bool, own)
		for _, c := range counters {
			listed[c] = true
		}
		for _, c := range indexes[1].Val() {
			if !listed[c] {
				counters = append(counters, c)
			}
		}
	}
	for x, counter := range counters {
		var mark *redis.IntCmd
		if indexes[1] != nil {
			mark = p.Exists(ctx, r.markKey(s.Name, s.Window, counter))
		}
		for k, limit := range s.limits() {
			if limit == 0 {
				continue
			}
			rd := usageRead{spec: s, counter: counter, kind: k, mark: mark, oldOnly: x >= own}
			rd.key = r.counterKey(s.Name, s.Window, s.per(), counter, k)
			rd.cmd = p.HGetAll(ctx, rd.key)
			if mark != nil {
				rd.oldKey = r.counterKey(s.Name, s.Window, PerClient, counter, k)
				rd.old = p.HGetAll(ctx, rd.oldKey)
			}
			reads = append(reads, rd)
		}
	}
	return reads
}
