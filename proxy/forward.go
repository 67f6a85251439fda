package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// serveAbsolute handles an absolute-form request (`GET http://host/path`,
// what HTTP_PROXY sends for http:// URLs). It is matched by the URL's host
// and port against the routes' upstreams; the request goes to the route's
// upstream, whatever the Host header said.
func (g *Gateway) serveAbsolute(rw *responseRecorder, r *http.Request, x *exchange, s *Snapshot) {
	x.rec.mode = modeForward
	x.rec.host = r.URL.Host
	if !s.forward.Enabled {
		g.deny(rw, x, denial{CodeBadRequest, "till is not configured as a forward proxy (forward.enabled)"})
		return
	}
	if r.URL.Scheme != "http" || r.URL.Host == "" {
		g.deny(rw, x, denial{CodeBadRequest, "a proxy request must be an http:// URL; use CONNECT for https"})
		return
	}
	if reason := checkPath(r.URL.RawPath, r.URL.Path); reason != "" {
		g.deny(rw, x, denial{CodeBadRequest, reason})
		return
	}
	rt := s.matchHost(hostKey("http", r.URL.Host), r.URL.Path)
	if rt == nil && r.URL.Port() == "" {
		// http://api.example.com matches an https upstream on the default
		// port: till speaks TLS to the upstream on the app's behalf.
		rt = s.matchHost(hostKey("https", r.URL.Host), r.URL.Path)
	}
	if rt == nil {
		if s.forward.UnknownHosts == "tunnel" {
			g.relayPlain(rw, r, x, s)
			return
		}
		g.deny(rw, x, denial{CodeHostNotAllowed, "no route for this host"})
		return
	}
	x.outPath = r.URL.Path
	if x.outPath == "" {
		x.outPath = "/"
	}
	x.rawPath = r.URL.RawPath
	g.forward(rw, r, x, s, rt)
}

// serveConnect handles CONNECT: interception for hosts with a route,
// otherwise the unknown_hosts policy.
func (g *Gateway) serveConnect(rw *responseRecorder, r *http.Request, x *exchange, s *Snapshot) {
	x.rec.mode = modeForward
	x.rec.path = ""
	if !s.forward.Enabled {
		g.deny(rw, x, denial{CodeBadRequest, "till is not configured as a forward proxy (forward.enabled)"})
		return
	}
	host, portStr, err := net.SplitHostPort(r.Host)
	port, perr := strconv.ParseUint(portStr, 10, 16)
	if err != nil || perr != nil || host == "" || port == 0 {
		g.deny(rw, x, denial{CodeBadRequest, "CONNECT needs a host:port target"})
		return
	}
	t := connectTarget{host: strings.ToLower(strings.TrimSuffix(host, ".")), port: uint16(port)}
	t.key = hostKey("https", r.Host)
	t.proxyAuth = r.Header.Get("Proxy-Authorization")
	t.cert = peerCert(r)
	if routes := s.byHost[t.key]; len(routes) > 0 && s.forward.Intercept && g.intercept != nil {
		x.rec.mode = modeIntercept
		// Apps send proxy credentials on the CONNECT, not inside the
		// tunnel: ask for them there (407) when every route of the host
		// needs a client.
		id := s.clients.identify(r, "", certID{}, "")
		x.rec.client = id.name()
		if d, ok := id.admit(r.RemoteAddr, nil); !ok {
			g.deny(rw, x, d)
			return
		}
		if id.client == nil && !slices.ContainsFunc(routes, func(rt *route) bool { return len(rt.clients) == 0 }) {
			g.deny(rw, x, denial{CodeClientUnauthenticated, "this host's routes need a till client token"})
			return
		}
		g.intercept.serve(rw, r, x, t)
		return
	}
	if s.forward.UnknownHosts != "tunnel" {
		g.deny(rw, x, denial{CodeHostNotAllowed, "no route for this host"})
		return
	}
	x.rec.mode = modeTunnel
	g.tunnel(rw, r, x, s, t)
}

// connectTarget is what a CONNECT asked for; requests inside an
// intercepted CONNECT must be for the same host.
type connectTarget struct {
	host      string // lower case, no trailing dot
	port      uint16
	key       string // hostKey form, for route lookup
	proxyAuth string // credentials given on the CONNECT
	cert      certID // the client certificate on the CONNECT
}

