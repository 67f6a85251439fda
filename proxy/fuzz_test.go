package proxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
	"golang.org/x/oauth2"
)

// The seed corpora of these targets are in testdata/fuzz/<FuzzName>/.

// fuzzRoutesYAML has prefixes that nest, upstreams that share a host
// (spelled with different cases, a default port and a trailing dot) with
// paths of different depths, an IPv6 literal and a plaintext loopback.
const fuzzRoutesYAML = `version: 1
routes:
  - name: openai
    preset: openai
  - name: nested
    prefix: /openai/special
    upstream: https://api.openai.com/special
    secret: k
    preset: openai
  - name: a
    prefix: /a
    upstream: https://api.example.com
    secret: k
    preset: openai
  - name: deep
    prefix: /a/b.c/d-e
    upstream: https://API.example.com:443/v2
    secret: k
    preset: openai
  - name: same-upstream
    prefix: /a/b.c/d-e/f
    upstream: https://api.example.com/v2
    secret: k
    preset: openai
  - name: port
    prefix: /p~x
    upstream: https://api.example.com:8443/base/deep
    secret: k
    preset: openai
  - name: dot
    prefix: /dot
    upstream: https://api.example.com./v2/x
    secret: k
    preset: openai
  - name: v6
    prefix: /v6
    upstream: https://[2001:DB8::1]
    secret: k
    preset: openai
  - name: v6port
    prefix: /v6/port
    upstream: https://[2001:db8::2]:8443/p
    secret: k
    preset: openai
  - name: local
    prefix: /local
    upstream: http://127.0.0.1:9000/api
    secret: k
    preset: openai
`

