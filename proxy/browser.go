package proxy

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	"github.com/tillgw/till/config"
)

// browserGuard refuses what a web page can make a browser send to till. A
// till on a developer's laptop listens on 127.0.0.1, which every page the
// browser opens can reach: a cross-site POST needs no CORS preflight, and
// with DNS rebinding (a name of the attacker's that resolves to 127.0.0.1)
// the page can read the answer too. So requests that the browser marks as
// cross-site, or whose Origin is not till's own, are refused unless the
// origin is listed (browser_origins); and on a loopback listener, a Host
// that is not a loopback name is refused.
type browserGuard struct {
	origins []string // allowed origins, lower case ("https://app.example.com")
	names   []string // Host names accepted on a loopback listener, lower case
}

func newBrowserGuard(cfg *config.Config) browserGuard {
	return browserGuard{
		origins: cfg.BrowserOrigins,
		names:   slices.Concat(cfg.ServerNames, cfg.TLS.Names),
	}
}

// checkOrigin refuses a request from a web page of another origin: one
// whose Sec-Fetch-Site says cross-site or same-site, or whose Origin is not
// the origin of the request itself (its scheme and Host), unless its
// Origin is listed in browser_origins. Apps that are not browsers send
// neither header.
func (b browserGuard) checkOrigin(r *http.Request) (apiError, bool) {
	origins, hasOrigin := r.Header["Origin"]
	if hasOrigin {
		if len(origins) == 1 && slices.Contains(b.origins, strings.ToLower(origins[0])) {
			return apiError{}, true
		}
		if len(origins) != 1 || !sameOrigin(origins[0], r) {
			return apiError{CodeOriginForbidden, "requests from web pages of other origins are refused (browser_origins lists the allowed ones)"}, false
		}
	}
	for _, site := range r.Header["Sec-Fetch-Site"] {
		if strings.EqualFold(site, "cross-site") || strings.EqualFold(site, "same-site") {
			return apiError{CodeOriginForbidden, "requests from web pages of other origins are refused (browser_origins lists the allowed ones)"}, false
		}
	}
	return apiError{}, true
}

// sameOrigin reports whether origin is the origin of r: the scheme r came
// in on and its Host. "null" (a sandboxed page, a file) is no one's origin.
func sameOrigin(origin string, r *http.Request) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return strings.EqualFold(u.Scheme, scheme) && hostKey(scheme, u.Host) == hostKey(scheme, r.Host)
}

// checkHost refuses, on a loopback listener, a Host that is not an IP
// literal, localhost, a *.localhost name (RFC 6761 keeps them on the
// machine) or a name from server_names or tls.names: a page that rebinds
// its own name to 127.0.0.1 sends that name.
func (b browserGuard) checkHost(r *http.Request) (apiError, bool) {
	local, _ := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr)
	if local == nil || !local.IP.IsLoopback() || r.Host == "" {
		return apiError{}, true
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if _, err := netip.ParseAddr(host); err == nil {
		return apiError{}, true
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") || slices.Contains(b.names, host) {
		return apiError{}, true
	}
	return apiError{CodeHostNotAllowed, "this Host is not one of till's names on a loopback listener (server_names lists more)"}, false
}
