package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tillgw/till/config"
)

// hopHeaders are removed from requests and responses on their way through
// (RFC 9110, section 7.6.1), with the headers that Connection names. The
// list is httputil.ReverseProxy's.
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection", // not standard, but sent by libcurl
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// send forwards a routed request to its upstream and copies the response
// to the app. It does for every request but a protocol upgrade what
// httputil.ReverseProxy does (it still carries upgrades), without its
// copies of the request and of every header, its tracing context and its
// header canonicalization: about 5% of till's CPU per request.
func (g *Gateway) send(rw *responseRecorder, r *http.Request, x *exchange) {
	if x.route.pool != nil {
		// Held, the body can go again with the pool's next key.
		if e, ok := x.holdBody(rw, r); !ok {
			g.bodyUnread(rw, x, e)
			return
		}
	}
	var res *http.Response
	for {
		if e := g.readmit(r, x, x.member); e != nil {
			// A reload while the body was held, or since the last key
			// was refused.
			g.refuse(rw, x, *e, 0)
			return
		}
		var err error
		var done func()
		res, done, err = g.attempt(rw, r, x)
		defer done()
		if e := x.withheld; e != nil {
			if res != nil {
				res.Body.Close()
			}
			g.refuse(rw, x, *e, 0)
			return
		}
		if g.nextKey(r, x, res, err) {
			continue
		}
		if err != nil {
			g.upstreamFailed(rw, x, r.Context(), err)
			return
		}
		break
	}
	removeHopHeaders(res.Header)
	g.checkResponse(x, res)
	x.startMeter(res)
	stream := res.ContentLength < 0 || isEventStream(res.Header.Get("Content-Type"))
	h := rw.Header()
	for k, v := range res.Header {
		if old, ok := h[k]; ok {
			h[k] = append(old, v...)
		} else {
			h[k] = v
		}
	}
	// The transport leaves the Trailer header out: it is rebuilt from
	// the trailers the upstream announced.
	announced := len(res.Trailer)
	if announced > 0 {
		names := make([]string, 0, announced)
		for k := range res.Trailer {
			names = append(names, k)
		}
		h["Trailer"] = []string{strings.Join(names, ", ")}
		// Trailers need a chunked response to the app: an upstream over
		// HTTP/2 may send a content-length with them.
		delete(h, "Content-Length")
	}
	rw.WriteHeader(res.StatusCode)
	if stream {
		// A stream's headers go at once, so the app sees the response
		// begin before its first event.
		rw.Flush()
	}
	if !g.copyBody(rw, res.Body, stream, x) {
		res.Body.Close()
		// The server cuts the connection, so the app cannot take what
		// it got for the whole response; finish records it.
		panic(http.ErrAbortHandler)
	}
	res.Body.Close() // now, to read the trailers
	g.passTrailers(rw, res, announced, x)
}

// passTrailers passes the upstream's trailers on to the app, once its
// body has ended, without those that echo the key; announced is how many
// the upstream announced before the body.
func (g *Gateway) passTrailers(rw *responseRecorder, res *http.Response, announced int, x *exchange) {
	if n := scrubEchoes(res.Trailer, x.echoForms()); n > 0 {
		g.log.Warn().Str("id", x.rec.id).Str("route", x.route.name).Int("trailers", n).
			Msg("removed response trailers that echoed the key")
	}
	removeTillHeaders(res.Trailer)
	if len(res.Trailer) == 0 {
		return
	}
	// Flushing makes the response chunked, which trailers need.
	rw.Flush()
	prefix := "" // announced trailers are set by name
	if len(res.Trailer) != announced {
		prefix = http.TrailerPrefix
	}
	h := rw.Header()
	for k, v := range res.Trailer {
		h[prefix+k] = append(h[prefix+k], v...)
	}
}

