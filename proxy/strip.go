package proxy

import (
	"encoding/base64"
	"iter"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
)

// overrideHeaders name another method or URL than the request line's.
// Frameworks behind many upstreams honour them, so a POST that a route's
// allow rules admit would act there as a DELETE, or on another path: the
// rules judge the request line alone, and these never reach a route's
// upstream.
var overrideHeaders = []string{
	"X-Http-Method-Override",
	"X-Http-Method",
	"X-Method-Override",
	"X-Original-Url",
	"X-Rewrite-Url",
}

// relayCredentials are the headers that carry till's own credentials on a
// request relayed to a host without a route.
var relayCredentials = []string{"Proxy-Authorization", "X-Till-Token"}

// dropTillTokens removes every header that holds a till token as
// identify reads one (tokenFrom), of any length: a digest in the config
// may be of a token made by hand, shorter than those stripHeaders knows
// by their shape. Authorization goes whenever it holds one; any other
// header when its token is a client's of cs (an SDK's API key, sent as
// X-Api-Key, is read as its client's on a route that takes the key
// there), so that a header that merely starts as a token goes as
// sent. The client's credential for till stays with till (invariant 2);
// the app's own credential for a host without a route goes.
func dropTillTokens(h http.Header, cs clientSet) {
	for name, values := range h {
		if slices.ContainsFunc(values, func(v string) bool {
			tok := tokenFrom(v)
			return tok != "" && (name == "Authorization" || cs.byToken(tok) != nil)
		}) {
			delete(h, name)
		}
	}
}

// dropKnownTokens removes from out, on a route or a relay, what holds
// the token of a client of cs as till reads one, of any shape (a token
// made by hand too, which no shape gives away): a header, Authorization
// with any till token, and each query parameter and cookie whose name or
// value is one; the others go as sent (invariant 2).
func dropKnownTokens(out *http.Request, cs clientSet) {
	out.URL.RawQuery = withoutKnownTokens(out.URL.RawQuery, cs)
	dropTillTokens(out.Header, cs)
	dropTokenCookies(out.Header, cs)
}

// isClientToken reports whether v, as is or percent-decoded, is the token
// of a client of cs as identify reads one (TokenPrefix and the rest), of
// any shape: a token made by hand too, which no shape gives away.
func isClientToken(v string, cs clientSet) bool {
	if strings.HasPrefix(v, TokenPrefix) && cs.byToken(v) != nil {
		return true
	}
	if strings.IndexByte(v, '%') < 0 && strings.IndexByte(v, '+') < 0 || !startsAsToken(v) {
		return false
	}
	for _, unescape := range []func(string) (string, error){url.PathUnescape, url.QueryUnescape} {
		if d, err := unescape(v); err == nil && d != v && strings.HasPrefix(d, TokenPrefix) && cs.byToken(d) != nil {
			return true
		}
	}
	return false
}

// startsAsToken reports whether v, its %XX escapes decoded, starts with
// TokenPrefix, as a value that unescapes to a token must: a cheap test
// before the unescaping, which allocates.
func startsAsToken(v string) bool {
	i := 0
	for n := range len(TokenPrefix) {
		if i >= len(v) {
			return false
		}
		c, next := decodedAt(v, i)
		if c != TokenPrefix[n] {
			return false
		}
		i = next
	}
	return true
}

// tokenInPath reports whether a segment of path, or its part before a
// ":" or ";" (Gemini's models/NAME:method, a segment's ;parameters), as
// is or percent-decoded, is the token of a client of cs (isClientToken).
func (cs clientSet) tokenInPath(path string) bool {
	if len(cs) == 0 || !mayHoldToken(path) {
		return false
	}
	for seg := range strings.SplitSeq(path, "/") {
		if isClientToken(seg, cs) {
			return true
		}
		if i := strings.IndexAny(seg, ":;"); i >= 0 && isClientToken(seg[:i], cs) {
			return true
		}
	}
	return false
}

// mayHoldToken reports whether v can hold a till token, as is or
// percent-encoded: a cheap test before a closer look.
func mayHoldToken(v string) bool {
	return strings.Contains(v, TokenPrefix) || strings.IndexByte(v, '%') >= 0
}

