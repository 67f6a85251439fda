package proxy

import (
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeWaiter is a waiter whose judge reports each call on judged and,
// once block is set, waits there until it is closed; it never refuses.
type fakeWaiter struct {
	judged chan struct{}
	block  chan struct{}
}

func (f *fakeWaiter) judge(*live) (*apiError, time.Time) {
	if f.judged != nil {
		f.judged <- struct{}{}
	}
	if f.block != nil {
		<-f.block
	}
	return nil, time.Time{}
}

func (f *fakeWaiter) stop(*apiError) {}

// goroutinesIn counts the goroutines whose stack holds frame.
func goroutinesIn(frame string) int {
	buf := make([]byte, 1<<20)
	n := 0
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, frame) && strings.Contains(g, "sync.(*Mutex).Lock") {
			n++
		}
	}
	return n
}

// TestWrittenWaitsForARecheck: an HTTP/2 request's headers are written
// (the stream's goroutine calls written) while a reload's recheck holds
// the waiters, and the attempt's RoundTrip returns meanwhile (its own
// written). That second written returned at once, the waiter still
// tracked and judged by the recheck, while the request went on to
// change what judge reads (a pool's next key) or to its next attempt.
// written must return only once the waiter is no longer tracked.
func TestWrittenWaitsForARecheck(t *testing.T) {
	g := &Gateway{}
	blocker := &fakeWaiter{judged: make(chan struct{}, 1)}
	g.wait(blocker)
	<-blocker.judged
	blocker.block = make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(blocker.block) }) }
	defer unblock()

	u := &unwritten{g: g, w: &fakeWaiter{}}
	u.on.Store(true)
	g.wait(u.w)
	go g.recheckWaiters(nil)
	<-blocker.judged // the recheck holds the waiters
	go u.written()   // the stream's goroutine: headers written
	waitFor(t, func() bool { return goroutinesIn("(*unwritten).written") == 1 })
	returned := make(chan struct{})
	go func() { // let the recheck go once the attempt waits for it too
		for goroutinesIn("(*unwritten).written") < 2 {
			select {
			case <-returned:
				return
			case <-time.After(time.Millisecond):
			}
		}
		unblock()
	}()
	u.written() // the attempt's, RoundTrip returned
	close(returned)
	s := &g.waiting
	if !s.mu.TryLock() {
		t.Fatal("written returned while a recheck still judged its waiter")
	}
	defer s.mu.Unlock()
	if _, ok := s.open[u.w]; ok {
		t.Error("written returned with its waiter still tracked")
	}
}

// waitFor polls cond until it holds, for up to 10 seconds.
func waitFor(t *testing.T, cond func() bool) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Error("timed out waiting")
}

// TestAttemptsWaitApart: a pool's attempt ended (RoundTrip returned)
// before the Transport's writer of its HTTP/2 stream reported the
// headers written; the next attempt, on the same connection, waits to be
// written meanwhile. That late report ended the next attempt's tracking,
// which shared the exchange's waiter: a reload in its wait was not seen.
func TestAttemptsWaitApart(t *testing.T) {
	g := &Gateway{}
	x := &exchange{}
	r := httptest.NewRequest("GET", "/", nil)
	never := func() bool { return false }
	first, u1 := g.traceAttempt(r, x, func(error) {}, never)
	u1.on.Store(true) // its connection got (watch)
	g.waiting.open = map[waiter]*time.Timer{u1.w: nil}
	u1.written() // RoundTrip returned
	_, u2 := g.traceAttempt(r, x, func(error) {}, never)
	u2.on.Store(true)
	g.waiting.open[u2.w] = nil
	first.WroteHeaders() // the first attempt's writer, late
	if _, ok := g.waiting.open[u2.w]; !ok || !u2.on.Load() {
		t.Error("the next attempt is no longer tracked while it waits to be written")
	}
}
