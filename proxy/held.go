package proxy

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// heldConns are the connections that outlive the checks of the request
// that opened them: tunnels and protocol switches (WebSocket), on routes
// or relayed. Each is
// checked again against every config a reload swaps in, as its request
// would be, and ended when that config refuses it: otherwise it would
// outlive the forward mode, client, route or rule that allowed it.
type heldConns struct {
	mu   sync.Mutex
	open map[*heldConn]struct{}
}

// heldConn is one held connection: admits says whether a config allows
// it still, and until when (its key's expiry as that config says; zero
// for no end), end ends it.
type heldConn struct {
	admits func(*live) (*apiError, time.Time)
	end    func()
	// The fields below are guarded by heldConns.mu. cut is the refusal
	// that ended it; expiry checks it again when its key expires, and
	// wake is what it runs then.
	cut    *apiError
	expiry *time.Timer
	wake   func()
}

// hold tracks a connection until release. It is checked at once against
// the config served now: a reload may have swapped it in after the
// request's own checks.
func (g *Gateway) hold(admits func(*live) (*apiError, time.Time), end func()) *heldConn {
	c := &heldConn{admits: admits, end: end}
	c.wake = func() { g.held.recheckOne(c, g.live.Load()) }
	s := &g.held
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open == nil {
		s.open = make(map[*heldConn]struct{})
	}
	s.open[c] = struct{}{}
	c.check(g.live.Load())
	return c
}

// holdUpgrade tracks the protocol switch (WebSocket) that rw is about to
// make, as hold does, until the returned release. A config that refuses
// it cancels the returned context, which ends the upstream's side, and
// closes the app's side before Swap returns: not one more byte is
// relayed after the reload. It is checked again when its key expires, as
// the config served then says (admits), as a reload would. cut is the
// refusal of the config served now, when it refuses the switch already:
// it must not be sent. A switch whose request was written to the
// upstream (routeTransport sets x.wrote only when the key went with it)
// was made, whether or not the upstream agreed yet, or the app had its
// 101: it was allowed and its key went.
func (g *Gateway) holdUpgrade(ctx context.Context, rw *responseRecorder, x *exchange, admits func(*live) (*apiError, time.Time)) (_ context.Context, release func(), cut *apiError) {
	ctx, cancel := context.WithCancel(ctx)
	s := &switched{}
	rw.switched = s
	c := g.hold(admits, func() { cancel(); s.end() })
	g.held.mu.Lock()
	cut = c.cut
	g.held.mu.Unlock()
	if x.route != nil && x.sourcedKey() != nil && cut == nil {
		go x.sourcedKey().askWhileHeld(ctx)
	}
	return ctx, func() {
		ended := g.release(x, c, s.wasMade() || x.wrote.Load())
		if ended != nil && rw.status == 0 && !s.hijacked() {
			// Ended before any answer: the app gets the refusal, not
			// net/http's empty 200.
			writeError(rw, x.rec.id, *ended, x.rec.mode != modeReverse, 0)
		}
		cancel()
	}, cut
}

// switched is the app's side of a protocol switch: ended, it is closed
// at once, or as soon as it is handed over.
type switched struct {
	mu    sync.Mutex
	conn  net.Conn
	ended bool
	made  bool // handed over before it was ended: the app got its switch
}

func (s *switched) end() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = true
	if s.conn != nil {
		s.conn.Close()
	}
}

// handOver records conn as the app's side; false if it was ended before.
func (s *switched) handOver(conn net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conn = conn
	s.made = !s.ended
	return s.made
}

// hijacked reports whether the app's connection was taken for the
// switch, handed over or closed at once.
func (s *switched) hijacked() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn != nil
}

// wasMade reports whether the switch was handed over to the app.
func (s *switched) wasMade() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.made
}

// release stops tracking c. When a reload (or its key's expiry) ended it,
// x's record says why, with the code its request would get now: denied
// when it ended before it was made (a protocol switch whose key never
// went), an error when till ended a connection it had made
// (made): allowed, it went, its key with it, and ran until then. It
// returns that refusal, nil when none ended c.
func (g *Gateway) release(x *exchange, c *heldConn, made bool) *apiError {
	g.held.mu.Lock()
	delete(g.held.open, c)
	cut := c.cut
	if c.expiry != nil {
		c.expiry.Stop()
	}
	g.held.mu.Unlock()
	if cut != nil {
		if made {
			x.failure = cut.code
		} else {
			x.refused = cut.code
		}
		g.log.Warn().Str("id", x.rec.id).Str("mode", x.rec.mode).Str("route", x.rec.route).Str("code", cut.code).Str("reason", cut.message).
			Msg("a reload ended a connection that the new config refuses")
	}
	return cut
}

// recheck ends the held connections that l refuses.
func (s *heldConns) recheck(l *live) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.open {
		c.check(l)
	}
}

