package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"strings"
	"sync/atomic"
)

// newUpgrader returns the proxy for protocol switches (WebSocket) on
// routes, which httputil.ReverseProxy relays once the upstream agrees:
// send.go carries every other request. Its hooks do what send does.
func (g *Gateway) newUpgrader() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:        rewrite,
		Transport:      routeTransport{g},
		BufferPool:     copyBuffers{g.buffers},
		ModifyResponse: g.modifyResponse,
		ErrorHandler:   g.handleUpstreamError,
		ErrorLog:       NewErrorLog(g.log, "upgrade"),
	}
}

// errUpgradeName refuses a protocol switch to a protocol whose name is not
// printable ASCII: ReverseProxy would not ask it of the upstream, and the
// app would get 502, as if the upstream had failed.
var errUpgradeName = apiError{CodeBadRequest, "the Upgrade header must name the protocol in printable ASCII"}

// badUpgrade reports whether r asks to switch to a protocol that
// ReverseProxy refuses to ask for (its name not printable ASCII).
func badUpgrade(r *http.Request) bool {
	if !isUpgrade(r) {
		return false
	}
	for _, c := range []byte(r.Header.Get("Upgrade")) {
		if c < ' ' || c > '~' {
			return true
		}
	}
	return false
}

// errUpgradeNotWebSocket refuses, on a route, a protocol switch to any
// protocol but WebSocket, the one providers offer (OpenAI's Realtime,
// Gemini's Live API). After a switch the connection carries whatever the
// app sends next over what till opened with the key, past the route's
// methods, paths and records: only the switch providers need is made.
var errUpgradeNotWebSocket = apiError{CodeBadRequest, "a route switches protocols only to WebSocket (Upgrade: websocket)"}

// upgradeNotWebSocket reports whether r asks to switch to anything but
// WebSocket alone.
func upgradeNotWebSocket(r *http.Request) bool {
	v := r.Header.Values("Upgrade")
	return isUpgrade(r) && (len(v) != 1 || !strings.EqualFold(strings.TrimSpace(v[0]), "websocket"))
}

// rewrite is ReverseProxy's hook for the upstream request (see attach).
func rewrite(pr *httputil.ProxyRequest) {
	pr.In.Context().Value(exchangeKey{}).(*exchange).attach(pr.Out, pr.In.URL.RawQuery)
}

// modifyResponse is ReverseProxy's hook for the response (see
// checkResponse).
func (g *Gateway) modifyResponse(resp *http.Response) error {
	x := resp.Request.Context().Value(exchangeKey{}).(*exchange)
	g.checkResponse(x, resp)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// An upstream that declined the switch answers as to any
		// request: its usage counts (budgets) as send's answers do.
		x.startMeter(resp)
		// Trailers arrive after the body (over HTTP/2, even unannounced
		// ones): check them when it ends.
		resp.Body = &trailerScrubber{ReadCloser: resp.Body, resp: resp, x: x}
	}
	return nil
}

// trailerScrubber removes trailers that echo the key once the body ends,
// before ReverseProxy copies them to the app; and the key from a read
// error (a malformed trailer quoted back), which ReverseProxy logs as is.
type trailerScrubber struct {
	io.ReadCloser
	resp *http.Response
	x    *exchange
}

func (t *trailerScrubber) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		scrubEchoes(t.resp.Trailer, t.x.echoForms())
		removeTillHeaders(t.resp.Trailer)
	case err != nil && !errors.Is(err, context.Canceled):
		err = errors.New(t.x.errorText(err))
	}
	return n, err
}

// handleUpstreamError is ReverseProxy's hook for a failed exchange (see
// upstreamFailed).
func (g *Gateway) handleUpstreamError(w http.ResponseWriter, r *http.Request, err error) {
	g.upstreamFailed(w, r.Context().Value(exchangeKey{}).(*exchange), r.Context(), err)
}

// routeTransport sends ReverseProxy's requests (protocol upgrades) through
// net/http's Transport with their route's timeout.
type routeTransport struct{ g *Gateway }

func (t routeTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	x := r.Context().Value(exchangeKey{}).(*exchange)
	if err := r.Context().Err(); err != nil {
		return nil, err // a reload ended it: the key does not go
	}
	if !x.writeAhead() {
		return nil, errAuditUnavailable
	}
	if x.inj.sigV4 != nil {
		// Signed as send signs: the switch carries the route's key too.
		if err := x.signV4(r); err != nil {
			return nil, err
		}
	}
	// The context lives as long as the request (the upgraded connection
	// with it): cancel is the trace's, to stop a send it cannot record.
	ctx, cancel := context.WithCancelCause(r.Context())
	out := r.WithContext(httptrace.WithClientTrace(ctx, x.upgradeTrace(r, cancel)))
	return t.g.transports.forTimeout(x.route.timeout).RoundTrip(out)
}

// upgradeTrace is the trace of the protocol switch r (see sendTrace). A
// reload that refuses the switch while the Transport dials ends r's
// context: the key is taken off before anything is written. Every reload
// rechecks the switch (holdUpgrade) and ends that context if it refuses
// it, from now until the switch ends: no waiter (unwritten) is needed
// besides. x.wrote says the key went (holdUpgrade): headers written
// without it, on a connection so dropped, do not count.
func (x *exchange) upgradeTrace(r *http.Request, cancel context.CancelCauseFunc) *httptrace.ClientTrace {
	held := r.Context()
	var stripped atomic.Bool
	withhold := func() bool {
		if held.Err() == nil {
			return false
		}
		stripKey(r)
		stripped.Store(true)
		return true
	}
	trace := x.sendTrace(new(httptrace.ClientTrace), cancel, withhold, nil)
	wroteHeaders := trace.WroteHeaders
	trace.WroteHeaders = func() {
		if !stripped.Load() {
			wroteHeaders()
		}
	}
	return trace
}
