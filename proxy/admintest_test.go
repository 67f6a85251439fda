package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// TestAdminTestMints: POST /admin/test decides a request on the live
// snapshot as till test does and, for an allowed one, asks the route's
// token endpoint through the route's own minter: the ask's use record is
// in the gateway's trail, the token stays in the minter's cache (a
// request then goes with it, and a second test does not ask again), and
// the answer is the verdict, never the token nor the client secret. A
// refused request, a wrong admin token, another origin, a body that is
// not JSON ask nothing.
func TestAdminTestMints(t *testing.T) {
	const clientSecret = "cs-admin-test-0123456789"
	var mu sync.Mutex
	asks, tokens := 0, []string{}
	endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, secret, _ := r.BasicAuth()
		if r.URL.Path != "/token" && r.URL.Path != "/fail" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if id != "app" || secret != clientSecret || r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"invalid_client","error_description":"client authentication failed"}`)
			return
		}
		mu.Lock()
		asks++
		tok := "tok-admin-test-" + strings.Repeat("x", asks) + "-0123456789"
		tokens = append(tokens, tok)
		mu.Unlock()
		io.WriteString(w, `{"access_token":"`+tok+`","token_type":"Bearer","expires_in":3600}`)
	}))
	defer endpoint.Close()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return asks
	}
	const webToken = "till_AdminTestWebClient0123456789"
	webSum := sha256.Sum256([]byte(webToken))
	y := "version: 1\nclients:\n  - {name: web, token_sha256: " + hex.EncodeToString(webSum[:]) + "}\nroutes:\n" +
		"  - {name: api, upstream: " + endpoint.URL + ", secret: cred, clients: [web], allow: {methods: [GET]}, inject: {oauth2: {token_url: " + endpoint.URL + "/token, auth_style: header}}}\n" +
		"  - {name: broken, upstream: " + endpoint.URL + ", secret: cred, inject: {oauth2: {token_url: " + endpoint.URL + "/fail, auth_style: header}}}\n"
	cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cred := vault.NewFieldSecret("cred", map[string]string{"client_id": "app", "client_secret": clientSecret}, time.Now())
	records, logs := &lockedBuffer{}, &lockedBuffer{}
	gw := New(NewSnapshot(cfg, map[string]vault.Secret{"cred": cred}), Options{Audit: testAudit(records), Log: zerolog.New(logs)})
	const adminToken = "admin-token-0123456789"
	sum := sha256.Sum256([]byte(adminToken))
	h := NewAdmin(AdminOptions{Gateway: gw, TokenSHA256: hex.EncodeToString(sum[:])})
	loopback := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9090}
	post := func(body string, header map[string]string) (int, string) {
		r := httptest.NewRequest("POST", "http://127.0.0.1:9090/admin/test", strings.NewReader(body))
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, loopback))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer "+adminToken)
		for k, v := range header {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code, w.Body.String()
	}
	verdict := func(body string) Verdict {
		t.Helper()
		var v Verdict
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatalf("answer %q: %v", body, err)
		}
		return v
	}
	const ask = `{"method": "GET", "target": "/api/v1/things", "client": "web"}`

	for _, tt := range []struct {
		name, body string
		header     map[string]string
		want       int
	}{
		{"no admin token", ask, map[string]string{"Authorization": ""}, 401},
		{"wrong admin token", ask, map[string]string{"Authorization": "Bearer admin-token-wrong"}, 401},
		{"another origin", ask, map[string]string{"Origin": "https://evil.example"}, 403},
		{"a form", ask, map[string]string{"Content-Type": "text/plain"}, 415},
		{"not JSON", "method=GET", nil, 400},
		{"unknown field", `{"method": "GET", "target": "/api/v1/things", "token": "x"}`, nil, 400},
		{"lower-case method", `{"method": "get", "target": "/api/v1/things"}`, nil, 400},
		{"bad source", `{"method": "GET", "target": "/api/v1/things", "from": "host"}`, nil, 400},
	} {
		if code, body := post(tt.body, tt.header); code != tt.want {
			t.Errorf("%s: %d %s, want %d", tt.name, code, body, tt.want)
		}
	}
	for _, refused := range []string{
		`{"method": "POST", "target": "/api/v1/things", "client": "web"}`, // a method the route does not allow
		`{"method": "GET", "target": "/api/v1/things"}`,                   // no client, on a route that wants one
		`{"method": "GET", "target": "/nowhere"}`,
	} {
		code, body := post(refused, nil)
		if v := verdict(body); code != 200 || v.Allowed || v.Code == "" {
			t.Errorf("%s: %d %s, want a refusal", refused, code, body)
		}
	}
	if count() != 0 || len(records.uses(t)) != 0 {
		t.Fatalf("%d asks, use records %v, before any allowed test; want none", count(), records.uses(t))
	}

	code, body := post(ask, nil)
	v := verdict(body)
	if code != 200 || !v.Allowed || v.Route != "api" || v.Client != "web" || !strings.Contains(v.Warning, "a token was obtained") || count() != 1 {
		t.Fatalf("an allowed test: %d %s, %d asks; want allowed, a token obtained, 1 ask", code, body, count())
	}
	uses := records.uses(t)
	if len(uses) != 1 || uses[0]["route"] != "api" || uses[0]["client"] != "web" || uses[0]["method"] != "POST" || uses[0]["path"] != "/token" {
		t.Fatalf("use records %v; want the ask's", uses)
	}
	if !strings.Contains(logs.String(), `"id":"`+uses[0]["id"].(string)+`"`) {
		t.Errorf("the log does not name the ask's use record: %s", logs.String())
	}

	// The token is the minter's: a request goes with it, and the next
	// test is told so without an ask.
	w := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/api/v1/things", nil)
	req.Header.Set("X-Till-Token", webToken)
	gw.ServeHTTP(w, req)
	if w.Code != http.StatusNoContent || count() != 1 {
		t.Errorf("a request after the test: %d with %d asks, want 204 with the test's token", w.Code, count())
	}
	code, body = post(ask, nil)
	if v := verdict(body); code != 200 || !v.Allowed || !strings.Contains(v.Warning, "not asked for this test") || count() != 1 {
		t.Errorf("a second test: %d %s, %d asks; want allowed, the held token named, no ask", code, body, count())
	}

	// The endpoint refuses: the verdict says how, never with the secret.
	code, body = post(`{"method": "GET", "target": "/broken/v1/things"}`, nil)
	if v := verdict(body); code != 200 || v.Allowed || v.Code != CodeCredentialUnavailable || !strings.Contains(v.Reason, "invalid_client") {
		t.Errorf("a refusing endpoint: %d %s; want refused credential_unavailable with its error code", code, body)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range append([]string{clientSecret}, tokens...) {
		if strings.Contains(records.String()+logs.String(), s) {
			t.Errorf("%q is in the trail or the log", s)
		}
	}
}

// TestAdminTestAuditDown: with the trail unwritable, POST /admin/test
// asks nothing and says so (audit_unavailable).
func TestAdminTestAuditDown(t *testing.T) {
	te := newTokenEndpoint(t, func(w http.ResponseWriter, r *http.Request) {})
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: api, upstream: "+te.URL+", secret: cred, inject: {oauth2: {token_url: "+te.URL+"/token}}}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	down := &failingWriter{fail: true}
	gw := New(NewSnapshot(cfg, map[string]vault.Secret{"cred": oauthSecret("app", time.Now())}), Options{Audit: testAudit(down), Log: zerolog.Nop()})
	r := httptest.NewRequest("POST", "http://127.0.0.1:9090/admin/test", strings.NewReader(`{"method": "GET", "target": "/api/x"}`))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	NewAdmin(AdminOptions{Gateway: gw}).ServeHTTP(w, r)
	var v Verdict
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil || v.Allowed || v.Code != CodeAuditUnavailable || te.count() != 0 {
		t.Errorf("with the trail down: %d %s, %d asks; want refused audit_unavailable and no ask", w.Code, w.Body.String(), te.count())
	}
}

// TestAdminTestReloadDuringDialStopsKey: a reload acknowledged while
// POST /admin/test's ask waits for the token endpoint's connection (a
// slow DNS answer, TCP or TLS handshake) keeps the client secret from
// going, as it does for a request's ask: here the reload moved the
// route's token_url, and the old endpoint still got the secret.
func TestAdminTestReloadDuringDialStopsKey(t *testing.T) {
	old := newTokenEndpoint(t, func(http.ResponseWriter, *http.Request) {})
	moved := newTokenEndpoint(t, func(http.ResponseWriter, *http.Request) {})
	conf := func(tokenURL string) *Snapshot {
		cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: api, upstream: "+moved.URL+", secret: app, inject: {oauth2: {token_url: "+tokenURL+"/token}}}\n"), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return NewSnapshot(cfg, map[string]vault.Secret{"app": oauthSecret("app", time.Now())})
	}
	gw := New(conf(old.URL), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
	v, body := adminTestHeldAtDial(t, gw, func() {
		gw.Swap(conf(moved.URL)) // the token_url fixed, acknowledged
	})
	if n := old.count(); n != 0 || v.Allowed || v.Code != CodeSecretUnavailable || !strings.Contains(v.Reason, "run till test --mint again") {
		t.Errorf("after a reload that moved the token_url while the endpoint was dialled: %s; the old endpoint was asked %d time(s); want a refusal and no ask", body, n)
	}
}

// adminTestHeldAtDial runs POST /admin/test of GET /api/x on gw, its
// token endpoint's dial held until meanwhile has run, and returns the
// verdict, and the answer as it came.
func adminTestHeldAtDial(t *testing.T, gw *Gateway, meanwhile func()) (Verdict, string) {
	t.Helper()
	tr, dialing, release := heldDialTransport()
	oldTransport := tokenClient.Transport
	tokenClient.Transport = tr
	t.Cleanup(func() { tokenClient.Transport = oldTransport })
	answer := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		r := httptest.NewRequest("POST", "http://127.0.0.1:9090/admin/test", strings.NewReader(`{"method": "GET", "target": "/api/x"}`))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		NewAdmin(AdminOptions{Gateway: gw}).ServeHTTP(w, r)
		answer <- w
	}()
	select {
	case <-dialing:
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("the test never reached the token endpoint's dial")
	}
	meanwhile()
	close(release)
	w := <-answer
	var v Verdict
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("answer %q: %v", w.Body.String(), err)
	}
	return v, w.Body.String()
}

// TestAdminTestKeyExpiringDuringDial: a key that expires while POST
// /admin/test's ask waits for the token endpoint's connection is not
// sent there under on_expired: block, as for a request's ask
// (TestKeyExpiringDuringTokenEndpointDial).
func TestAdminTestKeyExpiringDuringDial(t *testing.T) {
	te := newTokenEndpoint(t, func(http.ResponseWriter, *http.Request) {})
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nvault: {on_expired: block}\nroutes:\n  - {name: api, upstream: "+te.URL+", secret: app, inject: {oauth2: {token_url: "+te.URL+"/token}}}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	k := oauthSecret("app", time.Now())
	k.Expires = time.Now().Add(300 * time.Millisecond)
	gw := New(NewSnapshot(cfg, map[string]vault.Secret{"app": k}), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
	v, body := adminTestHeldAtDial(t, gw, func() { time.Sleep(time.Until(k.Expires) + 100*time.Millisecond) })
	if n := te.count(); n != 0 || v.Allowed || v.Code != CodeSecretExpired {
		t.Errorf("the key expired while the endpoint was dialled: %s; the endpoint was asked %d time(s); want refused %s and no ask", body, n, CodeSecretExpired)
	}
}

// TestDryRunLeavesPoolRotation: a dry run on a pool route (till test,
// POST /admin/test) takes no turn of the live round robin. Requests
// interleaved with dry runs use the keys in the order they use them
// alone, and each dry run names the key the next request takes.
func TestDryRunLeavesPoolRotation(t *testing.T) {
	const n = 5
	keyOf := func(auth string) string { // Bearer sk-pool-NAME-0123456789
		name, _, _ := strings.Cut(strings.TrimPrefix(auth, "Bearer sk-pool-"), "-")
		return name
	}
	loopback := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9090}
	run := func(dryRuns bool) (used, named []string) {
		up, sent := poolUpstream(t, func(*http.Request) int { return http.StatusOK })
		gw := poolGateway(t, up.URL, "a", "b", "c")
		admin := NewAdmin(AdminOptions{Gateway: gw})
		for range n {
			if dryRuns {
				v := gw.Snapshot().Explain("GET", "/openai/v1/models", "", "127.0.0.1:1234", "", time.Now())
				r := httptest.NewRequest("POST", "http://127.0.0.1:9090/admin/test", strings.NewReader(`{"method": "GET", "target": "/openai/v1/models"}`))
				r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, loopback))
				r.Header.Set("Content-Type", "application/json")
				w := httptest.NewRecorder()
				admin.ServeHTTP(w, r)
				var tested Verdict
				if err := json.Unmarshal(w.Body.Bytes(), &tested); err != nil || w.Code != 200 {
					t.Fatalf("POST /admin/test: %d %q", w.Code, w.Body.String())
				}
				named = append(named, v.Secret+"/"+tested.Secret)
			}
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, httptest.NewRequest("GET", "/openai/v1/models", nil))
			if w.Code != 200 {
				t.Fatalf("request: %d %s", w.Code, w.Body.String())
			}
			s := sent()
			k := keyOf(s[len(s)-1])
			used = append(used, k)
			if dryRuns && named[len(named)-1] != k+"/"+k {
				t.Errorf("Explain/admin test named %s; the request after them went with %s", named[len(named)-1], k)
			}
		}
		return used, named
	}
	alone, _ := run(false)
	mixed, _ := run(true)
	if !slices.Equal(alone, mixed) {
		t.Errorf("requests alone used keys %v; interleaved with dry runs, %v: a dry run moved the live rotation", alone, mixed)
	}
}
