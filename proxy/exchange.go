package proxy

import (
	"github.com/tillgw/till/usage"

	"github.com/tillgw/till/budget"

	"context"
	"io"
	"net/http"
	"sync/atomic"
	"time"
)

// exchange is one request's state, from its arrival to its record. It
// reaches ReverseProxy's hooks (upgrades, relays) through the request
// context.
type exchange struct {
	rec   record
	route *route
	// live is the config the request was decided with; readmit checks
	// the request again when a reload has swapped in another since.
	live *live
	// member is the pool's key in use, tried the ones already refused,
	// caller whom a sticky pool keeps to one key.
	member *member
	tried  []*member
	caller string
	// refusedBy are the keys the upstream refused for this request, not
	// set aside until another key serves it (see refusedKey).
	refusedBy []refusedKey
	// held is the app's body, read whole (holdBody); rest, a body too
	// large for that, the part read and then the rest.
	held []byte
	rest *replayBody
	// ticket is what the request's budgets counted, settled by finish.
	ticket *budget.Ticket
	// cutTokens and cutUSD are what an answer cut before it told all its
	// usage is charged beyond what it told: the rest of its reservation.
	cutTokens int64
	// readWhole is set once the answer was read to its end, by the app or
	// after it left (drainAnswer): the usage it told is all it used.
	readWhole bool
	cutUSD    float64
	// meter reads the token usage from the answer as it passes; prices
	// prices it for model, the model the request named (the record's
	// may hide it: recordedModel).
	meter  *usage.Meter
	prices *usage.Prices
	model  string
	// inj is the key attached to the request, with its echo forms: the
	// route's, or its source ref's value when the request was decided.
	// sentForms, after a pool retry, are the echo forms of every key the
	// request sent (see echoForms).
	inj       *injection
	sentForms []string
	outPath   string
	rawPath   string
	// pathModel is the model a Bedrock route's path names, when
	// namesModel (target.modelPath).
	pathModel  string
	namesModel bool
	// refused is the error code of a refusal by till's policy, failure
	// that of a request till could not serve; warning questions an
	// allowed request (secret_expired). The record is built from them.
	refused string
	failure string
	warning string
	// withheld is the refusal of a reload that came while the transport
	// got its connection (Gateway.withhold), or while the request waited
	// there to be written (attemptTrace): the key did not go.
	withheld *apiError
	status   int // upstream status, for upgraded connections
	// bytesIn counts the request body, and what a switched protocol
	// carried from the app; the transport's goroutine writes it.
	bytesIn  atomic.Int64
	hasBody  bool // the request declared a body
	bodyRead bool // the body was handed on to be read
	// overHTTP2 is set for a request over HTTP/2: one stream of a
	// connection other requests share.
	overHTTP2 bool
	// switchedOut counts what a switched protocol carried to the app;
	// ReverseProxy's goroutine writes it.
	switchedOut atomic.Int64
	// bodyErr is set when reading the app's body failed (malformed
	// chunking, a reset): the fault is the app's, not the upstream's.
	bodyErr atomic.Bool
	// appGone is set when the app went away in the middle of its body.
	appGone atomic.Bool
	// upload, when set, watches the upload of the body for progress.
	upload *stallWatch
	// answer is the progress of the answer on a budgeted route, whose
	// attempt outlasts the app (drainAnswer).
	answer *progress
	// audit records each send of the key (writeAhead, sendTrace).
	audit *Audit
	// attempts counts the sends of the key that were recorded, conns the
	// connections the transport got for them; auditFailed is set when a
	// send could not be recorded, and was stopped.
	attempts atomic.Int32
	conns    atomic.Int32
	// wrote is set once the transport wrote the current attempt's
	// headers to a connection (or its buffer): a dial refused after that
	// does not show that nothing of the attempt went.
	wrote         atomic.Bool
	auditFailed   atomic.Bool
	ctx           context.Context // the inbound request's
	upstreamStart time.Time
	// appHost is the Host the app sent in reverse mode, appTLS whether it
	// came over TLS: where the app reached till, for the URLs into the
	// upstream that an answer gives (localize).
	appHost string
	appTLS  bool
	// connectAuth is the Proxy-Authorization given on the CONNECT that
	// carried this request, if any.
	connectAuth string
	connectCert certID // the client certificate on that CONNECT

	// takenOver is set when the connection was taken from the server (a
	// tunnel, an intercepted CONNECT); handedOff when an intercepted
	// CONNECT's connection went to the inner server, whose requests have
	// records of their own.
	takenOver bool
	handedOff bool
}