// withoutKnownTokens returns the raw query without the parameters whose
// name or value is the token of a client of cs (isClientToken), or raw
// itself, unchanged, when none is. withoutClientTokens knows tokens by
// their shape; this one knows those made by hand.
func withoutKnownTokens(raw string, cs clientSet) string {
	if len(cs) == 0 || !mayHoldToken(raw) {
		return raw
	}
	return withoutParams(raw, func(part string) bool {
		k, v, _ := strings.Cut(part, "=")
		return isClientToken(k, cs) || isClientToken(v, cs)
	})
}

// dropTokenCookies removes from h's Cookie headers each cookie whose value
// (quoted or not) or name is the token of a client of cs, and a Cookie
// header left with none: the app's other cookies go as sent.
func dropTokenCookies(h http.Header, cs clientSet) {
	values, ok := h["Cookie"]
	if !ok || len(cs) == 0 {
		return
	}
	kept := make([]string, 0, len(values))
	for _, v := range values {
		if v = withoutTokenCookies(v, cs); v != "" {
			kept = append(kept, v)
		}
	}
	if len(kept) == 0 {
		delete(h, "Cookie")
		return
	}
	h["Cookie"] = kept
}

// withoutTokenCookies returns a Cookie header's value without the cookies
// that hold a client's token (see dropTokenCookies), or v itself when none
// does.
func withoutTokenCookies(v string, cs clientSet) string {
	if !mayHoldToken(v) {
		return v
	}
	var kept []string
	dropped := false
	for c := range strings.SplitSeq(v, ";") {
		c = textproto.TrimString(c)
		name, value, _ := strings.Cut(c, "=")
		if isClientToken(textproto.TrimString(name), cs) || isClientToken(strings.Trim(textproto.TrimString(value), `"`), cs) {
			dropped = true
		} else if c != "" {
			kept = append(kept, c)
		}
	}
	if !dropped {
		return v
	}
	return strings.Join(kept, "; ")
}

// stripHeaders removes from h every header named in one of the lists, under
// any spelling a server may read as that name, and every header that holds a
// till client token (invariant 2: tokens never leave till).
func stripHeaders(h http.Header, lists ...[]string) {
	for name, values := range h {
		if isAliasOf(name, lists) || valuesHoldClientToken(values) {
			delete(h, name)
		}
	}
}

// isAliasOf reports whether name is one of the names in lists, compared
// case-insensitively with "_" read as "-": CGI, WSGI and PHP servers merge
// X_Api_Key and X-Api-Key into one HTTP_X_API_KEY, so an app's X_Api_Key
// could stand beside the key till injects as X-Api-Key.
func isAliasOf(name string, lists [][]string) bool {
	for _, list := range lists {
		for _, n := range list {
			if len(n) == len(name) && sameHeaderName(name, n) {
				return true
			}
		}
	}
	return false
}

// sameHeaderName compares two header names of one length as isAliasOf does.
func sameHeaderName(a, b string) bool {
	for i := range len(a) {
		if foldHeaderByte(a[i]) != foldHeaderByte(b[i]) {
			return false
		}
	}
	return true
}

func foldHeaderByte(c byte) byte {
	if c == '_' {
		return '-'
	}
	return lower(c)
}

func valuesHoldClientToken(values []string) bool {
	for _, v := range values {
		if holdsClientToken(v) || basicHoldsClientToken(v) {
			return true
		}
	}
	return false
}

// tokenSize is the length of a till client token: no shorter value (and
// most header values are shorter) can hold one, in any encoding.
const tokenSize = len(TokenPrefix) + TokenLength

// holdsClientToken reports whether v, as is or percent-decoded, holds a
// till client token. It allocates nothing.
func holdsClientToken(v string) bool {
	if len(v) < tokenSize || !strings.Contains(v, TokenPrefix) && strings.IndexByte(v, '%') < 0 {
		return false
	}
	return clientTokenIn(v)
}

// clientTokenIn reports whether s, with its valid %XX escapes decoded,
// holds a till client token: TokenPrefix and TokenLength base62
// characters (or more: a token run on), not preceded by a letter or digit.
// Shorter runs are words (till_requests_total, a metric a route may be
// asked about), and "still_running" is no token.
func clientTokenIn[T string | []byte](s T) bool {
	var prev byte // the previous decoded byte
	for i := 0; i < len(s); {
		c, next := decodedAt(s, i)
		if c == TokenPrefix[0] && !isBase62(prev) && tokenFollows(s, next) {
			return true
		}
		prev, i = c, next
	}
	return false
}

