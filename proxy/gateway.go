// Package proxy is till's request path. Each request takes one pass:
// resolve (per mode: the listener's path prefix, an absolute URL or a
// CONNECT's host, to one target), decide (one policy for every mode, and
// for till test), send (attach the key, forward, stream the answer back
// with echoes of the key removed) and record (one audit record, built in
// one place when the request ends).
package proxy

import (
	"github.com/tillgw/till/budget"

	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/tillgw/till/proxy/ca"
)

// Modes of a request, as audited.
const (
	modeReverse   = "reverse"
	modeForward   = "forward"
	modeIntercept = "intercept"
	modeTunnel    = "tunnel"
)

// Audit reasons of a request cut before its response was complete, with
// status 499 (nginx's) when nothing of the response had gone out yet:
// codeClientClosed when the app went away, codeShutdown when till's
// shutdown ended the request past the grace period.
const (
	codeClientClosed = "client_closed"
	codeShutdown     = "shutdown"
)

const statusClientClosed = 499

// errShutdown is the cause with which the gateway's base context ends, so
// that a request can tell a cut by till's shutdown from an app that went
// away (which ends the request's own context, with another cause).
var errShutdown = errors.New("till is shutting down")

// Gateway serves the gateway listener. It reads the current snapshot
// through an atomic pointer, so a reload never disturbs a request in flight.
type Gateway struct {
	live    atomic.Pointer[live]
	swapMu  sync.Mutex   // one Swap at a time
	active  atomic.Int64 // requests whose record is not written yet
	cut     atomic.Int64 // requests ended by shutdown
	base    context.Context
	abort   context.CancelCauseFunc
	audit   *Audit
	log     zerolog.Logger
	metrics *Metrics // nil: none
	ids     *requestIDs
	// own are till's listeners, which tunnels may never reach.
	own []netip.AddrPort
	// tunnelIdle ends a tunnel or switched protocol idle that long
	// (tunnelIdleTimeout).
	tunnelIdle time.Duration
	// mintFails keeps the warnings of requests whose token could not be
	// obtained to one line per route per interval.
	mintFails *mintFailLog

	limits   RateLimiter
	failOpen bool // limits.on_redis_error: allow
	// lastLimitErr and lastBudgetErr rate-limit the log lines for
	// rate-store and budget-store errors.
	lastLimitErr  atomic.Int64
	lastBudgetErr atomic.Int64
	// budgets counts what requests spend; it outlives reloads.
	budgets budget.Store

	// Ways upstream: routed requests go through transports (one per
	// route timeout), protocol switches on routes through upgrader, and
	// absolute-form requests to hosts without a route through relayer.
	// CONNECTs are intercepted, or tunnelled (relay.go).
	transports *routeTransports
	upgrader   *httputil.ReverseProxy
	relayer    *httputil.ReverseProxy
	buffers    *bufferPool  // copy response bodies
	intercept  *interceptor // nil without a CA
	held       heldConns    // tunnels and upgrades, rechecked at each Swap
	waiting    waiting      // HTTP/2 requests not written yet, likewise
}

// live is the snapshot being served, with what forward mode needs for it:
// the dial guard built from its rules and the relay transport that dials
// through it. A reload builds all three anew.
type live struct {
	*Snapshot
	guard *dialGuard
	relay *http.Transport
}

// Options configure a Gateway.
type Options struct {
	// Audit receives one record per request. Required.
	Audit *Audit
	// Log is the operational log (never the audit sink).
	Log zerolog.Logger
	// Transport reaches the upstreams; nil means NewTransport(). Routes
	// use clones of it, one per route timeout.
	Transport *http.Transport
	// Leaves mints the certificates for TLS interception; nil turns
	// interception off.
	Leaves *ca.Leaves
	// Listeners are till's own addresses, which tunnels may never reach.
	Listeners []netip.AddrPort
	// Metrics, when set, counts requests, key uses and latencies.
	Metrics *Metrics
	// Limits counts rates; nil means in memory (NewMemoryLimits).
	Limits RateLimiter
	// LimitsFailOpen lets requests through when Limits or Budgets err
	// (limits.on_redis_error: allow); otherwise they get 429.
	LimitsFailOpen bool
	// Budgets counts budgets; nil means in memory (budget.NewMemory).
	Budgets budget.Store
}