// attempt sends r upstream once, with the exchange's key: it records the
// key's use first, and returns the response; done releases what the
// attempt holds once its response has been read.
func (g *Gateway) attempt(rw *responseRecorder, r *http.Request, x *exchange) (res *http.Response, done func(), err error) {
	parent := r.Context()
	if x.route.tokenBudgeted {
		// The provider bills an answer whole, the app there or not:
		// one it left is read to its end (drainAnswer), so that a
		// budget counts what the answer tells last (a stream's usage,
		// its reasoning). Only shutdown ends it sooner.
		parent = context.WithoutCancel(parent)
	}
	ctx, cancel := context.WithCancelCause(parent)
	done = func() { cancel(nil) }
	if x.route.tokenBudgeted {
		x.answer = &progress{}
		watch := newStallWatch(x.answer, cmp.Or(x.route.timeout, config.DefaultTimeout), errAnswerStalled, cancel)
		stopApp := context.AfterFunc(r.Context(), watch.start)
		stopBase := context.AfterFunc(g.base, func() { cancel(context.Cause(g.base)) })
		done = func() { stopApp(); stopBase(); watch.stop(); cancel(nil) }
	}
	early := &earlyHints{rw: rw}
	var out *http.Request
	trace, u := g.traceAttempt(r, x, cancel, func() bool { return g.withhold(r, x, out, cancel) })
	u.limit, u.end = x.route.timeout, cancel // for the wait to be written
	if x.route.pool == nil {
		// A pool's attempt may yet be refused and sent again with
		// another key: nothing of it reaches the app before its answer.
		trace.Got1xxResponse = early.relay
	}
	out = x.outbound(r, httptrace.WithClientTrace(ctx, trace))
	if !x.writeAhead() {
		return nil, done, errAuditUnavailable
	}
	counted, sent := x.setBody(rw, out)
	if counted != nil {
		// The upstream transport may still hold the body when the
		// handler returns: it must not read it after that.
		release := done
		done = func() { out.Body.Close(); release() }
	}
	if sent != nil && x.route.timeout > 0 {
		// Held in memory or streamed from the app, a body the upstream
		// stops reading ends the request.
		x.upload = newStallWatch(sent, x.route.timeout, errUploadStalled, cancel)
	}
	if x.inj.sigV4 != nil {
		if err := x.signV4(out); err != nil {
			return nil, done, err
		}
	}
	// net/http's Transport, with the route's timeout for the response
	// headers.
	res, err = g.transports.forTimeout(x.route.timeout).RoundTrip(out)
	u.written()
	x.expiredMeanwhile(u.expired.Load()) // while it waited to be written
	if err != nil && x.withheld == nil {
		// Declared here, not above: errors.As puts it on the heap.
		var kept keptBack
		if errors.As(context.Cause(ctx), &kept) {
			x.withheld = &kept.e // a reload while it waited to be written
		}
	}
	if err != nil && context.Cause(ctx) == errStreamWait {
		err = errStreamWait
	}
	early.stop()
	if x.upload != nil {
		// An upstream that answered early is no longer waited on.
		x.upload.stop()
	}
	if err == nil && res.StatusCode == http.StatusSwitchingProtocols {
		// Only ReverseProxy's requests ask for a protocol switch.
		res.Body.Close()
		err = errors.New("upstream: 101 Switching Protocols, and no switch was asked for")
	}
	return res, done, err
}

// sendableStatus turns an answer whose status net/http cannot send on to
// the app (outside 100 to 999: HTTP/1 takes any three digits, "042" too,
// HTTP/2 any integer) into an error, so that the app gets 502 rather than
// a connection cut by the handler's panic, and no made-up status reaches
// the record or a metric's label.
func sendableStatus(res *http.Response, err error) (*http.Response, error) {
	if err != nil || res.StatusCode >= 100 && res.StatusCode <= 999 {
		return res, err
	}
	res.Body.Close()
	return nil, fmt.Errorf("upstream: status %d is no HTTP status code (three digits, 100 to 999)", res.StatusCode)
}

// outbound returns the request to send upstream for r, with the context
// ctx: to the route's upstream, whatever r names (invariant 1), without
// hop-by-hop headers or forwarding headers from the app, with the app's
// credentials replaced by the route's key.
func (x *exchange) outbound(r *http.Request, ctx context.Context) *http.Request {
	out := r.WithContext(ctx) // a shallow copy
	u := *r.URL
	out.URL = &u
	out.RequestURI = ""
	out.Close = false
	// The app's trailers fill r.Trailer when its body ends, unchecked:
	// none go upstream (as with ReverseProxy, which sent their names only).
	out.Trailer = nil
	if r.ContentLength == 0 {
		out.Body = nil
	}
	h := make(http.Header, len(r.Header)+2)
	for k, v := range r.Header {
		h[k] = v // shared, and never written to: values are replaced
	}
	removeHopHeaders(h)
	if hasToken(r.Header["Te"], "trailers") {
		// The app can take trailers (gRPC needs them): say so upstream.
		h["Te"] = []string{"trailers"}
	}
	delete(h, "Forwarded")
	delete(h, "X-Forwarded-For")
	delete(h, "X-Forwarded-Host")
	delete(h, "X-Forwarded-Proto")
	out.Header = h
	x.attach(out, r.URL.RawQuery)
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""} // not Go's
	}
	return out
}

