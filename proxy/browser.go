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
	origins []string // allowed origins, as originKey has them ("https://app.example.com:443")
	names   []string // Host names accepted on a loopback listener, lower case
}

func newBrowserGuard(cfg *config.Config) browserGuard {
	var origins []string
	for _, o := range cfg.BrowserOrigins {
		if k, ok := originKey(o); ok {
			origins = append(origins, k)
		}
	}
	return browserGuard{
		origins: origins,
		names:   slices.Concat(cfg.ServerNames, cfg.TLS.Names),
	}
}

// originKey is a web origin (scheme, host and port only) as it compares:
// lower case, with its port, the scheme's default one included, since a
// browser sends https://app.example.com for the origin a config may list
// as https://app.example.com:443 (RFC 6454, section 6.1). Anything else
// (null, a path, a user) is no origin.
func originKey(s string) (string, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil || u.Opaque != "" || u.Path != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.HasSuffix(s, "#") {
		return "", false
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", false
	}
	return scheme + "://" + hostKey(scheme, u.Host), true
}

// checkOrigin refuses a request from a web page of another origin: one
// whose Sec-Fetch-Site says cross-site or same-site, or whose Origin is not
// the origin of the request itself (its scheme and Host), unless its
// Origin is listed in browser_origins. Apps that are not browsers send
// neither header.
func (b browserGuard) checkOrigin(r *http.Request) (apiError, bool) {
	origins, hasOrigin := r.Header["Origin"]
	if hasOrigin {
		if len(origins) == 1 && b.listed(origins[0]) {
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

// listed reports whether origin is one browser_origins lists.
func (b browserGuard) listed(origin string) bool {
	k, ok := originKey(origin)
	return ok && slices.Contains(b.origins, k)
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
