package proxy

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// tunnelDialTimeout bounds resolving and connecting to a tunnel target.
const tunnelDialTimeout = 10 * time.Second

// tunnelIdleTimeout ends a tunnel, or a switched protocol (WebSocket),
// that has moved no byte either way for this long (Squid's read_timeout):
// an app that vanished without closing would otherwise hold two sockets
// and two goroutines until till stops.
const tunnelIdleTimeout = 15 * time.Minute

// tunnel relays bytes between the app and a host without a route, after the
// SSRF guard (invariant 4). No key is attached and nothing is decrypted.
func (g *Gateway) tunnel(rw *responseRecorder, r *http.Request, x *exchange, l *live, t connectTarget) {
	ctx, cancel := context.WithTimeout(r.Context(), tunnelDialTimeout)
	upstream, err := l.guard.dial(ctx, t.host, t.port)
	cancel()
	if err != nil {
		if errors.Is(err, errHostNotAllowed) {
			g.refuse(rw, x, errTunnelForbidden, 0)
			return
		}
		g.log.Warn().Str("id", x.rec.id).Str("host", t.host).Str("error", safeError(err)).Msg("tunnel dial failed")
		g.fail(rw, x, apiError{CodeUpstreamUnreachable, "till could not reach the host"})
		return
	}
	defer upstream.Close()
	conn, brw, err := http.NewResponseController(rw.ResponseWriter).Hijack()
	if err != nil {
		g.fail(rw, x, apiError{CodeBadRequest, "the connection cannot be tunnelled"})
		return
	}
	defer conn.Close()
	x.takenOver = true
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	x.status = http.StatusOK
	// At shutdown, past the grace period, the gateway's base context ends
	// the tunnel.
	end := func() { conn.Close(); upstream.Close() }
	stop := context.AfterFunc(r.Context(), end)
	defer stop()
	idle := newIdleTimer(g.tunnelIdle, end)
	defer idle.stop()
	dialled := upstream.RemoteAddr().(*net.TCPAddr).AddrPort()
	held := g.hold(func(l *live) (*apiError, time.Time) {
		return l.admitTunnel(r, g.intercept != nil, dialled), time.Time{}
	}, end)
	defer g.release(x, held, true) // made: the app has its 200
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Bytes the server read ahead of the handshake go first.
		n, _ := io.Copy(upstream, idle.reader(io.MultiReader(io.LimitReader(brw.Reader, int64(brw.Reader.Buffered())), conn)))
		x.bytesIn.Add(n)
		closeWrite(upstream)
	}()
	n, _ := io.Copy(conn, idle.reader(upstream))
	x.rec.bytesOut += n
	closeWrite(conn)
	wg.Wait()
}

// idleTimer calls end once no byte has been read through its readers
// for d. A read marks the time; the timer, when it fires, sleeps again
// for what is left since the last one, so reads cost no timer reset.
type idleTimer struct {
	d     time.Duration
	last  atomic.Int64 // nanotime of the last read that moved bytes
	timer *time.Timer
}

func newIdleTimer(d time.Duration, end func()) *idleTimer {
	t := &idleTimer{d: d}
	t.last.Store(nanotime())
	// Made stopped and started once assigned, so fire never sees it nil.
	t.timer = time.AfterFunc(time.Duration(math.MaxInt64), func() {
		if left := time.Duration(t.last.Load() + int64(t.d) - nanotime()); left > 0 {
			t.timer.Reset(left)
			return
		}
		end()
	})
	t.timer.Reset(d)
	return t
}

// reader returns r, marking the time of each read that moves bytes.
func (t *idleTimer) reader(r io.Reader) io.Reader { return activeReader{r, t} }

// moved passes on the result of a read or write, marking the time when
// it moved bytes.
func (t *idleTimer) moved(n int, err error) (int, error) {
	if n > 0 {
		t.last.Store(nanotime())
	}
	return n, err
}

func (t *idleTimer) stop() { t.timer.Stop() }

type activeReader struct {
	r io.Reader
	t *idleTimer
}

func (a activeReader) Read(p []byte) (int, error) { return a.t.moved(a.r.Read(p)) }

// idleConn is a connection handed over for a protocol switch that its
// timer closes once no byte has moved either way for its duration.
type idleConn struct {
	net.Conn
	t *idleTimer
}

func newIdleConn(c net.Conn, d time.Duration) idleConn {
	return idleConn{c, newIdleTimer(d, func() { c.Close() })}
}

