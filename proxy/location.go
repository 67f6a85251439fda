package proxy

import (
	"cmp"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// locationHeaders are the response headers that tell the app where to
// send its next requests: Location (a redirect, a created resource, a
// Cloud Storage resumable session) and X-Goog-Upload-URL (the session of
// a Google resumable upload, such as the Gemini Files API's).
var locationHeaders = []string{"Location", "X-Goog-Upload-Url"}

// localize rewrites, in the answer to a request that came through a
// route's prefix (reverse mode), each URL in locationHeaders that points
// into the route's upstream so that it points into the route at till,
// where the app reached it, as nginx's proxy_redirect does. Without it an
// upload session Google opened under the route's key would take the
// file's bytes and its finalize to Google directly: past the route's
// rules, rates and records, and nowhere at all for an app that can reach
// only till. A URL into another origin, or outside the route's upstream
// path, is left as it is. In forward and intercepted modes the app
// reaches the upstream's own origin through till already.
func (x *exchange) localize(h http.Header) {
	if x.rec.mode != modeReverse || x.route == nil {
		return
	}
	for _, name := range locationHeaders {
		v := h[name]
		if len(v) != 1 {
			continue // none, or several: no single URL to rewrite
		}
		if local, ok := x.route.localURL(v[0], x.appOrigin); ok {
			h[name] = []string{local}
		}
	}
}

// appOrigin returns the scheme and authority the app reached till at
// ("http://127.0.0.1:8080"), from its request's Host or, without one, the
// address it connected to; false when that is not a well-formed host
// and port.
func (x *exchange) appOrigin() (string, bool) {
	host := x.appHost
	if host == "" {
		local, _ := x.ctx.Value(http.LocalAddrContextKey).(net.Addr)
		if local == nil {
			return "", false
		}
		host = local.String()
	}
	if !validAuthority(host) {
		return "", false
	}
	if x.appTLS {
		return "https://" + host, true
	}
	return "http://" + host, true
}

// localURL returns raw, a URL the upstream gave, as a URL into the route
// at till: origin (which it asks for only when raw is absolute) and the
// route's prefix in place of the upstream's origin and path, then the rest
// of raw's path, its query and fragment as they were. A path alone
// ("/v1/x") is on the upstream's origin, and stays a path. It reports
// false for a URL elsewhere: another scheme, host or port, or a path
// outside the upstream's.
func (rt *route) localURL(raw string, origin func() (string, bool)) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" || u.User != nil {
		return "", false
	}
	absolute := u.Scheme != "" || u.Host != ""
	if !absolute && !strings.HasPrefix(u.Path, "/") {
		return "", false // relative to the request's own URL, which has the prefix
	}
	if absolute && (!strings.EqualFold(cmp.Or(u.Scheme, rt.upstream.Scheme), rt.upstream.Scheme) || u.Host == "" ||
		hostKey(rt.upstream.Scheme, u.Host) != hostKey(rt.upstream.Scheme, rt.upstream.Host)) {
		return "", false
	}
	up, p := rt.upstream.EscapedPath(), u.EscapedPath()
	if !strings.HasPrefix(p, up) || len(p) > len(up) && p[len(up)] != '/' || dotSegments(u.Path) {
		return "", false
	}
	var b strings.Builder
	if absolute {
		o, ok := origin()
		if !ok {
			return "", false
		}
		b.WriteString(o)
	}
	b.WriteString(rt.prefix)
	b.WriteString(p[len(up):])
	if u.RawQuery != "" || u.ForceQuery {
		b.WriteString("?" + u.RawQuery)
	}
	if u.Fragment != "" {
		b.WriteString("#" + u.EscapedFragment())
	}
	return b.String(), true
}

// dotSegments reports whether path, unescaped, holds a "." or ".."
// segment, a backslash taken as a slash as some servers and WHATWG URL
// parsers take it. The app and the upstream resolve them (RFC 3986,
// section 5.2.4): "/v2/../admin" is under the upstream's path "/v2" as
// written but not once resolved, and at till "/route/../admin" would reach
// another route.
func dotSegments(path string) bool {
	for seg := range strings.FieldsFuncSeq(path, func(r rune) bool { return r == '/' || r == '\\' }) {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// validAuthority reports whether s is a host, with an optional port, as
// a URL may carry it: a DNS name, an IPv4 address or a bracketed IPv6
// one (no zone), and a decimal port. It is what the app's Host may be for
// till to give it back in a URL.
func validAuthority(s string) bool {
	host := s
	if _, port, err := net.SplitHostPort(s); err == nil {
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return false
		}
		host = s[:len(s)-len(port)-1] // as written, brackets and all
	}
	if inner, ok := strings.CutPrefix(host, "["); ok {
		inner, ok = strings.CutSuffix(inner, "]")
		a, err := netip.ParseAddr(inner)
		return ok && err == nil && a.Is6() && a.Zone() == ""
	}
	return validDNSName(host)
}

// validDNSName reports whether s is a host name of letters, digits,
// hyphens and underscores, in non-empty labels of at most 63 characters,
// with an optional trailing dot (IPv4 addresses are such names too).
func validDNSName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
