package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// testToken is shaped like the tokens `till client add` prints.
var testToken = "till_" + strings.Repeat("Ab9", 13) + "x"

// stripRoutes compiles an OpenAI-style route (Authorization, with allow
// rules) and an Anthropic-style one (X-Api-Key, with a custom strip).
func stripRoutes(t testing.TB) (openai, anthropic *route) {
	t.Helper()
	cfg, err := config.Parse("till.yaml", []byte(`version: 1
routes:
  - {name: openai, preset: openai, upstream: "https://api.example.com", secret: k, allow: {methods: [GET, POST]}}
  - {name: anthropic, preset: anthropic, upstream: "https://api.example.com", secret: k, strip: [X-Org-Key]}
`), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := NewSnapshot(cfg, map[string]vault.Secret{"k": vault.NewSecret("k", testKey, time.Now())})
	return s.routes[0], s.routes[1]
}

// sendHeaders returns the headers and query outbound sends upstream for a
// request with the header lines raw, as net/http's server stores them
// (names canonicalized where Go would, others kept as sent). It checks
// that ReverseProxy's rewrite, which carries protocol upgrades, sends the
// same.
func sendHeaders(t *testing.T, rt *route, raw [][2]string, query string) (http.Header, string) {
	t.Helper()
	in := httptest.NewRequest("POST", "/x/v1/chat/completions?"+query, nil)
	for _, kv := range raw {
		in.Header[kv[0]] = append(in.Header[kv[0]], kv[1])
	}
	x := &exchange{route: rt, inj: rt.injection, outPath: "/v1/chat/completions", live: &live{Snapshot: &Snapshot{}}}
	out := x.outbound(in, in.Context())
	in = in.WithContext(context.WithValue(in.Context(), exchangeKey{}, x))
	pr := &httputil.ProxyRequest{In: in, Out: in.Clone(in.Context())}
	rewrite(pr)
	for name := range out.Header {
		if _, ok := pr.Out.Header[name]; !ok && name != "User-Agent" {
			t.Errorf("outbound sends %s, rewrite does not", name)
		}
	}
	for name := range pr.Out.Header {
		if _, ok := out.Header[name]; !ok {
			t.Errorf("rewrite sends %s, outbound does not", name)
		}
	}
	if pr.Out.URL.RawQuery != out.URL.RawQuery {
		t.Errorf("rewrite sends the query %q, outbound %q", pr.Out.URL.RawQuery, out.URL.RawQuery)
	}
	return out.Header, out.URL.RawQuery
}

// TestOutboundDropsOverrides: an allowed POST must not act upstream as
// another method or on another URL (issue 12, point 4).
func TestOutboundDropsOverrides(t *testing.T) {
	openai, _ := stripRoutes(t)
	h, _ := sendHeaders(t, openai, [][2]string{
		{"X-Http-Method-Override", "DELETE"},
		{"X-Http-Method", "DELETE"},
		{"X-Method-Override", "DELETE"},
		{"X-Original-Url", "/v1/files/x"},
		{"X-Rewrite-Url", "/v1/files/x"},
		{"X_http_method_override", "DELETE"},
		{"x-http-method-override", "PUT"}, // HTTP/2 or a hand-built header
		{"Content-Type", "application/json"},
	}, "")
	for name := range h {
		switch strings.ReplaceAll(strings.ToLower(name), "_", "-") {
		case "x-http-method-override", "x-http-method", "x-method-override", "x-original-url", "x-rewrite-url":
			t.Errorf("%s was sent upstream", name)
		}
	}
	if h.Get("Content-Type") != "application/json" {
		t.Error("an unrelated header was removed")
	}
}

// TestOutboundDropsCredentialAliases: only the injected key goes
// upstream, under no other spelling of its header (issue 12, point 5).
func TestOutboundDropsCredentialAliases(t *testing.T) {
	openai, anthropic := stripRoutes(t)
	tillAliases := [][2]string{
		{"Authorization", "Bearer attacker"},
		{"authorization", "Bearer attacker"},
		{"Proxy_authorization", "Basic attacker"},
		{"proxy_Authorization", "Basic attacker"},
		{"X_till_token", "attacker"},
	}
	for _, tt := range []struct {
		rt      *route
		header  string
		aliases [][2]string
	}{
		{anthropic, "X-Api-Key", [][2]string{
			{"X_api_key", "attacker"}, // how net/http stores X_Api_Key
			{"x_api_key", "attacker"},
			{"X_API_KEY", "attacker"},
			{"X-Api_Key", "attacker"},
			{"X_org_key", "attacker"}, // the route's strip list
			{"X-Org-Key", "attacker"},
		}},
		{openai, "Authorization", nil},
	} {
		h, _ := sendHeaders(t, tt.rt, append(append([][2]string{{"X-Api-Keys", "kept"}}, tillAliases...), tt.aliases...), "")
		for name, values := range h {
			for _, v := range values {
				if strings.Contains(v, "attacker") {
					t.Errorf("route %s: %s: %q was sent upstream", tt.rt.name, name, v)
				}
			}
		}
		if got := h[tt.header]; len(got) != 1 || !strings.Contains(got[0], testKey) {
			t.Errorf("route %s: %s: got %q, want the key once", tt.rt.name, tt.header, got)
		}
		if h.Get("X-Api-Keys") != "kept" {
			t.Errorf("route %s: a header that is no alias was removed", tt.rt.name)
		}
	}
}

func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// carriesTestToken reports whether v holds testToken as is, percent-encoded
// or in Basic credentials.
func carriesTestToken(v string) bool {
	if d, err := url.PathUnescape(v); err == nil && strings.Contains(d, testToken[5:]) {
		return true
	}
	_, enc, _ := strings.Cut(v, "Basic ")
	d, _ := base64.StdEncoding.DecodeString(enc)
	return strings.Contains(v, testToken[5:]) || strings.Contains(string(d), testToken[5:])
}

// TestOutboundDropsClientTokens: no header or query parameter holding a
// till token goes upstream on a route (issue 12, point 6).
func TestOutboundDropsClientTokens(t *testing.T) {
	_, anthropic := stripRoutes(t)
	h, q := sendHeaders(t, anthropic, [][2]string{
		{"Authorization", "Token " + testToken},
		{"Cookie", "session=1; till=" + testToken},
		{"X-Auth", "token=" + testToken},
		{"X-Basic", basicAuth("web", testToken)},
		{"X-Basic-User", basicAuth(testToken, "")},
		{"X-Escaped", "till%5F" + testToken[5:]},
		{"X-Trace", "still_running, till_requests_total"},
	}, "api_key="+testToken+"&q=1;x=%74ill_"+testToken[5:]+"&y=till%5F"+testToken[5:]+"&z=still_running&m=till_requests_total&"+
		url.QueryEscape("k="+testToken)+"=1")
	for name, values := range h {
		for _, v := range values {
			if carriesTestToken(v) {
				t.Errorf("%s: %q was sent upstream", name, v)
			}
		}
	}
	if h.Get("X-Trace") == "" {
		t.Error("a header without a token was removed")
	}
	if want := "q=1&z=still_running&m=till_requests_total"; q != want {
		t.Errorf("query: got %q, want %q", q, want)
	}
}

// TestOutboundDropsQueryCredentials: the query parameters a route's
// strip_query names (the gemini preset's key, which Google's SDKs can send
// in the URL) never go upstream, in any spelling that decodes to the name
// or behind a ";"; other parameters stay, as does one whose name differs
// in case.
func TestOutboundDropsQueryCredentials(t *testing.T) {
	cfg, err := config.Parse("till.yaml", []byte(`version: 1
routes:
  - {name: gemini, preset: gemini, upstream: "https://api.example.com", secret: k}
  - {name: own, prefix: /own, upstream: "https://api.example.com", secret: k, inject: {header: X-Key}, strip_query: [sig, key]}
`), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := NewSnapshot(cfg, map[string]vault.Secret{"k": vault.NewSecret("k", testKey, time.Now())})
	for _, tt := range []struct {
		rt          *route
		query, want string
	}{
		{s.routes[0], "key=AIzaAppKey&alt=sse", "alt=sse"},
		{s.routes[0], "alt=sse;key=AIzaAppKey&k%65y=AIzaAppKey&key&KEY=kept", "alt=sse&KEY=kept"},
		{s.routes[1], "sig=app&key=app&keys=kept", "keys=kept"},
	} {
		_, q := sendHeaders(t, tt.rt, nil, tt.query)
		if q != tt.want {
			t.Errorf("route %s, query %q: sent %q, want %q", tt.rt.name, tt.query, q, tt.want)
		}
	}
}

// TestRelayDropsClientTokens: a request relayed to a host without a route
// carries no till token either, in a header or the query.
func TestRelayDropsClientTokens(t *testing.T) {
	var got *http.Request
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Clone(r.Context()) }))
	defer up.Close()
	gw, _ := newTestGateway(t, "version: 1\nforward: {enabled: true, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\nroutes: []\n", "", nil)
	in := httptest.NewRequest("GET", up.URL+"/p?api_key="+testToken+"&q=1", nil)
	in.URL.User = url.UserPassword("web", testToken) // never sent, as a client's Basic
	in.Header.Set("Authorization", "Token "+testToken)
	in.Header.Set("Cookie", "till="+testToken)
	in.Header.Set("X-Auth", "token="+testToken)
	in.Header.Set("X-Trace", "still_running")
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, in)
	if w.Code != 200 || got == nil {
		t.Fatalf("got %d, want 200 from the host", w.Code)
	}
	for name, values := range got.Header {
		for _, v := range values {
			if carriesTestToken(v) {
				t.Errorf("%s: %q reached the host", name, v)
			}
		}
	}
	if got.URL.RawQuery != "q=1" || got.Header.Get("X-Trace") != "still_running" {
		t.Errorf("got query %q, X-Trace %q: more than the tokens went", got.URL.RawQuery, got.Header.Get("X-Trace"))
	}
}

