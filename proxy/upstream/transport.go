// Package upstream sends a gateway's requests to its upstreams over
// HTTP/1.1 keep-alive connections, one round trip at a time in the
// caller's goroutine.
//
// It exists for speed: net/http's Transport hands every request to two
// goroutines per connection (one writes, one reads) and costs a gateway
// about a third of its CPU per request. This one writes the request with
// Request.Write and parses the response with http.ReadResponse, the
// standard library's own serializer and parser, so the bytes on the wire
// are the ones Transport would send, and only connection handling is new.
//
// It speaks plain HTTP/1.1 only, and does not do protocol upgrades or wait
// for 100 Continue: callers send those requests, and those to https
// upstreams (where HTTP/2 may be offered), through net/http's Transport.
package upstream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Transport. Zero values take the defaults noted.
type Config struct {
	// Dial opens connections; nil means a net.Dialer with a 10 s timeout.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// MaxIdlePerHost is how many idle connections each upstream keeps;
	// 0 means 256.
	MaxIdlePerHost int
	// IdleTimeout closes a connection idle for that long; 0 means 90 s.
	IdleTimeout time.Duration
	// MaxResponseHeaderBytes bounds a response's status line and headers;
	// 0 means 1 MiB.
	MaxResponseHeaderBytes int64
}

// Transport is an http.RoundTripper for plain HTTP/1.1 upstreams with a
// pool of idle connections per address. It is safe for concurrent use.
type Transport struct {
	cfg Config

	mu   sync.Mutex
	idle map[string][]*conn // by address, most recently used last
}

// New returns a Transport configured by cfg.
func New(cfg Config) *Transport {
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	if cfg.MaxIdlePerHost == 0 {
		cfg.MaxIdlePerHost = 256
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 90 * time.Second
	}
	if cfg.MaxResponseHeaderBytes == 0 {
		cfg.MaxResponseHeaderBytes = 1 << 20
	}
	return &Transport{cfg: cfg, idle: map[string][]*conn{}}
}

// RoundTrip sends req and returns its response, with no bound on the wait
// for the response headers other than req's context. Informational (1xx)
// responses go to the request's httptrace, if it has one.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var hooks Hooks
	if trace := httptrace.ContextClientTrace(req.Context()); trace != nil && trace.Got1xxResponse != nil {
		hooks = traceHooks{trace}
	}
	return t.Send(req, 0, hooks)
}

// Hooks are told of the events of one exchange.
type Hooks interface {
	// Informational is given each informational (1xx) response that comes
	// before the final one, in the caller's goroutine; an error from it
	// ends the exchange.
	Informational(code int, h http.Header) error
	// Resend is called before a request whose head may have reached the
	// upstream is sent again (see Send): each send is a use of what the
	// head carries. An error from it keeps the request from being sent
	// again; Send then returns the first attempt's error.
	Resend() error
}

// traceHooks passes informational responses to an httptrace.
type traceHooks struct{ trace *httptrace.ClientTrace }

func (h traceHooks) Informational(code int, hdr http.Header) error {
	return h.trace.Got1xxResponse(code, textproto.MIMEHeader(hdr))
}

func (traceHooks) Resend() error { return nil }

// Send sends req and returns its response. headerTimeout, when positive,
// bounds the wait for the response headers once the request is written
// (the upload and the body after the headers are not bounded by it); when
// it passes, the error is a net.Error whose Timeout is true. hooks, when
// not nil, are told of informational responses and of a request sent
// again.
//
// A request without a body that fails on a reused connection before any
// byte of its response arrived, other than by a timeout, is sent once more
// on a new connection when that is safe: nothing of it was written, or its
// method is idempotent or it has an Idempotency-Key (then hooks.Resend is
// called first). (A reused connection
// the upstream had closed fails at once; a timeout means the upstream may
// be working on the request.) Before reusing a connection, Send checks that
// the upstream has not closed it nor sent anything unasked.
func (t *Transport) Send(req *http.Request, headerTimeout time.Duration, hooks Hooks) (*http.Response, error) {
	if req.URL == nil || req.URL.Host == "" {
		return nil, errors.New("upstream: request has no host")
	}
	if req.URL.Scheme != "http" {
		return nil, fmt.Errorf("upstream: unsupported scheme %q", req.URL.Scheme)
	}
	inline := req.Body != nil && req.Body != http.NoBody && req.ContentLength > 0 && req.ContentLength <= maxInlineBody
	if inline {
		var err error
		if req, err = readInline(req); err != nil {
			return nil, err
		}
	}
	addr := hostPort(req.URL.Host)
	for attempt := 0; ; attempt++ {
		c, err := t.get(req.Context(), addr, attempt > 0)
		if err != nil {
			return nil, err
		}
		resp, retry, sent, err := c.roundTrip(req, headerTimeout, inline, hooks)
		if err == nil {
			return resp, nil
		}
		if !retry || attempt > 0 {
			return nil, err
		}
		if sent && hooks != nil && hooks.Resend() != nil {
			return nil, err
		}
	}
}

