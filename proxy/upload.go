package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// errUploadStalled ends an upstream request whose upstream stopped reading
// the request body.
var errUploadStalled = errors.New("the upstream stopped reading the request body")

// uploadWatch ends an upload that makes no progress for the route's
// timeout: an upstream that stops reading the request body would
// otherwise hold the request, its connection and the app for as long as
// the app waits (the response header timeout only starts once the body is
// sent). Progress is a read of the app's body by the transport; while a
// read waits for the app, the app is slow, not the upstream, and the
// body's own idle deadline applies (bodyIdleTimeout).
type uploadWatch struct {
	body    *countingBody
	timeout time.Duration
	cancel  context.CancelCauseFunc
	timer   *time.Timer
	stalled atomic.Bool
}

// watchUpload starts watching body; cancel ends the upstream request.
func watchUpload(body *countingBody, timeout time.Duration, cancel context.CancelCauseFunc) *uploadWatch {
	w := &uploadWatch{body: body, timeout: timeout, cancel: cancel}
	body.last.Store(time.Now().UnixNano())
	w.timer = time.AfterFunc(timeout, w.check)
	return w
}

func (w *uploadWatch) check() {
	if w.body.ended.Load() {
		return // uploaded: the response header timeout takes over
	}
	idle := time.Since(time.Unix(0, w.body.last.Load()))
	if w.body.reading.Load() || idle < w.timeout {
		w.timer.Reset(max(w.timeout-idle, w.timeout/10))
		return
	}
	w.stalled.Store(true)
	w.cancel(errUploadStalled)
}

// stop ends the watch.
func (w *uploadWatch) stop() { w.timer.Stop() }

// clientGone reports whether a failed read of the app's body means the app
// went away (its connection closed or reset mid-body), rather than that
// it sent a malformed body or stopped sending (a read timeout).
func clientGone(err error) bool {
	var ne *net.OpError
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || errors.As(err, &ne) && !ne.Timeout()
}