// TestRelayDropsAnyTillTokenInAuthorization: a relayed request whose
// Authorization holds its client's till token, of any shape (a digest in
// the config may be of a token made by hand, shorter than till's), never
// sends it to the host without a route; an Authorization that holds no
// till token (the app's own credential for that host) goes as sent. The
// record names the client the token is of, as a refusal's would.
func TestRelayDropsAnyTillTokenInAuthorization(t *testing.T) {
	const short = "till_made-by-hand"
	seen := make(chan string, 2)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen <- r.Header.Get("Authorization") }))
	defer up.Close()
	sum := sha256.Sum256([]byte(short))
	gw, records := newTestGateway(t, "version: 1\nforward: {enabled: true, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\n"+
		"clients:\n  - {name: web, token_sha256: "+hex.EncodeToString(sum[:])+"}\nroutes: []\n", "", nil)
	for _, tt := range []struct{ sent, want, client string }{
		{"Bearer " + short, "", "web"},
		{"Basic " + base64.StdEncoding.EncodeToString([]byte("web:"+short)), "", "web"},
		{"Bearer sk-for-that-host", "Bearer sk-for-that-host", "anonymous"},
	} {
		in := httptest.NewRequest("GET", up.URL+"/p", nil)
		in.Header.Set("Authorization", tt.sent)
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, in)
		if w.Code != 200 {
			t.Fatalf("%q: got %d, want 200 from the host", tt.sent, w.Code)
		}
		if got := <-seen; got != tt.want {
			t.Errorf("%q: the host got Authorization %q, want %q", tt.sent, got, tt.want)
		}
		recs := records.records(t)
		if got := recs[len(recs)-1]["client"]; got != tt.client {
			t.Errorf("%q: recorded client %q, want %q", tt.sent, got, tt.client)
		}
	}
}