// maxInlineBody is the largest request body read whole before the request
// is sent. net/http then writes it with the head in one system call
// (otherwise the head goes first, and a goroutine streams the body). It is
// far below a socket's send buffer, so writing it cannot block on an
// upstream that answers before reading.
const maxInlineBody = 8 << 10

// readInline reads req's body, of req.ContentLength bytes, and returns a
// copy of req that carries it in memory. An error is the body's own (an
// *http.MaxBytesError, say), or says the body is not as long as declared.
func readInline(req *http.Request) (*http.Request, error) {
	defer req.Body.Close()
	buf := make([]byte, req.ContentLength)
	if _, err := io.ReadFull(req.Body, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	var extra [1]byte
	if n, err := req.Body.Read(extra[:]); n > 0 || err != io.EOF {
		if err == nil || err == io.EOF {
			err = fmt.Errorf("upstream: request body longer than its Content-Length %d", req.ContentLength)
		}
		return nil, err
	}
	out := req.WithContext(req.Context()) // a shallow copy to change the body of
	out.Body = io.NopCloser(bytes.NewReader(buf))
	out.GetBody = nil
	return out, nil
}

// replayable reports whether a request without a body may be sent twice:
// its method is idempotent, or it carries an idempotency key.
func replayable(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := req.Header["Idempotency-Key"]
	_, xkey := req.Header["X-Idempotency-Key"]
	return key || xkey
}

// CloseIdleConnections closes every idle connection.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = map[string][]*conn{}
	t.mu.Unlock()
	for _, list := range idle {
		for _, c := range list {
			c.timer.Stop()
			c.nc.Close()
		}
	}
}

// get returns an idle connection to addr that is still healthy, or a new
// one; only a new one when fresh.
func (t *Transport) get(ctx context.Context, addr string, fresh bool) (*conn, error) {
	for !fresh {
		t.mu.Lock()
		list := t.idle[addr]
		if len(list) == 0 {
			t.mu.Unlock()
			break
		}
		c := list[len(list)-1]
		list[len(list)-1] = nil
		t.idle[addr] = list[:len(list)-1]
		t.mu.Unlock()
		c.timer.Stop()
		if idleHealthy(c.nc) {
			c.reused = true
			return c, nil
		}
		c.nc.Close()
	}
	nc, err := t.cfg.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &conn{t: t, addr: addr, nc: nc}
	c.br = bufio.NewReaderSize(&connReader{c}, 4<<10)
	c.bw = bufio.NewWriterSize(&connWriter{c}, 4<<10)
	return c, nil
}

// put keeps c for the next request to its upstream, or closes it when the
// pool is full.
func (t *Transport) put(c *conn) {
	t.mu.Lock()
	list := t.idle[c.addr]
	if len(list) >= t.cfg.MaxIdlePerHost {
		t.mu.Unlock()
		c.nc.Close()
		return
	}
	t.idle[c.addr] = append(list, c)
	if c.timer == nil {
		c.timer = time.AfterFunc(t.cfg.IdleTimeout, func() { t.expire(c) })
	} else {
		c.timer.Reset(t.cfg.IdleTimeout)
	}
	t.mu.Unlock()
}

// expire closes c if it is still idle.
func (t *Transport) expire(c *conn) {
	t.mu.Lock()
	list := t.idle[c.addr]
	i := slices.Index(list, c)
	if i >= 0 {
		t.idle[c.addr] = slices.Delete(list, i, i+1)
	}
	t.mu.Unlock()
	if i >= 0 {
		c.nc.Close()
	}
}

