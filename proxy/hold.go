package proxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
)

// maxHeld is the largest request body held in memory: to be read (model
// rules, usage) or sent again (key pools). A larger one streams.
const maxHeld = 1 << 20

// errBodyTooLarge refuses a body over the route's max_body.
var errBodyTooLarge = apiError{CodeBadRequest, "the request body is larger than the route's max_body"}

// errTooLargeToMeter refuses a body on a route under a token or dollar
// budget that is larger than till reads: what it asks (a stream that
// reports no usage) could not be known, and would go uncounted.
var errTooLargeToMeter = apiError{CodeBadRequest, "the request body is larger than till reads to meter the route's token and dollar budgets (1 MiB, or the route's max_body when set higher)"}

// holdBody reads the app's body, counted and within max_body, into memory
// when it is at most maxHeld bytes (x.held); a larger body is left to
// stream, what was read of it first (x.rest). It reports the refusal to
// give when the body cannot be read: too large for max_body, or broken
// off by the app.
func (x *exchange) holdBody(w http.ResponseWriter, r *http.Request) (apiError, bool) {
	limit := int64(maxHeld)
	if x.route.signs {
		// The body is hashed for the signature: held whole, up to max_body.
		limit = x.route.maxBody
	} else if x.route.tokenBudgeted || x.route.formMethods {
		// Read whole to be metered, or a form or JSON body for its
		// _method field, up to max_body when it allows more.
		limit = max(limit, x.route.maxBody)
	}
	if !x.hasBody || x.bodyRead || r.ContentLength > limit {
		return apiError{}, true
	}
	in := &http.Request{Body: r.Body}
	body := x.countBody(w, in, x.route.maxBody)
	buf, err := readAtMost(in.Body, r.ContentLength, limit+1)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return errBodyTooLarge, false
	case err != nil:
		return apiError{CodeBadRequest, "the request body could not be read"}, false
	case int64(len(buf)) > limit:
		x.rest = &replayBody{Reader: io.MultiReader(bytes.NewReader(buf), in.Body), Closer: in.Body, counted: body}
	default:
		x.held = buf
	}
	return apiError{}, true
}

// replayBody is a body read in part, sent whole: the part, then the rest.
type replayBody struct {
	io.Reader
	io.Closer
	counted *countingBody
}

// setBody gives out the body to send: the held one (which the transport
// may read again, on a new connection), the rest of a partly read one, or
// the app's, counted as it streams. It returns the app's body's counter,
// when it streams, and the body's progress, for an upload watch.
func (x *exchange) setBody(w http.ResponseWriter, out *http.Request) (*countingBody, *progress) {
	switch {
	case x.held != nil:
		held, p := x.held, &progress{}
		out.ContentLength = int64(len(held))
		out.TransferEncoding = nil // sent with its length, as signed
		out.Body = heldBody{bytes.NewReader(held), p}
		out.GetBody = func() (io.ReadCloser, error) {
			p.ended.Store(false) // sent again, on a new connection
			return heldBody{bytes.NewReader(held), p}, nil
		}
		if len(held) == 0 {
			out.Body = nil
			return nil, nil
		}
		return nil, p
	case x.rest != nil:
		out.Body = x.rest
		return x.rest.counted, &x.rest.counted.progress
	}
	if cb := x.countBody(w, out, x.route.maxBody); cb != nil {
		return cb, &cb.progress
	}
	return nil, nil
}

// bodyUnread answers a request whose body could not be held: e refuses
// it, unless the app went away meanwhile.
func (g *Gateway) bodyUnread(w http.ResponseWriter, x *exchange, e apiError) {
	if x.appGone.Load() {
		x.failure = codeClientClosed
		return
	}
	g.refuse(w, x, e, 0)
}

// readAtMost reads r to its end or to limit bytes, into one buffer sized
// from the declared length (-1 when unknown) when there is one.
func readAtMost(r io.Reader, declared, limit int64) ([]byte, error) {
	size := int64(512)
	if declared >= 0 {
		size = min(declared+1, limit) // +1: to see the end without growing
	}
	buf := make([]byte, 0, size)
	for int64(len(buf)) < limit {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):min(int64(cap(buf)), limit)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}