func (c idleConn) Read(p []byte) (int, error) { return c.t.moved(c.Conn.Read(p)) }

func (c idleConn) Write(p []byte) (int, error) { return c.t.moved(c.Conn.Write(p)) }

func (c idleConn) Close() error {
	c.t.stop()
	return c.Conn.Close()
}

// closeWrite half-closes c so the peer sees the end of the stream while
// the other direction drains.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// errTunnelForbidden refuses a host without a route whose addresses the
// dial guard refuses.
var errTunnelForbidden = apiError{CodeHostNotAllowed, "tunnels may not reach this address"}

// relay forwards an absolute-form request to a host without a route,
// untouched but for till's own credentials, through the snapshot's relay
// transport (and so its SSRF guard).
func (g *Gateway) relay(rw *responseRecorder, r *http.Request, x *exchange, l *live) {
	x.rec.mode = modeTunnel
	if !httpguts.ValidHeaderFieldName(r.Method) { // as a route refuses it
		g.refuse(rw, x, errMethodNotToken, 0)
		return
	}
	ctx := context.WithValue(r.Context(), liveKey{}, l)
	ctx = context.WithValue(ctx, exchangeKey{}, x)
	if badUpgrade(r) {
		g.refuse(rw, x, errUpgradeName, 0)
		return
	}
	if isUpgrade(r) {
		// A protocol switch outlives this request's checks: a reload
		// that would refuse it ends it, as it ends a tunnel.
		var dialled atomic.Pointer[netip.AddrPort]
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(c httptrace.GotConnInfo) {
			if a, ok := c.Conn.RemoteAddr().(*net.TCPAddr); ok {
				ap := a.AddrPort()
				dialled.Store(&ap)
			}
		}})
		var release func()
		var cut *apiError
		ctx, release, cut = g.holdUpgrade(ctx, rw, x, func(l *live) (*apiError, time.Time) { return l.admitRelay(r, dialled.Load()), time.Time{} })
		defer release()
		if cut != nil {
			g.refuse(rw, x, *cut, 0) // a reload since the request's checks
			return
		}
	}
	out := r.WithContext(ctx)
	x.countBody(rw, out, 0)
	g.relayer.ServeHTTP(rw, out)
}

type liveKey struct{}

// newRelayTransport returns the transport for absolute-form requests to
// hosts without a route: every connection is dialled through guard. Each
// snapshot has its own, so a reload that narrows allow_cidrs also drops
// the idle connections the old rules let through.
func newRelayTransport(guard *dialGuard) *http.Transport {
	return &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			host, portStr, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			port, err := strconv.ParseUint(portStr, 10, 16)
			if err != nil {
				return nil, err
			}
			return guard.dial(ctx, host, uint16(port))
		},
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
}

// relayTransport sends each request through the relay transport of the
// live snapshot it was resolved with. A status net/http cannot send on
// is an error, as a route's upstream's is (sendableStatus).
type relayTransport struct{}

func (relayTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return statusChecked{r.Context().Value(liveKey{}).(*live).relay}.RoundTrip(r)
}

// newRelayer returns the proxy for absolute-form requests to hosts
// without a route: no key, and none of till's credentials.
func (g *Gateway) newRelayer() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = pr.In.URL.Host
			// A till token in any header or query parameter (an SDK's
			// api key, a cookie) stays with till: it is worth nothing to
			// that host (invariant 2). One made by hand is known by its
			// client's digest, and only the parameter or cookie that
			// holds it goes.
			pr.Out.URL.RawQuery = withoutClientTokens(pr.In.URL.RawQuery)
			pr.Out.Host = ""
			stripHeaders(pr.Out.Header, relayCredentials)
			dropKnownTokens(pr.Out, pr.In.Context().Value(liveKey{}).(*live).clients)
		},
		Transport:  relayTransport{},
		BufferPool: copyBuffers{g.buffers},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			x := r.Context().Value(exchangeKey{}).(*exchange)
			if errors.Is(err, errHostNotAllowed) {
				g.refuse(w, x, errTunnelForbidden, 0)
				return
			}
			if r.Context().Err() != nil {
				x.failure = codeClientClosed
				return
			}
			g.log.Warn().Str("id", x.rec.id).Str("error", safeError(err)).Msg("relay failed")
			g.fail(w, x, apiError{CodeUpstreamUnreachable, "till could not reach the host"})
		},
		ErrorLog: NewErrorLog(g.log, "relay"),
	}
}