// conn is one connection to an upstream.
type conn struct {
	t      *Transport
	addr   string // host:port
	nc     net.Conn
	br     *bufio.Reader // reads through connReader
	bw     *bufio.Writer // writes through connWriter
	timer  *time.Timer   // closes the connection when idle too long
	reused bool          // it served a request before this one

	budget   int64        // bytes the response head may still take
	nread    int64        // bytes read, ever
	nwritten atomic.Int64 // bytes written, ever (the body is written by another goroutine)

	mu       sync.Mutex // guards the read deadline and the fields below
	aborted  bool       // the request's context ended: deadlines stay passed
	headRead bool       // the current response head has arrived
	writeErr error      // the upload failed before the response head came
}

// abort makes the connection's blocked and future I/O fail at once.
func (c *conn) abort() {
	c.mu.Lock()
	c.aborted = true
	c.nc.SetDeadline(aLongTimeAgo)
	c.mu.Unlock()
}

// awaitHead starts the wait for the response head, once the request is
// written, unless the head came first.
func (c *conn) awaitHead(timeout time.Duration) {
	c.mu.Lock()
	if timeout > 0 && !c.aborted && !c.headRead {
		c.nc.SetReadDeadline(time.Now().Add(timeout))
	}
	c.mu.Unlock()
}

// writeFailed records a failed upload. Before the response head it ends
// the exchange with err; after it, the response stands (the upstream
// answered early) and only the connection is lost.
func (c *conn) writeFailed(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.headRead {
		c.writeErr = err
		c.nc.SetDeadline(aLongTimeAgo)
	}
}

// endHead ends the wait for the response head, which was read with err.
// It returns the exchange's error: the upload's if that failed first (the
// cause, rather than its echo on the read side), else err, else
// context.Canceled if the request was aborted. Without one, the body's
// reads have no deadline but the context.
func (c *conn) endHead(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.headRead = true
	switch {
	case c.writeErr != nil:
		return c.writeErr
	case err != nil:
		return err
	case c.aborted:
		return context.Canceled
	}
	c.nc.SetReadDeadline(time.Time{})
	return nil
}

// connReader counts what it reads and stops at the budget of the head.
type connReader struct{ c *conn }

func (r *connReader) Read(p []byte) (int, error) {
	if r.c.budget <= 0 {
		return 0, errHeadTooLarge
	}
	if int64(len(p)) > r.c.budget {
		p = p[:r.c.budget]
	}
	n, err := r.c.nc.Read(p)
	r.c.budget -= int64(n)
	r.c.nread += int64(n)
	return n, err
}

// connWriter counts what it writes.
type connWriter struct{ c *conn }

func (w *connWriter) Write(p []byte) (int, error) {
	n, err := w.c.nc.Write(p)
	w.c.nwritten.Add(int64(n))
	return n, err
}

var errHeadTooLarge = errors.New("upstream: response headers too large")

// headerTimeout is the error when the response headers are late.
type headerTimeout time.Duration

func (e headerTimeout) Error() string {
	return fmt.Sprintf("upstream: no response headers within %v", time.Duration(e))
}
func (headerTimeout) Timeout() bool   { return true }
func (headerTimeout) Temporary() bool { return true }

// aLongTimeAgo is a deadline that has passed: it aborts blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// max1xx bounds the informational responses before the final one.
const max1xx = 5

// roundTrip writes req and reads the response head; the response body
// gives the connection back to the pool when it is read to its end. retry
// says the request may be sent again on another connection; sent, that
// some of it was written (and may have reached the upstream).
func (c *conn) roundTrip(req *http.Request, timeout time.Duration, inline bool, hooks Hooks) (resp *http.Response, retry, sent bool, err error) {
	ctx := req.Context()
	c.aborted, c.headRead, c.writeErr = false, false, nil
	stop := context.AfterFunc(ctx, c.abort)
	hasBody := req.Body != nil && req.Body != http.NoBody
	wrote, read := c.nwritten.Load(), c.nread
	fail := func(err error) (*http.Response, bool, bool, error) {
		stop()
		c.nc.Close()
		sent := c.nwritten.Load() != wrote
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, false, sent, ctxErr
		}
		// A body may still be read by its writer: it is never sent twice.
		var ne net.Error
		timedOut := errors.As(err, &ne) && ne.Timeout()
		retry := !hasBody && c.reused && !timedOut && c.nread == read && (!sent || replayable(req))
		return nil, retry, sent, err
	}

	// Without a body, or with a small one in memory (inline), the request
	// is written here. With a body read from the app, it is written by
	// another goroutine while this one waits for the response, so an
	// upstream that answers before reading the whole body (413, 401) is
	// heard instead of deadlocking on a full socket. Either way the
	// timeout counts from the end of the upload.
	var written chan error
	if !hasBody || inline {
		if err := c.write(req, inline); err != nil {
			return fail(err)
		}
		c.awaitHead(timeout)
	} else {
		written = make(chan error, 1)
		go func() {
			err := c.write(req, false)
			if err == nil {
				c.awaitHead(timeout)
			} else {
				c.writeFailed(err)
			}
			written <- err
		}()
	}

	resp, err = c.readHead(req, hooks)
	if err = c.endHead(err); err != nil {
		if timeout > 0 && errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil {
			err = headerTimeout(timeout)
		}
		return fail(err)
	}
	b := &body{rc: resp.Body, c: c, req: req, resp: resp, stop: stop, written: written}
	if resp.Body == http.NoBody {
		b.finish(true)
	} else {
		resp.Body = b
	}
	return resp, false, true, nil
}

