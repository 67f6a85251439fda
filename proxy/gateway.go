// Package proxy is till's request path: it matches a request to a route,
// applies the route's policy, attaches the route's key, forwards the request
// to the route's upstream and writes one audit record for it.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/tillgw/till/proxy/ca"
	"github.com/tillgw/till/proxy/upstream"
)

// Modes of a request, as audited.
const (
	modeReverse   = "reverse"
	modeForward   = "forward"
	modeIntercept = "intercept"
	modeTunnel    = "tunnel"
)

// Audit reasons of a request cut before its response was complete, with
// status 499 (nginx's) when nothing of the response had gone out yet:
// codeClientClosed when the app went away, codeShutdown when till's
// shutdown ended the request past the grace period.
const (
	codeClientClosed = "client_closed"
	codeShutdown     = "shutdown"
)

const statusClientClosed = 499

// errShutdown is the cause with which the gateway's base context ends, so
// that a request can tell a cut by till's shutdown from an app that went
// away (which ends the request's own context, with another cause).
var errShutdown = errors.New("till is shutting down")

// Gateway serves the gateway listener. It reads the current Snapshot
// through an atomic pointer, so a reload never disturbs a request in flight.
type Gateway struct {
	snap      atomic.Pointer[Snapshot]
	active    atomic.Int64 // requests whose record is not written yet
	base      context.Context
	abort     context.CancelCauseFunc
	audit     *Audit
	log       zerolog.Logger
	proxy     *httputil.ReverseProxy // protocol upgrades (WebSocket) on routes
	plain     *httputil.ReverseProxy // unknown hosts, absolute-form, tunnel policy
	buffers   *bufferPool            // copy response bodies
	intercept *interceptor           // nil without a CA
	listeners []netip.AddrPort
	ids       *requestIDs
	limits    RateLimiter
	upstream  *upstream.Transport // plain-HTTP round trips in the handler's goroutine
	transport *http.Transport     // the template of transports
	// transports holds one *http.Transport per route timeout, for the
	// requests upstream does not send (upgrades, Expect: 100-continue).
	transports sync.Map
	failOpen   bool     // limits.on_redis_error: allow
	metrics    *Metrics // nil: none
	// lastLimitErr rate-limits the log line for rate-store errors.
	lastLimitErr atomic.Int64
}

// Options configure a Gateway.
type Options struct {
	// Audit receives one record per request. Required.
	Audit *Audit
	// Log is the operational log (never the audit sink).
	Log zerolog.Logger
	// Transport reaches the upstreams; nil means NewTransport(). Requests
	// to plain-HTTP upstreams go through an upstream.Transport with its
	// dialer and pool limits; the others through clones of it, one per
	// route timeout.
	Transport *http.Transport
	// Leaves mints the certificates for TLS interception; nil turns
	// interception off.
	Leaves *ca.Leaves
	// Listeners are till's own addresses, which tunnels may never reach.
	Listeners []netip.AddrPort
	// Metrics, when set, counts requests, key uses and latencies.
	Metrics *Metrics
	// Limits counts rates; nil means in memory (NewMemoryLimits).
	Limits RateLimiter
	// LimitsFailOpen lets requests through when Limits errs
	// (limits.on_redis_error: allow); otherwise they get 429.
	LimitsFailOpen bool
}

// New returns a Gateway serving snap.
func New(snap *Snapshot, opts Options) *Gateway {
	g := &Gateway{audit: opts.Audit, log: opts.Log, ids: newRequestIDs(), listeners: opts.Listeners, limits: opts.Limits, failOpen: opts.LimitsFailOpen, metrics: opts.Metrics}
	if g.limits == nil {
		g.limits = NewMemoryLimits()
	}
	g.base, g.abort = context.WithCancelCause(context.Background())
	g.Swap(snap)
	g.transport = opts.Transport
	if g.transport == nil {
		g.transport = NewTransport()
	}
	g.upstream = newUpstreamTransport(g.transport)
	g.buffers = newBufferPool()
	g.proxy = &httputil.ReverseProxy{
		Rewrite:        rewrite,
		Transport:      routeTransport{g},
		ModifyResponse: g.modifyResponse,
		ErrorHandler:   g.handleUpstreamError,
		BufferPool:     g.buffers,
		ErrorLog:       zerologStdLogger(opts.Log),
	}
	g.plain = g.newPlainProxy()
	if opts.Leaves != nil {
		g.intercept = newInterceptor(g, opts.Leaves)
	}
	return g
}

