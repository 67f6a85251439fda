package proxy

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/audit"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
	"github.com/tillgw/till/vault/source"
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

	for _, c := range mintFlows(t, endpoint.URL+"/token") {
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
	for _, style := range []string{"header", "params"} {
		t.Run(style, func(t *testing.T) {
			log := refusedAskLog(t, secret, style, func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				w.WriteHeader(http.StatusBadRequest)
				// Long enough that the secret would straddle a cut at 300.
				_, _ = io.WriteString(w, strings.Repeat("x", 200)+" "+string(b)+" "+r.Header.Get("Authorization")+" "+strings.ToLower(string(b)))
			})
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

// refusedAskLog sends a request through an OAuth2 route whose client
// secret is secret, sent as style says (auth_style), to a token endpoint
// that answers as endpoint does (a refusal), and returns the log once the
// app got its 502.
func refusedAskLog(t *testing.T, secret, style string, endpoint http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(endpoint)
	defer srv.Close()
	cred := vault.NewFieldSecret("cred", map[string]string{"client_id": "app", "client_secret": secret}, time.Now())
	gw, _, logs := mintGateway(t, srv.URL, "{oauth2: {token_url: "+srv.URL+"/token, auth_style: "+style+"}}", cred, "")
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
	if w.Code != http.StatusBadGateway {
		t.Fatalf("got %d, want 502", w.Code)
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	return logs.b.String()
}

// A token endpoint's error that quotes part of the client secret (its
// first or last characters, as an endpoint that shows which secret it
// refused; a run from its middle), 8 characters of it or more, raw or
// escaped, is logged without that text: the error code or description
// that holds it is left out, as one that holds the whole secret is.
// What holds none of it stays, the client id included.
func TestMintErrorHidesPartOfTheSecret(t *testing.T) {
	const secret = "Zq7Lm9Xp0123456789abcdefGHIJ/+kl"
	for name, part := range map[string]string{
		"first 20":        secret[:20],
		"first 8":         secret[:8],
		"last 10":         secret[len(secret)-10:],
		"middle 12":       secret[6:18],
		"escaped last 12": url.QueryEscape(secret[len(secret)-10:]),
	} {
		for _, where := range []string{"error_description", "error"} {
			t.Run(name+"/"+where, func(t *testing.T) {
				log := refusedAskLog(t, secret, "params", func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusUnauthorized)
					answer := map[string]string{"error": "invalid_client", "error_description": "client app: wrong secret"}
					answer[where] = "secret-" + part + "-refused"
					b, _ := json.Marshal(answer)
					_, _ = w.Write(b)
				})
				if strings.Contains(log, part) {
					t.Errorf("the log holds %q of the secret: %s", part, log)
				}
				keep := "error invalid_client"
				if where == "error" {
					keep = "client app: wrong secret"
				}
				if !strings.Contains(log, "401 Unauthorized") || !strings.Contains(log, keep) {
					t.Errorf("the log lost what holds no part of the secret (%q): %s", keep, log)
				}
			})
		}
	}
}

// A client secret is random text, which may start with what keyCore takes
// for a provider's prefix (letters, then '-' or '_': base64url secrets,
// as Okta and Auth0 issue, often do). That start is as secret as the
// rest: an endpoint's error that quotes it, with a few characters after
// it, is left out as one that quotes any other 8 characters of it is.
func TestMintErrorHidesStartOfBase64URLSecret(t *testing.T) {
	const secret = "ZqLmXp_RtUvW-0123456789abcdefGHIJ" // keyCore: 0123456789abcdefGHIJ
	for name, part := range map[string]string{
		"first 20": secret[:20],
		"first 8":  secret[:8],
		"6 to 18":  secret[6:18],
	} {
		t.Run(name, func(t *testing.T) {
			log := refusedAskLog(t, secret, "params", func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = io.WriteString(w, `{"error":"invalid_client","error_description":"secret `+part+`... refused"}`)
			})
			if strings.Contains(log, part) {
				t.Errorf("the log holds %q of the secret: %s", part, log)
			}
			if !strings.Contains(log, "error invalid_client") {
				t.Errorf("the log lost the error code, which holds no part of the secret: %s", log)
			}
		})
	}
}

// A token endpoint's error is logged without the client secret however
// the answer spells it: x/oauth2 prints an answer's error code and
// description with %q, which escapes '"' and '\\' and a no-break space,
// and a log line must not hold the secret once those escapes, JSON's or
// its spaces made one are undone either. What is safe stays: the status
// and the error code.
func TestMintErrorHidesEscapedSecret(t *testing.T) {
	secrets := map[string]string{
		"quote":       `Zq"7Lm"9Xp0123456789abc`,
		"backslash":   `Zq\7Lm\9Xp0123456789abc`,
		"both":        `Zq"7Lm\9Xp0123456789abc`,
		"two spaces":  "Zq7Lm  9Xp0123456789abc",
		"no-break":    "Zq7Lm\u00a09Xp0123456789abc",
		"mixed":       "Zq\"7Lm\\ \u00a0 9Xp\t0123456789abc",
		"short quote": `a"b\c d`,
	}
	// How an endpoint could quote the secret it was sent, in its answer.
	answers := map[string]func(w http.ResponseWriter, secret string){
		"json description": func(w http.ResponseWriter, secret string) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			b, _ := json.Marshal(map[string]string{"error": "invalid_client", "error_description": "bad secret " + secret + " for app"})
			_, _ = w.Write(b)
		},
		"go-quoted description": func(w http.ResponseWriter, secret string) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			b, _ := json.Marshal(map[string]string{"error": "invalid_client", "error_description": "bad secret " + strconv.Quote(secret)})
			_, _ = w.Write(b)
		},
		"secret as error code": func(w http.ResponseWriter, secret string) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			b, _ := json.Marshal(map[string]string{"error": secret})
			_, _ = w.Write(b)
		},
		"form": func(w http.ResponseWriter, secret string) {
			w.Header().Set("Content-Type", "application/x-www-form-urlencoded")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, "error=invalid_client&error_description="+url.QueryEscape("bad secret "+secret))
		},
		"json body, no code": func(w http.ResponseWriter, secret string) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			b, _ := json.Marshal(map[string]string{"message": "bad secret " + secret})
			_, _ = w.Write(b)
		},
	}
	for sname, secret := range secrets {
		for aname, answer := range answers {
			t.Run(sname+"/"+aname, func(t *testing.T) {
				log := refusedAskLog(t, secret, "params", func(w http.ResponseWriter, r *http.Request) {
					_ = r.ParseForm()
					got := r.PostForm.Get("client_secret")
					if got != secret {
						got = "" // unexpected: quote nothing rather than something else
					}
					answer(w, got)
				})
				var logged []string
				for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
					var m map[string]any
					if err := json.Unmarshal([]byte(line), &m); err != nil {
						t.Fatalf("a log line is not JSON: %v", err)
					}
					if e, ok := m["error"].(string); ok {
						logged = append(logged, e)
					}
				}
				if len(logged) != 1 || !strings.Contains(logged[0], "oauth2") {
					t.Fatalf("the endpoint's error is not logged as one error field (%d found)", len(logged))
				}
				ascii := strconv.QuoteToASCII(secret)
				forms := map[string]string{
					"raw":             secret,
					"go-quoted":       strconv.Quote(secret)[1 : len(strconv.Quote(secret))-1],
					"ascii-quoted":    ascii[1 : len(ascii)-1],
					"json-escaped":    jsonEscaped(secret),
					"query-escaped":   url.QueryEscape(secret),
					"spaces made one": strings.Join(strings.Fields(secret), " "),
				}
				for _, in := range []struct{ name, text string }{{"the log", log}, {"the logged error", logged[0]}} {
					for fname, f := range forms {
						if strings.Contains(in.text, f) {
							t.Errorf("%s holds the secret %s", in.name, fname) // never the text: it holds the secret
						}
					}
				}
				if strings.Contains(aname, "description") && !(strings.Contains(logged[0], "401") && strings.Contains(logged[0], "invalid_client")) {
					t.Error("the logged error lacks the status or the error code")
				}
			})
		}
	}
}

