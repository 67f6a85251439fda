package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// holdLimit is how much of a response (after its status) is held back
// before it goes to the app: net/http buffers about as much anyway.
const holdLimit = 2048

var heldPool = sync.Pool{New: func() any { return new([holdLimit]byte) }}

// responseRecorder remembers the status and counts the body bytes written
// to the app, for the audit record. It holds the status and up to
// holdLimit bytes of body back until the response is larger, flushed or
// complete, so that an upstream that fails before then gets the app a
// clean 502 instead of a cut connection (see Gateway.finish).
type responseRecorder struct {
	http.ResponseWriter
	x         *exchange
	status    int              // the final status given, 0 before
	n         int64            // body bytes written to the app
	committed bool             // the status has gone to the server
	held      int              // bytes of body held in buf
	buf       *[holdLimit]byte // from heldPool while a body is held
	idle      time.Duration    // a hijacked connection idle this long is closed
	switched  *switched        // set when a held protocol switch may hijack
	// closing ends the connection after the response (Connection:
	// close, set as it goes: ReverseProxy clears the response's headers
	// after it relays a 1xx).
	closing bool
	// http10 is set for an HTTP/1.0 request: it gets no 1xx response.
	http10 bool
	// stall ends a write to the app that makes no progress.
	stall writeWatch
	// hijacked is set once the connection is handed over (Hijack).
	hijacked bool
}

func (w *responseRecorder) WriteHeader(code int) {
	if code < 200 && code != http.StatusSwitchingProtocols {
		if w.http10 {
			// An HTTP/1.0 client would read it as the final response,
			// and the final one as the next request's (RFC 9110,
			// section 15.2: a server must not send it one).
			return
		}
		// 1xx responses (103 Early Hints) are not checked by
		// checkResponse: their headers are checked here. They go at
		// once, under the write watch: ReverseProxy (relays) writes
		// them on the goroutine that reads the upstream's connection.
		if w.x.inj != nil {
			scrubEchoes(w.Header(), w.x.echoForms())
			removeTillHeaders(w.Header())
		}
		w.stall.begin(w.ResponseWriter)
		w.ResponseWriter.WriteHeader(code)
		w.stall.end()
		return
	}
	if w.status == 0 {
		w.status = code
	}
}

func (w *responseRecorder) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.x.meter != nil {
		_, _ = w.x.meter.Write(p) // never fails, never holds p
	}
	if !w.committed {
		if w.held+len(p) <= holdLimit {
			if w.buf == nil {
				w.buf = heldPool.Get().(*[holdLimit]byte)
			}
			w.held += copy(w.buf[w.held:], p)
			return len(p), nil
		}
		if err := w.commit(); err != nil {
			return 0, err
		}
	}
	w.stall.begin(w.ResponseWriter)
	n, err := w.ResponseWriter.Write(p)
	w.stall.end()
	w.n += int64(n)
	return n, err
}

// commit sends the status and the held body on to the server.
func (w *responseRecorder) commit() error {
	if w.committed || w.status == 0 {
		return nil
	}
	w.committed = true
	if w.closing {
		w.Header().Set("Connection", "close")
	}
	w.ResponseWriter.WriteHeader(w.status)
	defer w.discard()
	if w.held == 0 {
		return nil
	}
	n, err := w.ResponseWriter.Write(w.buf[:w.held])
	w.n += int64(n)
	return err
}

// discard drops the held body and returns its storage to the pool.
func (w *responseRecorder) discard() {
	if w.buf != nil {
		heldPool.Put(w.buf)
	}
	w.buf, w.held = nil, 0
}

// reset forgets an uncommitted response, headers included (but not a
// Connection header till set for itself), so that another can be written.
func (w *responseRecorder) reset() {
	h := w.Header()
	conn := h["Connection"]
	clear(h)
	if conn != nil {
		h["Connection"] = conn
	}
	w.status = 0
	w.discard()
}

