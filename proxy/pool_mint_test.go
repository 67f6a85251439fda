package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
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
