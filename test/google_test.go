package test

import (
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// fakeGoogle is a token endpoint of Google's JWT flow that verifies each
// assertion with the service account's public key (iss its email, aud the
// endpoint, the scope asked for), and an API that takes its tokens.
type fakeGoogle struct {
	pub      *rsa.PublicKey
	email    string
	tokenURL string
	mu       sync.Mutex
	issued   []string
	refused  []string
}

func (f *fakeGoogle) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/token" {
		r.ParseForm()
		claims := jwt.MapClaims{}
		_, err := jwt.ParseWithClaims(r.PostForm.Get("assertion"), claims, func(*jwt.Token) (any, error) { return f.pub, nil },
			jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(f.email), jwt.WithAudience(f.tokenURL))
		if err == nil && (r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" || claims["scope"] != "https://www.googleapis.com/auth/cloud-platform") {
			err = fmt.Errorf("grant_type %q, scope %v", r.PostForm.Get("grant_type"), claims["scope"])
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if err != nil {
			f.refused = append(f.refused, err.Error())
			http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
			return
		}
		tok := fmt.Sprintf("ya29.fake%d%s", len(f.issued), strings.Repeat("G8", 16))
		f.issued = append(f.issued, tok)
		suiteLeaks.key(tok)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "expires_in": 3600, "token_type": "Bearer"})
		return
	}
	f.mu.Lock()
	ok := len(f.issued) > 0 && r.Header.Get("Authorization") == "Bearer "+f.issued[len(f.issued)-1]
	f.mu.Unlock()
	if !ok {
		http.Error(w, `{"error":{"code":401}}`, http.StatusUnauthorized)
		return
	}
	fmt.Fprint(w, `{"predictions":[]}`)
}

// TestGoogleServiceAccount drives a route that attaches a token minted
// from a service-account key (a --json secret whose private_key spans
// lines): the fake endpoint verifies the signed assertion; one token
// serves every request; the key and the tokens never leak.
func TestGoogleServiceAccount(t *testing.T) {
	priv, pemKey := newRSAKey(t)
	f := &fakeGoogle{pub: &priv.PublicKey, email: "till@project.iam.gserviceaccount.com"}
	up := newUpstream(t, f)
	f.tokenURL = up.URL + "/token"
	key, _ := json.Marshal(map[string]string{"type": "service_account", "project_id": "project", "private_key_id": "k1",
		"private_key": pemKey, "client_email": f.email, "client_id": "1", "token_uri": f.tokenURL})
	dir := t.TempDir()
	writeConfig(t, dir, "version: 1\nroutes:\n  - {name: vertex, upstream: \""+up.URL+"\", secret: sa, inject: {google: {}}}\n")
	// Only the private key is secret: the key file's other fields (its
	// email, its project) may well be logged.
	suiteLeaks.key(pemKey)
	if out, errOut, code := runTill(t, dir, string(key), nil, "secret", "set", "sa", "--json"); code != 0 {
		t.Fatalf("till secret set: exit %d: %s %s", code, out, errOut)
	}
	tl := startTillIn(t, dir, up.caFile)
	for range 5 {
		resp, body := do(t, newRequest(t, "POST", tl.url("/vertex/v1/projects/project/locations/us-central1/endpoints/e:predict"), strings.NewReader(`{}`)))
		if resp.StatusCode != 200 {
			f.mu.Lock()
			t.Fatalf("%d %s (the fake refused: %v)", resp.StatusCode, body, f.refused)
		}
	}
	f.mu.Lock()
	issued := append([]string(nil), f.issued...)
	f.mu.Unlock()
	if len(issued) != 1 {
		t.Errorf("5 requests minted %d tokens, want 1", len(issued))
	}
	if r := tl.waitAudit(5)[0]; r["credential"] != "google" || r["key_fp"] == "" {
		t.Errorf("record: %v", r)
	}
	tl.stop()
	tl.assertNoLeak(append([]string{pemKey}, issued...))
}