// informational passes a 1xx response (103 Early Hints) on to the app at
// once, with its own headers only. The write watch bounds it as it does
// the answer's writes (WriteHeader).
func (w *responseRecorder) informational(code int, h http.Header) error {
	dst := w.Header()
	kept := dst.Clone()
	clear(dst)
	maps.Copy(dst, h)
	w.WriteHeader(code)
	clear(dst)
	maps.Copy(dst, kept)
	return nil
}

// Flush sends the response so far at once (Server-Sent Events).
func (w *responseRecorder) Flush() {
	if w.commit() != nil {
		return
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		w.stall.begin(w.ResponseWriter)
		f.Flush()
		w.stall.end()
	}
}

// boundLastWrite gives the server's own write of a response after the
// handler returns (what its buffer still holds: a held answer whole)
// answerIdleTimeout to end, as the watch does each write before: else an
// app that reads nothing would hold the connection and its goroutine for
// good. net/http clears the deadline once it has written. Over HTTP/2
// the deadline is the stream's, which is reset when it passes: an app
// that never opens its flow-control window would otherwise hold each
// stream's goroutine and buffers, and the connection, whose idle timeout
// waits for its streams to end, for as long as it keeps it. A connection
// taken from the server would be cut by it.
func (w *responseRecorder) boundLastWrite() {
	if w.x.takenOver || w.hijacked {
		return
	}
	if c, ok := w.ResponseWriter.(interface{ SetWriteDeadline(time.Time) error }); ok {
		_ = c.SetWriteDeadline(time.Now().Add(answerIdleTimeout))
	}
}

// answerIdleTimeout bounds each write of the answer to the app: an app
// that has not taken the whole of one (8 KB at most) this long after it
// began (it never reads its connection, never opens its HTTP/2 stream's
// flow-control window, or reads a trickle once the sockets' buffers are
// full: a write ends only when all of it went) is cut as one that left
// (client_closed). Else the request would last as long as the
// app kept its connection, the upstream long done, and with it what the
// request holds: its reservation under a budget, which refuses other
// apps, a goroutine, the upstream's connection.
var answerIdleTimeout = 60 * time.Second

// ServerHTTP2 is the HTTP/2 config of till's servers: the gateway's
// listener and the server inside intercepted CONNECTs. A connection that
// nothing could be written to for answerIdleTimeout (an app that stopped
// reading its socket) is closed: its writer, blocked, would never write
// the resets that end its streams' stalled writes (writeWatch), and every
// request on it would be held, upstream request and budget reservation
// included, for as long as the app kept the connection. A stream that is
// merely quiet (a model thinking) has nothing waiting to be written.
func ServerHTTP2() *http.HTTP2Config {
	return &http.HTTP2Config{WriteByteTimeout: answerIdleTimeout}
}

// writeWatch ends a write to the app that makes no progress for
// answerIdleTimeout, setting the connection's (or HTTP/2 stream's) write
// deadline in the past, which fails the write at once. A deadline set
// ahead of each write would end an answer whose upstream merely pauses
// between writes too: HTTP/2 resets a stream once its deadline passes,
// written to or not. One write goes at a time: the handler's, or a 1xx's,
// which the handler waits for before it writes (earlyHints). What commit
// writes (up to holdLimit bytes) the server's buffers take without
// waiting: an answer held whole never starts a watch.
type writeWatch struct {
	since   atomic.Int64 // when the write under way began (nanotime); 0: none
	stalled atomic.Bool  // a write was ended
	mu      sync.Mutex
	timer   *time.Timer // started at the first write
	rc      *http.ResponseController
	timeout time.Duration
	ended   bool
}

// begin notes a write to w starting.
func (ww *writeWatch) begin(w http.ResponseWriter) {
	ww.since.Store(nanotime())
	if ww.timer == nil {
		ww.mu.Lock()
		defer ww.mu.Unlock()
		if !ww.ended {
			ww.rc, ww.timeout = http.NewResponseController(w), answerIdleTimeout
			ww.timer = time.AfterFunc(ww.timeout, ww.check)
		}
	}
}

// end notes the write over.
func (ww *writeWatch) end() { ww.since.Store(0) }

