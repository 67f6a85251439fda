package proxy

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// mintGateway is a gateway whose one route, api, mints its token as
// inject (YAML) says, from the secret named cred.
func mintGateway(t *testing.T, upstream, inject string, cred vault.Secret, extra string) (*Gateway, *lockedBuffer, *lockedBuffer) {
	t.Helper()
	y := "version: 1\n" + extra + "routes:\n  - {name: api, upstream: " + upstream + ", secret: cred, inject: " + inject + "}\n"
	cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	records, logs := &lockedBuffer{}, &lockedBuffer{}
	snap := NewSnapshot(cfg, map[string]vault.Secret{"cred": cred})
	return New(snap, Options{Audit: testAudit(records), Log: zerolog.New(logs)}), records, logs
}

// rsaPEM is a new RSA private key in PKCS #8 PEM.
func rsaPEM(t *testing.T) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// A token endpoint that answers with a redirect gets the app a 502
// credential_unavailable: what asked for the token (client secret, signed
// assertion, app JWT) never reaches the redirect's target.
func TestMintNeverFollowsRedirects(t *testing.T) {
	var mu sync.Mutex
	var reached []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		reached = append(reached, r.Header.Get("Authorization")+" "+string(b))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"tok-0123456789abcdef","token":"tok-0123456789abcdef","token_type":"Bearer","expires_in":3600}`)
	}))
	defer other.Close()
	// Another host name for the same server: Go strips Authorization
	// across hosts, not bodies.
	target := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target+"/stolen", http.StatusTemporaryRedirect)
	}))
	defer endpoint.Close()

	google := map[string]string{
		"type": "service_account", "client_email": "till@example.iam.gserviceaccount.com",
		"private_key": rsaPEM(t), "token_uri": endpoint.URL + "/token",
	}
	for _, c := range []struct {
		name, inject string
		cred         vault.Secret
	}{
		{"oauth2", "{oauth2: {token_url: " + endpoint.URL + "/token}}",
			vault.NewFieldSecret("cred", map[string]string{"client_id": "app", "client_secret": "cs-0123456789abcdef"}, time.Now())},
		{"google", "{google: {scopes: [https://www.googleapis.com/auth/cloud-platform]}}", vault.NewFieldSecret("cred", google, time.Now())},
		{"github_app", "{github_app: {app_id: 1, installation_id: 2}}", vault.NewSecret("cred", rsaPEM(t), time.Now())},
	} {
		t.Run(c.name, func(t *testing.T) {
			gw, _, _ := mintGateway(t, endpoint.URL, c.inject, c.cred, "")
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
			if w.Code != http.StatusBadGateway || w.Header().Get("X-Till-Error") != CodeCredentialUnavailable {
				t.Errorf("got %d %s, want 502 %s", w.Code, w.Header().Get("X-Till-Error"), CodeCredentialUnavailable)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(reached) > 0 {
				t.Errorf("the redirect was followed: its target received %q", reached)
			}
			reached = nil
		})
	}
}

// A token endpoint's error that quotes what it was sent (the form, the
// Basic credentials) is logged without the client secret in any form:
// raw, query-escaped, in base64, or cut short at the log's length limit.
func TestMintErrorHidesTheSecret(t *testing.T) {
	const secret = "Ab+cD/eF=gH+iJ/kL0123456789"
	endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusBadRequest)
		// Long enough that the secret would straddle a cut at 300.
		_, _ = io.WriteString(w, strings.Repeat("x", 200)+" "+string(b)+" "+r.Header.Get("Authorization")+" "+strings.ToLower(string(b)))
	}))
	defer endpoint.Close()
	for _, style := range []string{"header", "params"} {
		t.Run(style, func(t *testing.T) {
			cred := vault.NewFieldSecret("cred", map[string]string{"client_id": "app", "client_secret": secret}, time.Now())
			gw, _, logs := mintGateway(t, endpoint.URL, "{oauth2: {token_url: "+endpoint.URL+"/token, auth_style: "+style+"}}", cred, "")
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
			if w.Code != http.StatusBadGateway {
				t.Fatalf("got %d, want 502", w.Code)
			}
			logs.mu.Lock()
			defer logs.mu.Unlock()
			log := logs.b.String()
			if !strings.Contains(log, "oauth2") {
				t.Fatalf("the endpoint's error is not logged: %s", log)
			}
			escaped := url.QueryEscape(secret)
			for _, form := range []string{secret, escaped, escaped[:12], strings.ToLower(escaped[:12]),
				base64.StdEncoding.EncodeToString([]byte("app:" + escaped))} {
				if strings.Contains(log, form) {
					t.Errorf("the log holds %q: %s", form, log)
				}
			}
		})
	}
}