type exchangeKey struct{}

// begin starts a request's exchange and its audit record, under l, the
// config the request is served by.
func (g *Gateway) begin(w http.ResponseWriter, r *http.Request, mode string, l *live) (*exchange, *responseRecorder) {
	x := &exchange{ctx: r.Context(), audit: g.audit}
	x.rec.start = time.Now()
	x.rec.id = g.ids.next()
	x.rec.method = r.Method
	x.rec.mode = mode
	x.rec.host = recordedPath(r.Host, l.clients) // the route's upstream, once one matches
	path := r.URL.Path
	if r.URL.RawPath != "" {
		path = r.URL.RawPath
	}
	x.rec.path = recordedPath(path, l.clients)
	// Go's HTTP/2 server gives a request without a body (END_STREAM on
	// its HEADERS) an empty Body, not http.NoBody as HTTP/1's does; its
	// ContentLength of 0 says there is none, as it does over HTTP/1,
	// where Go's server enforces it, and HTTP/2's refuses DATA past it.
	x.hasBody = r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	x.overHTTP2 = r.ProtoMajor == 2
	dropConnectionNamed(r.Header)
	g.active.Add(1)
	rw := &responseRecorder{ResponseWriter: w, x: x, idle: g.tunnelIdle, http10: !r.ProtoAtLeast(1, 1)}
	// Go's server keeps a connection open after a request that had both
	// Content-Length and Transfer-Encoding (RFC 9112, section 6.1 wants
	// it closed; golang/go#80942), and hides which it was: close after
	// every chunked HTTP/1 request, so no request can hide in the body of
	// another.
	rw.closing = len(r.TransferEncoding) > 0 && r.ProtoMajor == 1
	return x, rw
}

// countBody wraps the body of out (a copy of the server's request: net/http
// must keep its own body, for Expect: 100-continue and draining) to count
// it, remember a read error, bound the wait for each part of it, and cap
// it at maxBody when positive.
func (x *exchange) countBody(w http.ResponseWriter, out *http.Request, maxBody int64) *countingBody {
	if !x.hasBody || out.Body == nil {
		return nil
	}
	cb := &countingBody{ReadCloser: out.Body, x: x, rc: http.NewResponseController(w)}
	var body io.ReadCloser = cb
	if maxBody > 0 {
		body = http.MaxBytesReader(nil, body, maxBody)
	}
	out.Body = body
	x.bodyRead = true
	return cb
}

// refuse answers a request that till's policy refused; no key was
// attached. retryAfter, in seconds, goes with rate_limited.
func (g *Gateway) refuse(w http.ResponseWriter, x *exchange, e apiError, retryAfter int) {
	x.refused = e.code
	x.closeIfUnread(w)
	writeError(w, x.rec.id, e, x.rec.mode != modeReverse, retryAfter)
}

// fail answers a request that till could not serve (an upstream that
// cannot be reached, a connection that cannot be taken over).
func (g *Gateway) fail(w http.ResponseWriter, x *exchange, e apiError) {
	x.failure = e.code
	x.closeIfUnread(w)
	writeError(w, x.rec.id, e, x.rec.mode != modeReverse, 0)
}

// closeIfUnread closes the connection after a refusal of a request whose
// body was never read: net/http would otherwise wait for that body (which
// the app may never send) before answering. A refused CONNECT closes it
// too: what the app already wrote for the tunnel would otherwise be read
// as a request of its own. Not over HTTP/2, where net/http would end the
// whole connection (GOAWAY), every other request's on it too: the server
// resets the unread body of this stream alone (RFC 9113, section 8.1).
func (x *exchange) closeIfUnread(w http.ResponseWriter) {
	if x.overHTTP2 {
		return
	}
	if x.hasBody && !x.bodyRead || x.rec.method == http.MethodConnect {
		w.Header().Set("Connection", "close")
	}
}

// echoForms are the forms of every key the request sent, whose echoes
// never reach the app nor a log: its key's, and after a pool retry the
// earlier keys' too, since an answer may quote any of them.
func (x *exchange) echoForms() []string {
	if x.sentForms != nil {
		return x.sentForms
	}
	return x.inj.echoForms
}
