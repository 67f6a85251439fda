package proxy

import (
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// target is where a request goes, resolved from what its mode gives: the
// path prefix (reverse mode), the absolute URL (forward mode) or the host of
// its CONNECT (intercepted). A request for a host without a route that the
// tunnel policy lets through has mode tunnel and no route: it is relayed
// untouched, without a key.
type target struct {
	mode    string
	route   *route
	outPath string // the upstream path
	rawPath string // its escaped form, when it has one of its own
	// model is the model a Bedrock route's path names (modelPath), and
	// namesModel says it names one: the body's is then never read as it.
	model      string
	namesModel bool
}

// resolvePath resolves an origin-form request by its path prefix.
func (s *Snapshot) resolvePath(u *url.URL) (target, *apiError) {
	rawPath, path := u.RawPath, u.Path
	if reason := s.checkTarget(u, path); reason != "" {
		return target{}, &apiError{CodeBadRequest, reason}
	}
	rt, rest := s.match(path)
	if rt == nil {
		return target{}, &apiError{CodeRouteNotFound, "no route matches this path"}
	}
	t := target{mode: modeReverse, route: rt, outPath: rt.upstream.Path + rest}
	if t.outPath == "" {
		t.outPath = "/"
	}
	if rest, ok := cutEscapedPrefix(rawPath, rt.prefix); ok && rawPath != "" {
		t.rawPath = rt.upstream.EscapedPath() + rest
	}
	if e := t.modelPath(rawPath); e != nil {
		return target{}, e
	}
	return t, nil
}

// reasonSpaceInTarget refuses a request target that holds a space.
const reasonSpaceInTarget = "the request target holds a space, which HTTP/1.1 cannot carry: escape it as %20"

// checkTarget is checkPath for u's path, read as path, and refuses a
// space in u's path or query as the app wrote them. HTTP/1.1 cannot
// carry one (RFC 9112, section 3: the request line splits at spaces),
// and Go's HTTP/1 server refuses it, but its HTTP/2 server takes a
// :path with one: the query would go upstream as is, the key after it,
// on a request line that an HTTP/1.1 upstream splits into other parts
// than till judged.
func (s *Snapshot) checkTarget(u *url.URL, path string) string {
	if strings.ContainsRune(u.RawPath, ' ') || strings.ContainsRune(u.RawQuery, ' ') {
		return reasonSpaceInTarget
	}
	return s.checkPath(u.RawPath, path)
}

// resolveURL resolves an absolute-form request (`GET http://host/path`,
// what HTTP_PROXY sends for http:// URLs) by the URL's host and port; the
// request goes to the route's upstream, whatever its Host header says. A
// path outside every route of a routed host is refused, as inside an
// intercepted CONNECT (resolveInner); only hosts without a route may be
// relayed.
func (s *Snapshot) resolveURL(u *url.URL) (target, *apiError) {
	if !s.forward.Enabled {
		return target{}, &apiError{CodeBadRequest, "till is not configured as a forward proxy (forward.enabled)"}
	}
	if u.Scheme != "http" || u.Host == "" {
		return target{}, &apiError{CodeBadRequest, "a proxy request must be an http:// URL; use CONNECT for https"}
	}
	path := u.Path
	if path == "" {
		path = "/" // http://host is http://host/ (RFC 9110, 4.2.3)
	}
	if reason := s.checkTarget(u, path); reason != "" {
		return target{}, &apiError{CodeBadRequest, reason}
	}
	if e := badHost(u.Hostname()); e != nil {
		return target{}, e
	}
	if recordedPath(u.Host, s.clients) == notShown {
		return target{}, &errTokenInHost
	}
	keys := []string{hostKey("http", u.Host)}
	if bare := strings.TrimSuffix(strings.TrimSuffix(u.Host, u.Port()), ":"); hostKey("http", bare) == keys[0] {
		// http://api.example.com (or :80, the same URL: RFC 3986,
		// section 6.2.3) matches an https upstream on the default port:
		// till speaks TLS to the upstream on the app's behalf.
		keys = append(keys, hostKey("https", bare))
	}
	var rt *route
	for _, k := range keys {
		if rt = s.matchHost(k, path); rt != nil {
			break
		}
	}
	if rt == nil {
		// A route's host is never relayed untouched, as its CONNECT is
		// never tunnelled (resolveConnect): past the route's path the
		// route's clients, methods and override rules would not apply,
		// and the app's own credentials would reach the provider.
		if slices.ContainsFunc(keys, func(k string) bool { return len(s.byHost[k]) > 0 }) {
			return target{}, &apiError{CodeRouteNotFound, "no route matches this host and path"}
		}
		if s.forward.UnknownHosts == "tunnel" && encodedSlashes(u.RawPath) == 0 {
			return target{mode: modeTunnel}, nil
		}
		if s.forward.UnknownHosts == "tunnel" {
			return target{}, &errEncodedSlash // checkPath left it to a route
		}
		return target{}, &apiError{CodeHostNotAllowed, "no route for this host"}
	}
	t := target{mode: modeForward, route: rt, outPath: path, rawPath: u.RawPath}
	if e := t.modelPath(u.RawPath); e != nil {
		return target{}, e
	}
	return t, nil
}

// connectTarget is what a CONNECT asked for; requests inside an
// intercepted CONNECT must be for the same host.
type connectTarget struct {
	host      string // lower case, no trailing dot
	port      uint16
	key       string // hostKey form, for route lookup
	proxyAuth string // credentials given on the CONNECT
	cert      certID // the client certificate on the CONNECT
}

// resolveConnect resolves a CONNECT's host:port: intercepted when the host
// has a route and till can intercept, else refused; a host without a
// route is tunnelled when the tunnel policy allows it, else refused. A
// route's host is never tunnelled untouched: its policy would not apply,
// and the app's own credentials (a till token as its SDK's key) would
// reach the provider.
func (s *Snapshot) resolveConnect(authority string, canIntercept bool) (connectTarget, string, *apiError) {
	if !s.forward.Enabled {
		return connectTarget{}, "", &apiError{CodeBadRequest, "till is not configured as a forward proxy (forward.enabled)"}
	}
	host, portStr, err := net.SplitHostPort(authority)
	port, perr := strconv.ParseUint(portStr, 10, 16)
	if err != nil || perr != nil || host == "" || port == 0 {
		return connectTarget{}, "", &apiError{CodeBadRequest, "CONNECT needs a host:port target"}
	}
	if e := badHost(host); e != nil {
		return connectTarget{}, "", e
	}
	if recordedPath(authority, s.clients) == notShown {
		return connectTarget{}, "", &errTokenInHost
	}
	// One leaf, and one SNI to match, per host however written.
	t := connectTarget{host: canonicalHost(host), port: uint16(port), key: hostKey("https", authority)}
	switch {
	case len(s.byHost[t.key]) == 0 && port == 80 && len(s.byHost[hostKey("https", t.host)]) > 0:
		// An http:// URL of a route's host, which undici sends through
		// a CONNECT: in absolute form it is the route's (resolveURL);
		// tunnelled, the app's request, its token with it, would reach
		// the provider untouched and in clear.
		return t, "", &apiError{CodeHostNotAllowed, "this host has a route: send its http:// URLs to till in absolute form (undici: proxyTunnel: false), or use https://"}
	case len(s.byHost[t.key]) == 0:
	case s.forward.Intercept && canIntercept:
		return t, modeIntercept, nil
	case s.forward.Intercept:
		return t, "", &apiError{CodeHostNotAllowed, "this host has a route, and till has no CA to intercept its CONNECT (till ca init, then restart till)"}
	default:
		return t, "", &apiError{CodeHostNotAllowed, "this host has a route, and forward.intercept is off: send it as an absolute-form http:// request, or through the route's path"}
	}
	if s.forward.UnknownHosts != "tunnel" {
		return t, "", &apiError{CodeHostNotAllowed, "no route for this host"}
	}
	return t, modeTunnel, nil
}

// badHost refuses a host that the dialer would read as another: one
// that ends in a number without being an IP address (numericName), or
// one that is not ASCII. net/http's Transport dials a host in Unicode as
// IDNA's lookup maps it (a fullwidth letter or digit to its ASCII
// letter, an ideographic full stop to a dot, a soft hyphen to nothing),
// so such a spelling of a route's host, which no route's host matches,
// would be relayed untouched to it. Apps send an internationalised name
// in its ASCII (xn--) form, as routes' upstreams are written.
func badHost(host string) *apiError {
	switch {
	case numericName(host):
		return &errNumericName
	case strings.ContainsFunc(host, func(r rune) bool { return r >= utf8.RuneSelf }):
		return &errHostNotASCII
	}
	return nil
}

// errTokenInHost refuses a host that holds a till client token, as the
// records would hide it (recordedPath): its lookup, a relayed request's
// Host, a dial error in the log would carry it (invariant 2), as a path's
// would (reasonTokenInPath).
var errTokenInHost = apiError{CodeBadRequest, "the host holds a till client token, which never leaves till: send it in Proxy-Authorization or X-Till-Token, not in the URL"}

// errHostNotASCII refuses a host that is not ASCII.
var errHostNotASCII = apiError{CodeBadRequest, "the host is not ASCII: write an internationalised domain name in its xn-- form"}

// errNumericName refuses a host that ends in a number without being an
// IP address.
var errNumericName = apiError{CodeBadRequest, "the host ends in a number but is not an IP address: write an IPv4 address as a.b.c.d, in decimal"}

// numericName reports whether host ends in a number (its last label all
// digits, or 0x and hex digits) but is no IP address as netip reads it.
// Such a host is an IPv4 address to resolvers built on inet_aton
// (getaddrinfo: macOS, cgo builds), written another way (127.1,
// 2130706433, 0x7f.0.0.1, octal 0177.0.0.1): a route's address so
// written would be no route's host, and be tunnelled untouched. No
// top-level domain is a number (RFC 3696, section 2), and the WHATWG URL
// standard reads such a host as IPv4 or refuses it.
func numericName(host string) bool {
	if _, err := netip.ParseAddr(canonicalHost(host)); err == nil {
		return false
	}
	last := strings.TrimSuffix(host, ".")
	last = last[strings.LastIndexByte(last, '.')+1:]
	digits := "0123456789"
	if len(last) >= 2 && last[0] == '0' && (last[1] == 'x' || last[1] == 'X') {
		last, digits = last[2:], "0123456789abcdefABCDEF"
		if last == "" {
			return true // "0x" is 0 to inet_aton and WHATWG alike
		}
	}
	return last != "" && strings.Trim(last, digits) == ""
}

// admitConnect decides, on an intercepted CONNECT, what can be decided
// there: apps send proxy credentials on the CONNECT, not inside the
// tunnel, so they are asked for there (407) when every route of the host
// needs a client, and a client outside its addresses is refused at once.
func (s *Snapshot) admitConnect(id identity, remoteAddr string, t connectTarget) *apiError {
	if e, ok := id.admit(remoteAddr, nil); !ok {
		return e.ref()
	}
	if id.client == nil && !slices.ContainsFunc(s.byHost[t.key], func(rt *route) bool { return len(rt.clients) == 0 }) {
		return &apiError{CodeClientUnauthenticated, "this host's routes need a till client token"}
	}
	return nil
}

// resolveInner resolves a request inside an intercepted CONNECT to t. Its
// Host (or :authority) must be the CONNECT's: one that differs could steer
// the key elsewhere (invariant 1).
func (s *Snapshot) resolveInner(t connectTarget, host string, u *url.URL) (target, *apiError) {
	if hostKey("https", host) != t.key || u.IsAbs() {
		return target{}, &apiError{CodeHostNotAllowed, "the request's Host differs from the CONNECT target"}
	}
	if reason := s.checkTarget(u, u.Path); reason != "" {
		return target{}, &apiError{CodeBadRequest, reason}
	}
	if !s.forward.Enabled || !s.forward.Intercept {
		// A reload turned interception off: connections opened before it
		// get no more keys.
		return target{}, &apiError{CodeHostNotAllowed, "interception is off in the current config"}
	}
	rt := s.matchHost(t.key, u.Path)
	if rt == nil {
		return target{}, &apiError{CodeRouteNotFound, "no route matches this host and path"}
	}
	out := target{mode: modeIntercept, route: rt, outPath: u.Path, rawPath: u.RawPath}
	if e := out.modelPath(u.RawPath); e != nil {
		return target{}, e
	}
	return out, nil
}