// Swap makes s the snapshot that new requests use.
func (g *Gateway) Swap(s *Snapshot) {
	s.guard = newDialGuard(s.forward.AllowCIDRs, g.listeners)
	s.relay = newRelayTransport(s.guard)
	if old := g.snap.Swap(s); old != nil {
		old.relay.CloseIdleConnections()
	}
}

// BaseContext is the context every request on the gateway derives from
// (for http.Server.BaseContext): Shutdown cancels it to end upgraded
// connections and tunnels that outlive the grace period.
func (g *Gateway) BaseContext(net.Listener) context.Context { return g.base }

// Shutdown is called after the listener's http.Server.Shutdown: it waits,
// until ctx is done, for intercepted requests and for requests that server
// does not track (WebSocket upgrades, tunnels); then it ends those that
// remain and waits briefly for their audit records, so that every request
// is recorded before the audit sink closes.
func (g *Gateway) Shutdown(ctx context.Context) error {
	if g.intercept != nil {
		g.intercept.shutdown(ctx)
		// Intercepted connections are idle, or cut, once no request is
		// in flight (drained or aborted below).
		defer g.intercept.close()
	}
	err := g.drain(ctx)
	if err != nil {
		g.Abort()
		actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = errors.Join(err, g.drain(actx))
	}
	return err
}

// Abort ends every request in flight; their records say reason shutdown.
// Call it when the grace period is over, before the listener's server
// closes its connections: requests cut by that would look like apps that
// went away (client_closed).
func (g *Gateway) Abort() { g.abort(errShutdown) }

// drain waits until no request is in flight.
func (g *Gateway) drain(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for g.active.Load() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d request(s) still in flight: %w", g.active.Load(), ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Snapshot returns the snapshot that new requests use.
func (g *Gateway) Snapshot() *Snapshot { return g.snap.Load() }

// exchange is one request's state, shared with the ReverseProxy hooks
// through the request context when ReverseProxy carries the request.
type exchange struct {
	rec     record
	route   *route
	outPath string
	rawPath string
	failure string // error code of an upstream failure, "" when none
	status  int    // upstream status, for upgraded connections
	// bytesIn counts the request body; the transport's goroutine writes it.
	bytesIn  atomic.Int64
	hasBody  bool // the request declared a body
	bodyRead bool // the body was handed on to be read
	// bodyErr is set when reading the app's body failed (malformed
	// chunking, a reset): the fault is the app's, not the upstream's.
	bodyErr atomic.Bool
	// appGone is set when the app went away in the middle of its body.
	appGone atomic.Bool
	// upload, when set, watches the upload of the body for progress.
	upload *uploadWatch
	// audit records the sends of the key after the first (see resend).
	audit *Audit
	// sends counts the sends of the request after the first; wrote is set
	// once its head (with the key) was written upstream.
	sends         atomic.Int32
	wrote         atomic.Bool
	ctx           context.Context // the inbound request's
	upstreamStart time.Time
	// connectAuth is the Proxy-Authorization given on the CONNECT that
	// carried this request, if any.
	connectAuth string
	connectCert certID // the client certificate on that CONNECT

	// handedOff is set when an intercepted CONNECT's connection went to
	// the inner server: its requests have records of their own.
	handedOff bool
}

type exchangeKey struct{}

// ServeHTTP handles one request on the gateway listener: reverse mode
// (origin-form), forward mode (absolute-form) or CONNECT.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x, rw := g.begin(w, r, modeReverse)
	defer g.finish(x, rw, r)
	if !g.audit.Healthy() {
		g.deny(rw, x, denial{CodeAuditUnavailable, "till cannot write its audit log, so it refuses requests until it can"})
		return
	}
	s := g.snap.Load()
	switch {
	case r.Method == http.MethodConnect:
		g.serveConnect(rw, r, x, s)
	case r.URL.IsAbs():
		g.serveAbsolute(rw, r, x, s)
	default:
		g.serveReverse(rw, r, x, s)
	}
}