// jsonEscaped is s as a JSON string holds it, without its quotes.
func jsonEscaped(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}

// tokenEndpoint answers every ask with a token named after the client_id
// (tok-ID-…), and counts the asks; seen, when set, runs at each ask.
type tokenEndpoint struct {
	*httptest.Server
	mu   sync.Mutex
	asks int
	seen func()
}

func newTokenEndpoint(t *testing.T, upstream http.HandlerFunc) *tokenEndpoint {
	te := &tokenEndpoint{}
	te.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/token" {
			upstream(w, r)
			return
		}
		id, _, _ := r.BasicAuth()
		te.mu.Lock()
		te.asks++
		seen := te.seen
		te.mu.Unlock()
		if seen != nil {
			seen()
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"tok-`+id+`-0123456789abcdef","token_type":"Bearer","expires_in":3600}`)
	}))
	t.Cleanup(te.Close)
	return te
}

func (te *tokenEndpoint) count() int {
	te.mu.Lock()
	defer te.mu.Unlock()
	return te.asks
}

func oauthSecret(name string, updated time.Time) vault.Secret {
	return vault.NewFieldSecret(name, map[string]string{"client_id": name, "client_secret": "secret-" + name + "-0123456789"}, updated)
}

// The token endpoint is asked only for a request the policy let by, and
// the ask, which sends the client secret, is recorded as a use of the key
// before it goes.
func TestMintOnlyForRequestsLetBy(t *testing.T) {
	te := newTokenEndpoint(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok-app-0123456789abcdef" {
			w.WriteHeader(http.StatusUnauthorized)
		}
	})
	inject := "{oauth2: {token_url: " + te.URL + "/token}}, allow: {methods: [GET]}"
	t.Run("expired", func(t *testing.T) {
		gw, _, _ := mintGateway(t, te.URL, inject, oauthSecret("app", time.Now().Add(-48*time.Hour)), "vault: {max_age: 1d, on_expired: block}\n")
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("X-Till-Error") != CodeSecretExpired {
			t.Errorf("got %d %s, want 503 secret_expired", w.Code, w.Header().Get("X-Till-Error"))
		}
	})
	gw, records, _ := mintGateway(t, te.URL, inject, oauthSecret("app", time.Now()), "")
	t.Run("refused", func(t *testing.T) {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("POST", "/api/x", nil))
		if w.Code != http.StatusForbidden {
			t.Errorf("got %d, want 403", w.Code)
		}
	})
	if n := te.count(); n != 0 {
		t.Fatalf("the token endpoint was asked %d times for requests that were refused", n)
	}
	var usesAtAsk int
	te.mu.Lock()
	te.seen = func() { usesAtAsk = len(records.uses(t)) }
	te.mu.Unlock()
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
	if w.Code != http.StatusOK || te.count() != 1 {
		t.Fatalf("got %d after %d asks, want 200 after one", w.Code, te.count())
	}
	if usesAtAsk != 1 {
		t.Errorf("%d use records when the endpoint was asked, want the ask's own", usesAtAsk)
	}
	uses := records.uses(t)
	if len(uses) != 2 {
		t.Fatalf("use records %v: want the ask's and the request's", uses)
	}
	ask, send := uses[0], uses[1]
	host := strings.TrimPrefix(te.URL, "http://")
	if ask["method"] != "POST" || ask["host"] != host || ask["path"] != "/token" || ask["credential"] != "oauth2" ||
		ask["key_fp"] != send["key_fp"] || ask["key_fp"] == "" || ask["id"] != send["id"] {
		t.Errorf("the ask's use record %v, the request's %v", ask, send)
	}
	// The token is kept: the next request asks nothing.
	gw.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/api/x", nil))
	if te.count() != 1 || len(records.uses(t)) != 3 {
		t.Errorf("a second request: %d asks, %d use records; want 1 and 3", te.count(), len(records.uses(t)))
	}
}

// An ask whose use cannot be recorded is not made: 503 audit_unavailable.
func TestMintStopsWhenTheAuditFails(t *testing.T) {
	var asks atomic.Int64 // GitHub's, at the upstream's path
	te := newTokenEndpoint(t, func(http.ResponseWriter, *http.Request) { asks.Add(1) })
	// Every flow: x/oauth2's JWT flow keeps only the text of the
	// transport's error, not the error.
	for _, c := range mintFlows(t, te.URL+"/token") {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: api, upstream: "+te.URL+", secret: cred, inject: "+c.inject+"}\n"), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			a := NewAudit(audit.New(&failingWriter{fail: true}, audit.Options{}))
			gw := New(NewSnapshot(cfg, map[string]vault.Secret{"cred": c.cred}), Options{Audit: a, Log: zerolog.Nop()})
			for range 2 { // the second not answered by a failure remembered
				w := httptest.NewRecorder()
				gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
				if w.Code != http.StatusServiceUnavailable || w.Header().Get("X-Till-Error") != CodeAuditUnavailable {
					t.Errorf("got %d %s, want 503 audit_unavailable", w.Code, w.Header().Get("X-Till-Error"))
				}
			}
			if n := int64(te.count()) + asks.Load(); n != 0 {
				t.Errorf("the token endpoint was asked %d times while the audit failed", n)
			}
		})
	}
}

// mintFlow is a way a route mints its tokens (inject), with a secret
// named cred to mint from.
type mintFlow struct {
	name, inject string
	cred         vault.Secret
}

// mintFlows are the ways to mint, OAuth2 and Google asking tokenURL,
// GitHub the route's upstream.
func mintFlows(t *testing.T, tokenURL string) []mintFlow {
	google := map[string]string{
		"type": "service_account", "client_email": "till@example.iam.gserviceaccount.com",
		"private_key": rsaPEM(t), "token_uri": tokenURL,
	}
	return []mintFlow{
		{"oauth2", "{oauth2: {token_url: " + tokenURL + "}}",
			vault.NewFieldSecret("cred", map[string]string{"client_id": "app", "client_secret": "cs-0123456789abcdef"}, time.Now())},
		{"google", "{google: {scopes: [https://www.googleapis.com/auth/cloud-platform]}}", vault.NewFieldSecret("cred", google, time.Now())},
		{"github_app", "{github_app: {app_id: 1, installation_id: 2}}", vault.NewSecret("cred", rsaPEM(t), time.Now())},
	}
}

// A pool of minting keys: the retry after a key's 429 goes with the next
// key's own token, minted (and recorded) for it.
func TestPoolRetryMintsTheNextToken(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	te := newTokenEndpoint(t, func(w http.ResponseWriter, r *http.Request) {
		a := r.Header.Get("Authorization")
		mu.Lock()
		seen = append(seen, a)
		mu.Unlock()
		switch a {
		case "Bearer tok-a-0123456789abcdef":
			w.WriteHeader(http.StatusTooManyRequests)
		case "Bearer tok-b-0123456789abcdef":
		default:
			w.WriteHeader(http.StatusUnauthorized)
		}
	})
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: api, upstream: "+te.URL+", secret: [a, b], pool: {cooldown: 1m}, inject: {oauth2: {token_url: "+te.URL+"/token}}}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	records := &lockedBuffer{}
	gw := New(NewSnapshot(cfg, map[string]vault.Secret{"a": oauthSecret("a", time.Now()), "b": oauthSecret("b", time.Now())}),
		Options{Audit: testAudit(records), Log: zerolog.Nop()})
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
	mu.Lock()
	defer mu.Unlock()
	if w.Code != http.StatusOK || len(seen) != 2 || seen[1] != "Bearer tok-b-0123456789abcdef" {
		t.Errorf("got %d; the upstream saw %q, want key a's token then key b's", w.Code, seen)
	}
	var asks int
	for _, u := range records.uses(t) {
		if u["path"] == "/token" {
			asks++
		}
	}
	if asks != 2 || te.count() != 2 {
		t.Errorf("%d asks recorded, %d made: want one for each key", asks, te.count())
	}
}

// TestPoolRetryDropsRefusedToken: a key's token that the upstream refused
// (401) is not used again, also when the pool's next key answered the
// app: the key mints anew when its rest ends.
func TestPoolRetryDropsRefusedToken(t *testing.T) {
	te := newTokenEndpoint(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok-b-0123456789abcdef" {
			w.WriteHeader(http.StatusUnauthorized)
		}
	})
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: api, upstream: "+te.URL+", secret: [a, b], pool: {cooldown: 1m}, inject: {oauth2: {token_url: "+te.URL+"/token}}}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gw := New(NewSnapshot(cfg, map[string]vault.Secret{"a": oauthSecret("a", time.Now()), "b": oauthSecret("b", time.Now())}),
		Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("got %d, want key b's 200", w.Code)
	}
	a := gw.Snapshot().routes[0].pool.members[0]
	if tok := a.minter.cur.Load(); tok == nil || a.minter.good(tok) {
		t.Errorf("key a's token, refused with a 401, is still taken for good: %+v", tok)
	}
}

// With auth_style auto (the default), x/oauth2 asks a second way after a
// failed ask (the secret in the form, not in Basic credentials): every
// ask, each of which sends the client secret, has its use record.
func TestEveryTokenAskRecorded(t *testing.T) {
	var mu sync.Mutex
	asks := 0
	endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		asks++
		mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer endpoint.Close()
	cred := vault.NewFieldSecret("cred", map[string]string{"client_id": "app", "client_secret": "cs-0123456789abcdef"}, time.Now())
	gw, records, _ := mintGateway(t, endpoint.URL, "{oauth2: {token_url: "+endpoint.URL+"/token}}", cred, "")
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
	if w.Code != http.StatusBadGateway {
		t.Fatalf("got %d, want 502", w.Code)
	}
	uses := 0
	for _, u := range records.uses(t) {
		if u["path"] == "/token" {
			uses++
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if asks < 2 || asks != uses {
		t.Errorf("the token endpoint was asked %d times, with %d use records; want the two asks of auth_style auto, each recorded", asks, uses)
	}
}

// A Google key's token_uri gets the rule of an oauth2 token_url: the
// signed assertion is a credential, never sent in clear off the machine.
func TestGoogleTokenURIMustBeHTTPS(t *testing.T) {
	for uri, ok := range map[string]bool{
		"http://oauth2.example.com/token":     false,
		"ftp://oauth2.example.com/token":      false,
		"https://oauth2.googleapis.com/token": true,
		"http://127.0.0.1:8080/token":         true,
	} {
		key := map[string]string{
			"type": "service_account", "client_email": "till@example.iam.gserviceaccount.com",
			"private_key": rsaPEM(t), "token_uri": uri,
		}
		_, _, problem := compileGoogle("", &config.Google{Scopes: []string{config.DefaultGoogleScope}}, vault.NewFieldSecret("cred", key, time.Now()))
		if (problem == "") != ok {
			t.Errorf("token_uri %s: problem %q, want accepted %v", uri, problem, ok)
		}
	}
}

// gateKeys holds every GetAs until the gate opens, as the source cache's
// singleflight holds the requests that wait for a first fetch, and
// releases them together; arrived counts the ones waiting.
type gateKeys struct {
	*fakeKeys
	arrived chan struct{}
	gate    chan struct{}
}

func (g *gateKeys) GetAs(ctx context.Context, ref string, form source.Form) (source.Result, error) {
	r, err := g.fakeKeys.GetAs(ctx, ref, form)
	g.arrived <- struct{}{}
	<-g.gate
	return r, err
}

// Requests that a first fetch of a source releases together compile the
// value once: one minter, which mints one token for all of them (an
// OAuth2 token, a GitHub installation token).
func TestSourcedMintOnceOnColdStart(t *testing.T) {
	for _, tt := range []struct{ name, inject, value, tokenPath, answer string }{
		{"oauth2", "{oauth2: {token_url: {{UP}}/token}}", `{"client_id":"app","client_secret":"secret-app-0123456789"}`,
			"/token", `{"access_token":"tok-0123456789abcdef","token_type":"Bearer","expires_in":3600}`},
		{"github_app", "{github_app: {app_id: 1, installation_id: 2}}", rsaPEM(t),
			"/app/installations/2/access_tokens", `{"token":"ghs_0123456789abcdef0123","expires_at":"` + time.Now().Add(time.Hour).UTC().Format(time.RFC3339) + `"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			asks := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == tt.tokenPath {
					mu.Lock()
					asks++
					mu.Unlock()
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusCreated)
					io.WriteString(w, tt.answer)
				}
			}))
			defer srv.Close()
			inject := strings.ReplaceAll(tt.inject, "{{UP}}", srv.URL)
			y := "version: 1\nsources:\n  - {name: mounted, type: files, dir: keys}\nroutes:\n  - {name: api, upstream: " + srv.URL +
				", secret: \"mounted:app\", inject: " + inject + "}\n"
			cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			const n = 20
			keys := &gateKeys{fakeKeys: &fakeKeys{values: map[string]string{"mounted:app": tt.value}}, arrived: make(chan struct{}, n), gate: make(chan struct{})}
			gw := New(NewSnapshotWithKeys(cfg, nil, keys), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
			var wg sync.WaitGroup
			for range n {
				wg.Go(func() {
					w := httptest.NewRecorder()
					gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
					if w.Code != 200 {
						t.Errorf("status %d", w.Code)
					}
				})
			}
			for range n {
				<-keys.arrived
			}
			close(keys.gate)
			wg.Wait()
			mu.Lock()
			defer mu.Unlock()
			if asks != 1 {
				t.Errorf("%d requests released together by the source asked for %d tokens, want 1", n, asks)
			}
		})
	}
}

