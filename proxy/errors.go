package proxy

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Error codes that till answers with. They are part of the interface
// contract: apps and scripts match on them.
const (
	CodeRouteNotFound         = "route_not_found"
	CodeClientUnauthenticated = "client_unauthenticated"
	CodeClientForbidden       = "client_forbidden"
	CodeMethodNotAllowed      = "method_not_allowed"
	CodePathNotAllowed        = "path_not_allowed"
	CodeHostNotAllowed        = "host_not_allowed"
	CodeOriginForbidden       = "origin_forbidden"
	CodeBadRequest            = "bad_request"
	CodeRateLimited           = "rate_limited"
	CodeBudgetExceeded        = "budget_exceeded"
	CodeModelNotAllowed       = "model_not_allowed"
	CodeSecretMissing         = "secret_missing"
	CodeSecretExpired         = "secret_expired"
	CodeSecretUnavailable     = "secret_unavailable"
	CodeAuditUnavailable      = "audit_unavailable"
	CodeUpstreamUnreachable   = "upstream_unreachable"
	CodeUpstreamTimeout       = "upstream_timeout"
	CodeCredentialUnavailable = "credential_unavailable"
)

// statusOf maps an error code to its HTTP status, as the contract's table says.
func statusOf(code string) int {
	switch code {
	case CodeRouteNotFound:
		return http.StatusNotFound
	case CodeClientUnauthenticated:
		return http.StatusUnauthorized
	case CodeClientForbidden, CodeMethodNotAllowed, CodePathNotAllowed, CodeHostNotAllowed, CodeOriginForbidden, CodeModelNotAllowed:
		return http.StatusForbidden
	case CodeBadRequest:
		return http.StatusBadRequest
	case CodeRateLimited, CodeBudgetExceeded:
		return http.StatusTooManyRequests
	case CodeSecretMissing, CodeSecretExpired, CodeSecretUnavailable, CodeAuditUnavailable:
		return http.StatusServiceUnavailable
	case CodeUpstreamUnreachable, CodeCredentialUnavailable:
		return http.StatusBadGateway
	case CodeUpstreamTimeout:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// apiError is an answer of till's own, a refusal or a failure: an error
// code and a fixed message for the app. The message never carries detail
// from deep inside (an err.Error() could hold a header value); that detail
// goes to the operational log.
type apiError struct {
	code    string
	message string
}

// ref returns a pointer to a copy of e. A refusal returned as &e from
// an if statement's e would be moved to the heap at every call, refused
// or not.
func (e apiError) ref() *apiError { return &e }

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// writeError answers with till's JSON error format, the X-Till-Error header
// and the request id.
// With forward set, client_unauthenticated becomes 407 with Proxy-Authenticate
// (RFC 9110, section 11.7.1).
func writeError(w http.ResponseWriter, id string, d apiError, forward bool, retryAfter int) {
	var body errorBody
	body.Error.Code = d.code
	body.Error.Message = d.message
	b, _ := json.Marshal(body) // cannot fail: two strings
	b = append(b, '\n')

	status := statusOf(d.code)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Till-Error", d.code)
	h.Set("X-Till-Request-Id", id)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	switch {
	case d.code == CodeClientUnauthenticated && forward:
		status = http.StatusProxyAuthRequired
		h.Set("Proxy-Authenticate", `Basic realm="till"`)
	case d.code == CodeClientUnauthenticated:
		h.Set("WWW-Authenticate", `Bearer realm="till"`) // a 401 must say how (RFC 9110)
	}
	if (d.code == CodeRateLimited || d.code == CodeBudgetExceeded) && retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(retryAfter))
	}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// upstreamFailed maps a failure to reach the upstream to till's error
// answer: 504 when the route's timeout fired, 502 otherwise, nothing when
// the request was cut (ctx, the app's request's, has ended: finish says
// whether by the app or by till's shutdown).
func (g *Gateway) upstreamFailed(w http.ResponseWriter, x *exchange, ctx context.Context, err error) {
	var tooBig *http.MaxBytesError
	var netErr net.Error
	d := apiError{CodeUpstreamUnreachable, "till could not reach the upstream"}
	switch {
	case ctx.Err() != nil || x.appGone.Load():
		x.failure = codeClientClosed
		return
	case x.auditFailed.Load():
		d = errAuditDown
	case x.upload != nil && x.upload.stalled.Load():
		d = apiError{CodeUpstreamTimeout, "the upstream stopped reading the request body for the route's timeout"}
	case errors.As(err, &tooBig):
		d = apiError{CodeBadRequest, "the request body is larger than the route's max_body"}
	case x.bodyErr.Load():
		d = apiError{CodeBadRequest, "the request body could not be read"}
	case errors.As(err, &netErr) && netErr.Timeout():
		d = apiError{CodeUpstreamTimeout, "the upstream did not answer within the route's timeout"}
	}
	if d.code == CodeBadRequest {
		x.refused = d.code // the app's request, not the upstream, was at fault
	} else {
		x.failure = d.code
	}
	ev := g.log.Warn().Str("id", x.rec.id).Str("route", x.route.name).Str("code", d.code).Str("error", x.errorText(err))
	if hint := upstreamHint(err); hint != "" {
		ev = ev.Str("hint", hint)
	}
	ev.Msg("upstream request failed")
	writeError(w, x.rec.id, d, x.rec.mode != modeReverse, 0)
}

// upstreamHint says, for the log, how to mend what most often keeps till
// from an upstream, or "": an error such as "x509: certificate signed by
// unknown authority" does not say that till takes more roots from
// SSL_CERT_FILE and SSL_CERT_DIR (it has no switch to skip verification),
// nor a failed lookup that till dials upstreams itself, never through
// HTTP(S)_PROXY.
func upstreamHint(err error) string {
	var unknownCA x509.UnknownAuthorityError
	var otherHost x509.HostnameError
	var invalid x509.CertificateInvalidError
	var dns *net.DNSError
	switch {
	case errors.As(err, &unknownCA):
		return "the upstream's certificate is from a CA this machine does not trust: behind a TLS-inspecting proxy, or for a test server, give till that CA with SSL_CERT_FILE or SSL_CERT_DIR"
	case errors.As(err, &otherHost):
		return "the upstream's certificate does not name the host dialled: check the route's upstream"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "the upstream's certificate is expired or not yet valid: check this machine's clock"
	case errors.As(err, &dns) && dns.IsNotFound:
		return "the upstream's host does not resolve: check the route's upstream and this machine's DNS (till dials upstreams itself, never through HTTP(S)_PROXY)"
	}
	return ""
}

// errorText describes an error of the exchange with the upstream for the
// log: without the request URL (safeError), and without any form of the
// route's key, which an upstream's malformed answer can quote back (a
// parse error quotes the line it could not read); withheld whole when
// the key is in it in a form only decoding finds.
func (x *exchange) errorText(err error) string {
	s := safeError(err)
	if x.inj != nil {
		for _, f := range x.echoForms() {
			s = strings.ReplaceAll(s, f, "REDACTED")
		}
		if echoes([]string{s}, x.echoForms()) {
			// Still there, in another encoding (lower-case hex escapes).
			return "the error is not logged: it may quote the key"
		}
	}
	return s
}

// safeError describes a transport error without the request URL, whose
// query could hold an injected key.
func safeError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne *net.OpError
	if errors.As(err, &ne) {
		return ne.Error()
	}
	return err.Error()
}

// CodeSecretStale is the audit reason of a request sent with a source's
// last good value, within failure_ttl, while the source fails.
const CodeSecretStale = "secret_stale"
