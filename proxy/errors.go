package proxy

import (
	"encoding/json"
	"net/http"
	"strconv"
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
	CodeSecretMissing         = "secret_missing"
	CodeSecretExpired         = "secret_expired"
	CodeAuditUnavailable      = "audit_unavailable"
	CodeUpstreamUnreachable   = "upstream_unreachable"
	CodeUpstreamTimeout       = "upstream_timeout"
)

// statusOf maps an error code to its HTTP status, as the contract's table says.
func statusOf(code string) int {
	switch code {
	case CodeRouteNotFound:
		return http.StatusNotFound
	case CodeClientUnauthenticated:
		return http.StatusUnauthorized
	case CodeClientForbidden, CodeMethodNotAllowed, CodePathNotAllowed, CodeHostNotAllowed, CodeOriginForbidden:
		return http.StatusForbidden
	case CodeBadRequest:
		return http.StatusBadRequest
	case CodeRateLimited:
		return http.StatusTooManyRequests
	case CodeSecretMissing, CodeSecretExpired, CodeAuditUnavailable:
		return http.StatusServiceUnavailable
	case CodeUpstreamUnreachable:
		return http.StatusBadGateway
	case CodeUpstreamTimeout:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// denial is a refusal decided by till, with a fixed message for the app.
// The message never carries detail from deep inside (an err.Error() could
// hold a header value); that detail goes to the operational log.
type denial struct {
	code    string
	message string
}

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
func writeError(w http.ResponseWriter, id string, d denial, forward bool, retryAfter int) {
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
	if d.code == CodeClientUnauthenticated && forward {
		status = http.StatusProxyAuthRequired
		h.Set("Proxy-Authenticate", `Basic realm="till"`)
	}
	if d.code == CodeRateLimited && retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(retryAfter))
	}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
