package proxy

import (
	"context"
	"net/http"
	"time"
)

// ServeHTTP handles one request on the gateway listener: reverse mode
// (origin-form), forward mode (absolute-form) or CONNECT. Each mode
// resolves its target, then every request to a route takes the same way:
// serveRoute.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l := g.live.Load()
	x, rw := g.begin(w, r, modeReverse, l)
	defer g.finish(x, rw, r)
	if !g.audit.Healthy() {
		g.refuse(rw, x, errAuditDown, 0)
		return
	}
	switch {
	case r.Method == http.MethodConnect:
		g.serveConnect(rw, r, x, l)
	case r.URL.IsAbs():
		g.serveAbsolute(rw, r, x, l)
	default:
		g.serveReverse(rw, r, x, l)
	}
}

// errAuditDown refuses every request while the audit sink fails.
var errAuditDown = apiError{CodeAuditUnavailable, "till cannot write its audit log, so it refuses requests until it can"}

// serveReverse serves an origin-form request, routed by its path prefix.
func (g *Gateway) serveReverse(rw *responseRecorder, r *http.Request, x *exchange, l *live) {
	if e, ok := l.browser.checkHost(r); !ok {
		g.refuseUnrouted(rw, r, x, l, e)
		return
	}
	t, e := l.resolvePath(r.URL)
	if e != nil {
		g.refuseUnrouted(rw, r, x, l, *e)
		return
	}
	x.appHost, x.appTLS = r.Host, r.TLS != nil
	g.serveRoute(rw, r, x, l, t)
}

// refuseUnrouted refuses r before a route was found for it, its record
// naming the client whose credential came with it: who probes paths or
// hosts is on record too, its token in Authorization (as Anthropic's
// SDKs send it) as on every route.
func (g *Gateway) refuseUnrouted(rw *responseRecorder, r *http.Request, x *exchange, l *live, e apiError) {
	x.rec.client = clientName(l.clients.identify(r, x.connectAuth, x.connectCert, authorizationOnly))
	g.refuse(rw, x, e, 0)
}

// authorizationOnly is where, besides till's own headers, a request
// without a route (refused, relayed, or a CONNECT) may carry its
// client's token: every route strips Authorization, and reads a token
// there (route.keyHeaders). A relay drops an Authorization that holds
// a till token (dropTillTokens).
var authorizationOnly = []string{"Authorization"}

// serveAbsolute serves an absolute-form request (HTTP_PROXY, for http://
// URLs), routed by its URL's host.
func (g *Gateway) serveAbsolute(rw *responseRecorder, r *http.Request, x *exchange, l *live) {
	x.rec.mode = modeForward
	x.rec.host = recordedPath(r.URL.Host, l.clients)
	t, e := l.resolveURL(r.URL)
	switch {
	case e != nil:
		g.refuseUnrouted(rw, r, x, l, *e)
	case t.route == nil:
		// Who asked is recorded, and held to its client's addresses.
		id := l.clients.identify(r, "", certID{}, authorizationOnly)
		x.rec.client = id.name()
		if e, ok := id.admit(r.RemoteAddr, nil); !ok {
			g.refuse(rw, x, e, 0)
			return
		}
		g.relay(rw, r, x, l)
	default:
		g.serveRoute(rw, r, x, l, t)
	}
}

// serveConnect serves a CONNECT: intercepted when its host has a route,
// else tunnelled or refused, as forward.unknown_hosts says.
func (g *Gateway) serveConnect(rw *responseRecorder, r *http.Request, x *exchange, l *live) {
	x.rec.mode = modeForward
	x.rec.path = ""
	// Who asked is recorded whatever becomes of it: a tunnel too.
	id := l.clients.identify(r, "", certID{}, authorizationOnly)
	x.rec.client = id.name()
	t, mode, e := l.resolveConnect(r.Host, g.intercept != nil)
	if e == nil && r.ProtoMajor != 1 {
		e = &errConnectNotHTTP1
	}
	if e != nil {
		g.refuse(rw, x, *e, 0)
		return
	}
	x.rec.mode = mode
	t.cert = peerCert(r)
	if mode == modeTunnel {
		// A client's addresses bind it in a tunnel too.
		if e, ok := id.admit(r.RemoteAddr, nil); !ok {
			g.refuse(rw, x, e, 0)
			return
		}
		g.tunnel(rw, r, x, l, t)
		return
	}
	// The credential that identified the CONNECT goes with every request
	// inside it; without one, what it gave (refused alike inside).
	t.proxyAuth = id.credential
	if t.proxyAuth == "" {
		t.proxyAuth = r.Header.Get("Proxy-Authorization")
	}
	if e := l.admitConnect(id, r.RemoteAddr, t); e != nil {
		g.refuse(rw, x, *e, 0)
		return
	}
	g.intercept.serve(rw, r, x, t)
}