func fuzzSnapshot(f *testing.F, yaml string) *Snapshot {
	f.Helper()
	cfg, err := config.Parse("till.yaml", []byte(yaml), f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	now := time.Now()
	return NewSnapshot(cfg, map[string]vault.Secret{
		"openai": vault.NewSecret("openai", testKey, now),
		"k":      vault.NewSecret("k", testKey, now),
	})
}

// segmentPrefix reports whether prefix is p or a whole-segment ancestor of p.
func segmentPrefix(prefix, p string) bool {
	return strings.HasPrefix(p, prefix) && (len(p) == len(prefix) || p[len(prefix)] == '/')
}

func routeName(r *route) string {
	if r == nil {
		return "<none>"
	}
	return r.name
}

func FuzzMatch(f *testing.F) {
	s := fuzzSnapshot(f, fuzzRoutesYAML)
	f.Fuzz(func(t *testing.T, p string) {
		r, rest := s.match(p)
		// The reference: the longest prefix among all routes that is p or
		// a whole-segment ancestor of it.
		var want *route
		for _, c := range s.routes {
			if segmentPrefix(c.prefix, p) && (want == nil || len(c.prefix) > len(want.prefix)) {
				want = c
			}
		}
		if r != want {
			t.Fatalf("match(%q): got route %s, want %s", p, routeName(r), routeName(want))
		}
		if r == nil {
			if rest != "" {
				t.Fatalf("match(%q): no route but rest %q", p, rest)
			}
			return
		}
		if !segmentPrefix(r.prefix, p) {
			t.Fatalf("match(%q): prefix %q is not a whole-segment prefix", p, r.prefix)
		}
		if rest != p[len(r.prefix):] {
			t.Fatalf("match(%q): got rest %q, want %q", p, rest, p[len(r.prefix):])
		}
		if rest != "" && rest[0] != '/' {
			t.Fatalf("match(%q): rest %q does not start a segment", p, rest)
		}
	})
}

func FuzzMatchHost(f *testing.F) {
	s := fuzzSnapshot(f, fuzzRoutesYAML)
	f.Fuzz(func(t *testing.T, authority string, plain bool, p string) {
		scheme := "https"
		if plain {
			scheme = "http"
		}
		key := hostKey(scheme, authority)
		r := s.matchHost(key, p)
		// The reference: among the routes whose upstream is at key, the
		// first (in config order) with the longest upstream path that is
		// p or a whole-segment ancestor of it.
		var want *route
		for _, c := range s.routes {
			up := c.upstream.Path
			if hostKey(c.upstream.Scheme, c.upstream.Host) == key && (up == "" || segmentPrefix(up, p)) &&
				(want == nil || len(up) > len(want.upstream.Path)) {
				want = c
			}
		}
		if r != want {
			t.Fatalf("matchHost(%q, %q): got route %s, want %s", key, p, routeName(r), routeName(want))
		}
		if r == nil {
			return
		}
		if got := hostKey(r.upstream.Scheme, r.upstream.Host); got != key {
			t.Fatalf("matchHost(%q, %q): route %s is at %q", key, p, r.name, got)
		}
		if up := r.upstream.Path; up != "" && !segmentPrefix(up, p) {
			t.Fatalf("matchHost(%q, %q): upstream path %q is not a whole-segment prefix", key, p, up)
		}
	})
}

// FuzzHostKey checks that hostKey names one authority by one key: with or
// without the scheme's default port (or an empty one), in any case, with or without a
// trailing dot or leading zeros on its port.
func FuzzHostKey(f *testing.F) {
	f.Fuzz(func(t *testing.T, authority string, plain bool) {
		scheme, port := "https", "443"
		if plain {
			scheme, port = "http", "80"
		}
		key := hostKey(scheme, authority)
		if key != strings.ToLower(key) {
			t.Fatalf("hostKey(%q, %q) = %q: not lower case", scheme, authority, key)
		}
		if !strings.Contains(key, ":") {
			t.Fatalf("hostKey(%q, %q) = %q: no port", scheme, authority, key)
		}
		if up := hostKey(scheme, strings.ToUpper(authority)); up != key && isASCII(authority) {
			t.Fatalf("hostKey(%q, %q) = %q, but %q for its upper case", scheme, authority, key, up)
		}
		if host, p, err := net.SplitHostPort(authority); err == nil && isPort(p) {
			// A port with leading zeros is the same port.
			if k := hostKey(scheme, net.JoinHostPort(host, "0"+p)); k != key {
				t.Fatalf("hostKey(%q, %q) = %q, but %q with a leading zero on its port", scheme, authority, key, k)
			}
		}
		if _, _, err := net.SplitHostPort(authority); err != nil {
			// No port: it is the authority with the default port, when that
			// parses as a host and a port.
			// So is it with an empty port ("host:").
			for _, withPort := range []string{authority + ":" + port, authority + ":"} {
				if _, _, err := net.SplitHostPort(withPort); err == nil {
					if k := hostKey(scheme, withPort); k != key {
						t.Fatalf("hostKey(%q, %q) = %q, but hostKey(%q, %q) = %q", scheme, authority, key, scheme, withPort, k)
					}
				}
			}
		}
	})
}

// isPort reports whether p is a port number.
func isPort(p string) bool {
	_, err := strconv.ParseUint(p, 10, 16)
	return err == nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// fuzzGateway is a forward-mode gateway with one route, to
// https://api.example.com, no CA (so no interception), and a transport
// that records what it was asked to dial and dials nothing.
type fuzzGateway struct {
	gw    *Gateway
	audit *lockedBuffer

	mu    sync.Mutex
	dials []string
}

func newFuzzGateway(f *testing.F) *fuzzGateway {
	f.Helper()
	const yaml = `version: 1
forward: {enabled: true, unknown_hosts: deny}
routes:
  - name: example
    upstream: https://api.example.com
    secret: example
    preset: openai
`
	cfg, err := config.Parse("till.yaml", []byte(yaml), f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	fg := &fuzzGateway{audit: &lockedBuffer{}}
	tr := &http.Transport{
		DialContext: func(_ context.Context, network, addr string) (net.Conn, error) {
			fg.mu.Lock()
			fg.dials = append(fg.dials, addr)
			fg.mu.Unlock()
			return nil, errors.New("fuzz: dialling is not allowed")
		},
		DisableKeepAlives: true,
	}
	snap := NewSnapshot(cfg, map[string]vault.Secret{"example": vault.NewSecret("example", testKey, time.Now())})
	fg.gw = New(snap, Options{Audit: testAudit(fg.audit), Log: zerolog.Nop(), Transport: tr})
	return fg
}

// serve runs one request and returns its status, the addresses dialled
// and its audit record, which must be exactly one JSON line.
func (fg *fuzzGateway) serve(t *testing.T, r *http.Request) (int, []string, map[string]any) {
	t.Helper()
	fg.mu.Lock()
	fg.dials = nil
	fg.mu.Unlock()
	fg.audit.mu.Lock()
	fg.audit.b.Reset()
	fg.audit.mu.Unlock()

	w := httptest.NewRecorder()
	fg.gw.ServeHTTP(w, r)

	fg.mu.Lock()
	dials := fg.dials
	fg.mu.Unlock()
	fg.audit.mu.Lock()
	out := fg.audit.b.String()
	fg.audit.mu.Unlock()
	var rec map[string]any
	uses := 0
	for line := range strings.Lines(out) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		switch {
		case m["event"] == "use" && rec == nil:
			uses++
		case m["event"] == "request" && rec == nil:
			rec = m
		default:
			t.Fatalf("want use records, then one request record, got %q", out)
		}
	}
	if rec == nil || (uses > 0) != (len(dials) > 0) {
		t.Fatalf("%d dials, and %d use records before one request record: %q", len(dials), uses, out)
	}
	return w.Code, dials, rec
}

// readRequest parses raw as the server would, or returns nil when the
// server would refuse it before till sees it.
func readRequest(raw string) *http.Request {
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		return nil
	}
	r.RemoteAddr = "192.0.2.10:40000"
	return r
}

func FuzzConnectTarget(f *testing.F) {
	fg := newFuzzGateway(f)
	check := func(t *testing.T, target string, r *http.Request) {
		t.Helper()
		status, dials, _ := fg.serve(t, r)
		switch status {
		case 400, 403, 404, 407:
		default:
			t.Fatalf("CONNECT %q: got status %d, want 400, 403, 404 or 407", target, status)
		}
		if len(dials) > 0 {
			t.Fatalf("CONNECT %q: dialled %q", target, dials)
		}
	}
	f.Fuzz(func(t *testing.T, target string) {
		// The target as the handler could see it, whatever net/http
		// lets through.
		r := httptest.NewRequest(http.MethodConnect, "/", nil)
		r.URL.Path, r.RequestURI = "", target
		r.URL.Host, r.Host = target, target
		r.RemoteAddr = "192.0.2.10:40000"
		check(t, target, r)
		// And as net/http parses it from the wire.
		if r := readRequest("CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\n"); r != nil {
			check(t, target, r)
		}
	})
}

func FuzzAbsoluteTarget(f *testing.F) {
	fg := newFuzzGateway(f)
	f.Fuzz(func(t *testing.T, host string) {
		r := readRequest("GET http://" + host + "/x HTTP/1.1\r\nHost: till.internal\r\n\r\n")
		if r == nil || !r.URL.IsAbs() {
			return // net/http answers 400 itself
		}
		target := r.URL.Host
		status, dials, rec := fg.serve(t, r)
		for _, d := range dials {
			if d != "api.example.com:443" {
				t.Fatalf("GET http://%s/x: dialled %q", host, d)
			}
		}
		name := strings.ToLower(strings.TrimSuffix(r.URL.Hostname(), "."))
		// A port is a number: 0443 is 443, which is where it is dialled.
		port, _ := strconv.Atoi(r.URL.Port())
		ours := name == "api.example.com" && (r.URL.Port() == "" || port == 443)
		matched := rec[fieldRoute] != ""
		if matched && !ours {
			t.Fatalf("GET http://%s/x (host %q): matched route %v", host, target, rec[fieldRoute])
		}
		if matched != (len(dials) > 0) {
			t.Fatalf("GET http://%s/x (host %q): route %q but dialled %q", host, target, rec[fieldRoute], dials)
		}
		// (An empty port, "api.example.com:", is left out: hostKey keeps it
		// empty rather than the default, and so refuses it, which is safe.)
		if ours && r.URL.Port() == "" && !strings.HasSuffix(target, ":") && r.URL.Path == "/x" && !matched {
			t.Fatalf("GET http://%s/x (host %q): the route's host did not match (status %d)", host, target, status)
		}
		switch {
		case matched && status == http.StatusBadGateway:
		case !matched && (status == 400 || status == 403 || status == 404 || status == 407):
		default:
			t.Fatalf("GET http://%s/x (host %q): got status %d (matched %v)", host, target, status, matched)
		}
	})
}

// fuzzTokens are the tokens of fuzzClients, by client name.
var fuzzTokens = map[string]string{
	"web":   "till_" + strings.Repeat("w", 43),
	"batch": "till_Qk9vbXM6cGFzcw",
	"cert":  "till_cert-client_token",
}

func fuzzClients() clientSet {
	var cs []config.Client
	for _, name := range []string{"web", "batch", "cert"} {
		d := sha256.Sum256([]byte(fuzzTokens[name]))
		cs = append(cs, config.Client{Name: name, TokenSHA256: hex.EncodeToString(d[:]), Cert: name == "cert"})
	}
	return newClientSet(cs)
}

// decodedForms returns the base64 decodings of every suffix of v that
// follows a space or a tab.
func decodedForms(v string) []string {
	var out []string
	for i := 0; i < len(v); i++ {
		if v[i] != ' ' && v[i] != '\t' {
			continue
		}
		if b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v[i+1:])); err == nil {
			out = append(out, string(b))
		}
	}
	return out
}

