package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// errUploadStalled ends an upstream request whose upstream stopped reading
// the request body.
var errUploadStalled = errors.New("the upstream stopped reading the request body")

// errAnswerStalled ends an answer, which the app left, that the upstream
// stopped sending (see drainAnswer).
var errAnswerStalled = errors.New("the upstream stopped sending an answer the app left")

// stallWatch ends an upstream request whose body makes no progress for
// the route's timeout, with its cause.
//
// An upload: an upstream that stops reading the request body would
// otherwise hold the request, its connection and the app for as long as
// the app waits (the response header timeout only starts once the body is
// sent). It watches from the moment the request's head is written until
// the response's head arrives. Progress is a read of the app's body by
// the transport; while a read waits for the app, the app is slow, not the
// upstream, and the body's own idle deadline applies (bodyIdleTimeout).
//
// An answer the app left, read to its end on a budgeted route: from the
// moment the app leaves, progress is a read of the answer.
type stallWatch struct {
	body    *progress
	timeout time.Duration
	cause   error
	cancel  context.CancelCauseFunc
	stalled atomic.Bool

	mu      sync.Mutex
	timer   *time.Timer // nil before start
	stopped bool
}

// clockStart is the origin of nanotime.
var clockStart = time.Now()

// nanotime is the time since till started, in nanoseconds, by the
// monotonic clock (never 0): the watches that keep a time in an atomic
// are not moved by a step of the wall clock, which would cut a healthy
// upload, answer or tunnel.
func nanotime() int64 { return int64(time.Since(clockStart)) + 1 }

// progress is how far a body has been read (a request body by the
// transport, an answer by till), for stallWatch.
type progress struct {
	reading atomic.Bool  // a read waits for the app
	last    atomic.Int64 // when the last read returned (nanotime)
	ended   atomic.Bool  // the body has been read to its end (or failed)
}

// heldBody sends a body held in memory, marking its progress: reads never
// wait for the app, so an upload that stops is the upstream's doing.
type heldBody struct {
	*bytes.Reader
	p *progress
}

func (h heldBody) Read(b []byte) (int, error) {
	n, err := h.Reader.Read(b)
	h.p.last.Store(nanotime())
	if err == io.EOF {
		h.p.ended.Store(true)
	}
	return n, err
}

func (heldBody) Close() error { return nil }

// newStallWatch returns a watch over body, not started; cancel ends the
// upstream request with cause.
func newStallWatch(body *progress, timeout time.Duration, cause error, cancel context.CancelCauseFunc) *stallWatch {
	return &stallWatch{body: body, timeout: timeout, cause: cause, cancel: cancel}
}

// start starts the watch, once: the request's head is written, or the
// app left.
func (w *stallWatch) start() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timer != nil || w.stopped {
		return
	}
	w.body.last.Store(nanotime())
	w.timer = time.AfterFunc(w.timeout, w.check)
}

func (w *stallWatch) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped || w.body.ended.Load() {
		return // over, or uploaded: the response header timeout takes over
	}
	idle := time.Duration(nanotime() - w.body.last.Load())
	if w.body.reading.Load() || idle < w.timeout {
		w.timer.Reset(max(w.timeout-idle, w.timeout/10))
		return
	}
	w.stalled.Store(true)
	w.cancel(w.cause)
}

// stop ends the watch: the response's head has come, or the request ended.
func (w *stallWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	if w.timer != nil {
		w.timer.Stop()
	}
}

// clientGone reports whether a failed read of the app's body means the app
// went away (its connection closed or reset mid-body), rather than that
// it sent a malformed body or stopped sending (a read timeout).
func clientGone(err error) bool {
	var ne *net.OpError
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || errors.As(err, &ne) && !ne.Timeout()
}
