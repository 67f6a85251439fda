package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tillgw/till/proxy/ca"
)

// handshakeTimeout bounds the TLS handshake inside a CONNECT.
const handshakeTimeout = 10 * time.Second

// errSNIMismatch refuses a client hello for another host than the CONNECT's.
var errSNIMismatch = errors.New("TLS server name differs from the CONNECT target")

// interceptor terminates TLS inside CONNECTs to hosts that have a route and
// serves the requests inside (HTTP/1.1 or HTTP/2, by ALPN) through the same
// route, policy, inject and audit path as reverse mode.
type interceptor struct {
	g      *Gateway
	leaves *ca.Leaves
	srv    *http.Server
	ln     *connQueue
	// targets maps each handed-off *tls.Conn to its CONNECT target.
	targets sync.Map
	closing sync.Once // shutdown
}

func newInterceptor(g *Gateway, leaves *ca.Leaves) *interceptor {
	ic := &interceptor{g: g, leaves: leaves, ln: newConnQueue()}
	ic.srv = &http.Server{
		Handler:           http.HandlerFunc(ic.serveInner),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		HTTP2:             ServerHTTP2(),
		ErrorLog:          NewErrorLog(g.log, "intercept"),
		BaseContext:       g.BaseContext,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if t, ok := ic.targets.Load(c); ok {
				return context.WithValue(ctx, targetKey{}, t)
			}
			return ctx
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateClosed || st == http.StateHijacked {
				ic.targets.Delete(c)
			}
		},
	}
	go func() { _ = ic.srv.Serve(ic.ln) }()
	return ic
}

type targetKey struct{}

// serve answers the CONNECT, completes the TLS handshake with a leaf for the
// target (refusing another server name) and hands the connection over.
func (ic *interceptor) serve(rw *responseRecorder, r *http.Request, x *exchange, t connectTarget) {
	conn, brw, err := http.NewResponseController(rw.ResponseWriter).Hijack()
	if err != nil {
		ic.g.fail(rw, x, apiError{CodeBadRequest, "the connection cannot be intercepted"})
		return
	}
	x.takenOver = true
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		conn.Close()
		return
	}
	x.status = http.StatusOK
	var c net.Conn = conn
	if n := brw.Reader.Buffered(); n > 0 {
		// The client hello may already be in the server's read buffer.
		c = &prefixConn{Conn: conn, r: io.MultiReader(io.LimitReader(brw.Reader, int64(n)), conn)}
	}
	var hello *tls.ClientHelloInfo
	tc := tls.Server(c, ic.leafConfig(t, &hello))
	ctx, cancel := context.WithTimeout(r.Context(), handshakeTimeout)
	err = tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		conn.Close()
		if errors.Is(err, errSNIMismatch) {
			x.refused = CodeHostNotAllowed
		} else {
			x.failure = CodeBadRequest
		}
		ev := ic.g.log.Info().Str("id", x.rec.id).Str("host", t.host).Str("error", err.Error())
		if hint := handshakeHint(err, hello); hint != "" {
			ev = ev.Str("hint", hint)
		}
		ev.Msg("intercepted TLS handshake failed")
		return
	}
	ic.targets.Store(tc, t)
	x.handedOff = true
	if !ic.ln.push(tc) {
		ic.targets.Delete(tc)
		tc.Close()
	}
}

// interceptProtos are the application protocols (ALPN) an intercepted
// connection speaks.
var interceptProtos = []string{"h2", "http/1.1"}

// leafConfig is the TLS config of one intercepted CONNECT to t: till's
// leaf for t's host, and a refusal for another server name. It keeps the
// client hello in *hello, for the log of a failed handshake; it is read
// before the versions and protocols are chosen, so it is there when
// those fail.
func (ic *interceptor) leafConfig(t connectTarget, hello **tls.ClientHelloInfo) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: interceptProtos,
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			*hello = h
			return nil, nil
		},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if hello.ServerName != "" && strings.TrimSuffix(strings.ToLower(hello.ServerName), ".") != t.host {
				return nil, errSNIMismatch
			}
			return ic.leaves.Get(t.host)
		},
	}
}