// TestRelayDropsAHandMadeTokenInAnyHeader: a client's token made by hand
// (shorter than till's, so no shape gives it away) that an SDK sends as
// its API key in the header its provider takes (X-Api-Key, which a route
// of the anthropic preset reads as the client's) never reaches a host
// without a route, under any header name; a value that merely starts as
// a token does but is no client's goes as sent.
func TestRelayDropsAHandMadeTokenInAnyHeader(t *testing.T) {
	const short = "till_made-by-hand"
	seen := make(chan http.Header, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen <- r.Header.Clone() }))
	defer up.Close()
	sum := sha256.Sum256([]byte(short))
	gw, _ := newTestGateway(t, "version: 1\nforward: {enabled: true, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\n"+
		"clients:\n  - {name: web, token_sha256: "+hex.EncodeToString(sum[:])+"}\nroutes: []\n", "", nil)
	in := httptest.NewRequest("GET", up.URL+"/p", nil)
	in.Header.Set("X-Api-Key", short)
	in.Header.Set("Api-Key", "Bearer "+short)
	in.Header.Set("X-Goog-Api-Key", "token "+short)
	in.Header.Set("X-Auth", basicAuth(short, ""))
	in.Header.Set("X-Metric", "till_requests_total")
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, in)
	if w.Code != 200 {
		t.Fatalf("got %d, want 200 from the host", w.Code)
	}
	got := <-seen
	for name, values := range got {
		for _, v := range values {
			if strings.Contains(v, short) {
				t.Errorf("the host got the client's token in %s: %q", name, v)
			}
		}
	}
	if v := got.Get("X-Auth"); v != "" {
		t.Errorf("the host got the client's token in Basic credentials: X-Auth %q", v)
	}
	if v := got.Get("X-Metric"); v != "till_requests_total" {
		t.Errorf("the host got X-Metric %q, want it as sent", v)
	}
}

