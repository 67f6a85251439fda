package proxy

import (
	"context"
	"errors"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/tillgw/till/usage"
)

// finish writes the request's audit record; it runs deferred, so panics and
// aborted streams are recorded too. The record's outcome is built here,
// and only here, from what the exchange went through.
func (g *Gateway) finish(x *exchange, rw *responseRecorder, r *http.Request) {
	p := recover()
	if p == http.ErrAbortHandler && !rw.committed && r.Context().Err() == nil && !x.takenOver && x.refused == "" && x.failure == "" {
		// The upstream broke off its response before any of it went to
		// the app: answer 502 rather than cut the connection.
		g.log.Warn().Str("id", x.rec.id).Str("route", x.rec.route).Str("code", CodeUpstreamUnreachable).
			Msg("the upstream broke off its response before any of it reached the app")
		rw.reset()
		x.failure = CodeUpstreamUnreachable
		writeError(rw, x.rec.id, apiError{CodeUpstreamUnreachable, "the upstream broke off its response"}, x.rec.mode != modeReverse, 0)
		p = nil
	}
	if p == nil {
		_ = rw.commit()
	} else {
		rw.discard()
	}
	rw.stall.stop()
	rw.boundLastWrite()
	if rw.stall.stalled.Load() && x.failure == "" {
		x.failure = codeClientClosed // it took nothing of the answer
	}
	x.rec.status = x.status // a tunnel's or an upgrade's
	if rw.committed {
		x.rec.status = rw.status
	}
	x.rec.bytesOut += rw.n + x.switchedOut.Load()
	x.rec.bytesIn = x.bytesIn.Load()
	x.rec.attempt = int(x.attempts.Load())
	x.rec.outcome, x.rec.reason = x.outcome(p != nil, r.Context())
	if x.rec.reason == codeShutdown {
		g.cut.Add(1)
	}
	if x.rec.reason == codeClientClosed || x.rec.reason == codeShutdown {
		// No head went out: not the upstream's (held back, and never
		// sent), nor a tunnel's 200 or an upgrade's 101.
		if !rw.committed && !x.takenOver && x.status != http.StatusSwitchingProtocols {
			x.rec.status = statusClientClosed
		}
	}
	g.account(x, x.prices)
	g.settle(x.ticket, usage.Add(usage.Add(x.rec.tokensIn, x.rec.tokensOut), x.cutTokens), x.rec.costUSD+x.cutUSD)
	if !x.handedOff {
		end := time.Now()
		g.audit.write(&x.rec, end)
		g.metrics.observe(&x.rec, end)
	}
	g.active.Add(-1)
	if p != nil {
		if p != http.ErrAbortHandler {
			// The stack holds no secret values (only addresses); the panic
			// value is not logged, since it could.
			g.log.Error().Str("id", x.rec.id).Bytes("stack", debug.Stack()).Msg("panic while serving a request")
		}
		panic(http.ErrAbortHandler)
	}
}

// outcome is the record's outcome and reason: denied for a refusal by
// till's policy; error for a failure (a connection made that a reload
// ended included, see release), a response cut short (panicked),
// whose reason says who cut it when its context (ctx) ended, or a
// connection that shutdown ended; forwarded otherwise, with the warning
// as reason.
func (x *exchange) outcome(panicked bool, ctx context.Context) (outcome, reason string) {
	switch {
	case x.refused != "":
		return outcomeDenied, x.refused
	case x.failure == codeClientClosed || panicked && ctx.Err() != nil:
		return outcomeError, cutReason(ctx)
	case x.failure != "":
		return outcomeError, x.failure
	case panicked:
		return outcomeError, CodeUpstreamUnreachable
	case errors.Is(context.Cause(ctx), errShutdown):
		// An upgraded connection or a tunnel that shutdown ended.
		return outcomeError, codeShutdown
	}
	return outcomeForwarded, x.warning
}

// cutReason says who ended a request whose context is done: till's
// shutdown (the base context's cause) or the app.
func cutReason(ctx context.Context) string {
	if errors.Is(context.Cause(ctx), errShutdown) {
		return codeShutdown
	}
	return codeClientClosed
}
