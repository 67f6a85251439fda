package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// TestNewToken checks that a new token has the shape the gateway strips
// and scrubs, and that two are never the same.
func TestNewToken(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		if len(tok) != len(TokenPrefix)+TokenLength || !strings.HasPrefix(tok, TokenPrefix) {
			t.Fatalf("got a token of %d characters, want %s and %d base62", len(tok), TokenPrefix, TokenLength)
		}
		for i := len(TokenPrefix); i < len(tok); i++ {
			if !isBase62(tok[i]) {
				t.Fatalf("got a token with %q at %d, want base62 only", tok[i], i)
			}
		}
		if !holdsClientToken("Bearer " + tok) {
			t.Fatal("the gateway does not recognise a new token")
		}
		if seen[tok] {
			t.Fatal("two tokens are the same")
		}
		seen[tok] = true
	}
}

// TestTokenAsSDKKeyOnEveryRoute: a client's token sent as its SDK's API
// key (the header the route attaches its key in, or another its strip
// list names) identifies it on every kind of route: one that mints its
// token, a pool whose first key is missing, a route whose key is missing
// (which then says so, 503, not 401), an Anthropic route, whose key goes
// in X-Api-Key while Anthropic's SDKs send theirs as Authorization, and a
// route with a header of its own to strip.
func TestTokenAsSDKKeyOnEveryRoute(t *testing.T) {
	const tok = "till_" + "SdKkEy0123456789abcdefghijABCDEFGHIJ0123"
	sum := sha256.Sum256([]byte(tok))
	clients := "clients:\n  - {name: web, token_sha256: " + hex.EncodeToString(sum[:]) + "}\n"
	te := newTokenEndpoint(t, func(http.ResponseWriter, *http.Request) {})
	for _, tt := range []struct {
		name, route, path string
		secrets           map[string]vault.Secret
		want              int
		also              string // another header the token names the client in
	}{
		{"minted", "{name: api, upstream: " + te.URL + ", secret: cred, clients: [web], inject: {oauth2: {token_url: " + te.URL + "/token}}}",
			"/api/x", map[string]vault.Secret{"cred": oauthSecret("app", time.Now())}, 200, ""},
		{"pool, first key missing", "{name: openai, preset: openai, upstream: " + te.URL + ", secret: [gone, openai], clients: [web]}",
			"/openai/v1/models", secrets(time.Now()), 200, ""},
		{"key missing", "{name: openai, preset: openai, upstream: " + te.URL + ", secret: gone, clients: [web]}",
			"/openai/v1/models", nil, 503, ""},
		{"anthropic", "{name: anthropic, preset: anthropic, upstream: " + te.URL + ", secret: openai, clients: [web]}",
			"/anthropic/v1/models", secrets(time.Now()), 200, "X-Api-Key"},
		{"strip list", "{name: api, upstream: " + te.URL + ", secret: openai, clients: [web], inject: {header: X-Key}, strip: [x-app-key]}",
			"/api/x", secrets(time.Now()), 200, "X-App-Key"},
	} {
		cfg, err := config.Parse("till.yaml", []byte("version: 1\n"+clients+"routes:\n  - "+tt.route+"\n"), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		gw := New(NewSnapshot(cfg, tt.secrets), Options{Audit: testAudit(io.Discard), Log: zerolog.Nop()})
		headers := [][2]string{{"X-Till-Token", tok}, {"Authorization", "Bearer " + tok}}
		if tt.also != "" {
			headers = append(headers, [2]string{tt.also, tok})
		}
		for _, h := range headers {
			w := httptest.NewRecorder()
			r := httptest.NewRequest("GET", tt.path, nil)
			r.Header.Set(h[0], h[1])
			gw.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Errorf("%s, token in %s: got %d %s, want %d", tt.name, h[0], w.Code, w.Header().Get("X-Till-Error"), tt.want)
			}
		}
	}
}

// TestUnauthenticatedSaysHow: a 401 carries WWW-Authenticate, as RFC 9110
// requires (a 407 carries Proxy-Authenticate instead).
func TestUnauthenticatedSaysHow(t *testing.T) {
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nclients:\n  - {name: web, token_sha256: "+strings.Repeat("ab", 32)+"}\nroutes:\n  - {name: openai, preset: openai, clients: [web]}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gw := New(NewSnapshot(cfg, secrets(time.Now())), Options{Audit: testAudit(io.Discard), Log: zerolog.Nop()})
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/openai/v1/models", nil))
	if w.Code != 401 || w.Header().Get("WWW-Authenticate") != `Bearer realm="till"` {
		t.Errorf("got %d, WWW-Authenticate %q; want 401 with a Bearer challenge", w.Code, w.Header().Get("WWW-Authenticate"))
	}
}

// TestTokenInAuthorizationNamesAProbe: a request refused before a route
// is found (no route for its path) is recorded under the client whose
// token it carries in Authorization, as its SDK sends it (Anthropic's),
// as it would be on any route: who probes paths is on record.
func TestTokenInAuthorizationNamesAProbe(t *testing.T) {
	const tok = "till_" + "PrObE00123456789abcdefghijABCDEFGHIJ0123"
	sum := sha256.Sum256([]byte(tok))
	gw, records := newTestGateway(t, "version: 1\nclients:\n  - {name: web, token_sha256: "+hex.EncodeToString(sum[:])+"}\n"+
		"routes:\n  - {name: anthropic, preset: anthropic, upstream: {{UP}}, secret: openai, clients: [web]}\n", "http://127.0.0.1:1", secrets(time.Now()))
	w := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/nosuchroute/v1/models", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	gw.ServeHTTP(w, r)
	recs := records.records(t)
	if w.Code != http.StatusNotFound || len(recs) != 1 || recs[0]["client"] != "web" {
		t.Errorf("got %d, records %v; want 404 recorded under client web", w.Code, recs)
	}
}