func FuzzTokenFrom(f *testing.F) {
	f.Fuzz(func(t *testing.T, v string) {
		if len(v) > 4096 {
			return
		}
		tok := tokenFrom(v)
		if tok == "" {
			return
		}
		if !strings.HasPrefix(tok, TokenPrefix) {
			t.Fatalf("tokenFrom(%q) = %q: no %q prefix", v, tok, TokenPrefix)
		}
		if strings.Contains(v, tok) {
			return
		}
		for _, d := range decodedForms(v) {
			if strings.Contains(d, tok) {
				return
			}
		}
		t.Fatalf("tokenFrom(%q) = %q: neither in the value nor in its base64", v, tok)
	})
}

func FuzzIdentify(f *testing.F) {
	cs := fuzzClients()
	known := make(map[string]string, len(fuzzTokens))
	for name, tok := range fuzzTokens {
		known[tok] = name
	}
	f.Fuzz(func(t *testing.T, connectAuth, proxyAuth, tillToken, routeValues, certName, certBinding string) {
		r := httptest.NewRequest(http.MethodGet, "/openai/v1/models", nil)
		r.Header["Proxy-Authorization"] = []string{proxyAuth}
		r.Header["X-Till-Token"] = []string{tillToken}
		values := strings.Split(routeValues, "\n")
		r.Header["Authorization"] = values
		id := cs.identify(r, connectAuth, certID{name: certName, binding: certBinding}, []string{"Authorization"})

		// What the credentials say, in the order identify reads them.
		var candidates []string
		for _, v := range append([]string{connectAuth, proxyAuth, tillToken}, values...) {
			if v != "" {
				if tok := tokenFrom(v); tok != "" {
					candidates = append(candidates, tok)
				}
			}
		}
		firstKnown := ""
		for _, tok := range candidates {
			if name, ok := known[tok]; ok {
				firstKnown = name
				break
			}
		}

		if certName != "" {
			c := cs.byName(certName)
			valid := c != nil && c.cert && certBinding == hex.EncodeToString(c.digest[:8])
			if id.client == nil {
				if !id.presented {
					t.Fatal("a certificate was presented but identity says none was")
				}
				if valid || firstKnown != "" {
					t.Fatalf("client %q's valid certificate, or the known token of %q, was not identified", certName, firstKnown)
				}
				return
			}
			if !valid {
				// A certificate that counts for no client is no credential:
				// the first known token names the client.
				if id.viaCert || id.conflict || id.client.name != firstKnown {
					t.Fatalf("certificate %q that counts for no client: identified %q (via cert %v, conflict %v), want the token's %q", certName, id.client.name, id.viaCert, id.conflict, firstKnown)
				}
				return
			}
			if !id.viaCert && !id.conflict {
				t.Fatalf("client %q identified by a token while a certificate for %q was presented", id.client.name, certName)
			}
			want := hex.EncodeToString(id.client.digest[:8])
			if id.client.name != certName || !id.client.cert || certBinding != want {
				t.Fatalf("certificate %q (binding %q) identified client %q (cert %v, binding %q)", certName, certBinding, id.client.name, id.client.cert, want)
			}
			// A token presented must be the certificate's client's: another
			// client's, or no client's (revoked), conflicts.
			if id.conflict != (len(candidates) > 0 && firstKnown != certName) {
				t.Fatalf("conflict %v with the certificate's client %q and the token's %q", id.conflict, certName, firstKnown)
			}
			return
		}
		if id.viaCert || id.conflict {
			t.Fatalf("no certificate, but viaCert %v, conflict %v", id.viaCert, id.conflict)
		}
		if id.presented != (len(candidates) > 0) {
			t.Fatalf("presented %v, with tokens %q", id.presented, candidates)
		}
		switch {
		case id.client == nil && firstKnown != "":
			t.Fatalf("client %q's token was presented but not identified", firstKnown)
		case id.client != nil && id.client.name != firstKnown:
			t.Fatalf("identified %q; want %q (tokens %q)", id.client.name, firstKnown, candidates)
		case id.client != nil && fuzzTokens[id.client.name] != tokenFor(candidates, id.client.name, known):
			t.Fatalf("identified %q without its exact token", id.client.name)
		}
	})
}