func (ww *writeWatch) check() {
	ww.mu.Lock()
	defer ww.mu.Unlock()
	if ww.ended {
		return
	}
	wait := ww.timeout
	if since := ww.since.Load(); since != 0 {
		idle := time.Duration(nanotime() - since)
		if idle >= ww.timeout {
			ww.stalled.Store(true)
			_ = ww.rc.SetWriteDeadline(time.Unix(1, 0))
			return
		}
		wait = ww.timeout - idle
	}
	ww.timer.Reset(wait)
}

// stop ends the watch before the handler returns: the server's own
// deadlines are left alone after that.
func (ww *writeWatch) stop() {
	ww.mu.Lock()
	defer ww.mu.Unlock()
	ww.ended = true
	if ww.timer != nil {
		ww.timer.Stop()
	}
}

// Hijack hands the connection over for a protocol switch (WebSocket). The
// connection is closed when the request's context ends, which the gateway
// does at shutdown once the grace period is over (ReverseProxy closes only
// the upstream side then), and once no byte has moved either way for
// w.idle, as a tunnel is.
func (w *responseRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if err := w.commit(); err != nil {
		return nil, nil, err
	}
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.hijacked = true
	if w.x.ctx != nil {
		context.AfterFunc(w.x.ctx, func() { conn.Close() })
	}
	c := countedConn{newIdleConn(conn, w.idle), w.x}
	if w.switched != nil && !w.switched.handOver(c) {
		c.Close()
		return nil, nil, errSwitchEnded
	}
	return c, brw, nil
}

// countedConn counts the bytes a switched protocol carries each way, for
// its record (bytes_in, bytes_out), as a tunnel's are counted.
type countedConn struct {
	net.Conn
	x *exchange
}

func (c countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.x.bytesIn.Add(int64(n))
	return n, err
}

func (c countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.x.switchedOut.Add(int64(n))
	return n, err
}

// errSwitchEnded: a reload refused the protocol switch before it was made.
var errSwitchEnded = errors.New("a reload refused this protocol switch")

// Unwrap lets http.ResponseController reach the server's writer.
func (w *responseRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// bodyIdleTimeout bounds the wait for each part of a request body, so an
// app that stops sending (or trickles) cannot hold a connection, a
// goroutine and an upstream request forever. The server's own deadlines
// (idle, header) take over again for the next request.
var bodyIdleTimeout = 60 * time.Second

// countingBody counts the request body bytes read from the app, remembers
// whether reading it failed, and keeps a read deadline ahead of each read.
type countingBody struct {
	io.ReadCloser
	x  *exchange
	rc *http.ResponseController
	progress
	// mu orders the deadline changes with Close: once the handler has
	// returned, the server's own deadlines on the connection are left
	// alone (a read in flight then still ends by the last one set).
	mu     sync.Mutex
	closed bool
}

var errBodyClosed = errors.New("till: request body read after the handler ended")

func (b *countingBody) Read(p []byte) (int, error) {
	if !b.setDeadline(time.Now().Add(bodyIdleTimeout)) {
		return 0, errBodyClosed
	}
	b.reading.Store(true)
	n, err := b.ReadCloser.Read(p)
	b.last.Store(nanotime())
	b.reading.Store(false)
	b.x.bytesIn.Add(int64(n))
	switch {
	case err == io.EOF:
		b.ended.Store(true)
		b.setDeadline(time.Time{})
	case err != nil && clientGone(err):
		b.ended.Store(true)
		b.x.appGone.Store(true)
	case err != nil:
		b.ended.Store(true)
		b.x.bodyErr.Store(true)
	}
	return n, err
}

// setDeadline sets the connection's read deadline unless the body is
// closed, and reports whether it was not.
func (b *countingBody) setDeadline(t time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	_ = b.rc.SetReadDeadline(t)
	return true
}

// Close ends the reads, and leaves the app's body to the server, which
// drains or closes it after the handler: a transport that closed it early
// could hang on a body the app has not sent yet (100-continue).
func (b *countingBody) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}