// begin starts a request's exchange and its audit record.
func (g *Gateway) begin(w http.ResponseWriter, r *http.Request, mode string) (*exchange, *responseRecorder) {
	x := &exchange{ctx: r.Context(), audit: g.audit}
	x.rec.start = time.Now()
	x.rec.id = g.ids.next()
	x.rec.method = r.Method
	x.rec.mode = mode
	x.rec.host = r.Host
	x.rec.path = r.URL.Path
	if r.URL.RawPath != "" {
		x.rec.path = r.URL.RawPath
	}
	x.hasBody = r.Body != nil && r.Body != http.NoBody
	if len(r.TransferEncoding) > 0 && r.ProtoMajor == 1 {
		// Go's server keeps a connection open after a request that had
		// both Content-Length and Transfer-Encoding (RFC 9112, section 6.1
		// wants it closed; golang/go#80942), and hides which it was:
		// close after every chunked HTTP/1 request, so no request can
		// hide in the body of another.
		w.Header().Set("Connection", "close")
	}
	g.active.Add(1)
	return x, &responseRecorder{ResponseWriter: w, x: x}
}

// serveReverse routes an origin-form request by its path prefix.
func (g *Gateway) serveReverse(rw *responseRecorder, r *http.Request, x *exchange, s *Snapshot) {
	if d, ok := s.browser.checkHost(r); !ok {
		g.deny(rw, x, d)
		return
	}
	if reason := checkPath(r.URL.RawPath, r.URL.Path); reason != "" {
		g.deny(rw, x, denial{CodeBadRequest, reason})
		return
	}
	rt, rest := s.match(r.URL.Path)
	if rt == nil {
		g.deny(rw, x, denial{CodeRouteNotFound, "no route matches this path"})
		return
	}
	x.outPath = rt.upstream.Path + rest
	if x.outPath == "" {
		x.outPath = "/"
	}
	if r.URL.RawPath != "" && strings.HasPrefix(r.URL.RawPath, rt.prefix) {
		x.rawPath = rt.upstream.EscapedPath() + r.URL.RawPath[len(rt.prefix):]
	}
	g.forward(rw, r, x, s, rt)
}

// forward applies the route's policy, attaches its key and sends the
// request upstream. x.outPath is the upstream path.
func (g *Gateway) forward(rw *responseRecorder, r *http.Request, x *exchange, s *Snapshot, rt *route) {
	x.route = rt
	x.rec.route = rt.name
	x.rec.secret = rt.secretName
	x.rec.host = rt.upstream.Host

	if d, ok := s.browser.checkOrigin(r); !ok {
		g.deny(rw, x, d)
		return
	}
	id := s.clients.identify(r, x.connectAuth, x.connectCert, rt.injectHeader)
	x.rec.client = id.name()
	if d, ok := id.admit(r.RemoteAddr, rt.clients); !ok {
		g.deny(rw, x, d)
		return
	}
	if d, ok := rt.allows(r.Method, x.outPath); !ok {
		g.deny(rw, x, d)
		return
	}
	if !rt.rate.IsZero() {
		key := rt.limitKey + x.rec.client
		if id.client == nil {
			// Anonymous callers share per source address.
			key += "\x00" + remoteIP(r.RemoteAddr)
		}
		wait, ok, err := g.limits.Allow(r.Context(), key, rt.rate, rt.burst)
		if err != nil {
			ok, wait = g.limitStoreFailed(err)
		}
		if !ok {
			x.rec.outcome, x.rec.reason = outcomeDenied, CodeRateLimited
			x.closeIfUnread(rw)
			writeError(rw, x.rec.id, denial{CodeRateLimited, "this client is over the route's rate"}, x.rec.mode != modeReverse, wait)
			return
		}
	}
	d, ok, warn := rt.secretState(x.rec.start, s.onExpired)
	if !ok {
		g.deny(rw, x, d)
		return
	}
	if warn {
		// on_expired: warn forwards, and the record says why it should not have.
		x.rec.reason = CodeSecretExpired
	}
	if rt.maxBody > 0 && r.ContentLength > rt.maxBody {
		g.deny(rw, x, denial{CodeBadRequest, "the request body is larger than the route's max_body"})
		return
	}
	x.upstreamStart = time.Now()
	if _, upgrade := r.Header["Upgrade"]; upgrade {
		// ReverseProxy relays a protocol switch (WebSocket) once the
		// upstream agrees to it.
		out := r.WithContext(context.WithValue(r.Context(), exchangeKey{}, x))
		x.countBody(rw, out, rt.maxBody)
		g.proxy.ServeHTTP(rw, out)
		return
	}
	g.send(rw, r, x)
}