// tokenFor returns the first candidate that is name's token.
func tokenFor(candidates []string, name string, known map[string]string) string {
	for _, tok := range candidates {
		if known[tok] == name {
			return tok
		}
	}
	return ""
}

// tokenPattern is clientTokenIn's rule as a regular expression, for the
// fuzz target.
var tokenPattern = regexp.MustCompile(`(^|[^0-9A-Za-z])till_[0-9A-Za-z]{40}`)

func FuzzClientToken(f *testing.F) {
	f.Fuzz(func(t *testing.T, v string) {
		if len(v) > 4096 {
			return
		}
		if d, err := url.PathUnescape(v); err == nil {
			if got, want := holdsClientToken(v), tokenPattern.MatchString(d); got != want {
				t.Fatalf("holdsClientToken(%q): got %v, want %v (decoded %q)", v, got, want, d)
			}
		}
		if got, want := basicHoldsClientToken(basicAuth("u", v)), clientTokenIn("u:"+v); got != want {
			t.Fatalf("Basic credentials of %q: got %v, want %v", v, got, want)
		}
		q := withoutClientTokens(v)
		if holdsClientToken(q) {
			t.Fatalf("withoutClientTokens(%q) = %q holds a token", v, q)
		}
		if !holdsClientToken(v) && q != v {
			t.Fatalf("withoutClientTokens(%q) = %q: changed a query without tokens", v, q)
		}
		for part := range queryParams(q) {
			if !strings.Contains(v, part) {
				t.Fatalf("withoutClientTokens(%q) = %q: %q is not from the query", v, q, part)
			}
		}
		h := http.Header{"X": {v}}
		stripHeaders(h)
		if _, kept := h["X"]; kept && (holdsClientToken(v) || basicHoldsClientToken(v)) {
			t.Fatalf("stripHeaders kept %q", v)
		}
	})
}