// earlyHints passes the upstream's informational responses (103 Early
// Hints, 100 Continue) on to the app as they come, until stop. The
// Transport reports them on the goroutine that reads the upstream's
// connection, which over HTTP/2 every request to that upstream shares,
// and may still do so after RoundTrip returned: each is written to the
// app from a goroutine of its own, so that an app that takes none (it
// reads nothing, its socket buffers full) holds no other request's
// answer. One arriving while the last is still being written is
// dropped (a 1xx is advice; the app's server sends its own 100 Continue
// when till reads the body), so a flood of them queues nothing.
type earlyHints struct {
	mu      sync.Mutex
	rw      *responseRecorder
	stopped bool
	busy    bool           // a 1xx is being written
	writes  sync.WaitGroup // the 1xx being written
}

func (e *earlyHints) relay(code int, h textproto.MIMEHeader) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped || e.busy {
		return nil
	}
	e.busy = true
	e.writes.Go(func() {
		_ = e.rw.informational(code, http.Header(h))
		e.mu.Lock()
		e.busy = false
		e.mu.Unlock()
	})
	return nil
}

// stop ends the relay once the 1xx being written, if any, is written
// (or the write watch cut it): the final response goes after it.
func (e *earlyHints) stop() {
	e.mu.Lock()
	e.stopped = true
	e.mu.Unlock()
	e.writes.Wait()
}

// writeAhead records an attempt's first send of the request's key, before
// the transport runs (invariant 8). It reports whether the record was
// written: the key must not go when it was not. Only then does the
// request's record name the key: one that never went (a pool's next key
// whose use could not be recorded) is not charged with the request.
func (x *exchange) writeAhead() bool {
	n := x.attempts.Load() + 1
	rec := x.rec
	rec.nameKey(x.inj)
	if !x.audit.writeUse(&rec, int(n), time.Now()) {
		x.auditFailed.Store(true)
		return false
	}
	x.rec.nameKey(x.inj)
	x.attempts.Store(n)
	x.conns.Store(0)
	x.wrote.Store(false)
	return true
}

// sendTrace follows net/http's Transport through one request (cancel
// ends the request). The Transport sends a request again on another
// connection when a reused one failed under it (and HTTP/2 after some
// stream errors): each attempt gets a connection (GotConn), where withhold
// may yet keep the key back, and each one after the first (writeAhead
// recorded that) is a send of the key that is recorded before it goes. If
// that record cannot be written, the request ends (audit_unavailable)
// before anything of it is written (dropUnwritten). u holds the request
// from then until its head is written, when the upload watch starts.
// The trace is made in t, which it returns.
func (x *exchange) sendTrace(t *httptrace.ClientTrace, cancel context.CancelCauseFunc, withhold func() bool, u *unwritten) *httptrace.ClientTrace {
	*t = httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			if withhold() {
				dropUnwritten(info.Conn)
				return
			}
			if x.conns.Add(1) > 1 && !x.recordResend(cancel) {
				dropUnwritten(info.Conn)
				return // not sent: not an attempt
			}
			u.watch(info.Conn)
		},
		WroteHeaders: func() {
			u.written()
			x.wrote.Store(true)
			if x.upload != nil {
				x.upload.start()
			}
		},
	}
	return t
}

// attemptTrace is the trace of an attempt, with its waiter, in one
// allocation.
type attemptTrace struct {
	httptrace.ClientTrace
	wait sendWait
}

// traceAttempt returns the trace of an attempt of x's request r (see
// sendTrace), and its waiter. Each attempt has a waiter of its own: the
// Transport's writer of one that ended may yet report its headers
// written after the next attempt is tracked. Within one attempt, the
// HTTP/2 Transport resends a stream refused (REFUSED_STREAM, a GOAWAY)
// with the same trace, so the same waiter, only once the refused
// stream's writer is done (ClientConn.roundTrip waits for it), or once
// the attempt's context ended, when the resend is never written: that
// writer's late WroteHeaders cannot end the resend's tracking.
func (g *Gateway) traceAttempt(r *http.Request, x *exchange, cancel context.CancelCauseFunc, withhold func() bool) (*httptrace.ClientTrace, *sendWait) {
	at := new(attemptTrace)
	w := at.wait.newAttempt(g, r, x, cancel)
	return x.sendTrace(&at.ClientTrace, cancel, withhold, &w.unwritten), w
}

// recordResend records a send of the key on another connection than the
// attempt's first; if it cannot, it ends the request (cancel) and
// reports false.
func (x *exchange) recordResend(cancel context.CancelCauseFunc) bool {
	n := x.attempts.Load() + 1
	if !x.audit.writeUse(&x.rec, int(n), time.Now()) {
		x.auditFailed.Store(true)
		cancel(errAuditUnavailable)
		return false
	}
	x.attempts.Store(n)
	return true
}