// recheckOne ends c, while it is held, if l refuses it.
func (s *heldConns) recheckOne(c *heldConn, l *live) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.open[c]; ok {
		c.check(l)
	}
}

// check ends c if l refuses it, else has it checked again when its key
// expires as l says: a reload may move that (the same value set again
// with another --expires, another vault.max_age), and a clock set back
// may wake it early. The caller holds heldConns.mu.
func (c *heldConn) check(l *live) {
	if c.cut != nil {
		return
	}
	e, until := c.admits(l)
	if e != nil {
		c.cut = e
		c.end()
		return
	}
	d := time.Until(until)
	switch {
	case until.IsZero() || d <= 0:
		// No end, or past it and let by (on_expired: warn): only a
		// reload changes that.
		if c.expiry != nil {
			c.expiry.Stop()
		}
	case c.expiry == nil:
		c.expiry = time.AfterFunc(d, c.wake)
	default:
		c.expiry.Reset(d)
	}
}

// admitTunnel decides whether a tunnel opened by the CONNECT r, to the
// address dialled, is one l allows: as a new CONNECT, it must still be
// tunnelled (forward mode on, unknown hosts tunnelled, no route for its
// host), by a client admitted from its address, to an address the dial
// guard permits.
func (l *live) admitTunnel(r *http.Request, canIntercept bool, dialled netip.AddrPort) *apiError {
	_, mode, e := l.resolveConnect(r.Host, canIntercept)
	if e != nil {
		return e
	}
	if mode != modeTunnel {
		return &apiError{CodeHostNotAllowed, "this host has a route now; a new CONNECT to it is intercepted"}
	}
	return l.admitUnrouted(r, &dialled)
}

// admitRelay decides whether a protocol switch relayed by the
// absolute-form request r to a host without a route, over a connection
// to dialled (nil until dialled), is one l allows: as a new request, the
// host must still have no route and be relayed.
func (l *live) admitRelay(r *http.Request, dialled *netip.AddrPort) *apiError {
	t, e := l.resolveURL(r.URL)
	if e != nil {
		return e
	}
	if t.route != nil {
		return &apiError{CodeHostNotAllowed, "this host has a route now"}
	}
	return l.admitUnrouted(r, dialled)
}

// admitUnrouted decides what is left to decide of a connection to a host
// without a route: its client must be admitted from its address, and the
// address dialled (when known) be one the dial guard permits.
func (l *live) admitUnrouted(r *http.Request, dialled *netip.AddrPort) *apiError {
	id := l.clients.identify(r, "", certID{}, authorizationOnly)
	if e, ok := id.admit(r.RemoteAddr, nil); !ok {
		return e.ref()
	}
	if dialled != nil && (!l.guard.permitted(dialled.Addr()) || l.guard.isOwn(*dialled)) {
		return &errTunnelForbidden
	}
	return nil
}

// admitAgain decides whether the request r, which x's exchange let by
// against another config, is one l allows too, and returns l's route for
// it: r must resolve, in its mode, to the same route and upstream URL,
// and pass the checks of decide that count and fetch nothing (the origin,
// the client, the route's methods and paths) and unchecked's. A protocol
// switch held open is checked so at every reload; any other request
// before its key goes (readmit).
func (l *live) admitAgain(r *http.Request, x *exchange) (*route, *apiError) {
	t, e := l.resolveAgain(r, x.rec.mode)
	if e != nil {
		return nil, e
	}
	rt := t.route
	if rt.name != x.route.name || *rt.upstream != *x.route.upstream {
		// Gone, or sending elsewhere: the request would go where the
		// config before said (x.route's scheme, host and path).
		return nil, &apiError{CodeRouteNotFound, "the route this request went through is gone, or goes elsewhere now"}
	}
	id := l.clients.identify(r, x.connectAuth, x.connectCert, rt.keyHeaders)
	if e, ok := l.admits(r, rt, t.pathForRules(), id); !ok {
		return nil, e.ref()
	}
	return rt, unchecked(r, rt)
}

// readmit checks the request r again when a reload has swapped in another
// config since x's exchange decided it: the config served now must let
// it by (keyAgain). Otherwise the key would go for a client, path or key
// that the reload revoked while the request's body came in, or while a
// pool's key was refused. A key rotated before anything was derived from
// it goes with its new value, never the old one (it may be a leak).
// Without a reload, the key attached must not have expired meanwhile (a
// slow upload can outlast it); under on_expired: warn, one that did goes,
// and the record says so. m is the pool member about to go: one other
// than x's (a retry's next key) is checked by its caller.
func (g *Gateway) readmit(r *http.Request, x *exchange, m *member) *apiError {
	l := g.live.Load()
	if l == x.live {
		if x.inj == nil || m != x.member {
			return nil
		}
		e, ok, expired := x.inj.secretState(time.Now(), l.onExpired)
		if !ok {
			return e.ref()
		}
		x.expiredMeanwhile(expired)
		return nil
	}
	rotated, key, e := l.keyAgain(r, x, m)
	if e != nil {
		return e
	}
	if rotated != nil {
		if x.sentForms != nil {
			// A pool's retry: the keys sent before may still be
			// quoted, and so may the value that goes in this one's
			// place (see echoForms).
			x.sentForms = append(slices.Clip(x.sentForms), rotated.echoForms...)
		}
		x.inj = rotated
	}
	if m == x.member {
		x.expiredMeanwhile(key.expiredAt(time.Now()))
	}
	return nil
}