// An app that hangs up while its token is minted is recorded as gone
// (client_closed), not as a token endpoint failure, and nothing is logged
// against the endpoint.
func TestAppGoneDuringMint(t *testing.T) {
	asked, release := make(chan struct{}), make(chan struct{})
	endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(asked)
		<-release
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"tok-0123456789abcdef","token_type":"Bearer","expires_in":3600}`)
	}))
	defer endpoint.Close()
	defer close(release)
	cred := vault.NewFieldSecret("cred", map[string]string{"client_id": "app", "client_secret": "cs-0123456789abcdef"}, time.Now())
	gw, records, logs := mintGateway(t, endpoint.URL, "{oauth2: {token_url: "+endpoint.URL+"/token, auth_style: header}}", cred, "")
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-asked; cancel() }()
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil).WithContext(ctx))
	recs := records.records(t)
	if last := recs[len(recs)-1]; last["reason"] != codeClientClosed || last["status"] != float64(statusClientClosed) {
		t.Errorf("app gone during the mint: record status %v reason %v, want %d %s", last["status"], last["reason"], statusClientClosed, codeClientClosed)
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	if strings.Contains(logs.b.String(), "token endpoint") {
		t.Errorf("logged against the token endpoint: %s", logs.b.String())
	}
}

// holdingEndpoint is a token endpoint that accepts every ask and never
// answers it, until its asker leaves or the test ends.
func holdingEndpoint(t *testing.T) *httptest.Server {
	release := make(chan struct{})
	endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(endpoint.Close)
	t.Cleanup(func() { close(release) })
	return endpoint
}

// TestMintHeldEndsAtTheRouteTimeout: a token endpoint that holds the ask
// (its connection accepted, never answered) holds a request no longer
// than its route's timeout, which then gets 502 credential_unavailable.
// It held it for the ask's own bound, 30 s, whatever the route said.
func TestMintHeldEndsAtTheRouteTimeout(t *testing.T) {
	endpoint := holdingEndpoint(t)
	cred := vault.NewFieldSecret("cred", map[string]string{"client_id": "app", "client_secret": "cs-0123456789abcdef"}, time.Now())
	gw, records, logs := mintGateway(t, endpoint.URL, "{oauth2: {token_url: "+endpoint.URL+"/token, auth_style: header}}, timeout: 1s", cred, "")
	start := time.Now()
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the request waited %v for its token, past its route's timeout of 1s", took)
	}
	recs := records.records(t)
	if w.Code != http.StatusBadGateway || len(recs) != 1 || recs[0]["reason"] != CodeCredentialUnavailable {
		t.Errorf("got %d, records %v; want 502 credential_unavailable", w.Code, recs)
	}
	if !strings.Contains(logs.String(), "no token within the route's timeout") {
		t.Errorf("the log does not say why: %s", logs.String())
	}
}

// TestFailedAskNamesTheKey: when the token endpoint refuses the ask, the
// request's record names the key that the ask sent (key_fp, credential),
// as the ask's use record does: summaries count that use too.
func TestFailedAskNamesTheKey(t *testing.T) {
	endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"invalid_client"}`)
	}))
	defer endpoint.Close()
	cred := vault.NewFieldSecret("cred", map[string]string{"client_id": "app", "client_secret": "cs-0123456789abcdef"}, time.Now())
	gw, records, _ := mintGateway(t, endpoint.URL, "{oauth2: {token_url: "+endpoint.URL+"/token, auth_style: header}}", cred, "")
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
	uses, recs := records.uses(t), records.records(t)
	if len(uses) != 1 || len(recs) != 1 {
		t.Fatalf("uses %v records %v", uses, recs)
	}
	t.Logf("status %d; use: key_fp %v credential %v; request: key_fp %q credential %q reason %v",
		w.Code, uses[0]["key_fp"], uses[0]["credential"], recs[0]["key_fp"], recs[0]["credential"], recs[0]["reason"])
	if recs[0]["key_fp"] != uses[0]["key_fp"] || recs[0]["credential"] != uses[0]["credential"] {
		t.Errorf("the client secret was sent (use record key_fp %v), and the request record says key_fp %q credential %q",
			uses[0]["key_fp"], recs[0]["key_fp"], recs[0]["credential"])
	}
}

