package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tillgw/till/vault"
)

// TestSDKTokenSchemeIdentifies: a client may show its token in the very
// header the route injects, so that an SDK's api_key=till_... works;
// GitHub's SDKs (Octokit, PyGithub, gh) send it as "Authorization: token
// TOKEN", a scheme GitHub accepts too. That names the client: held to its
// route's clients and its cidrs, recorded, rated and budgeted as itself.
func TestSDKTokenSchemeIdentifies(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "{}") }))
	defer up.Close()
	sum := sha256.Sum256([]byte(connectToken))
	for _, tt := range []struct{ clients string }{
		{"[web]"},
		{"any"},
	} {
		gw, buf := newTestGateway(t, `version: 1
clients:
  - name: web
    token_sha256: `+hex.EncodeToString(sum[:])+`
    cidrs: [127.0.0.0/8]
routes:
  - name: github
    preset: github
    upstream: {{UP}}
    clients: `+tt.clients+`
`, up.URL, map[string]vault.Secret{"github": vault.NewSecret("github", "ghp_unitTestKey0123456789abcdefABCDEF01", time.Now())})
		r := httptest.NewRequest("GET", "/github/user", nil)
		r.RemoteAddr = "10.1.2.3:5000" // outside web's cidrs
		r.Header.Set("Authorization", "token "+connectToken)
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, r)
		recs := buf.records(t)
		switch tt.clients {
		case "[web]":
			// From outside its cidrs: 403 client_forbidden names the
			// client; 401 means its token was not seen at all.
			if w.Code != http.StatusForbidden {
				t.Errorf("clients %s: Authorization: token <web's token> from outside web's cidrs: %d %s, want 403 client_forbidden (the token names web)", tt.clients, w.Code, w.Header().Get("X-Till-Error"))
			}
		default:
			if w.Code != http.StatusForbidden || len(recs) != 1 || recs[0]["client"] != "web" {
				t.Errorf("clients %s: Authorization: token <web's token> from outside web's cidrs: %d, records %v; want 403 client_forbidden recorded for web", tt.clients, w.Code, recs)
			}
		}
	}
}
