package proxy

import (
	"slices"
	"strings"
	"unicode/utf8"
)

// checkPath refuses request paths that could move a request past a route's
// prefix or allow rules once some other component decodes or normalises
// them: dot segments (also in the forms Tomcat and Jetty read as dots, such
// as "..;" and ".. "), encoded slashes and backslashes, backslashes, control
// characters, a percent sign left after decoding (double encoding),
// invalid percent-encoding, and a decoded path that is not UTF-8 (an
// overlong slash, %C0%AF, is "/" to lenient decoders: old IIS, some Java
// servers). raw is the escaped path as sent when it differs
// from the default encoding of decoded (url.URL.RawPath), or "". It returns
// the reason for the refusal, or "" when decoded can be matched as is.
//
// One encoded slash is left to the route to decide (target.modelPath):
// in what may be a Bedrock model id, between "/model/" and a last segment
// that is one of bedrockOps, where the AWS SDKs escape an ARN's "/".
func checkPath(raw, decoded string) string {
	if len(decoded) == 0 || decoded[0] != '/' {
		return "the request path must start with /"
	}
	lo, hi := modelSpan(raw)
	for i := 0; i < len(raw); i++ {
		switch raw[i] {
		case '\\':
			return "the request path must not contain a backslash"
		case '%':
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				return "the request path has an invalid percent-encoding"
			}
			if c := lower(raw[i+2]); raw[i+1] == '5' && c == 'c' || raw[i+1] == '2' && c == 'f' && (i < lo || i >= hi) {
				return reasonEncodedSlash
			}
			i += 2
		}
	}
	for i := 0; i < len(decoded); i++ {
		switch c := decoded[i]; {
		case c < 0x20 || c == 0x7f:
			return "the request path must not contain control characters"
		case c == '\\':
			return "the request path must not contain a backslash"
		case c == '%':
			return "the request path must not contain an encoded percent sign (double encoding)"
		}
	}
	if !utf8.ValidString(decoded) {
		return "the request path is not valid UTF-8 once decoded"
	}
	if hasDotSegment(decoded) {
		return "the request path must not contain . or .. segments"
	}
	if holdsClientToken(decoded) {
		return reasonTokenInPath
	}
	return ""
}

// reasonTokenInPath is checkPath's refusal of a path that holds a till
// client token: no upstream, relay or audit record gets it (invariant 2).
const reasonTokenInPath = "the request path holds a till client token, which never leaves till: send it in X-Till-Token (or as the SDK's API key), not in the URL"

// checkPath refuses what the function checkPath refuses, and a path
// with a segment that is the token of a client of s: one made by hand,
// which no shape gives away.
func (s *Snapshot) checkPath(raw, decoded string) string {
	if reason := checkPath(raw, decoded); reason != "" {
		return reason
	}
	if s.clients.tokenInPath(decoded) {
		return reasonTokenInPath
	}
	return ""
}

// reasonEncodedSlash is checkPath's refusal of an encoded slash or
// backslash.
const reasonEncodedSlash = "the request path must not contain an encoded slash or backslash"

// modelSpan returns where, in the escaped path raw, a Bedrock model id
// may be: from the first "/model/" (in any case) to the last "/", when
// what follows that is one of bedrockOps. It returns 0, 0 for none.
func modelSpan(raw string) (lo, hi int) {
	hi = strings.LastIndexByte(raw, '/')
	if hi < 0 || !slices.Contains(bedrockOps, raw[hi+1:]) {
		return 0, 0
	}
	for i := 0; i+len("/model/") <= hi; i++ {
		if strings.EqualFold(raw[i:i+len("/model/")], "/model/") {
			return i + len("/model/"), hi
		}
	}
	return 0, 0
}

// hasDotSegment reports whether p has a "." or ".." segment (RFC 3986,
// section 3.3), counting the forms some servers read as one: a segment
// whose part before ";" is dots, or dots followed by spaces.
func hasDotSegment(p string) bool {
	for p != "" {
		var seg string
		seg, p, _ = strings.Cut(p, "/")
		seg, _, _ = strings.Cut(seg, ";")
		seg = strings.TrimRight(seg, " ")
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// cutEscapedPrefix returns what follows prefix in the escaped path raw,
// when raw starts with prefix however its characters are escaped
// (/%6Fpenai for /openai): the rest of the app's path keeps its own
// escapes.
func cutEscapedPrefix(raw, prefix string) (string, bool) {
	i := 0
	for j := 0; j < len(prefix); j++ {
		if i >= len(raw) {
			return "", false
		}
		c := raw[i]
		if c == '%' && i+2 < len(raw) && isHex(raw[i+1]) && isHex(raw[i+2]) {
			c = unhex(raw[i+1])<<4 | unhex(raw[i+2])
			i += 2
		}
		if c != prefix[j] {
			return "", false
		}
		i++
	}
	return raw[i:], true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}