// TestRelayDropsAHandMadeTokenInQueryAndCookie: a client's token made by
// hand (no shape gives it away) that an app puts in a relayed request's
// query (as is, percent-encoded, or as a bare parameter) or in a cookie
// (as is, quoted, or percent-encoded) never reaches the host without a
// route; the other parameters and cookies go as sent, a value that
// merely starts as a token or holds one among other text too.
func TestRelayDropsAHandMadeTokenInQueryAndCookie(t *testing.T) {
	const short = handMadeToken
	up, seen := seenUpstream(t)
	gw, _ := newTestGateway(t, "version: 1\nforward: {enabled: true, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\n"+
		"clients:\n  - {name: web, token_sha256: "+handMadeDigest()+"}\nroutes: []\n", "", nil)
	in := httptest.NewRequest("GET", up.URL+"/p?q=1&api_key="+short+"&k=till%5Fmade%2Dby%2Dhand;"+short+"&n=till_made-by-hand2&m=x"+short, nil)
	in.Header.Add("Cookie", "session=abc; till="+short+"; theme=dark")
	in.Header.Add("Cookie", `quoted="`+short+`"; enc=till%5Fmade-by-hand`)
	in.Header.Add("Cookie", "only="+short)
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, in)
	if w.Code != 200 {
		t.Fatalf("got %d, want 200 from the host", w.Code)
	}
	got := <-seen
	if want := "q=1&n=till_made-by-hand2&m=x" + short; got.URL.RawQuery != want {
		t.Errorf("the host got query %q, want %q", got.URL.RawQuery, want)
	}
	if c, want := got.Header["Cookie"], []string{"session=abc; theme=dark"}; strings.Join(c, "|") != strings.Join(want, "|") {
		t.Errorf("the host got Cookie %q, want %q", c, want)
	}
}