// errConnectNotHTTP1 refuses a CONNECT sent over HTTP/2: its tunnel
// would be one stream of a shared connection, where till takes a whole
// connection over (to tunnel it, or to terminate TLS inside it), so the
// host would be dialled for a tunnel that cannot be made.
var errConnectNotHTTP1 = apiError{CodeBadRequest, "till tunnels and intercepts a CONNECT sent over HTTP/1.1 only: connect to the proxy over HTTP/1.1"}

// serveRoute serves a request resolved to a route, in any mode: the
// policy decides, then the request goes upstream with the route's key.
func (g *Gateway) serveRoute(rw *responseRecorder, r *http.Request, x *exchange, l *live, t target) {
	rt := t.route
	x.route, x.outPath, x.rawPath, x.live = rt, t.outPath, t.rawPath, l
	x.pathModel, x.namesModel = t.model, t.namesModel
	x.rec.route, x.rec.secret, x.rec.host = rt.name, rt.secretName, rt.upstream.Host
	id := l.clients.identify(r, x.connectAuth, x.connectCert, rt.keyHeaders)
	d := l.decide(r, rt, t.pathForRules(), id, x.rec.start, g, func() (ask, *apiError) { return x.readAsk(rw, r, rt) })
	x.rec.client, x.model, x.prices = d.Client, d.Model, l.prices
	x.recordModel(d, r.URL.Path, l.clients)
	if d.fetchErr != nil {
		g.log.Warn().Str("id", x.rec.id).Str("route", rt.name).Str("secret", rt.secretName).
			Str("error", d.fetchErr.Error()).Msg("the route's key cannot be fetched from its source")
	}
	if !d.Allowed {
		if x.appGone.Load() || r.Context().Err() != nil {
			// Went away in the middle of its body, or while the decision
			// waited on a store: recorded as gone, not refused.
			x.failure = codeClientClosed
			return
		}
		g.refuse(rw, x, apiError{d.Code, d.Reason}, d.RetryAfter)
		return
	}
	x.warning = d.Warning
	x.inj = d.inj
	x.member, x.caller, x.ticket = d.member, d.caller, d.ticket
	if e := g.readmit(r, x, x.member); e != nil {
		// A reload while decide read the body: the key goes only if the
		// config served now allows it too.
		g.refuse(rw, x, *e, 0)
		return
	}
	x.rec.secret = d.inj.secretName
	key := x.inj
	inj, asked, err := x.mint(key, g.watchKey(r, x, x.member, key))
	if asked {
		// The secret went to the token endpoint: the request's record
		// names it, as its use record does.
		x.rec.nameKey(x.inj)
	}
	if err != nil {
		g.mintFailed(rw, r, x, err)
		return
	}
	x.inj = inj
	if e := g.readmit(r, x, x.member); e != nil {
		g.refuse(rw, x, *e, 0) // a reload while the token came
		return
	}
	if r.Context().Err() != nil {
		// The app left before its request went (while its body was read,
		// its budget counted or its token minted): on a route under a
		// token budget the attempt would outlive it, sent and billed for
		// no one.
		x.failure = codeClientClosed
		return
	}
	x.upstreamStart = time.Now()
	if isUpgrade(r) {
		// ReverseProxy relays a protocol switch (WebSocket) once the
		// upstream agrees to it, until the request's context ends (a
		// reload that refuses it ends it too, as does its key's expiry);
		// a body read to be metered goes as read.
		ctx, release, cut := g.holdUpgrade(context.WithValue(r.Context(), exchangeKey{}, x), rw, x,
			func(l *live) (*apiError, time.Time) { return l.keepsSwitch(r, x) })
		defer release()
		if cut != nil {
			g.refuse(rw, x, *cut, 0) // a reload since the last check
			return
		}
		out := r.WithContext(ctx)
		x.setBody(rw, out)
		g.upgrader.ServeHTTP(rw, out)
		return
	}
	g.send(rw, r, x)
}