// FuzzMintScrub checks that a token endpoint's error, whatever code and
// description it gives, is logged without the client secret, or what the
// ask sent as a credential (a signed assertion), as it is or as Go, JSON
// or a query would escape it (invariant 2).
func FuzzMintScrub(f *testing.F) {
	f.Fuzz(func(t *testing.T, secret, code, desc string) {
		if len(strings.TrimSpace(secret)) < minEchoForm {
			return // a short secret is looked for only as it is
		}
		values := echoForms([]string{secret, url.QueryEscape(secret)})
		quoted, ascii := strconv.Quote(secret), strconv.QuoteToASCII(secret)
		forms := []string{secret, quoted[1 : len(quoted)-1], ascii[1 : len(ascii)-1], jsonEscaped(secret), url.QueryEscape(secret)}
		res := &http.Response{StatusCode: http.StatusUnauthorized}
		for _, err := range []error{
			&oauth2.RetrieveError{Response: res, ErrorCode: code, ErrorDescription: desc},
			fmt.Errorf("oauth2: cannot fetch token: %s %s", code, desc),
		} {
			// The route's secret, or what the ask sent.
			for _, msg := range []string{
				(&minter{base: &injection{echoForms: values}}).scrub(err, nil).Error(),
				(&minter{base: &injection{}}).scrub(err, values).Error(),
			} {
				for _, form := range forms {
					if strings.Contains(msg, form) {
						t.Fatalf("the scrubbed error %q holds the secret %q", msg, secret)
					}
				}
			}
		}
	})
}