// handMadeToken is a client token made by hand: of another shape than
// till client add's, known only by its client's digest.
const handMadeToken = "till_made-by-hand"

// handMadeDigest is handMadeToken's token_sha256.
func handMadeDigest() string {
	sum := sha256.Sum256([]byte(handMadeToken))
	return hex.EncodeToString(sum[:])
}

// seenUpstream starts an upstream that answers 200 and hands over each
// request it gets on the channel returned.
func seenUpstream(t *testing.T) (*httptest.Server, chan *http.Request) {
	seen := make(chan *http.Request, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen <- r.Clone(r.Context()) }))
	t.Cleanup(up.Close)
	return up, seen
}

// TestRouteDropsAHandMadeTokenAnywhere: a client token made by hand
// (token_sha256 of a token of another shape than till client add's) that
// an app sends where till does not read it (a header a route does not
// take its key from, a query parameter, a cookie) does not reach the
// route's upstream either (invariant 2), and the app's other parameters,
// cookies and headers go as sent.
func TestRouteDropsAHandMadeTokenAnywhere(t *testing.T) {
	const made = handMadeToken
	up, seen := seenUpstream(t)
	gw, _ := newTestGateway(t, "version: 1\nclients:\n  - {name: web, token_sha256: "+handMadeDigest()+"}\n"+
		"routes:\n  - {name: openai, preset: openai, upstream: \""+up.URL+"\", clients: [web]}\n", "", secrets(time.Now()))
	in := httptest.NewRequest("GET", "/openai/v1/models?q=1&t="+made+"&e=till%5Fmade%2Dby%2Dhand&m=x"+made, nil)
	in.Header.Set("Authorization", "Bearer "+made)
	in.Header.Set("X-Session", made)
	in.Header.Set("X-Other", "kept")
	in.Header.Add("Cookie", "session=abc; till="+made+"; theme=dark")
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, in)
	if w.Code != 200 {
		t.Fatalf("got %d, want 200 from the upstream: %s", w.Code, w.Body)
	}
	got := <-seen
	if want := "q=1&m=x" + made; got.URL.RawQuery != want {
		t.Errorf("the upstream got query %q, want %q", got.URL.RawQuery, want)
	}
	if c, want := got.Header["Cookie"], []string{"session=abc; theme=dark"}; strings.Join(c, "|") != strings.Join(want, "|") {
		t.Errorf("the upstream got Cookie %q, want %q", c, want)
	}
	if v := got.Header.Get("X-Session"); v != "" {
		t.Errorf("the upstream got X-Session %q, a client's token", v)
	}
	if got.Header.Get("X-Other") != "kept" || got.Header.Get("Authorization") != "Bearer "+testKey {
		t.Errorf("the upstream got X-Other %q, Authorization %q: want the app's header and the route's key",
			got.Header.Get("X-Other"), got.Header.Get("Authorization"))
	}
}

