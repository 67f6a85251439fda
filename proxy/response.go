package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"time"
)

// responseRecorder remembers the status and counts the body bytes written
// to the app, for the audit record.
type responseRecorder struct {
	http.ResponseWriter
	x      *exchange
	status int
	n      int64
}

func (w *responseRecorder) WriteHeader(code int) {
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	if code < 200 && code != http.StatusSwitchingProtocols && w.x.route != nil {
		// ReverseProxy passes 1xx responses (103 Early Hints) on without
		// ModifyResponse: their headers are checked here.
		scrubEchoes(w.Header(), w.x.route.echoForms)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseRecorder) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

// Flush sends buffered data at once (Server-Sent Events).
func (w *responseRecorder) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack hands the connection over for a protocol switch (WebSocket). The
// connection is closed when the request's context ends, which the gateway
// does at shutdown once the grace period is over: ReverseProxy closes only
// the upstream side then.
func (w *responseRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && w.x.ctx != nil {
		context.AfterFunc(w.x.ctx, func() { conn.Close() })
	}
	return conn, brw, err
}

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
}

func (b *countingBody) Read(p []byte) (int, error) {
	_ = b.rc.SetReadDeadline(time.Now().Add(bodyIdleTimeout))
	n, err := b.ReadCloser.Read(p)
	b.x.bytesIn.Add(int64(n))
	switch {
	case err == io.EOF:
		_ = b.rc.SetReadDeadline(time.Time{})
	case err != nil:
		b.x.bodyErr.Store(true)
	}
	return n, err
}
