package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// A request that has its connection is judged again there, before its
// key goes (withhold, askGuard): a reload may have refused it while the
// connection was dialled. Over HTTP/1 the request is written at once.
// Over HTTP/2, net/http's Transport may keep it waiting after that: for
// a free stream, when the upstream's (SETTINGS_MAX_CONCURRENT_STREAMS)
// are taken, or for the connection's writer, busy with another
// request's body. A reload in that wait found the check passed already,
// and the key went once the stream was written. So such a request is a
// waiter from the moment it has its HTTP/2 connection to the moment its
// headers are written (unwritten): each config swapped in judges it, and
// one that refuses it cancels its context, which the Transport checks
// before it writes a stream's headers.

// waiter is a request that waits to be written: judge says whether l
// lets its key go, stop ends it with l's refusal. stop runs on the
// reload's goroutine: it may cancel the request, and must touch nothing
// the Transport reads.
type waiter interface {
	judge(l *live) *apiError
	stop(e *apiError)
}

// waiting are the waiters of a gateway.
type waiting struct {
	mu   sync.Mutex
	open map[waiter]struct{}
}

// wait tracks w until done, judged at once by the config served now (a
// reload may have swapped it in since the last check), then by each one
// swapped in (recheck).
func (g *Gateway) wait(w waiter) {
	s := &g.waiting
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open == nil {
		s.open = make(map[waiter]struct{})
	}
	s.open[w] = struct{}{}
	s.judge(w, g.live.Load())
}

// judge stops w, and forgets it, if l refuses it; s.mu is held.
func (s *waiting) judge(w waiter, l *live) {
	if e := w.judge(l); e != nil {
		delete(s.open, w)
		w.stop(e)
	}
}

// recheck stops the waiters that l refuses.
func (s *waiting) recheck(l *live) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.open {
		s.judge(w, l)
	}
}

// unwritten tracks w, on g, while its request waits to be written: from
// when it has an HTTP/2 connection (watch) to when its headers are
// written, or it ends (written). A nil unwritten tracks nothing.
type unwritten struct {
	g  *Gateway
	w  waiter
	on atomic.Bool
}

// watch starts tracking the request, which got conn.
func (u *unwritten) watch(conn net.Conn) {
	if u != nil && overHTTP2(conn) {
		u.on.Store(true)
		u.g.wait(u.w)
	}
}

// written stops tracking it. It returns once no recheck judges it: the
// request may then change what judge reads (a pool's next key). Both the
// Transport's writer (headers written) and the attempt (RoundTrip
// returned) call it, in either order.
func (u *unwritten) written() {
	if u == nil || !u.on.Load() {
		return // over HTTP/1, or no longer tracked
	}
	s := &u.g.waiting
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.open, u.w)
	u.on.Store(false)
}

// overHTTP2 reports whether conn, a connection the Transport got for a
// request, speaks HTTP/2.
func overHTTP2(conn net.Conn) bool {
	tc, ok := conn.(*tls.Conn)
	return ok && tc.ConnectionState().NegotiatedProtocol == "h2"
}

// sendWait is an attempt to send x's request r upstream as a waiter:
// its key is judged as withhold judges it, and cancel ends it.
type sendWait struct {
	unwritten
	r      *http.Request
	x      *exchange
	cancel context.CancelCauseFunc
}

// newAttempt readies w for an attempt of x's request r on gateway g.
func (w *sendWait) newAttempt(g *Gateway, r *http.Request, x *exchange, cancel context.CancelCauseFunc) *unwritten {
	w.g, w.w, w.r, w.x, w.cancel = g, w, r, x, cancel
	return &w.unwritten
}

func (w *sendWait) judge(l *live) *apiError {
	e, _ := l.keyGoes(w.r, w.x, w.x.member, w.x.inj)
	return e
}

func (w *sendWait) stop(e *apiError) { w.cancel(keptBack{*e}) }

// keyWatch judges whether a key about to go for a request may still go,
// as a config says: the one served now (goes), or one swapped in while a
// token ask for it waits to be written (waiter).
type keyWatch struct {
	g     *Gateway
	judge func(*live) *apiError
}

// watchKey is the keyWatch of in, the key of m (of the route when m is
// nil), about to go for r (see keyGoes).
func (g *Gateway) watchKey(r *http.Request, x *exchange, m *member, in *injection) keyWatch {
	return keyWatch{g, func(l *live) *apiError {
		e, _ := l.keyGoes(r, x, m, in)
		return e
	}}
}

// goes judges the key as the config served now says.
func (k keyWatch) goes() *apiError { return k.judge(k.g.live.Load()) }

// waiter returns the tracking of a token ask of the key while it waits
// to be written, which stop ends.
func (k keyWatch) waiter(stop func(*apiError)) *unwritten {
	return &unwritten{g: k.g, w: &askWait{k.judge, stop}}
}

// askWait is a token ask as a waiter.
type askWait struct {
	judgeKey func(*live) *apiError
	stopAsk  func(*apiError)
}

func (a *askWait) judge(l *live) *apiError { return a.judgeKey(l) }
func (a *askWait) stop(e *apiError)        { a.stopAsk(e) }
