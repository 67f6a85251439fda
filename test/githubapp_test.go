package test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// fakeGitHub issues installation tokens only for a JWT that the app's
// public key verifies, with iss the app id, iat within 60 s of skew and
// at most 10 minutes of life; its API takes only those tokens.
type fakeGitHub struct {
	pub     *rsa.PublicKey
	mu      sync.Mutex
	issued  int
	tokens  map[string]bool
	refused []string
}

func (f *fakeGitHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.Path == "/app/installations/678/access_tokens" {
		raw, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		claims := &jwt.RegisteredClaims{}
		_, err := jwt.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return f.pub, nil },
			jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer("12345"), jwt.WithIssuedAt(), jwt.WithLeeway(60*time.Second))
		if err == nil && (claims.IssuedAt == nil || claims.ExpiresAt == nil || claims.ExpiresAt.Sub(claims.IssuedAt.Time) > 10*time.Minute) {
			err = fmt.Errorf("iat and exp: at most 10 minutes apart")
		}
		if err != nil {
			f.mu.Lock()
			f.refused = append(f.refused, err.Error())
			f.mu.Unlock()
			http.Error(w, `{"message":"A JSON web token could not be decoded"}`, http.StatusUnauthorized)
			return
		}
		f.mu.Lock()
		f.issued++
		tok := fmt.Sprintf("ghs_%d%s", f.issued, strings.Repeat("Q7", 16))
		f.tokens[tok] = true
		f.mu.Unlock()
		suiteLeaks.key(tok)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
		return
	}
	f.mu.Lock()
	ok := f.tokens[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
	f.mu.Unlock()
	if !ok {
		http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	fmt.Fprint(w, `{"full_name":"till/till"}`)
}

// newRSAKey returns a new 2048-bit RSA key, and the key in PKCS #8 PEM.
func newRSAKey(t *testing.T) (*rsa.PrivateKey, string) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	return priv, pemKey
}

// newFakeGitHub returns a fake GitHub API that trusts a new app key, and
// that key in PEM.
func newFakeGitHub(t *testing.T) (*fakeGitHub, string) {
	priv, pemKey := newRSAKey(t)
	return &fakeGitHub{pub: &priv.PublicKey, tokens: map[string]bool{}}, pemKey
}

// TestGitHubApp drives a route that attaches a GitHub App's installation
// token: till signs the RS256 JWT with the app's key (a --pem secret),
// exchanges it once for a token, and sends that, to Go's client and to
// the official @octokit/rest package alike; the key and tokens never leak.
func TestGitHubApp(t *testing.T) {
	f, pemKey := newFakeGitHub(t)
	up := newUpstream(t, f)
	// The github-app preset, its upstream pointed at the fake.
	cfg := "version: 1\nroutes:\n  - {name: github, preset: github-app, upstream: \"" + up.URL + "\", secret: gh-app, inject: {github_app: {app_id: 12345, installation_id: 678}}}\n"
	dir := t.TempDir()
	writeConfig(t, dir, cfg)
	setSecret(t, dir, "gh-app", pemKey, "--pem")
	tl := startTillIn(t, dir, up.caFile)
	for range 5 {
		resp, body := do(t, newRequest(t, "GET", tl.url("/github/repos/till/till"), nil))
		if resp.StatusCode != 200 {
			f.mu.Lock()
			t.Fatalf("%d %s (the fake refused: %v)", resp.StatusCode, body, f.refused)
		}
	}
	// The official @octokit/rest package, in base-URL mode with a dummy
	// token, gets the repository too.
	var oc struct {
		Status   int
		FullName string
		Error    any
	}
	runSDK(t, "octokit-repo.mjs", &oc, "GITHUB_BASE_URL="+tl.url("/github"))
	if oc.Error != nil || oc.Status != 200 || oc.FullName != "till/till" {
		t.Errorf("@octokit/rest through till: %+v", oc)
	}
	if f.issued != 1 {
		t.Errorf("6 requests minted %d tokens, want 1", f.issued)
	}
	if r := tl.waitAudit(6)[0]; r["credential"] != "github_app" || r["key_fp"] == "" {
		t.Errorf("record: %v", r)
	}
	tl.stop()
	f.mu.Lock()
	secrets := []string{pemKey}
	for tok := range f.tokens {
		secrets = append(secrets, tok)
	}
	f.mu.Unlock()
	tl.assertNoLeak(secrets)
}
