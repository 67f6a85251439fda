package proxy

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"
)

// NewTransport returns the one transport shared by every route: keep-alive
// with a large idle pool per host (a gateway talks to few hosts, often),
// HTTP/2 where the upstream offers it, certificates verified against the
// system roots (SSL_CERT_FILE and SSL_CERT_DIR are honoured), TLS sessions
// resumed (so a burst of new connections to a provider costs resumptions,
// not full handshakes that each verify a certificate chain: without it, a
// cold start at 2,000 req/s spiralled into thousands of handshakes and
// seconds of latency), no proxy from the environment, no compression
// negotiated on the app's behalf, and an HTTP/2 connection that has gone
// quiet pinged (upstreamPing).
func NewTransport() *http.Transport {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           1024,
		MaxIdleConnsPerHost:    256,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ExpectContinueTimeout:  time.Second,
		DisableCompression:     true,
		MaxResponseHeaderBytes: 1 << 20,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12, ClientSessionCache: tls.NewLRUClientSessionCache(256)},
		HTTP2:                  &http.HTTP2Config{SendPingTimeout: upstreamPing, PingTimeout: upstreamPing / 2},
	}
}

// upstreamPing is how long an HTTP/2 connection to an upstream may go
// without a frame before it is pinged; one whose ping is not answered in
// half that is closed. Every request to a provider shares one connection:
// one gone silent (a NAT that dropped the flow, a hung host: nothing
// announces it) would otherwise hold each request on it until its
// route's timeout, and take new ones, for minutes of TCP keep-alive. A
// model that thinks long sends no frame but still answers the ping.
const upstreamPing = 30 * time.Second

// routeTransports holds net/http's Transport once per route timeout, with
// ResponseHeaderTimeout set to it: it bounds the wait for the response
// headers once the request body is sent, not the upload nor the stream
// after the headers (a long SSE response is not cut short). Routes with
// one timeout share one pool of connections.
type routeTransports struct {
	base      *http.Transport
	byTimeout sync.Map // time.Duration → *http.Transport
}

// forTimeout returns the transport for routes with this timeout, whose
// answers carry a status net/http can send on (sendableStatus).
func (t *routeTransports) forTimeout(timeout time.Duration) http.RoundTripper {
	if tr, ok := t.byTimeout.Load(timeout); ok {
		return statusChecked{tr.(*http.Transport)}
	}
	tr := t.base.Clone()
	tr.ResponseHeaderTimeout = timeout
	actual, _ := t.byTimeout.LoadOrStore(timeout, tr)
	return statusChecked{actual.(*http.Transport)}
}

// statusChecked is a transport whose answers carry a status net/http can
// send on to the app: any other is an error (sendableStatus). A pointer
// alone, it goes in an interface without an allocation.
type statusChecked struct{ tr *http.Transport }

func (t statusChecked) RoundTrip(r *http.Request) (*http.Response, error) {
	return sendableStatus(t.tr.RoundTrip(r))
}

// bufferPool recycles the buffers that copy response bodies, 8 KiB each
// (nginx's proxy_buffer_size on most systems): every request in flight
// holds one, and the pool is emptied at each garbage collection, so the
// size is paid in memory and in allocations under load (32 KiB cost 1.3
// MiB more peak RSS at 64 requests in flight, and no less CPU).
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 8<<10); return &b }}}
}

func (b *bufferPool) Get() *[]byte  { return b.p.Get().(*[]byte) }
func (b *bufferPool) Put(v *[]byte) { b.p.Put(v) }

// copyBuffers lends the pool's buffers to httputil.ReverseProxy (relayed
// answers, upgrades the upstream declines), which would otherwise take a
// 32 KiB buffer of its own for each: every answer reaches the app in
// writes of 8 KiB at most, which the bound on a write to an app that
// stops reading assumes (see writeWatch).
type copyBuffers struct{ *bufferPool }

func (b copyBuffers) Get() []byte  { return *b.bufferPool.Get() }
func (b copyBuffers) Put(p []byte) { b.bufferPool.Put(&p) }