func TestHoldsClientToken(t *testing.T) {
	run := testToken[len(TokenPrefix):]
	for _, tt := range []struct {
		v    string
		want bool
	}{
		{"", false},
		{testToken, true},
		{"Bearer " + testToken, true},
		{"token=" + testToken, true},
		{"a," + testToken, true},
		{"_" + testToken, true},
		{testToken + "Z", true},
		{"s" + testToken, false},
		{"9" + testToken, false},
		{testToken[:len(testToken)-1], false},
		{"till_requests_total", false},
		{"still_running", false},
		{"till__" + run, false},
		{"till_-" + run, false},
		{"TILL_" + run, false},
		{"tilltill_" + run, false},
		{"till_till_" + run, true},
		{"till%5F" + run, true},
		{"%74ill_" + run, true},
		{"till_%41" + run[1:], true},
		{"%2F" + testToken, true},
		{"s%74ill_" + run, false},
		{"till%zz_" + run, false},
		{"till_" + run[:20] + "%2D" + run[20:], false},
	} {
		if got := holdsClientToken(tt.v); got != tt.want {
			t.Errorf("holdsClientToken(%q): got %v, want %v", tt.v, got, tt.want)
		}
	}
	for _, tt := range []struct {
		v    string
		want bool
	}{
		{basicAuth("web", testToken), true},
		{basicAuth(testToken, "x"), true},
		{"  basic " + base64.StdEncoding.EncodeToString([]byte("u:"+testToken)), true},
		{"Basic " + base64.RawStdEncoding.EncodeToString([]byte("web:"+testToken)), true},
		{basicAuth("web", strings.Repeat("x", 300)+":"+testToken), true},
		{basicAuth("web", "still_running"), false},
		{"Basic !!!", false},
		{"Bearer " + base64.StdEncoding.EncodeToString([]byte(testToken)), false},
	} {
		if got := basicHoldsClientToken(tt.v); got != tt.want {
			t.Errorf("basicHoldsClientToken(%q): got %v, want %v", tt.v, got, tt.want)
		}
	}
}

// TestStripAllocatesNothingWithoutTokens keeps the check off the
// allocation profile of every request.
func TestStripAllocatesNothingWithoutTokens(t *testing.T) {
	h := http.Header{
		"Content-Type":  {"application/json"},
		"Authorization": {basicAuth("user", strings.Repeat("p", 100))},
		"Cookie":        {"a=%20b; c=d"},
		"User-Agent":    {"openai-python/1.0"},
	}
	if n := testing.AllocsPerRun(100, func() {
		stripHeaders(h, relayCredentials, overrideHeaders)
		_ = withoutClientTokens("a=%20b&c=still_running")
	}); n != 0 {
		t.Errorf("got %v allocations, want 0", n)
	}
}

// TestRelayRefusesATokenInThePath: a relayed request whose path holds a
// till client token is refused before the host is dialled (no header or
// parameter to drop it from), and its record does not hold the token.
func TestRelayRefusesATokenInThePath(t *testing.T) {
	reached := false
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached = true }))
	defer up.Close()
	gw, audit := newTestGateway(t, "version: 1\nforward: {enabled: true, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\nroutes: []\n", "", nil)
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", up.URL+"/hook/"+testToken, nil))
	if w.Code != 400 || reached {
		t.Errorf("got %d (host reached: %v), want 400 before the host", w.Code, reached)
	}
	if strings.Contains(audit.String(), testToken) || !strings.Contains(audit.String(), `"path":"(credential not shown)"`) {
		t.Errorf("the record holds the token, or not the marker: %s", audit.String())
	}
}

// TestHandMadeTokenInThePathRefused: a client token made by hand, which
// no shape gives away, as a segment of the path (as is or encoded) is
// refused like one of till's shape, on a route (in either mode) and on
// a relay, and the record does not hold it; a segment that merely starts
// with it goes.
func TestHandMadeTokenInThePathRefused(t *testing.T) {
	var reached atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) }))
	defer up.Close()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) }))
	defer other.Close()
	gw, audit := newTestGateway(t, "version: 1\nforward: {enabled: true, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\n"+
		"clients:\n  - {name: web, token_sha256: "+handMadeDigest()+"}\n"+
		"routes:\n  - {name: openai, preset: openai, upstream: \""+up.URL+"\", clients: [web]}\n", "", secrets(time.Now()))
	get := func(target string) int {
		in := httptest.NewRequest("GET", target, nil)
		in.Header.Set("X-Till-Token", handMadeToken)
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, in)
		return w.Code
	}
	for _, target := range []string{
		"/openai/v1/files/" + handMadeToken,
		"/openai/v1/files/till%5Fmade-by-hand/content",
		"/openai/v1/files/" + handMadeToken + ";v=1",
		up.URL + "/v1/files/" + handMadeToken,
		other.URL + "/hook/" + handMadeToken,
	} {
		if code := get(target); code != 400 || reached.Load() > 0 {
			t.Errorf("GET %s: got %d (upstream reached: %d), want 400 before it", target, code, reached.Load())
		}
	}
	// A Host no route has is refused, and recorded as the host asked for.
	in := httptest.NewRequest("GET", "/nowhere", nil)
	in.Host = handMadeToken
	gw.ServeHTTP(httptest.NewRecorder(), in)
	if strings.Contains(audit.String(), "made-by-hand") {
		t.Errorf("a record holds the token: %s", audit.String())
	}
	if code := get("/openai/v1/files/" + handMadeToken + "2"); code != 200 || reached.Load() != 1 {
		t.Errorf("a segment that starts as the token: got %d, want 200 from the upstream", code)
	}
}