// stepClock is a time that moves only when a test moves it: a minter
// that tells time by it is tested without sleeping.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *stepClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestFailedTokenAskRemembered: while a token endpoint refuses the client
// (400 invalid_client), its failure is remembered for a while that grows
// with each failure in a row. Caught: every request, anonymous ones on a
// route without clients too, made till send the long-lived client secret
// again (twice with auth_style auto), with a use record and a wait each:
// a credential-stuffing loop against the IdP, which may lock the client
// out for every route and instance that uses it. A token minted, or a
// reload that changes the secret, ends it; a reload that changes neither
// the secret nor how it mints does not.
func TestFailedTokenAskRemembered(t *testing.T) {
	var mu sync.Mutex
	asks, working := 0, false
	endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path != "/token" {
			return // the upstream
		}
		mu.Lock()
		asks++
		ok := working
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if ok {
			io.WriteString(w, `{"access_token":"tok-0123456789abcdef","token_type":"Bearer","expires_in":3600}`)
			return
		}
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"invalid_client"}`)
	}))
	defer endpoint.Close()
	asked := func() int {
		mu.Lock()
		defer mu.Unlock()
		return asks
	}
	clock := &stepClock{t: time.Now()}
	inject := "{oauth2: {token_url: " + endpoint.URL + "/token}}"
	cred := vault.NewFieldSecret("cred", map[string]string{"client_id": "app", "client_secret": "cs-0123456789abcdef"}, time.Now())
	gw, records, _ := mintGateway(t, endpoint.URL, inject, cred, "")
	minter := func() *minter { return gw.Snapshot().routes[0].injection.minter }
	minter().now = clock.now
	reload := func(cred vault.Secret) {
		cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: api, upstream: "+endpoint.URL+", secret: cred, inject: "+inject+"}\n"), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		s := NewSnapshot(cfg, map[string]vault.Secret{"cred": cred})
		s.routes[0].injection.minter.now = clock.now
		gw.Swap(s)
	}
	send := func(n int, want int, wantAsks int, why string) {
		t.Helper()
		for range n {
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
			if w.Code != want {
				t.Fatalf("%s: got %d, want %d", why, w.Code, want)
			}
		}
		if got := asked(); got != wantAsks {
			t.Fatalf("%s: the token endpoint was asked %d times in all (%d use records), want %d", why, got, len(records.uses(t)), wantAsks)
		}
	}
	// auth_style auto: each failed mint asks twice.
	send(20, http.StatusBadGateway, 2, "20 requests while the endpoint fails")
	clock.add(mintRetryFirst)
	send(1, http.StatusBadGateway, 4, "the first interval past")
	clock.add(mintRetryFirst)
	send(5, http.StatusBadGateway, 4, "within the doubled interval")
	reload(cred)
	send(5, http.StatusBadGateway, 4, "a reload that changes nothing")
	reload(vault.NewFieldSecret("cred", map[string]string{"client_id": "app", "client_secret": "cs-rotated-0123456789"}, time.Now()))
	send(1, http.StatusBadGateway, 6, "the secret rotated")
	mu.Lock()
	working = true
	mu.Unlock()
	send(1, http.StatusBadGateway, 6, "the endpoint back, within the interval")
	clock.add(mintRetryFirst)
	send(1, http.StatusOK, 7, "the interval past, the endpoint back")
	if f := minter().failed.Load(); f != nil {
		t.Errorf("a token minted, the failure is still remembered: %v", f.err)
	}
}

// TestGitHubAppErrorHoldsTillsTextOnly: the status line of a token
// endpoint that refuses is the endpoint's text, control bytes included
// (Go reads its reason phrase as sent); till test --mint prints the error
// on the operator's terminal. It names the status by its code.
func TestGitHubAppErrorHoldsTillsTextOnly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
					io.WriteString(c, "HTTP/1.1 401 \x1b]0;pwned\x07\x1b[2J\u009b2J\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
				}
			}()
		}
	}()
	gw, _, _ := mintGateway(t, "http://"+ln.Addr().String(), "{github_app: {app_id: 1, installation_id: 2}}", vault.NewSecret("cred", rsaPEM(t), time.Now()), "")
	_, err = gw.Snapshot().Mint(context.Background(), gw.audit, Verdict{Route: "api", Client: anonymous})
	if err == nil || !strings.Contains(err.Error(), "401 Unauthorized") {
		t.Fatalf("got %v, want the status 401 named", err)
	}
	if strings.ContainsAny(err.Error(), "\x1b\x07\u009b") {
		t.Errorf("the error holds the endpoint's control bytes: %q", err)
	}
}

// A Google token endpoint's refusal is logged, and told to `till test
// --mint`, with its status and RFC 6749 error code (invalid_grant: a
// clock off by minutes, a key deleted), and never with the signed
// assertion the ask sent: a JWT good for an hour at the endpoint, which
// the answer may quote whole, by its signature alone, or as its error
// code.
func TestGoogleMintErrorHidesTheAssertion(t *testing.T) {
	for _, quote := range []struct {
		name string
		body func(assertion string) map[string]string
	}{
		{"whole", func(a string) map[string]string {
			return map[string]string{"error": "invalid_grant", "error_description": "Invalid JWT Signature: " + a}
		}},
		{"signature", func(a string) map[string]string {
			return map[string]string{"error": "invalid_grant", "error_description": "bad signature " + a[strings.LastIndexByte(a, '.')+1:]}
		}},
		{"as the code", func(a string) map[string]string { return map[string]string{"error": a} }},
	} {
		t.Run(quote.name, func(t *testing.T) {
			var mu sync.Mutex
			var assertion string
			endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_ = r.ParseForm()
				mu.Lock()
				assertion = r.PostForm.Get("assertion")
				mu.Unlock()
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				_ = json.NewEncoder(w).Encode(quote.body(r.PostForm.Get("assertion")))
			}))
			defer endpoint.Close()
			key := map[string]string{
				"type": "service_account", "client_email": "till@example.iam.gserviceaccount.com",
				"private_key": rsaPEM(t), "token_uri": endpoint.URL + "/token",
			}
			gw, _, logs := mintGateway(t, endpoint.URL, "{google: {}}", vault.NewFieldSecret("cred", key, time.Now()), "")
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
			if w.Code != http.StatusBadGateway {
				t.Fatalf("got %d, want 502", w.Code)
			}
			gw2, _, _ := mintGateway(t, endpoint.URL, "{google: {}}", vault.NewFieldSecret("cred", key, time.Now()), "")
			_, mintErr := gw2.Snapshot().Mint(context.Background(), gw2.audit, Verdict{Route: "api", Client: anonymous})
			if mintErr == nil {
				t.Fatal("Mint succeeded, want the endpoint's refusal")
			}
			mu.Lock()
			sig := assertion[strings.LastIndexByte(assertion, '.')+1:]
			mu.Unlock()
			logs.mu.Lock()
			log := logs.b.String()
			logs.mu.Unlock()
			if strings.Count(assertion, ".") != 2 || len(sig) < 64 {
				t.Fatalf("the endpoint got no signed assertion (%d bytes)", len(assertion))
			}
			for _, out := range []struct{ name, text string }{{"the log", log}, {"till test --mint's error", mintErr.Error()}} {
				if !strings.Contains(out.text, "400") {
					t.Errorf("%s lacks the status: %s", out.name, out.text)
				}
				if quote.name != "as the code" && !strings.Contains(out.text, "invalid_grant") {
					t.Errorf("%s lacks the error code: %s", out.name, out.text)
				}
				for _, f := range []string{sig, sig[:40], url.QueryEscape(sig)} {
					if strings.Contains(out.text, f) {
						t.Errorf("%s holds the assertion's signature", out.name) // not the text: it holds it
					}
				}
			}
		})
	}
}