// New returns a Gateway serving snap.
func New(snap *Snapshot, opts Options) *Gateway {
	g := &Gateway{audit: opts.Audit, log: opts.Log, mintFails: newMintFailLog(opts.Log), ids: newRequestIDs(), own: opts.Listeners, limits: opts.Limits, failOpen: opts.LimitsFailOpen, metrics: opts.Metrics, tunnelIdle: tunnelIdleTimeout}
	if g.limits == nil {
		g.limits = NewMemoryLimits()
	}
	g.budgets = opts.Budgets
	if g.budgets == nil {
		g.budgets = budget.NewMemory()
	}
	g.base, g.abort = context.WithCancelCause(context.Background())
	g.Swap(snap)
	base := opts.Transport
	if base == nil {
		base = NewTransport()
	}
	g.transports = &routeTransports{base: base}
	g.buffers = newBufferPool()
	g.upgrader = g.newUpgrader()
	g.relayer = g.newRelayer()
	if opts.Leaves != nil {
		g.intercept = newInterceptor(g, opts.Leaves)
	}
	if opts.Metrics != nil {
		opts.Metrics.gateway.Store(g)
	}
	return g
}

// Swap makes s the snapshot that new requests use. s first adopts what
// the snapshot it replaces learned (see adopt); a snapshot serves one
// gateway. The metrics then forget the routes, clients and keys s has
// no more.
func (g *Gateway) Swap(s *Snapshot) {
	g.swapMu.Lock()
	defer g.swapMu.Unlock()
	if old := g.live.Load(); old != nil {
		s.adopt(old.Snapshot)
	}
	guard := newDialGuard(s.forward.AllowCIDRs, g.own)
	l := &live{Snapshot: s, guard: guard, relay: newRelayTransport(guard)}
	if old := g.live.Swap(l); old != nil {
		old.relay.CloseIdleConnections()
	}
	g.held.recheck(l)
	g.recheckWaiters(l)
	g.metrics.forget(s)
}

// BaseContext is the context every request on the gateway derives from
// (for http.Server.BaseContext): Shutdown cancels it to end upgraded
// connections and tunnels that outlive the grace period.
func (g *Gateway) BaseContext(net.Listener) context.Context { return g.base }

// Shutdown is called after the listener's http.Server.Shutdown: it waits,
// until ctx is done, for intercepted requests and for requests that server
// does not track (WebSocket upgrades, tunnels); then it ends those that
// remain and waits briefly for their audit records, so that every request
// is recorded before the audit sink closes. It logs the token failures
// counted since their last line. Last, it waits, until ctx is done, for
// the budget counts Redis missed that the store still tries.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.Closing()
	err := g.drain(ctx)
	if err != nil {
		// ctx is done: cut what remains, then close the intercepted
		// connections, as serve closes the listener's: a request
		// reading its body heeds no cut, only a closed connection.
		g.Abort()
		g.closeIntercepted()
		actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = errors.Join(err, g.drain(actx))
	}
	// Intercepted connections are idle once no request is in flight.
	g.closeIntercepted()
	g.mintFails.flushAll()
	g.awaitLate(ctx)
	return err
}

// closeIntercepted closes the intercepted connections.
func (g *Gateway) closeIntercepted() {
	if g.intercept != nil {
		g.intercept.close()
	}
}

// Closing tells the connections the gateway took over from the
// listener's http.Server (intercepted CONNECTs) to take no more requests,
// as that server's Shutdown tells its own keep-alive connections.
// Register it with the server's RegisterOnShutdown: called only by
// Shutdown, after the server's own, it would let them take new requests,
// each a key use begun after the stop, as long as a request on the
// listener kept that Shutdown waiting.
func (g *Gateway) Closing() {
	if g.intercept != nil {
		g.intercept.shutdown()
	}
}

// Abort ends every request in flight; their records say reason shutdown.
// Call it when the grace period is over, before the listener's server
// closes its connections: requests cut by that would look like apps that
// went away (client_closed).
func (g *Gateway) Abort() { g.abort(errShutdown) }

// Cut counts the requests that shutdown ended before they were done:
// their records say reason shutdown.
func (g *Gateway) Cut() int64 { return g.cut.Load() }

// drain waits until no request is in flight.
func (g *Gateway) drain(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for g.active.Load() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d request(s) still in flight: %w", g.active.Load(), ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Snapshot returns the snapshot that new requests use.
func (g *Gateway) Snapshot() *Snapshot { return g.live.Load().Snapshot }