// TestTokenAfterATabNeverLeaves: a client's token made by hand (no shape
// gives it away) after its scheme and a tab, or spaces and tabs, rather
// than one space (Authorization: Bearer<TAB>till_...: not RFC 9110's
// 1*SP, but a server that splits on whitespace, as Django REST
// framework's does, reads the token there) was not read as a token:
// it reached a host without a route in Authorization, and a route's
// upstream in a header the route does not take its key from. It is read
// as its client's, and stays with till.
func TestTokenAfterATabNeverLeaves(t *testing.T) {
	const made = handMadeToken
	values := []string{
		"Bearer\t" + made,
		"bearer \t " + made,
		"token\t\t" + made,
		"Basic\t" + base64.StdEncoding.EncodeToString([]byte("web:"+made)),
	}
	t.Run("relay", func(t *testing.T) {
		up, seen := seenUpstream(t)
		gw, records := newTestGateway(t, "version: 1\nforward: {enabled: true, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\n"+
			"clients:\n  - {name: web, token_sha256: "+handMadeDigest()+"}\nroutes: []\n", "", nil)
		for _, v := range values {
			in := httptest.NewRequest("GET", up.URL+"/p", nil)
			in.Header.Set("Authorization", v)
			// A token of till's shape, of no client here, known by it.
			in.Header.Set("X-Auth", "Basic\t"+base64.StdEncoding.EncodeToString([]byte("web:"+testToken)))
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, in)
			if w.Code != 200 {
				t.Fatalf("%q: got %d, want 200 from the host", v, w.Code)
			}
			got := (<-seen).Header
			if a := got.Get("Authorization"); a != "" {
				t.Errorf("%q: the host without a route got Authorization %q", v, a)
			}
			if a := got.Get("X-Auth"); a != "" {
				t.Errorf("the host without a route got X-Auth %q, Basic credentials that hold a till token", a)
			}
			recs := records.records(t)
			if got := recs[len(recs)-1]["client"]; got != "web" {
				t.Errorf("%q: recorded client %q, want web", v, got)
			}
		}
	})
	t.Run("route", func(t *testing.T) {
		up, seen := seenUpstream(t)
		gw, _ := newTestGateway(t, "version: 1\nclients:\n  - {name: web, token_sha256: "+handMadeDigest()+"}\n"+
			"routes:\n  - {name: openai, preset: openai, upstream: \""+up.URL+"\", clients: [web]}\n", "", secrets(time.Now()))
		for _, v := range values {
			in := httptest.NewRequest("GET", "/openai/v1/models", nil)
			in.Header.Set("Authorization", v)
			in.Header.Set("X-Session", v)
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, in)
			if w.Code != 200 {
				t.Fatalf("%q: got %d, want 200 from the upstream: %s", v, w.Code, w.Body)
			}
			got := <-seen
			if s := got.Header.Get("X-Session"); s != "" {
				t.Errorf("%q: the upstream got X-Session %q, a client's token", v, s)
			}
			if a := got.Header.Get("Authorization"); a != "Bearer "+testKey {
				t.Errorf("%q: the upstream got Authorization %q, want the route's key", v, a)
			}
		}
	})
}