// tunnelDialTimeout bounds resolving and connecting to a tunnel target.
const tunnelDialTimeout = 10 * time.Second

// tunnel relays bytes between the app and a host without a route, after the
// SSRF guard (invariant 4). No key is attached and nothing is decrypted.
func (g *Gateway) tunnel(rw *responseRecorder, r *http.Request, x *exchange, s *Snapshot, t connectTarget) {
	ctx, cancel := context.WithTimeout(r.Context(), tunnelDialTimeout)
	upstream, err := s.guard.dial(ctx, t.host, t.port)
	cancel()
	if err != nil {
		if errors.Is(err, errHostNotAllowed) {
			g.deny(rw, x, denial{CodeHostNotAllowed, "tunnels may not reach this address"})
			return
		}
		g.log.Warn().Str("id", x.rec.id).Str("host", t.host).Str("error", safeError(err)).Msg("tunnel dial failed")
		g.fail(rw, x, denial{CodeUpstreamUnreachable, "till could not reach the host"})
		return
	}
	defer upstream.Close()
	conn, brw, err := http.NewResponseController(rw.ResponseWriter).Hijack()
	if err != nil {
		g.fail(rw, x, denial{CodeBadRequest, "the connection cannot be tunnelled"})
		return
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	x.status = http.StatusOK
	x.rec.outcome = outcomeForwarded
	// At shutdown, past the grace period, the gateway's base context ends
	// the tunnel.
	stop := context.AfterFunc(r.Context(), func() { conn.Close(); upstream.Close() })
	defer stop()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Bytes the server read ahead of the handshake go first.
		n, _ := io.Copy(upstream, io.MultiReader(io.LimitReader(brw.Reader, int64(brw.Reader.Buffered())), conn))
		x.bytesIn.Add(n)
		closeWrite(upstream)
	}()
	n, _ := io.Copy(conn, upstream)
	x.rec.bytesOut += n
	closeWrite(conn)
	wg.Wait()
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

// relayPlain forwards an absolute-form request to a host without a route,
// untouched but for till's own credentials, through the snapshot's relay
// transport (and so its SSRF guard).
func (g *Gateway) relayPlain(rw *responseRecorder, r *http.Request, x *exchange, s *Snapshot) {
	x.rec.mode = modeTunnel
	ctx := context.WithValue(r.Context(), snapshotKey{}, s)
	ctx = context.WithValue(ctx, exchangeKey{}, x)
	out := r.WithContext(ctx)
	x.countBody(rw, out, 0)
	g.plain.ServeHTTP(rw, out)
	if x.rec.outcome == "" && x.failure == "" {
		x.rec.outcome = outcomeForwarded
	}
}

type snapshotKey struct{}

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

// relayTransport sends each request through its snapshot's transport.
type relayTransport struct{}

func (relayTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return r.Context().Value(snapshotKey{}).(*Snapshot).relay.RoundTrip(r)
}

// newPlainProxy returns the proxy for absolute-form requests to hosts
// without a route: no key, and none of till's credentials.
func (g *Gateway) newPlainProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = pr.In.URL.Host
			// A till token in any header or query parameter (an SDK's
			// api key, a cookie) stays with till: it is worth nothing to
			// that host (invariant 2).
			pr.Out.URL.RawQuery = withoutClientTokens(pr.In.URL.RawQuery)
			pr.Out.Host = ""
			stripHeaders(pr.Out.Header, relayCredentials)
		},
		Transport: relayTransport{},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			x := r.Context().Value(exchangeKey{}).(*exchange)
			if errors.Is(err, errHostNotAllowed) {
				g.deny(w, x, denial{CodeHostNotAllowed, "tunnels may not reach this address"})
				return
			}
			if r.Context().Err() != nil {
				x.failure = codeClientClosed
				return
			}
			g.log.Warn().Str("id", x.rec.id).Str("error", safeError(err)).Msg("relay failed")
			g.fail(w, x, denial{CodeUpstreamUnreachable, "till could not reach the host"})
		},
		ErrorLog: zerologStdLogger(g.log),
	}
}