// expiredMeanwhile notes, when expired is set, that x's key expired after
// its request was decided and goes under on_expired: warn: its record
// says secret_expired, unless it questions the request already.
func (x *exchange) expiredMeanwhile(expired bool) {
	if expired && x.warning == "" {
		x.warning = CodeSecretExpired
	}
}

// keyAgain decides whether l lets by the request r, which x's exchange
// decided against another config: l must allow it (admitAgain), and its
// route still hold the key about to go (m's, or the route's own when m is
// nil), usable, with the same value, minting the same way (mintID: the
// same token endpoint, scopes, audience, installation); or, when nothing
// was derived from it yet (a token), with another value or way, returned
// as rotated. A token minted the old way is not what the config served
// now names: it may hold scopes the reload took away, and its minter
// asks an endpoint the config no longer names. key is the key as l
// judged it, with its expiry.
func (l *live) keyAgain(r *http.Request, x *exchange, m *member) (rotated, key *injection, _ *apiError) {
	rt, e := l.admitAgain(r, x)
	if e != nil {
		return nil, nil, e
	}
	want := x.route.injection
	if m != nil {
		want = m.injection
	}
	in := rt.keyNamed(want.secretName)
	switch {
	case in == nil:
		return nil, nil, &apiError{CodeSecretMissing, "the key for this request is no longer the route's"}
	case x.inj != nil && in.mintID() == x.inj.mintID():
		// The key about to go is the live one.
	case in.mintID() != want.mintID() && x.inj == want:
		rotated = in
	case in.mintID() != want.mintID():
		// Rotated, or minting another way, after a token was minted from
		// it: the old value may be why (a leak), or the old scopes.
		return nil, nil, &errMintChanged
	}
	if now, then := rt.sourcedNamed(want.secretName), x.route.sourcedNamed(want.secretName); now != nil && then != nil && mintsAs(now.cr) != mintsAs(then.cr) {
		// A source's key: the route holds its names only, so mintID
		// cannot tell; its config can. The token (or the ask for one)
		// would go as the config before said, to its endpoint, for its
		// scopes.
		return nil, nil, &errMintChanged
	}
	key = in
	if x.inj != nil && m == x.member && rt.fromSource(want.secretName) {
		// A source's key: the route holds its names only, and the
		// request the value fetched for it, whose expiry counts, as l's
		// vault.max_age has it (a reload may have shortened it).
		key = x.inj.under(l.maxAge)
	}
	if refusal, ok, _ := key.secretState(time.Now(), l.onExpired); !ok {
		return nil, nil, refusal.ref()
	}
	return rotated, key, nil
}

// keepsSwitch decides whether l lets the protocol switch r, which x's
// exchange made, go on: as a request about to go (keyAgain), with the
// key it went with, whose value has not been replaced since; and until
// when: that key's expiry as l says.
func (l *live) keepsSwitch(r *http.Request, x *exchange) (*apiError, time.Time) {
	rotated, key, e := l.keyAgain(r, x, x.member)
	switch {
	case rotated != nil:
		return &apiError{CodeSecretUnavailable, "the key this connection went with was replaced"}, time.Time{}
	case e != nil:
		return e, time.Time{}
	}
	if s := x.sourcedKey(); s != nil && x.inj != nil {
		if e := s.dropped(x.inj.fp); e != nil {
			return e, time.Time{}
		}
	}
	return nil, key.expires
}

// Recheck checks the held connections again against the config served,
// as a reload does: call it when a source's value is replaced or gone
// (source.Cache.OnChange), to end the WebSockets that went with the old
// one.
func (g *Gateway) Recheck() { g.held.recheck(g.live.Load()) }

// resolveAgain resolves r, a request to a route in mode, against l.
func (l *live) resolveAgain(r *http.Request, mode string) (target, *apiError) {
	switch mode {
	case modeIntercept:
		t, _ := r.Context().Value(targetKey{}).(connectTarget)
		return l.resolveInner(t, r.Host, r.URL)
	case modeForward:
		t, e := l.resolveURL(r.URL)
		if e == nil && t.route == nil {
			e = &apiError{CodeRouteNotFound, "no route for this host"}
		}
		return t, e
	}
	if e, ok := l.browser.checkHost(r); !ok {
		return target{}, e.ref()
	}
	return l.resolvePath(r.URL)
}