// TestMintAsksWithTheKeyARequestWould: till test --mint on a pooled
// minting route whose first key expired (on_expired: block) asks the
// token endpoint with the member a request would go with, which the
// verdict names, never with the expired key serve withholds; and the ask,
// a key use, has its use record first, or is not sent.
func TestMintAsksWithTheKeyARequestWould(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _, _ := r.BasicAuth()
		r.ParseForm()
		mu.Lock()
		asked = append(asked, id+r.PostForm.Get("client_id"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"tok-0123456789abcdef","token_type":"Bearer","expires_in":3600}`)
	}))
	defer endpoint.Close()
	y := "version: 1\nroutes:\n  - {name: api, upstream: https://api.example.com, secret: [old, new], inject: {oauth2: {token_url: " + endpoint.URL + "/token}}}\n"
	cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	old := vault.NewFieldSecret("old", map[string]string{"client_id": "old", "client_secret": "secret-old-0123456789"}, time.Now())
	old.Expires = time.Now().Add(-time.Hour)
	fresh := vault.NewFieldSecret("new", map[string]string{"client_id": "new", "client_secret": "secret-new-0123456789"}, time.Now())
	snap := NewSnapshot(cfg, map[string]vault.Secret{"old": old, "new": fresh})
	if v := snap.Explain("GET", "/api/v1/x", "", "127.0.0.1:1234", "", time.Now()); !v.Allowed || v.Secret != "new" {
		t.Errorf("verdict allowed %v with secret %q, want allowed with %q", v.Allowed, v.Secret, "new")
	}
	// The ask is a key use: recorded first, or not sent.
	down := &failingWriter{fail: true}
	if _, err := snap.Mint(context.Background(), testAudit(down), Verdict{Route: "api", Client: "web"}); !errors.Is(err, ErrAuditUnavailable) {
		t.Errorf("with the audit sink down: %v, want ErrAuditUnavailable", err)
	}
	buf := &lockedBuffer{}
	if _, err := snap.Mint(context.Background(), testAudit(buf), Verdict{Route: "api", Client: "web"}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 1 || asked[0] != "new" {
		t.Errorf("the token endpoint was asked with %q, want only %q", asked, "new")
	}
	host := strings.TrimPrefix(endpoint.URL, "http://")
	if recs := buf.events(t, "use"); len(recs) != 1 || recs[0]["event"] != "use" || recs[0]["secret"] != "new" || recs[0]["key_fp"] == "" ||
		recs[0]["client"] != "web" || recs[0]["route"] != "api" || recs[0]["method"] != "POST" || recs[0]["host"] != host ||
		recs[0]["path"] != "/token" || recs[0]["credential"] != "oauth2" || recs[0]["attempt"] != 1.0 || recs[0]["id"] == "" {
		t.Errorf("records %v; want the ask's use record, of key new, client web, POST %s/token", recs, host)
	}
}

// A Google key whose private_key cannot sign (its line breaks written as
// "\n" twice escaped, an EC key, none) or that names no client_email is
// refused when the route is compiled, naming what is wrong, as a GitHub
// App's key is: till check reports it, rather than every request failing
// at its mint, logged as a token endpoint's failure.
func TestGoogleKeyMustSign(t *testing.T) {
	good := rsaPEM(t)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	ecPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	for _, tt := range []struct {
		name, key, email, want string
	}{
		{"good", good, "till@example.iam.gserviceaccount.com", ""},
		{"escaped line breaks", strings.ReplaceAll(good, "\n", `\n`), "till@example.iam.gserviceaccount.com", "private_key"},
		{"ec key", ecPEM, "till@example.iam.gserviceaccount.com", "private_key"},
		{"no private_key", "", "till@example.iam.gserviceaccount.com", "private_key"},
		{"no client_email", good, "", "client_email"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			key := map[string]string{"type": "service_account", "token_uri": "https://oauth2.googleapis.com/token"}
			if tt.key != "" {
				key["private_key"] = tt.key
			}
			if tt.email != "" {
				key["client_email"] = tt.email
			}
			_, _, problem := compileGoogle("", &config.Google{Scopes: []string{config.DefaultGoogleScope}}, vault.NewFieldSecret("cred", key, time.Now()))
			if tt.want == "" && problem != "" || !strings.Contains(problem, tt.want) {
				t.Errorf("got problem %q, want one naming %q", problem, tt.want)
			}
			if strings.Contains(problem, "PRIVATE KEY") || strings.Contains(problem, good[40:60]) {
				t.Errorf("the problem quotes the key: %q", problem)
			}
		})
	}
}

// TestMintKeyNamesHowItAsks: two routes that mint differently in any
// field of their config share no minter (its key is mintsAs), whatever
// their strings hold (a separator too): each would send the other's
// token. A field added to a minting config is part of the key unasked.
func TestMintKeyNamesHowItAsks(t *testing.T) {
	sec := vault.NewFieldSecret("cred", map[string]string{"client_id": "app", "client_secret": "s3cr3t-s3cr3t-s3cr3t"}, time.Now())
	mint := func(cfg *config.OAuth2) *minter {
		m, _, problem := compileOAuth2(mintsAs(&config.Route{Inject: config.Inject{OAuth2: cfg}}), cfg, sec)
		if m == nil {
			t.Fatal(problem)
		}
		return m
	}
	tokenURL := "https://login.example/oauth/token"
	a := mint(&config.OAuth2{TokenURL: tokenURL, Scopes: []string{"read\x00admin"}, AuthStyle: "auto"})
	b := mint(&config.OAuth2{TokenURL: tokenURL, Scopes: []string{"read"}, Audience: "admin\x00", AuthStyle: "auto"})
	if a.key == b.key {
		t.Errorf("scopes %q and audience %q share the key of scopes %q", "read", "admin\\x00", "read\\x00admin")
	}
	// Each field changed in turn: the key of the minter the route's
	// credential compiles to (compileCredential, as a snapshot does)
	// changes with it.
	creds := map[string]vault.Secret{}
	for _, f := range mintFlows(t, "https://oauth2.googleapis.com/token") {
		creds[f.name] = f.cred
	}
	upstream, _ := url.Parse("https://api.github.com")
	for _, way := range []any{&config.OAuth2{TokenURL: tokenURL}, &config.GitHubApp{}, &config.Google{}} {
		v := reflect.ValueOf(way).Elem()
		for i := range v.NumField() {
			t.Run(v.Type().Name()+"."+v.Type().Field(i).Name, func(t *testing.T) {
				cr := &config.Route{Upstream: upstream}
				var sec vault.Secret
				switch w := way.(type) {
				case *config.OAuth2:
					cr.Inject.OAuth2, sec = w, creds["oauth2"]
				case *config.GitHubApp:
					cr.Inject.GitHubApp, sec = w, creds["github_app"]
				case *config.Google:
					cr.Inject.Google, sec = w, creds["google"]
				}
				before := compiledMintKey(t, cr, sec)
				switch f := v.Field(i); f.Kind() {
				case reflect.String:
					f.SetString(f.String() + "x")
				case reflect.Int64:
					f.SetInt(f.Int() + 1)
				case reflect.Slice:
					f.Set(reflect.Append(f, reflect.ValueOf("x")))
				default:
					t.Fatalf("a field of kind %s: teach this test to change it", f.Kind())
				}
				if after := compiledMintKey(t, cr, sec); after == before {
					t.Errorf("changing it left the key %q", after)
				}
			})
		}
	}
	// The route's upstream names a GitHub App's token endpoint.
	gh := &config.Route{Upstream: upstream, Inject: config.Inject{GitHubApp: &config.GitHubApp{AppID: 1, InstallationID: 2}}}
	before := compiledMintKey(t, gh, creds["github_app"])
	gh.Upstream, _ = url.Parse("https://github.example/api/v3")
	if compiledMintKey(t, gh, creds["github_app"]) == before {
		t.Errorf("a GitHub App's key does not name its upstream")
	}
}

// compiledMintKey is the key of the minter that the route cr's
// credential sec compiles to.
func compiledMintKey(t *testing.T, cr *config.Route, sec vault.Secret) string {
	t.Helper()
	var in injection
	if _, problem, _ := compileCredential(&in, cr, sec); in.minter == nil {
		t.Fatalf("no minter: %s", problem)
	}
	return in.minter.key
}