// countBody wraps the body of out (a copy of the server's request: net/http
// must keep its own body, for Expect: 100-continue and draining) to count
// it, remember a read error, bound the wait for each part of it, and cap
// it at maxBody when positive.
func (x *exchange) countBody(w http.ResponseWriter, out *http.Request, maxBody int64) *countingBody {
	if !x.hasBody || out.Body == nil {
		return nil
	}
	cb := &countingBody{ReadCloser: out.Body, x: x, rc: http.NewResponseController(w)}
	var body io.ReadCloser = cb
	if maxBody > 0 {
		body = http.MaxBytesReader(nil, body, maxBody)
	}
	out.Body = body
	x.bodyRead = true
	return cb
}

// routeTransport sends ReverseProxy's requests (protocol upgrades) through
// net/http's Transport with their route's timeout.
type routeTransport struct{ g *Gateway }

func (t routeTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	x := r.Context().Value(exchangeKey{}).(*exchange)
	r = r.WithContext(httptrace.WithClientTrace(r.Context(), x.sendTrace()))
	return t.g.transportFor(x.route.timeout).RoundTrip(r)
}

// transportFor returns the shared transport with ResponseHeaderTimeout set
// to timeout: it bounds the wait for the response headers once the request
// body is sent, not the upload nor the stream after the headers (a long
// SSE response is not cut short). Routes with one timeout share one pool of
// connections.
func (g *Gateway) transportFor(timeout time.Duration) *http.Transport {
	if t, ok := g.transports.Load(timeout); ok {
		return t.(*http.Transport)
	}
	t := g.transport.Clone()
	t.ResponseHeaderTimeout = timeout
	actual, _ := g.transports.LoadOrStore(timeout, t)
	return actual.(*http.Transport)
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
func (rt *route) secretState(now time.Time, onExpired string) (d denial, ok, warn bool) {
	if rt.problem != "" {
		return denial{CodeSecretMissing, "the key for this route is not available"}, false, false
	}
	if !rt.expires.IsZero() && !now.Before(rt.expires) {
		if onExpired != "warn" {
			return denial{CodeSecretExpired, "the key for this route has expired"}, false, false
		}
		return denial{}, true, true
	}
	return denial{}, true, false
}

// allows applies the route's method and path rules to the upstream path.
func (rt *route) allows(method, upstreamPath string) (denial, bool) {
	if len(rt.methods) > 0 && !slices.Contains(rt.methods, method) {
		return denial{CodeMethodNotAllowed, "this route does not allow this method"}, false
	}
	if len(rt.paths) == 0 {
		return denial{}, true
	}
	for _, p := range rt.paths {
		if p.Match(upstreamPath) {
			return denial{}, true
		}
	}
	return denial{CodePathNotAllowed, "this route does not allow this path"}, false
}

func (g *Gateway) deny(w http.ResponseWriter, x *exchange, d denial) {
	x.rec.outcome = outcomeDenied
	x.rec.reason = d.code
	x.closeIfUnread(w)
	writeError(w, x.rec.id, d, x.rec.mode != modeReverse, 0)
}

// closeIfUnread closes the connection after a refusal of a request whose
// body was never read: net/http would otherwise wait for that body (which
// the app may never send) before answering.
func (x *exchange) closeIfUnread(w http.ResponseWriter) {
	if x.hasBody && !x.bodyRead {
		w.Header().Set("Connection", "close")
	}
}

// fail answers an error that is not a policy decision (an upstream that
// cannot be reached, for a tunnel).
func (g *Gateway) fail(w http.ResponseWriter, x *exchange, d denial) {
	x.rec.outcome = outcomeError
	x.rec.reason = d.code
	x.closeIfUnread(w)
	writeError(w, x.rec.id, d, x.rec.mode != modeReverse, 0)
}

// finish writes the request's audit record; it runs deferred, so panics and
// aborted streams are recorded too.
func (g *Gateway) finish(x *exchange, rw *responseRecorder, r *http.Request) {
	p := recover()
	if p == http.ErrAbortHandler && !rw.committed && r.Context().Err() == nil && x.rec.outcome == "" {
		// The upstream broke off its response before any of it went to
		// the app: answer 502 rather than cut the connection. (Tunnels and
		// intercepted connections, taken over from the server, have an
		// outcome by then.)
		g.log.Warn().Str("id", x.rec.id).Str("route", x.rec.route).Str("code", CodeUpstreamUnreachable).
			Msg("the upstream broke off its response before any of it reached the app")
		rw.reset()
		x.failure = CodeUpstreamUnreachable
		writeError(rw, x.rec.id, denial{CodeUpstreamUnreachable, "the upstream broke off its response"}, x.rec.mode != modeReverse, 0)
		p = nil
	}
	if p == nil {
		_ = rw.commit()
	} else {
		rw.discard()
	}
	x.rec.status = x.status // a tunnel's or an upgrade's
	if rw.committed {
		x.rec.status = rw.status
	}
	x.rec.bytesOut += rw.n
	x.rec.bytesIn = x.bytesIn.Load()
	switch {
	case x.rec.outcome != "":
		// decided already (a denial)
	case p != nil || x.failure != "":
		x.rec.outcome = outcomeError
		x.rec.reason = x.failure
		if x.failure == codeClientClosed || r.Context().Err() != nil && p != nil {
			x.rec.reason = cutReason(r.Context())
			if !rw.committed {
				x.rec.status = statusClientClosed
			}
		} else if p != nil && x.failure == "" {
			x.rec.reason = CodeUpstreamUnreachable
		}
	default:
		x.rec.outcome = outcomeForwarded
	}
	if !x.handedOff {
		end := time.Now()
		g.audit.write(&x.rec, end)
		g.metrics.observe(&x.rec, end)
	}
	g.active.Add(-1)
	if p != nil {
		if p != http.ErrAbortHandler {
			// The stack holds no secret values (only addresses); the panic
			// value is not logged, since it could.
			g.log.Error().Str("id", x.rec.id).Bytes("stack", debug.Stack()).Msg("panic while serving a request")
		}
		panic(http.ErrAbortHandler)
	}
}

// cutReason says who ended a request whose context is done: till's
// shutdown (the base context's cause) or the app.
func cutReason(ctx context.Context) string {
	if errors.Is(context.Cause(ctx), errShutdown) {
		return codeShutdown
	}
	return codeClientClosed
}

// rewrite is ReverseProxy's hook for the upstream request (see target).
func rewrite(pr *httputil.ProxyRequest) {
	pr.In.Context().Value(exchangeKey{}).(*exchange).target(pr.Out, pr.In.URL.RawQuery)
}

// target points out at the route's upstream, with the app's query, and
// attaches the route's key: the host dialled and the Host header both come
// from the route alone (invariant 1). Before the key goes in, it removes
// the app's credentials and the method and URL overrides that would slip
// past the route's allow rules, under any alias, and any header or query
// parameter holding a till token (invariant 2).
func (x *exchange) target(out *http.Request, rawQuery string) {
	rt := x.route
	out.URL.Scheme = rt.upstream.Scheme
	out.URL.Host = rt.upstream.Host
	out.URL.Path = x.outPath
	out.URL.RawPath = x.rawPath
	out.URL.RawQuery = withoutClientTokens(rawQuery)
	out.Host = ""
	h := out.Header
	stripHeaders(h, rt.credentials, overrideHeaders)
	for _, kv := range rt.addHeaders {
		if _, ok := h[kv[0]]; !ok {
			h[kv[0]] = []string{kv[1]}
		}
	}
	if rt.injectHeader != "" {
		h[rt.injectHeader] = []string{rt.injectValue}
	}
	if rt.injectQuery != "" {
		q := withoutParam(out.URL.RawQuery, rt.injectQuery)
		if q != "" {
			q += "&"
		}
		out.URL.RawQuery = q + rt.injectPair
	}
	x.rec.keyFP = rt.fp
}

// withoutParam removes every parameter named name from the raw query,
// comparing decoded names so that an encoded duplicate cannot slip through.
func withoutParam(raw, name string) string {
	return withoutParams(raw, func(part string) bool {
		key, _, _ := strings.Cut(part, "=")
		k, err := url.QueryUnescape(key)
		return err != nil || k == name
	})
}

// modifyResponse is ReverseProxy's hook for the response (see
// checkResponse).
func (g *Gateway) modifyResponse(resp *http.Response) error {
	x := resp.Request.Context().Value(exchangeKey{}).(*exchange)
	g.checkResponse(x, resp)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// Trailers arrive after the body (over HTTP/2, even unannounced
		// ones): check them when it ends.
		resp.Body = &trailerScrubber{ReadCloser: resp.Body, resp: resp, echo: x.route.echoForms}
	}
	return nil
}