// tokenFollows reports whether s, decoded from i, goes on with the rest of
// a token: TokenPrefix[1:], then TokenLength base62 characters.
func tokenFollows[T string | []byte](s T, i int) bool {
	for n := 1; n < tokenSize; n++ {
		if i >= len(s) {
			return false
		}
		c, next := decodedAt(s, i)
		if n < len(TokenPrefix) && c != TokenPrefix[n] || n >= len(TokenPrefix) && !isBase62(c) {
			return false
		}
		i = next
	}
	return true
}

// decodedAt returns the byte at s[i], a valid %XX escape decoded, and the
// index of the next one.
func decodedAt[T string | []byte](s T, i int) (byte, int) {
	if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
		return unhex(s[i+1])<<4 | unhex(s[i+2]), i + 3
	}
	return s[i], i + 1
}

// basicHoldsClientToken reports whether v is Basic credentials (RFC 7617)
// that hold a till client token, as user or password. Padding is
// optional, and a tab may end the scheme, as lenient servers have them
// (see tokenFrom). Values of up to 256 encoded bytes are decoded without
// allocating.
func basicHoldsClientToken(v string) bool {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	if len(v) < len("Basic ")+tokenSize || v[0]|0x20 != 'b' || !strings.EqualFold(v[:len("Basic")], "Basic") ||
		v[len("Basic")] != ' ' && v[len("Basic")] != '\t' {
		return false
	}
	enc := strings.TrimRight(strings.TrimSpace(v[len("Basic "):]), "=")
	if len(enc) > 256 {
		b, _ := base64.RawStdEncoding.DecodeString(enc)
		return clientTokenIn(b)
	}
	var src [256]byte
	var dst [192]byte
	n := copy(src[:], enc)
	m, _ := base64.RawStdEncoding.Decode(dst[:], src[:n])
	return clientTokenIn(dst[:m])
}

func isBase62(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// withoutClientTokens returns the raw query without the parameters that
// hold a till client token (compared decoded, split as withoutParam
// splits), or raw itself, unchanged, when none does.
func withoutClientTokens(raw string) string {
	if !holdsClientToken(raw) {
		return raw
	}
	return withoutParams(raw, holdsClientToken)
}

// queryParams splits a raw query into its parameters on ";" as well as
// "&": some servers still read ";" as a separator, so a parameter hidden
// behind one counts too.
func queryParams(raw string) iter.Seq[string] {
	return strings.FieldsFuncSeq(raw, func(r rune) bool { return r == '&' || r == ';' })
}

// withoutParams removes from the raw query every parameter (queryParams)
// for which drop reports true. The others keep their order and the
// separator before them, so a query with nothing to drop is unchanged.
func withoutParams(raw string, drop func(param string) bool) string {
	var b strings.Builder
	dropped := false
	for i := 0; i < len(raw); {
		end := len(raw)
		if j := strings.IndexAny(raw[i:], "&;"); j >= 0 {
			end = i + j
		}
		if part := raw[i:end]; part != "" && drop(part) {
			dropped = true
		} else {
			if b.Len() > 0 {
				b.WriteByte(raw[i-1])
			}
			b.WriteString(part)
		}
		i = end + 1
	}
	if !dropped {
		return raw
	}
	return b.String()
}

// withoutOverrideParams removes the query parameters that override the
// request's method, as overrideHeaders do, or its Content-Type, however
// escaped and in any case: Google's system parameters $httpMethod (its
// X-HTTP-Method-Override) and $ct (its Content-Type, which would make
// Google read a body as other than till read it), and the _method,
// x-http-method-override and x-method-override that web frameworks
// (Rails, Laravel, Symfony, Express, Jersey) honour, _method under every
// name PHP reads as it (isMethodField).
func withoutOverrideParams(raw string) string {
	if !strings.ContainsAny(raw, "%$") && !containsFold(raw, "method") {
		return raw
	}
	return withoutParams(raw, func(part string) bool {
		key, _, _ := strings.Cut(part, "=")
		k, err := url.QueryUnescape(key)
		return err != nil || isMethodField(k) || slices.ContainsFunc(overrideParams, func(p string) bool { return strings.EqualFold(k, p) })
	})
}

// overrideParams are the query parameters besides _method (isMethodField)
// that override the method or the Content-Type.
var overrideParams = []string{"$httpMethod", "$ct", "x-http-method-override", "x-method-override"}

// containsFold reports whether s holds sub, an ASCII word, in any case.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}