// FuzzWithoutParams: removing query parameters keeps every other one, in
// order, and leaves a query with nothing to remove as it was, separators
// and all.
func FuzzWithoutParams(f *testing.F) {
	for _, s := range []string{"a=1;b=2&key=x", "key=x", "a=1&&b;key=2;", "pageToken=a;b", "%6Bey=1&k%65y=2&c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got := withoutParam(raw, "key")
		var want []string
		for part := range queryParams(raw) {
			if withoutParam(part, "key") == part {
				want = append(want, part)
			}
		}
		if kept := slices.Collect(queryParams(got)); !slices.Equal(kept, want) {
			t.Fatalf("withoutParam(%q) = %q: kept %q, want %q", raw, got, kept, want)
		}
		if len(want) == len(slices.Collect(queryParams(raw))) && got != raw {
			t.Fatalf("withoutParam(%q) = %q: changed a query with nothing to remove", raw, got)
		}
	})
}

// FuzzKnownTokens: a relayed query or Cookie header loses each parameter
// or cookie that holds a client's token made by hand, keeps every other
// one in order, and is left as it was when it holds none.
func FuzzKnownTokens(f *testing.F) {
	const hand = "till_made-by-hand"
	for _, s := range []string{"a=1&k=" + hand + ";b", "s=1; t=\"" + hand + "\"; u", "k=till%5Fmade%2Dby-hand", hand, "a=b"} {
		f.Add(s)
	}
	cs := clientSet{{name: "web", digest: sha256.Sum256([]byte(hand))}}
	f.Fuzz(func(t *testing.T, raw string) {
		q := withoutKnownTokens(raw, cs)
		var want []string
		for part := range queryParams(raw) {
			if k, v, _ := strings.Cut(part, "="); !isClientToken(k, cs) && !isClientToken(v, cs) {
				want = append(want, part)
			}
		}
		if kept := slices.Collect(queryParams(q)); !slices.Equal(kept, want) {
			t.Fatalf("withoutKnownTokens(%q) = %q: kept %q, want %q", raw, q, kept, want)
		}
		if len(want) == len(slices.Collect(queryParams(raw))) && q != raw {
			t.Fatalf("withoutKnownTokens(%q) = %q: changed a query without tokens", raw, q)
		}
		c := withoutTokenCookies(raw, cs)
		for cookie := range strings.SplitSeq(c, ";") {
			cookie = textproto.TrimString(cookie)
			name, value, _ := strings.Cut(cookie, "=")
			if isClientToken(textproto.TrimString(name), cs) || isClientToken(strings.Trim(textproto.TrimString(value), `"`), cs) {
				t.Fatalf("withoutTokenCookies(%q) = %q: kept a token", raw, c)
			}
			if !strings.Contains(raw, cookie) {
				t.Fatalf("withoutTokenCookies(%q) = %q: %q is not from the header", raw, c, cookie)
			}
		}
	})
}

