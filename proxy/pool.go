package proxy

import (
	"context"
	"errors"
	"hash/maphash"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// pool is a route's keys used in turn (secret: [a, b, c]). A key the
// upstream refuses rests for a while; requests take the others meanwhile.
type pool struct {
	members  []*member
	sticky   bool
	cooldown time.Duration
	next     atomic.Uint64 // round robin
}

// member is one key of a pool.
type member struct {
	// injection attaches the key; for a key in a source it holds the names
	// only, and sourced gets the key.
	*injection
	sourced *sourced
	// restUntil is when the key may be used again, in Unix nanoseconds;
	// shared with the member holding the same key in the snapshots
	// before and after a reload (adopt), so a rest that a request still
	// running on the old one sets holds for the new one too.
	restUntil *atomic.Int64
	// restFP, for a key in a source, is the fingerprint of the value
	// that rests (restValue), shared like restUntil: the rest is that
	// value's, as a vault key's is, and a value rotated in since is used.
	restFP *atomic.Pointer[string]
}

// compilePool compiles cr's pool; each member is compiled like a route's
// single key.
func compilePool(rt *route, cr *config.Route, secrets map[string]vault.Secret, maxAge time.Duration, shared *interner, keys Keys) {
	p := &pool{sticky: cr.Pool.Strategy == config.PoolSticky, cooldown: cr.Pool.Cooldown}
	for _, m := range cr.Pool.Members {
		one := *cr
		one.Secret, one.Ref, one.Pool = m.Secret, m.Ref, nil
		var k route
		if m.Ref != nil {
			compileSourced(&k, &one, maxAge, keys, shared)
		} else {
			k.injection = shared.injection(compileInjection(&one, secrets, maxAge))
		}
		p.members = append(p.members, &member{injection: k.injection, sourced: k.sourced,
			restUntil: new(atomic.Int64), restFP: new(atomic.Pointer[string])})
	}
	rt.pool = p
	rt.injection = p.members[0].injection
}

var stickySeed = maphash.MakeSeed()

// pick returns the member a request takes: the next one in turn (turn,
// which it advances, counts them) or, when sticky, the caller's own,
// that is not resting and not in tried; when every one rests, the one
// whose rest ends first; nil when each was tried.
func (p *pool) pick(turn *atomic.Uint64, caller string, tried []*member, now time.Time) *member {
	n := uint64(len(p.members))
	start := turn.Add(1) - 1
	if p.sticky {
		start = maphash.String(stickySeed, caller)
	}
	var first *member
	for i := range n {
		m := p.members[(start+i)%n]
		if memberIn(m, tried) {
			continue
		}
		if m.restUntil.Load() <= now.UnixNano() {
			return m
		}
		if first == nil || m.restUntil.Load() < first.restUntil.Load() {
			first = m
		}
	}
	return first
}

// turn is the round robin's counter that picks advance: the pool's own,
// or, for a dry run (till test, POST /admin/test), a copy of it, so that
// explaining a request names the key the next request takes without
// moving the rotation that live requests share.
func (p *pool) turn(dryRun bool) *atomic.Uint64 {
	if !dryRun {
		return &p.next
	}
	c := new(atomic.Uint64)
	c.Store(p.next.Load())
	return c
}

func memberIn(m *member, ms []*member) bool {
	for _, x := range ms {
		if x == m {
			return true
		}
	}
	return false
}

// keyNamed returns the injection of rt's key named name: its own, or a
// pool member's; nil when it has none by that name.
func (rt *route) keyNamed(name string) *injection {
	if rt.pool == nil {
		if rt.injection.secretName == name {
			return rt.injection
		}
		return nil
	}
	for _, m := range rt.pool.members {
		if m.secretName == name {
			return m.injection
		}
	}
	return nil
}

// sourcedNamed is how rt fetches its key named name (its own, or a pool
// member's) from a source; nil for a key in the vault.
func (rt *route) sourcedNamed(name string) *sourced {
	if rt.pool == nil {
		if rt.injection.secretName == name {
			return rt.sourced
		}
		return nil
	}
	for _, m := range rt.pool.members {
		if m.secretName == name {
			return m.sourced
		}
	}
	return nil
}

// fromSource reports whether rt's key named name (its own, or a pool
// member's) is fetched from a source.
func (rt *route) fromSource(name string) bool {
	if rt.pool == nil {
		return rt.sourced != nil && rt.injection.secretName == name
	}
	for _, m := range rt.pool.members {
		if m.secretName == name {
			return m.sourced != nil
		}
	}
	return false
}

// rest sets the member aside until now + d, unless it rests longer already.
func (m *member) rest(now time.Time, d time.Duration) {
	until := now.Add(d).UnixNano()
	for {
		cur := m.restUntil.Load()
		if cur >= until || m.restUntil.CompareAndSwap(cur, until) {
			return
		}
	}
}

// restValue rests the member's key whose value has the fingerprint fp
// until now + d, unless it rests longer already. For a key in a source,
// the rest is that value's: it replaces a rest of another value, and
// wake ends it once the source holds another.
func (m *member) restValue(fp string, now time.Time, d time.Duration) {
	for m.sourced != nil {
		cur := m.restFP.Load()
		if cur != nil && *cur == fp {
			break
		}
		if m.restFP.CompareAndSwap(cur, &fp) {
			m.restUntil.Store(now.Add(d).UnixNano())
			return
		}
	}
	m.rest(now, d)
}

// restsWith reports whether the member's key rests at now with the value
// whose fingerprint is fp: a key in a source rests with the value set
// aside only.
func (m *member) restsWith(fp string, now time.Time) bool {
	if m.restUntil.Load() <= now.UnixNano() {
		return false
	}
	if m.sourced == nil {
		return true
	}
	r := m.restFP.Load()
	return r == nil || *r == fp
}

// wake ends the rest of each key in a source whose value changed since
// it was set aside (rotated after a 401, say): a rest belongs to the
// value the upstream refused. A resting key's value is read from the
// cache like a key in use is; a source that cannot say keeps it resting.
func (p *pool) wake(ctx context.Context, now time.Time) {
	for _, m := range p.members {
		if m.sourced == nil {
			continue
		}
		until, fp := m.restUntil.Load(), m.restFP.Load()
		if until <= now.UnixNano() || fp == nil {
			continue
		}
		if in, _, err := m.sourced.current(ctx); err == nil && in.fp != *fp && m.restFP.Load() == fp {
			m.restUntil.CompareAndSwap(until, 0)
		}
	}
}

// usable picks the member a request takes, passing over those whose key
// cannot be used (missing, expired under on_expired: block, not fetched,
// or failing at its token endpoint: mintFailing); when none can, it
// returns the first one picked, to refuse the request with its error.
// Under on_expired: warn, an expired key is taken only when no other
// ready one can be used. Its picks advance turn (p.turn).
func (p *pool) usable(ctx context.Context, turn *atomic.Uint64, caller string, now time.Time, onExpired string) (*member, *injection, bool, error) {
	p.wake(ctx, now)
	var tried []*member
	type choice struct {
		m     *member
		inj   *injection
		stale bool
		err   error
	}
	var first, expired choice
	for m := p.pick(turn, caller, nil, now); m != nil; m = p.pick(turn, caller, tried, now) {
		resting := m.restUntil.Load() > now.UnixNano()
		if resting && expired.m != nil {
			break // every ready key was tried: the expired one goes
		}
		inj, stale, err := m.key(ctx)
		if err == nil && !inj.mintFailing() {
			switch _, ok, warn := inj.secretState(now, onExpired); {
			case ok && warn && !resting:
				if expired.m == nil {
					expired = choice{m, inj, stale, nil}
				}
			case ok:
				return m, inj, stale, nil
			}
		}
		if first.m == nil {
			first = choice{m, inj, stale, err}
		}
		tried = append(tried, m)
	}
	if expired.m != nil {
		return expired.m, expired.inj, expired.stale, nil
	}
	return first.m, first.inj, first.stale, first.err
}

// mintFailing reports whether in mints its tokens and its token
// endpoint's last failure is still remembered (a client disabled, an
// outage): a pool passes over such a key, as over one whose source is
// down, rather than fail each request that comes to its turn.
func (in *injection) mintFailing() bool {
	return in.minter != nil && in.minter.backingOff() != nil
}

// key returns the injection of the member's key, fetching it from its
// source when it has one, and whether that value is stale.
func (m *member) key(ctx context.Context) (*injection, bool, error) {
	if m.sourced == nil {
		return m.injection, false, nil
	}
	return m.sourced.current(ctx)
}

// keyRejected is logged when the upstream refuses a pool's key (401, 403).
const keyRejected = "key_rejected"

// restFor says how long the upstream's answer (res, or err when it could
// not be reached) sets the key aside, and whether it refuses the key: 429,
// 402 and 529 for Retry-After or the cooldown, 401 and 403 for ten
// cooldowns, a refused connection for the cooldown. An answer rests its
// key only once another key served the request (see nextKey).
func (p *pool) restFor(res *http.Response, err error, now time.Time) (time.Duration, bool) {
	if err != nil {
		return p.cooldown, errors.Is(err, syscall.ECONNREFUSED)
	}
	switch res.StatusCode {
	case http.StatusTooManyRequests, http.StatusPaymentRequired, 529:
		if d, ok := retryAfter(res.Header.Get("Retry-After"), now); ok {
			return d, true
		}
		return p.cooldown, true
	case http.StatusUnauthorized, http.StatusForbidden:
		return p.rejectedRest(), true
	}
	return 0, false
}

// rejectedRest is how long a key the upstream rejects rests: ten
// cooldowns (config bounds the cooldown to 30 days).
func (p *pool) rejectedRest() time.Duration { return 10 * p.cooldown }

// rejection reports whether an upstream's status refuses the key itself.
func rejection(status int) bool {
	return status == http.StatusUnauthorized || status == http.StatusForbidden
}

// maxRetryAfter bounds how long an upstream's Retry-After rests a key.
const maxRetryAfter = 24 * time.Hour

// retryAfter reads a Retry-After header: seconds, or an HTTP date.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if s, err := strconv.ParseUint(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		// Seconds, however many: a count past the bound is the bound.
		d = time.Duration(min(s, uint64(maxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	} else {
		return 0, false
	}
	return min(max(d, 0), maxRetryAfter), true
}

// refusedKey is a key the upstream refused (401, 403, 429, 402, 529)
// during a request, set aside only once another key serves the same
// request: when none does, the request is at fault (a path forbidden to
// every key, a body too large for any key's tokens per minute), not the
// keys, and one caller cannot set the pool aside.
type refusedKey struct {
	m        *member
	fp       string        // the value refused
	at       time.Time     // when
	d        time.Duration // its rest from then (restFor)
	rejected bool          // 401 or 403
}

// served reports whether an answer shows that its key carried out the
// request: 2xx or 3xx. A 4xx or 5xx is as likely about the request,
// which the caller chooses (a 404 for a file that does not exist, a
// 400), so it does not show that a key refused before was at fault.
func served(status int) bool { return status >= 200 && status < 400 }

// restRefused sets aside the keys that refused x's request before
// another key served it: they were at fault. A rejected key rests for
// ten cooldowns, and the log says key_rejected.
func (g *Gateway) restRefused(x *exchange) {
	for _, k := range x.refusedBy {
		k.m.restValue(k.fp, k.at, k.d)
		if k.rejected {
			g.log.Warn().Str("id", x.rec.id).Str("route", x.route.name).Str("secret", k.m.secretName).
				Str("code", keyRejected).Msg("the upstream rejected a pool's key: it rests for ten cooldowns")
		}
	}
}

// rejectedBefore reports whether a key before this one rejected x's
// request (401, 403).
func (x *exchange) rejectedBefore() bool {
	for _, k := range x.refusedBy {
		if k.rejected {
			return true
		}
	}
	return false
}

// readyKey returns the pool's next key for x's request that is not
// resting and can be used (fetched, not expired under on_expired: block,
// and not failing at its token endpoint), passing over those that
// cannot, and over an expired one (under warn) while another can be
// used; ok is false when none is, or when a reload since refuses the
// request.
func (g *Gateway) readyKey(r *http.Request, x *exchange, now time.Time) (next *member, inj *injection, stale, expired, ok bool) {
	x.route.pool.wake(x.ctx, now)
	var warned struct {
		m     *member
		inj   *injection
		stale bool
	}
	for {
		next = x.route.pool.pick(&x.route.pool.next, x.caller, x.tried, now)
		if next == nil || next.restUntil.Load() > now.UnixNano() {
			if warned.m != nil {
				return warned.m, warned.inj, warned.stale, true, true
			}
			return nil, nil, false, false, false // every key rests: the app gets this answer
		}
		if g.readmit(r, x, next) != nil {
			return nil, nil, false, false, false // a reload since refuses the request or that key
		}
		var err error
		if inj, stale, err = next.key(x.ctx); err == nil && !inj.mintFailing() {
			var usable bool
			_, usable, expired = inj.secretState(now, x.live.onExpired)
			switch {
			case usable && !expired:
				return next, inj, stale, false, true
			case usable && warned.m == nil:
				warned.m, warned.inj, warned.stale = next, inj, stale
			}
		}
		x.tried = append(x.tried, next) // unusable, or expired: the one after it
	}
}

// codePoolRetry is the audit reason of an attempt whose answer set its
// key aside and whose request went again with the pool's next key.
const codePoolRetry = "pool_retry"

// nextKey notes the exchange's key as refused when the upstream's answer
// calls for it (restFor) and, when the request can go again (nothing of
// the answer reached the app, its body is held, and nothing of it was
// written when the connection was refused) and another key is ready,
// records this attempt, switches to that key and reports true. Otherwise
// the app gets this answer. The keys refused before rest once a key
// serves the request; a refused connection rests its key at once.
func (g *Gateway) nextKey(r *http.Request, x *exchange, res *http.Response, err error) bool {
	p := x.route.pool
	if p == nil || x.member == nil || x.auditFailed.Load() || x.ctx.Err() != nil {
		return false
	}
	if err != nil && x.wrote.Load() {
		// The transport wrote this attempt's request before a dial was
		// refused (its own resend of a replayable request on a new
		// connection): the upstream may have acted on it already.
		return false
	}
	now := time.Now()
	status := 0
	if res != nil {
		status = res.StatusCode
	}
	d, ok := p.restFor(res, err, now)
	switch {
	case res != nil && !ok:
		// An answer: it says whether the keys refused before were at fault.
		if served(status) {
			g.restRefused(x)
		}
		x.refusedBy = nil
		return false
	case !ok:
		return false
	case err != nil:
		x.member.restValue(x.inj.fp, now, d) // the upstream refused the connection, whatever the request
	case rejection(status) && x.rejectedBefore():
		return false // rejected with two keys: the request is refused, not the keys
	default:
		x.refusedBy = append(x.refusedBy, refusedKey{m: x.member, fp: x.inj.fp, at: now, d: d, rejected: rejection(status)})
	}
	x.dropRefusedToken(status) // checkResponse sees only the answer the app gets
	x.tried = append(x.tried, x.member)
	if x.hasBody && x.held == nil {
		return false // the body streamed: it cannot go again
	}
	next, inj, stale, expired, ok := g.readyKey(r, x, now)
	if !ok {
		return false
	}
	// A minting key's token, before this answer is let go for another.
	// The request's record stays this attempt's: the ask has its own
	// use record.
	minted, _, merr := x.mint(inj, g.watchKey(r, x, next, inj))
	if merr != nil {
		g.mintFails.warn(x.rec.id, x.route.name, inj.secretName, merr, "the pool's next token cannot be obtained from its token endpoint")
		return false
	}
	if g.readmit(r, x, next) != nil {
		return false // a reload while the token came: the app gets this answer
	}
	inj = minted
	rec := x.rec
	rec.status, rec.attempt = status, int(x.attempts.Load())
	rec.bytesIn = x.bytesIn.Load()
	rec.outcome, rec.reason = outcomeError, codePoolRetry
	g.audit.write(&rec, now)
	g.metrics.observe(&rec, now)
	if res != nil {
		res.Body.Close()
	}
	x.sentForms = append(slices.Clip(x.echoForms()), inj.echoForms...) // the answer may quote the key before
	// The request's record names the next key once its use is recorded
	// (writeAhead): it may yet not go.
	x.member, x.inj = next, inj
	if x.warning != CodeBudgetExceeded { // the request's, not the key's
		switch x.warning = ""; {
		case expired:
			x.warning = CodeSecretExpired // on_expired: warn
		case stale:
			x.warning = CodeSecretStale
		}
	}
	return true
}