// write sends req's head and body. When reading the body fails, the error
// is the body's own (an *http.MaxBytesError, say), not the write's. An
// inline body, in memory, cannot fail, and is passed as it is, so that
// net/http writes it with the head.
func (c *conn) write(req *http.Request, inline bool) error {
	var body *bodyReader
	if req.Body != nil && req.Body != http.NoBody && !inline {
		body = &bodyReader{ReadCloser: req.Body}
		req = req.WithContext(req.Context()) // a shallow copy to change the body of
		req.Body = body
	}
	err := req.Write(c.bw)
	if err == nil {
		err = c.bw.Flush()
	}
	if err != nil && body != nil && body.err != nil {
		return body.err
	}
	return err
}

// bodyReader remembers why reading a request body failed.
type bodyReader struct {
	io.ReadCloser
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// readHead reads the response head, passing informational (1xx) responses
// to hooks.
func (c *conn) readHead(req *http.Request, hooks Hooks) (*http.Response, error) {
	for n := 0; ; n++ {
		c.budget = c.t.cfg.MaxResponseHeaderBytes
		resp, err := http.ReadResponse(c.br, req)
		if err != nil {
			return nil, err
		}
		c.budget = math.MaxInt64
		code := resp.StatusCode
		if code == http.StatusSwitchingProtocols {
			return nil, errors.New("upstream: unexpected 101 Switching Protocols")
		}
		if code >= 200 {
			return resp, nil
		}
		if n == max1xx {
			return nil, errors.New("upstream: too many 1xx informational responses")
		}
		if hooks != nil {
			if err := hooks.Informational(code, resp.Header); err != nil {
				return nil, err
			}
		}
	}
}

// body is a response body that gives its connection back to the pool once
// read to its end, and closes it when abandoned earlier. Close may be
// called from another goroutine than Read.
type body struct {
	rc      io.ReadCloser // from http.ReadResponse
	c       *conn
	req     *http.Request
	resp    *http.Response
	stop    func() bool // unregisters the context abort
	written chan error  // the request writer's result, nil when none

	mu   sync.Mutex
	done bool
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil {
		b.finish(err == io.EOF)
	}
	return n, err
}

// Close abandons the rest of the body: the connection is closed rather
// than drained.
func (b *body) Close() error {
	b.finish(false)
	return nil
}

// finish releases the connection once: to the pool when the exchange ended
// cleanly and nothing else may arrive on it, closed otherwise.
func (b *body) finish(complete bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	if complete && b.reusable() {
		b.c.reused = false
		b.c.t.put(b.c)
		return
	}
	b.stop()
	b.c.nc.Close()
}

// reusable reports whether the next request may use the connection.
func (b *body) reusable() bool {
	if !b.stop() { // the context ended: the deadline was poisoned
		return false
	}
	if b.resp.Close || b.req.Close || b.c.br.Buffered() > 0 {
		return false
	}
	if b.written != nil {
		select {
		case err := <-b.written:
			return err == nil
		default: // the upstream answered before the body was sent
			return false
		}
	}
	return true
}

// hostPort adds port 80 to host when it has none.
func hostPort(host string) string {
	if _, port, err := net.SplitHostPort(host); err == nil && port != "" {
		return host
	}
	if h := host; len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
		host = h[1 : len(h)-1]
	}
	return net.JoinHostPort(host, "80")
}