// handshakeHint says what most often makes an intercepted CONNECT's
// handshake fail, for the log: the error the app's TLS stack reports (an
// alert, a record torn down) seldom says so itself, and an app refused
// for its old TLS version or its protocols is no app without till's CA.
// hello is the app's client hello, nil when none came.
func handshakeHint(err error, hello *tls.ClientHelloInfo) string {
	var rh tls.RecordHeaderError
	switch {
	case errors.Is(err, errSNIMismatch), errors.Is(err, context.DeadlineExceeded):
		return ""
	case errors.As(err, &rh):
		return "the app sent no TLS inside the CONNECT: an http:// URL goes to the proxy as is (undici: proxyTunnel: false)"
	case hello != nil && !slices.ContainsFunc(hello.SupportedVersions, func(v uint16) bool { return v == tls.VersionTLS12 || v == tls.VersionTLS13 }):
		return "the app offers only TLS 1.1 or older; till needs TLS 1.2 or later: update the app's TLS library, or its minimum TLS version"
	case hello != nil && len(hello.SupportedProtos) > 0 && !slices.ContainsFunc(hello.SupportedProtos, func(p string) bool { return slices.Contains(interceptProtos, p) }):
		return "the app asked for no HTTP protocol (ALPN): till intercepts HTTP/1.1 and HTTP/2 only"
	}
	return "an app that does not trust till's CA ends the handshake: give it the CA (till env prints SSL_CERT_FILE, NODE_EXTRA_CA_CERTS and the rest)"
}

// serveInner handles one request inside an intercepted CONNECT.
func (ic *interceptor) serveInner(w http.ResponseWriter, r *http.Request) {
	g := ic.g
	l := g.live.Load()
	x, rw := g.begin(w, r, modeIntercept, l)
	defer g.finish(x, rw, r)
	t, ok := r.Context().Value(targetKey{}).(connectTarget)
	if !ok {
		g.refuse(rw, x, apiError{CodeBadRequest, "unknown intercepted connection"}, 0)
		return
	}
	if !g.audit.Healthy() {
		g.refuse(rw, x, errAuditDown, 0)
		return
	}
	rt, e := l.resolveInner(t, r.Host, r.URL)
	if e == nil && r.Method == http.MethodConnect {
		// A CONNECT inside a tunnel would go upstream as a tunnel of its
		// own, the path till checked gone from it.
		e = &apiError{CodeMethodNotAllowed, "a CONNECT inside an intercepted connection is not forwarded"}
	}
	for _, h := range r.Header.Values("Host") {
		// HTTP/2 carries the host in :authority (r.Host); a Host header
		// beside it must name the same host.
		if e == nil && hostKey("https", h) != t.key {
			e = &apiError{CodeHostNotAllowed, "the request's Host differs from the CONNECT target"}
		}
	}
	x.connectAuth = t.proxyAuth
	x.connectCert = t.cert
	if e != nil {
		g.refuseUnrouted(rw, r, x, l, *e)
		return
	}
	g.serveRoute(rw, r, x, l, rt)
}

// shutdown stops accepting intercepted connections and tells those open
// to take no more requests (keep-alives off; GOAWAY on HTTP/2), once
// however often it is called. It does not wait: the gateway drains the
// requests in flight, then calls close, which ends net/http's Shutdown.
// Waiting for that Shutdown would keep each idle HTTP/2 connection open
// a second after its GOAWAY, for the client to hang up
// (golang/go#18701), and delay till's stop by as much.
func (ic *interceptor) shutdown() {
	ic.closing.Do(func() {
		go func() { _ = ic.srv.Shutdown(context.Background()) }()
	})
}

// close closes the intercepted connections, idle once no request is in
// flight.
func (ic *interceptor) close() { _ = ic.srv.Close() }

// prefixConn reads from r (bytes read ahead, then the connection).
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// connQueue is a net.Listener fed with connections that were accepted and
// handshaken elsewhere.
type connQueue struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnQueue() *connQueue {
	return &connQueue{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (q *connQueue) push(c net.Conn) bool {
	select {
	case q.conns <- c:
		return true
	case <-q.closed:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.closed:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.closed) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
