package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// TestPoolPassesOverKeyItCannotMintWith: a pool of OAuth2 keys whose
// token endpoint refuses key a (its client disabled), and whose key c
// is at its rate limit (429). The request that asked with a gets 502
// credential_unavailable; while that failure is remembered, the pool's
// requests pass over a, as over a key whose source is down, both when
// they start and when c's 429 sends them on to the next key, rather than
// fail each time a's turn comes.
func TestPoolPassesOverKeyItCannotMintWith(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			if id, _, _ := r.BasicAuth(); id == "a" {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, `{"error":"invalid_client"}`)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			id, _, _ := r.BasicAuth()
			io.WriteString(w, `{"access_token":"tok-`+id+`-0123456789abcdef","token_type":"Bearer","expires_in":3600}`)
			return
		}
		if r.Header.Get("Authorization") == "Bearer tok-c-0123456789abcdef" {
			w.WriteHeader(http.StatusTooManyRequests) // c: at its rate limit
			return
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: api, upstream: "+srv.URL+", secret: [a, b, c], pool: {cooldown: 1m}, inject: {oauth2: {token_url: "+srv.URL+"/token, auth_style: header}}}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gw := New(NewSnapshot(cfg, map[string]vault.Secret{"a": oauthSecret("a", time.Now()), "b": oauthSecret("b", time.Now()), "c": oauthSecret("c", time.Now())}),
		Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
	var codes []int
	for range 9 {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
		codes = append(codes, w.Code)
	}
	failed := 0
	for _, c := range codes {
		if c != http.StatusOK {
			failed++
		}
	}
	if failed > 1 {
		t.Errorf("statuses %v: want key a's first failure only, the rest served with key b", codes)
	}
}

// TestMintAsksWithTheVerdictsPoolKey: on a pool whose keys take turns,
// till test --mint asks the token endpoint with the key its verdict
// names, not with the key whose turn comes after the verdict's: a live
// request takes its turn between the two.
func TestMintAsksWithTheVerdictsPoolKey(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _, _ := r.BasicAuth()
		mu.Lock()
		asked = append(asked, id)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"tok-`+id+`-0123456789abcdef","token_type":"Bearer","expires_in":3600}`)
	}))
	defer endpoint.Close()
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: api, upstream: https://api.example.com, secret: [a, b, c], inject: {oauth2: {token_url: "+endpoint.URL+"/token, auth_style: header}}}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	snap := NewSnapshot(cfg, map[string]vault.Secret{"a": oauthSecret("a", time.Now()), "b": oauthSecret("b", time.Now()), "c": oauthSecret("c", time.Now())})
	for range 3 {
		v := snap.Explain("GET", "/api/v1/x", "", "127.0.0.1:1234", "", time.Now())
		if !v.Allowed {
			t.Fatalf("verdict %+v, want allowed", v)
		}
		p := snap.routes[0].pool
		p.pick(&p.next, "", nil, time.Now()) // a request takes the verdict's key's turn
		m, err := snap.Mint(context.Background(), testAudit(&lockedBuffer{}), v)
		if err != nil || !m.Asked {
			t.Fatalf("mint: %+v, %v", m, err)
		}
		mu.Lock()
		last := asked[len(asked)-1]
		mu.Unlock()
		if last != v.Secret {
			t.Errorf("the verdict names key %q; the token endpoint was asked with %q", v.Secret, last)
		}
	}
}

// TestMintOnAStaticKeyRoute: till test --mint on a route that sends its
// key as it is asks nothing and leaves the request allowed, saying so,
// rather than refusing it as if a token endpoint had.
func TestMintOnAStaticKeyRoute(t *testing.T) {
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: api, upstream: https://api.example.com, secret: k, inject: {header: Authorization, format: \"Bearer {secret}\"}}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	snap := NewSnapshot(cfg, map[string]vault.Secret{"k": vault.NewSecret("k", "sk-static-0123456789abcdef", time.Now())})
	v := snap.Explain("GET", "/api/v1/x", "", "127.0.0.1:1234", "", time.Now())
	buf := &lockedBuffer{}
	m, err := snap.Mint(context.Background(), testAudit(buf), v)
	v.ApplyMint(m, err)
	if !v.Allowed || v.Code != "" || !strings.Contains(v.Warning, "no token endpoint") {
		t.Errorf("verdict %+v: want allowed, with a warning that the route has no token endpoint", v)
	}
	if m.Asked || buf.String() != "" {
		t.Errorf("asked %v, trail %q: want nothing asked or written", m.Asked, buf.String())
	}
}
