package config

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"unicode"
)

// Glob is an allowed-path pattern such as "/v1/models/*": "*" matches
// exactly one segment not empty before any ";", and "**", only as the
// last segment, matches the rest of the path (zero or more segments).
// Other segments match literally, case-sensitively. The zero Glob
// matches nothing.
type Glob struct {
	src  string
	segs []string // literal segments, or "*"
	rest bool     // the pattern ends in "**"
}

// ParseGlob parses a path pattern. It must start with "/" and its
// segments must not be empty, "." or "..".
func ParseGlob(s string) (Glob, error) {
	if !strings.HasPrefix(s, "/") {
		return Glob{}, errors.New(`must start with "/"`)
	}
	g := Glob{src: s}
	if s == "/" {
		return g, nil
	}
	segs := strings.Split(s[1:], "/")
	for i, seg := range segs {
		switch {
		case seg == "":
			return Glob{}, errors.New(`must not have empty segments ("//" or a trailing "/")`)
		case seg == "." || seg == "..":
			return Glob{}, errors.New(`must not have "." or ".." segments`)
		case seg == "**":
			if i != len(segs)-1 {
				return Glob{}, errors.New(`"**" is only allowed as the last segment`)
			}
			g.rest = true
			continue
		case seg != "*" && strings.Contains(seg, "*"):
			return Glob{}, errors.New(`"*" must be a whole segment`)
		}
		for j := 0; j < len(seg); j++ {
			if !isPathChar(seg[j]) {
				return Glob{}, errors.New("segments may use only URL path characters (letters, digits and -._~!$&'()+,;=:@%)")
			}
		}
		// Paths are matched decoded: an escape is written as sent
		// upstream (ft%3Agpt-4o) and compared as what it stands for.
		dec, err := url.PathUnescape(seg)
		switch {
		case err != nil:
			return Glob{}, fmt.Errorf("segment %q has an invalid percent-encoding", seg)
		case dec == "." || dec == "..":
			return Glob{}, fmt.Errorf("segment %q encodes a dot segment, which no request path that till forwards holds", seg)
		case seg != "*" && strings.Contains(dec, "*"):
			return Glob{}, fmt.Errorf("segment %q encodes a \"*\", which would read as the wildcard", seg)
		case strings.ContainsAny(dec, "/\\%") || strings.ContainsFunc(dec, unicode.IsControl):
			return Glob{}, fmt.Errorf("segment %q encodes a slash, backslash, percent sign or control character, which no request path that till forwards holds", seg)
		}
		g.segs = append(g.segs, dec)
	}
	return g, nil
}

// isPathChar reports the pchar characters of RFC 3986 (with "*" handled
// separately).
func isPathChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("-._~!$&'()+,;=:@%*", c) >= 0
}

// String returns the pattern as written.
func (g Glob) String() string { return g.src }

// Match reports whether path matches. path is the request path after the
// route prefix, decoded and starting with "/". A path with a "." or ".."
// segment never matches, so dot segments cannot walk past an allow rule.
// Match does not allocate.
func (g Glob) Match(path string) bool {
	if g.src == "" || path == "" || path[0] != '/' {
		return false
	}
	rest, more := path[1:], path != "/"
	next := func() string {
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			seg := rest[:i]
			rest = rest[i+1:]
			return seg
		}
		seg := rest
		rest, more = "", false
		return seg
	}
	for _, want := range g.segs {
		if !more {
			return false
		}
		seg := next()
		if seg == "." || seg == ".." {
			return false
		}
		if want == "*" {
			if seg == "" || seg[0] == ';' {
				// Tomcat, Jetty and Spring drop ";parameters" from a
				// segment before they route: ";x" is "" to them.
				return false
			}
		} else if seg != want {
			return false
		}
	}
	if !g.rest {
		return !more
	}
	for more {
		if seg := next(); seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// CanMatchUnder reports whether g can match a path that starts with the
// path base (an upstream's own path, which every path sent to it starts
// with): false when a segment of g contradicts one of base's, or g ends
// before base does.
func (g Glob) CanMatchUnder(base string) bool {
	base = strings.Trim(base, "/")
	if base == "" {
		return true
	}
	for i, seg := range strings.Split(base, "/") {
		switch {
		case i >= len(g.segs):
			return g.rest
		case g.segs[i] != "*" && g.segs[i] != seg:
			return false
		}
	}
	return true
}