// checkResponse notes the upstream's answer, and removes any response
// header that echoes the key. Trailers are the caller's to check, once the
// body has ended.
func (g *Gateway) checkResponse(x *exchange, resp *http.Response) {
	x.status = resp.StatusCode
	g.metrics.observeUpstream(x.route.name, time.Since(x.upstreamStart))
	if n := scrubEchoes(resp.Header, x.route.echoForms); n > 0 {
		g.log.Warn().Str("id", x.rec.id).Str("route", x.route.name).Int("headers", n).
			Msg("removed response headers that echoed the key")
	}
	// The upstream does not get to name till's request id.
	resp.Header["X-Till-Request-Id"] = []string{x.rec.id}
}

// trailerScrubber removes trailers that echo the key once the body ends,
// before ReverseProxy copies them to the app.
type trailerScrubber struct {
	io.ReadCloser
	resp *http.Response
	echo []string
}

func (t *trailerScrubber) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if err == io.EOF {
		scrubEchoes(t.resp.Trailer, t.echo)
	}
	return n, err
}

// handleUpstreamError is ReverseProxy's hook for a failed exchange (see
// upstreamFailed).
func (g *Gateway) handleUpstreamError(w http.ResponseWriter, r *http.Request, err error) {
	g.upstreamFailed(w, r.Context().Value(exchangeKey{}).(*exchange), r.Context(), err)
}