// FuzzFormMethods: reading a form's _method fields never panics, and
// finds every one Go's own form parser finds (Rack's splits at ";" too,
// so it may find more), in a urlencoded or a multipart body.
func FuzzFormMethods(f *testing.F) {
	f.Add("title=x&_method=DELETE", "--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nPUT\r\n--b--\r\n")
	f.Add("%5Fmethod=put;a=1", "--b\r\nContent-Disposition: attachment; name=_method\r\n\r\nx\r\n--b--\r\n")
	f.Fuzz(func(t *testing.T, urlencoded, multipartBody string) {
		got, err := urlencodedMethods([]byte(urlencoded))
		if q, qerr := url.ParseQuery(urlencoded); err == nil && qerr == nil {
			if want := q["_method"]; len(want) > 0 && len(got) < len(want) {
				t.Errorf("%q: found %q, Go's parser %q", urlencoded, got, want)
			}
		}
		parts, err := multipartMethods([]byte(multipartBody), "b")
		r := multipart.NewReader(strings.NewReader(multipartBody), "b")
		form, ferr := r.ReadForm(1 << 20)
		if err == nil && ferr == nil && len(form.Value["_method"]) > len(parts) {
			t.Errorf("%q: found %q, Go's parser %q", multipartBody, parts, form.Value["_method"])
		}
	})
}

// FuzzMultipartLooseMethods: reading a multipart body as PHP and Rack
// split it never panics, returns values no longer than a method name
// (and one byte), and finds a value for every _method part Go's own
// reader finds by a plain name (Go also reads RFC 2231's name*=, which
// neither PHP nor Rack does), unless it reports the body ambiguous.
func FuzzMultipartLooseMethods(f *testing.F) {
	f.Add("--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nPUT\r\n--b--\r\n")
	f.Add("--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nhi\n--b\nContent-Disposition: form-data; name=_method\n\nDELETE\n--b--\r\n")
	f.Add("--b\r\nContent-Disposition: form-data; name=x;\n\nname=_method\r\n\r\nDELETE\r\n--b--\r\n")
	f.Add("--b\r\nContent-ID: [_method]\r\n\r\nDELETE\r\n--b--\r\n")
	f.Fuzz(func(t *testing.T, body string) {
		got, err := multipartLooseMethods([]byte(body), "b")
		for _, v := range got {
			if len(v) > maxMethodValue+1 {
				t.Fatalf("%q: a value of %d bytes", body, len(v))
			}
		}
		if err != nil {
			return
		}
		r := multipart.NewReader(strings.NewReader(body), "b")
		want := 0
		for {
			p, err := r.NextPart()
			if err != nil {
				break
			}
			if p.FormName() == "_method" && !strings.Contains(p.Header.Get("Content-Disposition"), "*") {
				want++
			}
		}
		if len(got) < want {
			t.Errorf("%q: found %q, Go's reader %d _method parts", body, got, want)
		}
	})
}

// FuzzJSONMethods: reading a JSON body's top-level _method members never
// panics, finds none in what is not JSON, and finds the value a map
// decode keeps (the last of its name, as PHP's json_decode and
// JSON.parse keep it) whenever that is a string.
func FuzzJSONMethods(f *testing.F) {
	f.Add(`{"title": "x", "_method": "DELETE"}`)
	f.Add(`{"\u005fmethod": "PUT", "_method": ["DELETE"], "a": {"_method": 1}}`)
	f.Add(`[{"_method": "DELETE"}]`)
	f.Fuzz(func(t *testing.T, body string) {
		got := jsonMethods([]byte(body))
		if len(got) > 0 && !json.Valid([]byte(body)) {
			t.Fatalf("%q: found %q, yet it is not JSON", body, got)
		}
		var m map[string]any
		if json.Unmarshal([]byte(body), &m) != nil {
			return
		}
		if v, ok := m["_method"].(string); ok && !slices.Contains(got, v) {
			t.Errorf("%q: found %q, a map decode %q", body, got, v)
		}
	})
}