// dropUnwritten keeps the request of an attempt that GotConn ended
// (its context cancelled) from being written on conn. net/http's HTTP/1
// Transport writes a request it holds, its context ended or not, racing
// the cancellation: the connection, the attempt's alone, is closed.
// An HTTP/2 connection is shared with other requests and stays open: that
// Transport checks the context before it writes a stream's headers.
func dropUnwritten(conn net.Conn) {
	if !overHTTP2(conn) {
		conn.Close()
	}
}

// withhold checks r again, as readmit does, once the transport has a
// connection for out and before it writes anything: a reload while it
// dialled (up to its dial and handshake timeouts) that refuses the
// request (a key merely rotated still goes), or the key's expiry meanwhile
// under on_expired: block, takes every header and the query, the
// key with them, off out (the Transport's copies share them), and ends
// the attempt with x.withheld set. It reports whether it did.
func (g *Gateway) withhold(r *http.Request, x *exchange, out *http.Request, cancel context.CancelCauseFunc) bool {
	e, expired := g.keyGoes(r, x, x.member, x.inj)
	if e == nil {
		x.expiredMeanwhile(expired)
		return false
	}
	x.withheld = e
	stripKey(out)
	cancel(errWithheld)
	return true
}

// keyGoes decides whether in, the key of m (of the route when m is nil)
// about to go for r, may still go now, as the config served now says:
// not expired under on_expired: block, and after a reload, let by again
// (keyAgain). A key rotated meanwhile still goes with the value attached:
// the request was let by with it, and refusing would fail every request
// in flight at a rotation. expired reports a key that goes expired
// (on_expired: warn).
func (g *Gateway) keyGoes(r *http.Request, x *exchange, m *member, in *injection) (_ *apiError, expired bool) {
	e, expired, _ := g.live.Load().keyGoes(r, x, m, in)
	return e, expired
}

// keyGoes is Gateway.keyGoes as l says, and until when the key may go:
// its expiry as l says (zero for none) unless it went refused.
func (l *live) keyGoes(r *http.Request, x *exchange, m *member, in *injection) (_ *apiError, expired bool, until time.Time) {
	if l == x.live {
		refusal, ok, expired := in.secretState(time.Now(), l.onExpired)
		if !ok {
			return refusal.ref(), false, time.Time{}
		}
		return nil, expired, in.expires
	}
	_, key, e := l.keyAgain(r, x, m)
	if e != nil {
		return e, false, time.Time{}
	}
	return nil, key.expiredAt(time.Now()), key.expires
}

// stripKey takes every header and the query, the key with them, off out
// and the copies of it that share them (the Transport's).
func stripKey(out *http.Request) {
	clear(out.Header)
	out.URL.RawQuery = ""
}

// errWithheld ends an attempt whose key a reload kept back.
var errWithheld = errors.New("a reload refused the request before its key went")

// errAuditUnavailable ends a request whose next send of the key could not
// be recorded.
var errAuditUnavailable = errors.New("the audit record of a key use could not be written")

// copyBody copies a response body to the app, flushing after every write
// when it is a stream, and reports whether all of it went. A failure to
// read the body is logged; a failure to write it means the app has gone.
func (g *Gateway) copyBody(rw *responseRecorder, body io.Reader, stream bool, x *exchange) bool {
	bp := g.buffers.Get()
	defer g.buffers.Put(bp)
	buf := *bp
	for {
		n, rerr := body.Read(buf)
		x.answerRead()
		if n > 0 {
			// An app that left is not written to: on a budgeted route,
			// where its leaving does not end the answer, it may be seen
			// only here.
			err := context.Canceled
			if x.ctx.Err() == nil {
				_, err = rw.Write(buf[:n]) // metered there
			} else if x.meter != nil {
				_, _ = x.meter.Write(buf[:n]) // never fails
			}
			if err != nil {
				switch {
				case rerr == io.EOF:
					x.readWhole = true
				case rerr == nil && x.route.tokenBudgeted && x.meter != nil:
					x.drainAnswer(body, buf)
				}
				return false
			}
			if stream {
				rw.Flush()
			}
		}
		switch {
		case rerr == io.EOF:
			x.readWhole = true
			return true
		case rerr != nil:
			if x.ctx.Err() == nil { // not because the app went away
				g.log.Warn().Str("id", x.rec.id).Str("route", x.route.name).Str("error", x.errorText(rerr)).
					Msg("the upstream's response broke off")
			}
			return false
		}
	}
}

