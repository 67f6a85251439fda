package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// A request that has its connection is judged again there, before its
// key goes (withhold, askGuard): a reload may have refused it, or its
// key expired, while the connection was dialled. Over HTTP/1 the request
// is written at once. Over HTTP/2, net/http's Transport may keep it
// waiting after that: for a free stream, when the upstream's
// (SETTINGS_MAX_CONCURRENT_STREAMS) are taken, or for the connection's
// writer, busy with another request's body. A reload in that wait, or
// the key's expiry, found the check passed already, and the key went
// once the stream was written. So such a request is a waiter from the
// moment it has its HTTP/2 connection to the moment its headers are
// written (unwritten): each config swapped in judges it, as does the
// config served when its key expires, and one that refuses it cancels
// its context, which the Transport checks before it writes a stream's
// headers.

// waiter is a request that waits to be written: judge says whether l
// lets its key go, and until when (its key's expiry as l says; zero for
// no end), stop ends it with l's refusal. stop runs on the reload's
// goroutine, or the expiry's: it may cancel the request, and must touch
// nothing the Transport reads.
type waiter interface {
	judge(l *live) (*apiError, time.Time)
	stop(e *apiError)
}

// waiting are the waiters of a gateway, each with the timer that judges
// it again when its key expires (nil while it has none).
type waiting struct {
	mu   sync.Mutex
	open map[waiter]*time.Timer
}

// wait tracks w until done, judged at once by the config served now (a
// reload may have swapped it in since the last check), then by each one
// swapped in (recheckWaiters), and when its key expires.
func (g *Gateway) wait(w waiter) {
	s := &g.waiting
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open == nil {
		s.open = make(map[waiter]*time.Timer)
	}
	if _, ok := s.open[w]; !ok {
		s.open[w] = nil
	}
	g.judge(w, g.live.Load())
}

// judge stops w, and forgets it, if l refuses it; else has it judged
// again, by the config served then, when its key expires as l says: a
// key that expires while its request waits does not go (under
// on_expired: block), as it would not at decide. A reload may move that
// instant, and a clock set back wakes it early. g.waiting.mu is held.
func (g *Gateway) judge(w waiter, l *live) {
	s := &g.waiting
	e, until := w.judge(l)
	t := s.open[w]
	d := time.Until(until)
	switch {
	case e != nil:
		delete(s.open, w)
		stopTimer(t)
		w.stop(e)
	case until.IsZero() || d <= 0:
		// No end, or past it and let by (on_expired: warn): only a
		// reload changes that.
		stopTimer(t)
	case t == nil:
		s.open[w] = time.AfterFunc(d, func() { g.expire(w) })
	default:
		t.Reset(d)
	}
}

// expire judges w, while it waits, by the config served now: its key
// expired as the config that judged it last said.
func (g *Gateway) expire(w waiter) {
	s := &g.waiting
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.open[w]; ok {
		g.judge(w, g.live.Load())
	}
}

// recheckWaiters stops the waiters that l refuses.
func (g *Gateway) recheckWaiters(l *live) {
	s := &g.waiting
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.open {
		g.judge(w, l)
	}
}

// stopTimer stops t, if any.
func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// unwritten tracks w, on g, while its request waits to be written: from
// when it has an HTTP/2 connection (watch) to when its headers are
// written, or it ends (written). A nil unwritten tracks nothing. With a
// limit, a wait that lasts that long ends the request (end, with
// errStreamWait): the route's timeout, which the Transport starts only
// once the request is written, would leave it waiting for as long as the
// upstream holds its streams.
type unwritten struct {
	g     *Gateway
	w     waiter
	on    atomic.Bool
	limit time.Duration
	end   context.CancelCauseFunc
	timer atomic.Pointer[time.Timer] // runs while a limited wait lasts
}