// upstreamFailed maps a failure to reach the upstream to till's error
// answer: 504 when the route's timeout fired, 502 otherwise, nothing when
// the request was cut (ctx, the app's request's, has ended: finish says
// whether by the app or by till's shutdown).
func (g *Gateway) upstreamFailed(w http.ResponseWriter, x *exchange, ctx context.Context, err error) {
	var tooBig *http.MaxBytesError
	var netErr net.Error
	d := denial{CodeUpstreamUnreachable, "till could not reach the upstream"}
	switch {
	case ctx.Err() != nil || x.appGone.Load():
		x.failure = codeClientClosed
		return
	case x.upload != nil && x.upload.stalled.Load():
		d = denial{CodeUpstreamTimeout, "the upstream stopped reading the request body for the route's timeout"}
	case errors.As(err, &tooBig):
		d = denial{CodeBadRequest, "the request body is larger than the route's max_body"}
	case x.bodyErr.Load():
		d = denial{CodeBadRequest, "the request body could not be read"}
	case errors.As(err, &netErr) && netErr.Timeout():
		d = denial{CodeUpstreamTimeout, "the upstream did not answer within the route's timeout"}
	}
	x.failure = d.code
	if d.code == CodeBadRequest {
		x.rec.outcome = outcomeDenied
		x.rec.reason = d.code
	}
	g.log.Warn().Str("id", x.rec.id).Str("route", x.route.name).Str("code", d.code).
		Str("error", x.errorText(err)).Msg("upstream request failed")
	writeError(w, x.rec.id, d, x.rec.mode != modeReverse, 0)
}

// errorText describes an error of the exchange with the upstream for the
// log: without the request URL (safeError), and without any form of the
// route's key, which an upstream's malformed answer can quote back (a
// parse error quotes the line it could not read).
func (x *exchange) errorText(err error) string {
	s := safeError(err)
	if x.route != nil {
		for _, f := range x.route.echoForms {
			s = strings.ReplaceAll(s, f, "REDACTED")
		}
	}
	return s
}

// safeError describes a transport error without the request URL, whose
// query could hold an injected key.
func safeError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne *net.OpError
	if errors.As(err, &ne) {
		return ne.Error()
	}
	return err.Error()
}