// drainAnswer reads the rest of an answer that the app left, on a route
// under a token or dollar budget, into the meter alone: the provider bills
// it whole, and what it tells at its end (a stream's usage, the reasoning
// before its first word, the input of a stored conversation) is what the
// budget must count. It ends with the answer, at shutdown, or once the
// upstream sends nothing for the route's timeout (the attempt's stall
// watch, started when the app left).
func (x *exchange) drainAnswer(body io.Reader, buf []byte) {
	for {
		n, err := body.Read(buf)
		x.answerRead()
		_, _ = x.meter.Write(buf[:n]) // never fails, never holds buf
		if err == io.EOF {
			x.readWhole = true
			return
		}
		if err != nil {
			return
		}
	}
}

// answerRead notes a read of the answer, for the stall watch of an
// answer the app may leave.
func (x *exchange) answerRead() {
	if x.answer != nil {
		x.answer.last.Store(nanotime())
	}
}

// removeHopHeaders removes the hop-by-hop headers from h.
func removeHopHeaders(h http.Header) {
	for name := range tokens(h["Connection"]) {
		h.Del(name)
	}
	for _, name := range hopHeaders {
		delete(h, name)
	}
}

// dropConnectionNamed removes from a request's headers those its
// Connection header names (RFC 9110, section 7.6.1), before anything reads
// them: they never go upstream, so the policy must not judge the request
// by them either. A Content-Type named there would make till read a body
// as JSON while the upstream, without it, reads the same body as a form
// (whose _method Rack honours). The hop-by-hop headers till reads itself
// (Upgrade, Proxy-Authorization, Te, …) stay; they never go upstream.
func dropConnectionNamed(h http.Header) {
	for name := range tokens(h["Connection"]) {
		if !slices.ContainsFunc(hopHeaders, func(hop string) bool { return strings.EqualFold(hop, name) }) {
			h.Del(name)
		}
	}
}

// hasToken reports whether a comma-separated header holds token, in any
// case.
func hasToken(values []string, token string) bool {
	for t := range tokens(values) {
		if strings.EqualFold(t, token) {
			return true
		}
	}
	return false
}

// tokens yields the non-empty elements of a comma-separated header.
func tokens(values []string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for _, v := range values {
			for t := range strings.SplitSeq(v, ",") {
				if t = textproto.TrimString(t); t != "" && !yield(t) {
					return
				}
			}
		}
	}
}

// isEventStream reports whether a Content-Type is Server-Sent Events.
func isEventStream(contentType string) bool {
	media, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(textproto.TrimString(media), "text/event-stream")
}

// dropRefusedToken ends the exchange's minted token when the upstream
// answered status 401 to it: the next request with its key mints anew.
func (x *exchange) dropRefusedToken(status int) {
	if status == http.StatusUnauthorized && x.inj.minted != nil {
		x.inj.minted.refuse(time.Now())
	}
}

// checkResponse notes the upstream's answer (a 401 ends a minted token),
// and removes any response
// header that echoes the key, and any announced trailer named after it
// (the announcement goes to the app before the body). Trailers' values
// are the caller's to check, once the body has ended. URLs into the
// upstream are given as URLs into the route at till (localize).
func (g *Gateway) checkResponse(x *exchange, resp *http.Response) {
	x.status = resp.StatusCode
	g.metrics.observeUpstream(x.route.name, time.Since(x.upstreamStart))
	x.dropRefusedToken(resp.StatusCode)
	n := scrubEchoes(resp.Header, x.echoForms())
	for name := range resp.Trailer {
		if nameEchoes(name, x.echoForms()) {
			delete(resp.Trailer, name)
			n++
		}
	}
	if n > 0 {
		g.log.Warn().Str("id", x.rec.id).Str("route", x.route.name).Int("headers", n).
			Msg("removed response headers that echoed the key")
	}
	removeTillHeaders(resp.Header)
	removeTillHeaders(resp.Trailer)
	resp.Header["X-Till-Request-Id"] = []string{x.rec.id}
	x.localize(resp.Header)
}

// tillHeaders are till's own response headers: the upstream does not get
// to name till's request id, nor to pass its errors off as till's, in its
// headers, its 1xx responses or its trailers (which curl -i prints among
// the headers).
var tillHeaders = [...]string{"X-Till-Error", "X-Till-Request-Id"}

// removeTillHeaders removes tillHeaders from an upstream's h.
func removeTillHeaders(h http.Header) {
	for _, name := range tillHeaders {
		delete(h, name)
	}
}