// watch starts tracking the request, which got conn.
func (u *unwritten) watch(conn net.Conn) {
	if u != nil && overHTTP2(conn) {
		u.on.Store(true)
		u.g.wait(u.w)
		if u.limit > 0 {
			stopTimer(u.timer.Swap(time.AfterFunc(u.limit, func() { u.end(errStreamWait) })))
		}
	}
}

// written stops tracking it. It returns once no recheck judges it: the
// request may then change what judge reads (a pool's next key). Both the
// Transport's writer (headers written) and the attempt (RoundTrip
// returned) call it, in either order.
func (u *unwritten) written() {
	if u == nil {
		return
	}
	stopTimer(u.timer.Swap(nil))
	if !u.on.Load() {
		return // over HTTP/1, or no longer tracked
	}
	s := &u.g.waiting
	s.mu.Lock()
	defer s.mu.Unlock()
	stopTimer(s.open[u.w])
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
// its key is judged as withhold judges it, and cancel ends it. expired
// is set when a judge found the key expired and let it go (on_expired:
// warn): the record must say so.
type sendWait struct {
	unwritten
	r       *http.Request
	x       *exchange
	cancel  context.CancelCauseFunc
	expired atomic.Bool
}

// newAttempt readies w for an attempt of x's request r on gateway g.
func (w *sendWait) newAttempt(g *Gateway, r *http.Request, x *exchange, cancel context.CancelCauseFunc) *sendWait {
	w.g, w.w, w.r, w.x, w.cancel = g, w, r, x, cancel
	return w
}

// errStreamWait ends an attempt that waited its route's timeout to be
// written on its HTTP/2 connection: a timeout, as upstreamFailed reads
// one (504 upstream_timeout).
var errStreamWait net.Error = streamWaitTimeout{}

type streamWaitTimeout struct{}

func (streamWaitTimeout) Error() string {
	return "the request waited the route's timeout to be written on the upstream's HTTP/2 connection (its streams all taken)"
}
func (streamWaitTimeout) Timeout() bool   { return true }
func (streamWaitTimeout) Temporary() bool { return false }

func (w *sendWait) judge(l *live) (*apiError, time.Time) {
	e, expired, until := l.keyGoes(w.r, w.x, w.x.member, w.x.inj)
	if expired {
		w.expired.Store(true)
	}
	return e, until
}

func (w *sendWait) stop(e *apiError) { w.cancel(keptBack{*e}) }

// keyWatch judges whether a key about to go for a request may still go,
// as a config says: the one served now (goes), or one swapped in while a
// token ask for it waits to be written (waiter).
type keyWatch struct {
	g     *Gateway
	judge func(*live) (*apiError, time.Time)
}

// watchKey is the keyWatch of in, the key of m (of the route when m is
// nil), about to go for r (see keyGoes). Whether the key went expired
// (on_expired: warn) is not kept here, as sendWait keeps it: a token's
// injection keeps its long-lived key's expiry (minter.compile), and the
// request is judged again after the ask (readmit, then withhold once its
// upstream connection is got), which notes it in the record.
func (g *Gateway) watchKey(r *http.Request, x *exchange, m *member, in *injection) keyWatch {
	return keyWatch{g, func(l *live) (*apiError, time.Time) {
		e, _, until := l.keyGoes(r, x, m, in)
		return e, until
	}}
}

// goes judges the key as the config served now says.
func (k keyWatch) goes() *apiError {
	e, _ := k.judge(k.g.live.Load())
	return e
}

// waiter returns the tracking of a token ask of the key while it waits
// to be written, which stop ends.
func (k keyWatch) waiter(stop func(*apiError)) *unwritten {
	return &unwritten{g: k.g, w: &askWait{k.judge, stop}}
}

// askWait is a token ask as a waiter.
type askWait struct {
	judgeKey func(*live) (*apiError, time.Time)
	stopAsk  func(*apiError)
}

func (a *askWait) judge(l *live) (*apiError, time.Time) { return a.judgeKey(l) }
func (a *askWait) stop(e *apiError)                     { a.stopAsk(e) }
