package proxy

import (
	"github.com/tillgw/till/budget"

	"context"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Decision is the policy's verdict on one request to a route. Every mode,
// and till test, decides with the same function (Snapshot.decide).
type Decision struct {
	Allowed bool   // the request may go upstream
	Code    string // the error code, when refused
	Reason  string // why, a fixed sentence for the app
	// Warning is set on an allowed request that the audit record should
	// question: secret_expired, under on_expired: warn; secret_stale, a
	// source's last good value used within its failure_ttl.
	Warning    string
	RetryAfter int    // seconds, when rate_limited
	Client     string // the client's audit name
	Model      string // the model the request asks for, "" when none
	// inj is the key to attach to an allowed request: the route's own, or
	// the current value of its source ref.
	inj *injection
	// fetchErr is why the key could not be fetched, for the log.
	fetchErr error
	// member is the pool's key the request takes, caller whom a sticky
	// pool keeps to one key.
	member *member
	caller string
	// ticket is what the request's budgets counted, to settle at its end.
	ticket *budget.Ticket
}

// ask is what the request asks of the provider, read from its body: the
// model, and the output tokens it may use (a reservation against token
// budgets); model rules need the body readable.
type ask struct {
	model    string
	reserve  int64
	body     bool // the request carries a body
	readable bool // the body (if any) was read and understood
	// others are the models the body names besides model (a tool's, a
	// fallback's); unnamed, that the provider may run one it names not.
	others  []string
	unnamed bool
}

// rates takes one request from a route's rate and from the budgets it
// charges; nil in a dry run, where nothing is counted, a pool's turns
// included.
type rates interface {
	take(ctx context.Context, rt *route, id identity, remoteAddr string) (wait int, ok bool)
	spend(ctx context.Context, charges []budget.Charge, reserve int64, timeout time.Duration) (*budget.Ticket, *apiError, int)
}

// decide applies the snapshot's policy to r, for route rt and upstream
// path outPath (as allow rules see it: target.pathForRules): the
// browser's origin, the client's identity, its source address and right
// to the route, the route's methods and paths, its rate, the state of its
// key and its body limit.
func (s *Snapshot) decide(r *http.Request, rt *route, outPath string, id identity, now time.Time, rate rates, read func() (ask, *apiError)) Decision {
	d := Decision{Client: id.name()}
	refuse := func(e apiError) Decision {
		d.Code, d.Reason = e.code, e.message
		return d
	}
	if e, ok := s.admits(r, rt, outPath, id); !ok {
		return refuse(e)
	}
	// The rate and the budgets share one store deadline: a frozen Redis
	// costs a request one, not two.
	storeTime := storeTimeout
	if rate != nil && !rt.rate.IsZero() {
		start := time.Now()
		wait, ok := rate.take(r.Context(), rt, id, r.RemoteAddr)
		storeTime -= time.Since(start)
		if !ok {
			d.RetryAfter = wait
			return refuse(apiError{CodeRateLimited, "this client is over the route's rate"})
		}
	}
	inj, e, ok := s.credential(r, rt, id, now, rate == nil, &d)
	if !ok {
		return refuse(e)
	}
	d.inj = inj
	if rt.maxBody > 0 && r.ContentLength > rt.maxBody {
		return refuse(apiError{CodeBadRequest, "the request body is larger than the route's max_body"})
	}
	if upgradeNotWebSocket(r) {
		return refuse(errUpgradeNotWebSocket)
	}
	if e := unchecked(r, rt); e != nil {
		return refuse(*e)
	}
	// The body is read only now, for a request the cheaper checks let by.
	a, unread := read()
	if unread != nil {
		return refuse(*unread)
	}
	d.Model = a.model
	if e, ok := rt.allowsModel(a); !ok {
		return refuse(e)
	}
	charges := s.charges(rt.name, clientName(id))
	if s.unpriced(rt, a.model, charges) {
		return refuse(errModelUnpriced)
	}
	if rate != nil {
		// Last: a ticket taken is a reservation to settle.
		if len(charges) > 0 {
			t, e, wait := rate.spend(r.Context(), charges, a.reserve, storeTime)
			if e != nil {
				d.RetryAfter = wait
				return refuse(*e)
			}
			d.ticket = t
			if t != nil && len(t.Exceeded) > 0 && d.Warning == "" {
				d.Warning = CodeBudgetExceeded
			}
		}
	}
	d.Allowed = true
	return d
}

// admits applies the checks of decide that count and fetch nothing: the
// browser's origin, the client's identity, its source address and right
// to the route, and the route's methods and paths.
func (s *Snapshot) admits(r *http.Request, rt *route, outPath string, id identity) (apiError, bool) {
	if e, ok := s.browser.checkOrigin(r); !ok {
		return e, false
	}
	if e, ok := id.admit(r.RemoteAddr, rt.clients); !ok {
		return e, false
	}
	return rt.allows(r.Method, outPath)
}

// credential returns what the request goes with: the route's key, a pool
// member or a source's current value (a token is minted from it only once
// the request is let by: exchange.mint). It notes on d the pool member, a
// fetch error, and a warning for a stale or expired secret used anyway.
// A dry run takes no turn of a pool's round robin (pool.turn).
func (s *Snapshot) credential(r *http.Request, rt *route, id identity, now time.Time, dryRun bool, d *Decision) (*injection, apiError, bool) {
	inj, stale := rt.injection, false
	var err error
	switch {
	case rt.pool != nil && d.member != nil: // the key a verdict named (Mint)
		inj, stale, err = d.member.key(r.Context())
	case rt.pool != nil:
		d.caller = id.name()
		if id.client == nil {
			d.caller += "\x00" + remoteIP(r.RemoteAddr)
		}
		d.member, inj, stale, err = rt.pool.usable(r.Context(), rt.pool.turn(dryRun), d.caller, now, s.onExpired)
	case rt.sourced != nil:
		inj, stale, err = rt.sourced.current(r.Context())
	}
	if err != nil {
		d.fetchErr = err
		return nil, errSecretUnavailable, false
	}
	e, ok, warn := inj.secretState(now, s.onExpired)
	if !ok {
		return nil, e, false
	}
	switch {
	case stale:
		d.Warning = CodeSecretStale
	case warn:
		d.Warning = CodeSecretExpired
	}
	return inj, apiError{}, true
}

// clientName is the configured name of id's client, "" for none.
func clientName(id identity) string {
	if id.client == nil {
		return ""
	}
	return id.client.name
}

// take counts a request against the route's rate, per client; anonymous
// callers share per source (remoteIP).
func (g *Gateway) take(ctx context.Context, rt *route, id identity, remoteAddr string) (int, bool) {
	source := ""
	if id.client == nil {
		source = remoteIP(remoteAddr)
	}
	wait, ok, err := g.limits.Allow(ctx, rt.limitKey+id.name(), source, rt.rate, rt.burst)
	switch {
	case err != nil && ctx.Err() != nil:
		// The app left (or shutdown cut it): no fault of the store, and
		// no request to send.
		return 0, false
	case err != nil:
		ok, wait = g.limitStoreFailed(err)
	}
	return wait, ok
}

// limitStoreFailed applies limits.on_redis_error when the shared rate
// store cannot decide, says so in the metrics, and in the log at most
// every 10 seconds.
func (g *Gateway) limitStoreFailed(err error) (ok bool, wait int) {
	g.metrics.limitStoreError()
	now := time.Now().Unix()
	if last := g.lastLimitErr.Load(); now-last >= 10 && g.lastLimitErr.CompareAndSwap(last, now) {
		decision := "denying (429)"
		if g.failOpen {
			decision = "allowing"
		}
		g.log.Error().Str("error", err.Error()).Msg("rate-limit store unavailable: " + decision + " requests on rate-limited routes (limits.on_redis_error)")
	}
	return g.failOpen, 1
}

// remoteIP is the source of an "ip:port" remote address, for anonymous
// rate buckets. Sources one host holds whole count as one: every loopback
// address (an app may bind 127.0.0.2, 127.0.0.3, ... for a bucket each),
// and an IPv6 address by its /64. An IPv4-mapped address counts as IPv4.
func remoteIP(addr string) string {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return addr
	}
	ip := ap.Addr().Unmap()
	if ip.IsLoopback() {
		return "loopback"
	}
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// secretState says whether the route's key may be attached at now: it
// must be present, and not expired unless on_expired is warn (then warn is
// set).
func (rt *injection) secretState(now time.Time, onExpired string) (e apiError, ok, warn bool) {
	if rt.problem != "" {
		return apiError{CodeSecretMissing, "the key for this route is not available"}, false, false
	}
	if rt.expiredAt(now) {
		if onExpired != "warn" {
			return apiError{CodeSecretExpired, "the key for this route has expired"}, false, false
		}
		return apiError{}, true, true
	}
	return apiError{}, true, false
}

// errRevokeInstallationToken refuses, on a route that mints GitHub App
// installation tokens, GitHub's "revoke an installation access token".
var errRevokeInstallationToken = apiError{CodePathNotAllowed, "till manages this route's GitHub installation token, which every app of the route shares: it is never revoked through the route"}

// revokesInstallationToken reports whether path is GitHub's DELETE
// /installation/token, which revokes the token the request carries
// (under an Enterprise Server's /api/v3 too), whatever the method: a
// POST may carry _method=DELETE. Compared by segment in lower case,
// empty segments (doubled or trailing slashes) left out, as GitHub's
// router may read it.
func revokesInstallationToken(path string) bool {
	segs := strings.FieldsFunc(strings.ToLower(path), func(r rune) bool { return r == '/' })
	n := len(segs)
	return n >= 2 && segs[n-2] == "installation" && segs[n-1] == "token"
}

// expiredAt reports whether the key has expired at now.
func (rt *injection) expiredAt(now time.Time) bool {
	return !rt.expires.IsZero() && !now.Before(rt.expires)
}

// under returns the key as a config whose vault.max_age is maxAge judges
// it: a copy whose expiry counts maxAge from its version's time.
func (rt *injection) under(maxAge time.Duration) *injection {
	c := *rt
	c.expires = rt.times.ExpiresAt(maxAge)
	return &c
}

// errMethodNotToken refuses a method that is not a token (RFC 9110,
// section 9.1): "G(T", "GET,POST". Go's HTTP/1 server refuses one (400)
// before till sees it, its HTTP/2 server passes a :method on, and
// net/http's Transport would not send it: the key's use would be
// recorded for a request that never left, and the upstream blamed. A
// relay to a host without a route refuses one too.
var errMethodNotToken = apiError{CodeBadRequest, "the method is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~ only)"}

// errMethodCase refuses a method spelt in lower case ("post").
var errMethodCase = apiError{CodeMethodNotAllowed, "till takes methods in upper case only (POST, not post): servers that read them in any case would run one that till judged as another"}

// upperCase reports whether method holds no lower-case letter. Methods
// are case-sensitive (RFC 9110, section 9.1), but Django, Flask and
// ASP.NET Core read "post" as POST: a request that till meters, charges
// and checks (TRACE) as a POST would pass as another method.
func upperCase(method string) bool {
	return !strings.ContainsFunc(method, func(r rune) bool { return 'a' <= r && r <= 'z' })
}

// allows applies the route's method and path rules to the upstream path.
func (rt *route) allows(method, upstreamPath string) (apiError, bool) {
	if !httpguts.ValidHeaderFieldName(method) { // a token, as a field name is
		return errMethodNotToken, false
	}
	if !upperCase(method) {
		return errMethodCase, false
	}
	if method == "TRACE" || method == "TRACK" {
		// An upstream that answers them (Apache does) echoes the
		// request in the body, the key with it.
		return apiError{CodeMethodNotAllowed, "till never sends TRACE or TRACK: the answer would hold the key"}, false
	}
	if rt.mintsGitHub && revokesInstallationToken(upstreamPath) {
		return errRevokeInstallationToken, false
	}
	if len(rt.methods) > 0 && !slices.Contains(rt.methods, method) {
		return apiError{CodeMethodNotAllowed, "this route does not allow this method"}, false
	}
	if len(rt.paths) == 0 {
		return apiError{}, true
	}
	for _, p := range rt.paths {
		if p.Match(upstreamPath) {
			return apiError{}, true
		}
	}
	return apiError{CodePathNotAllowed, "this route does not allow this path"}, false
}
