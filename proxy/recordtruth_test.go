package proxy

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/tillgw/till/audit"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
	"golang.org/x/net/http2/hpack"
)

// failingAudit fails every line that pick selects, and keeps the others.
type failingAudit struct {
	mu   sync.Mutex
	pick func(line map[string]any) bool
	buf  bytes.Buffer
}

func (w *failingAudit) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var m map[string]any
	if json.Unmarshal(p, &m) == nil && w.pick != nil && w.pick(m) {
		return 0, errors.New("disk full")
	}
	return w.buf.Write(p)
}

func (w *failingAudit) events(t *testing.T, event string) []map[string]any {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(w.buf.String()), "\n") {
		var m map[string]any
		if line == "" {
			continue
		}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		if m["event"] == event {
			out = append(out, m)
		}
	}
	return out
}

// TestPoolAskFailureRecordNamesOneKey: a pool of OAuth2 keys; key a's
// token gets 429, so the pool asks key b's token endpoint, which fails
// (500). The app gets key a's 429, and the request record names the key
// that answer came with: secret a with a's fingerprint, not b's (an
// incident summary by key_fp would charge a's request to b).
func TestPoolAskFailureRecordNamesOneKey(t *testing.T) {
	records := poolAskFailure(t)
	fp := map[string]string{} // secret → key_fp, from the use records of the asks
	for _, u := range records.uses(t) {
		if u["path"] == "/token" {
			fp[u["secret"].(string)] = u["key_fp"].(string)
		}
	}
	if fp["a"] == "" || fp["b"] == "" || fp["a"] == fp["b"] {
		t.Fatalf("the asks' use records: %v", records.uses(t))
	}
	reqs := records.records(t)
	if len(reqs) != 1 {
		t.Fatalf("%d request records", len(reqs))
	}
	r := reqs[0]
	if r["secret"] != "a" || r["key_fp"] != fp["a"] {
		t.Errorf("the request record of key a's 429 names secret %v with key_fp %v (a's is %s, b's %s)", r["secret"], r["key_fp"], fp["a"], fp["b"])
	}
}

// TestSummaryCountsPoolAskOfAnotherKey: in the trail of
// TestPoolAskFailureRecordNamesOneKey, key b went to its token endpoint,
// and the request's one record names key a. till audit summary --secret b
// (the incident's question: who used this key) must still show b's use,
// though no request record names b.
func TestSummaryCountsPoolAskOfAnotherKey(t *testing.T) {
	records := poolAskFailure(t)
	s := audit.NewSummary(audit.SummaryFilter{Secret: "b"})
	if err := s.Read(bytes.NewReader(records.b.Bytes()), "audit.log"); err != nil {
		t.Fatal(err)
	}
	rows := s.Rows()
	if len(rows) != 1 || rows[0].Secret != "b" || rows[0].Unfinished != 1 {
		t.Errorf("summary --secret b: got %+v, want one row with b's token ask", rows)
	}
}

// poolAskFailure serves one request on a pool of OAuth2 keys a and b: key
// a's token gets 429, key b's token endpoint fails (500). It returns the
// trail.
func poolAskFailure(t *testing.T) *lockedBuffer {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			id, _, _ := r.BasicAuth()
			if id != "a" {
				w.WriteHeader(http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"access_token":"tok-a-0123456789abcdef","token_type":"Bearer","expires_in":3600}`)
			return
		}
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer srv.Close()
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: api, upstream: "+srv.URL+", secret: [a, b], pool: {cooldown: 1m}, inject: {oauth2: {token_url: "+srv.URL+"/token, auth_style: header}}}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	records := &lockedBuffer{}
	gw := New(NewSnapshot(cfg, map[string]vault.Secret{"a": oauthSecret("a", time.Now()), "b": oauthSecret("b", time.Now())}),
		Options{Audit: testAudit(records), Log: zerolog.Nop()})
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("got %d, want key a's 429", w.Code)
	}
	return records
}

// TestTokenAskResendHasItsOwnAttempt: the transport sends a token ask
// again (HTTP/2 REFUSED_STREAM after the endpoint read the headers that
// carry the client secret). Each send has its use record with an attempt
// of its own (a resend is attempt 2), so that a resend is told apart from
// a record written twice.
func TestTokenAskResendHasItsOwnAttempt(t *testing.T) {
	ts := httptest.NewTLSServer(http.NotFoundHandler())
	cert := ts.TLS.Certificates[0]
	roots := ts.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	ts.Close()
	tr := NewTransport()
	tr.TLSClientConfig.RootCAs = roots
	oldTransport := tokenClient.Transport
	tokenClient.Transport = tr
	t.Cleanup(func() { tokenClient.Transport = oldTransport })

	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
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
			go serveRefuseFirstStream(c, func([]hpack.HeaderField) {})
		}
	}()
	tokenURL := "https://" + ln.Addr().String() + "/token"
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer api.Close()
	y := "version: 1\nroutes:\n  - {name: api, upstream: " + api.URL + ", secret: cred, inject: {oauth2: {token_url: " + tokenURL + ", auth_style: header}}}\n"
	cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cred := vault.NewFieldSecret("cred", map[string]string{"client_id": "app", "client_secret": "cs-h2-0123456789abcdef"}, time.Now())
	records := &lockedBuffer{}
	gw := New(NewSnapshot(cfg, map[string]vault.Secret{"cred": cred}), Options{Audit: testAudit(records), Log: zerolog.Nop()})
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("got %d", w.Code)
	}
	seen := map[string]int{}
	var all []string
	for _, u := range records.uses(t) {
		k := fmt.Sprint(u["id"], " attempt ", u["attempt"], " ", u["host"], u["path"])
		seen[k]++
		all = append(all, k)
	}
	if len(all) != 3 {
		t.Fatalf("use records %v, want the ask, its resend and the upstream send", all)
	}
	for k, n := range seen {
		if n > 1 {
			t.Errorf("%d sends of the key have identical use records (%s): %v", n, k, all)
		}
	}
}

// TestReloadDuringUpgradeTokenAsk: a WebSocket upgrade on a minting
// route; a reload that revokes its client lands while its token is asked
// for. The app gets the refusal the new config gives, the key does not
// go upstream, and no use record says it did.
func TestReloadDuringUpgradeTokenAsk(t *testing.T) {
	var gw *Gateway
	var revokedSnap *Snapshot
	var upstreamSends atomic.Int64
	te := newTokenEndpoint(t, func(w http.ResponseWriter, r *http.Request) { upstreamSends.Add(1) })
	sum := sha256.Sum256([]byte(connectToken))
	other := sha256.Sum256([]byte(connectToken + "x"))
	snap := func(hash []byte) *Snapshot {
		y := "version: 1\nclients:\n  - {name: web, token_sha256: " + hex.EncodeToString(hash) + "}\nroutes:\n  - {name: api, upstream: " + te.URL + ", clients: [web], secret: app, inject: {oauth2: {token_url: " + te.URL + "/token, auth_style: header}}}\n"
		cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return NewSnapshot(cfg, map[string]vault.Secret{"app": oauthSecret("app", time.Now())})
	}
	revokedSnap = snap(other[:])
	records := &lockedBuffer{}
	gw = New(snap(sum[:]), Options{Audit: testAudit(records), Log: zerolog.Nop()})
	te.seen = func() { gw.Swap(revokedSnap) } // the reload lands while the endpoint answers the ask
	front := httptest.NewServer(gw)
	defer front.Close()
	r, _ := http.NewRequest("GET", front.URL+"/api/ws", nil)
	r.Header.Set("X-Till-Token", connectToken)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	front.Close() // the request is over, its records written
	if upstreamSends.Load() != 0 {
		t.Fatalf("the upgrade went upstream %d times; the test needs the reload to stop it", upstreamSends.Load())
	}
	var sends []map[string]any
	for _, u := range records.uses(t) {
		if u["path"] != "/token" {
			sends = append(sends, u)
		}
	}
	if len(sends) != 0 {
		t.Errorf("the key never went upstream (the app got %d), yet %d use record(s) say it did: %v", resp.StatusCode, len(sends), sends)
	}
	reqs := records.records(t)
	if len(reqs) != 1 {
		t.Fatalf("request records: %v", reqs)
	}
	if reqs[0]["status"] != float64(resp.StatusCode) || reqs[0]["attempt"] != 0.0 {
		t.Errorf("the app got %d %q; the request record says status %v, attempt %v, outcome %v %v", resp.StatusCode, resp.Header.Get("X-Till-Error"), reqs[0]["status"], reqs[0]["attempt"], reqs[0]["outcome"], reqs[0]["reason"])
	}
}

// TestRotationDuringTokenAskStopsItsToken: a reload that replaces the
// key a token is being minted from (a leak is why keys are rotated), or
// how it is minted (scopes taken away), lands while the token endpoint
// answers. The token it answers was minted from the old value, or for the
// old scopes: it must not go upstream.
func TestRotationDuringTokenAskStopsItsToken(t *testing.T) {
	const mint = "{oauth2: {token_url: %s/token, auth_style: header, scopes: [%s]}}"
	rotated := vault.NewFieldSecret("app", map[string]string{"client_id": "app", "client_secret": "secret-rotated-0123456789"}, time.Now())
	for _, tt := range []struct {
		name            string
		secret          vault.Secret
		scopes, scopes2 string
	}{
		{"key rotated", rotated, "admin", "admin"},
		{"scopes narrowed", oauthSecret("app", time.Now()), "admin, read", "read"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var upstreamSends atomic.Int64
			te := newTokenEndpoint(t, func(w http.ResponseWriter, r *http.Request) { upstreamSends.Add(1) })
			snap := func(secret vault.Secret, scopes string) *Snapshot {
				y := "version: 1\nroutes:\n  - {name: api, upstream: " + te.URL + ", secret: app, inject: " + fmt.Sprintf(mint, te.URL, scopes) + "}\n"
				cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				return NewSnapshot(cfg, map[string]vault.Secret{"app": secret})
			}
			gw := New(snap(oauthSecret("app", time.Now()), tt.scopes), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
			var once sync.Once
			te.seen = func() { once.Do(func() { gw.Swap(snap(tt.secret, tt.scopes2)) }) }
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
			if upstreamSends.Load() != 0 {
				t.Errorf("a token minted the way the reload replaced went upstream (the app got %d %s)", w.Code, w.Header().Get("X-Till-Error"))
			}
			if w.Code != http.StatusServiceUnavailable || w.Header().Get("X-Till-Error") != CodeSecretUnavailable {
				t.Errorf("got %d %s, want 503 %s (send it again)", w.Code, w.Header().Get("X-Till-Error"), CodeSecretUnavailable)
			}
		})
	}
}

// TestPoolRetryReloadDuringNextAsk: a pool of OAuth2 keys [a, b]; key
// a's token gets 429, and a reload that revokes the client lands while
// key b's token is asked for. The app gets the answer it already has
// (a's 429), and the request record names key a with a's fingerprint.
func TestPoolRetryReloadDuringNextAsk(t *testing.T) {
	var gw *Gateway
	var revokedSnap *Snapshot
	sum := sha256.Sum256([]byte(connectToken))
	other := sha256.Sum256([]byte(connectToken + "x"))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			id, _, _ := r.BasicAuth()
			if id == "b" {
				gw.Swap(revokedSnap) // the reload lands while b's token is minted
			}
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"access_token":"tok-`+id+`-0123456789abcdef","token_type":"Bearer","expires_in":3600}`)
			return
		}
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer srv.Close()
	secrets := map[string]vault.Secret{"a": oauthSecret("a", time.Now()), "b": oauthSecret("b", time.Now())}
	snap := func(hash []byte) *Snapshot {
		y := "version: 1\nclients:\n  - {name: web, token_sha256: " + hex.EncodeToString(hash) + "}\nroutes:\n  - {name: api, upstream: " + srv.URL + ", clients: [web], secret: [a, b], pool: {cooldown: 1m}, inject: {oauth2: {token_url: " + srv.URL + "/token, auth_style: header}}}\n"
		cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return NewSnapshot(cfg, secrets)
	}
	revokedSnap = snap(other[:])
	records := &lockedBuffer{}
	gw = New(snap(sum[:]), Options{Audit: testAudit(records), Log: zerolog.Nop()})
	r := httptest.NewRequest("GET", "/api/x", nil)
	r.Header.Set("X-Till-Token", connectToken)
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, r)
	fp := map[string]string{}
	for _, u := range records.uses(t) {
		fp[u["secret"].(string)] = u["key_fp"].(string)
	}
	reqs := records.records(t)
	last := reqs[len(reqs)-1]
	if w.Code != http.StatusTooManyRequests {
		t.Errorf("the app got %d %s, want the 429 it already had", w.Code, w.Header().Get("X-Till-Error"))
	}
	if last["key_fp"] != fp[last["secret"].(string)] {
		t.Errorf("the final request record names secret %v with key_fp %v (a's %s, b's %s): %v", last["secret"], last["key_fp"], fp["a"], fp["b"], last)
	}
}

// TestPoolUnrecordedNextKeyNotNamed: a pool [a, b]; key a gets 429, and
// key b's use record cannot be written, so b is not sent (503
// audit_unavailable). Every request record names a key that went
// upstream: secret a with a's fingerprint, never b, which no use record
// names and the upstream never saw.
func TestPoolUnrecordedNextKeyNotNamed(t *testing.T) {
	var seen []string
	var mu sync.Mutex
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		mu.Unlock()
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer up.Close()
	keys := map[string]vault.Secret{}
	for _, k := range []string{"a", "b"} {
		keys[k] = vault.NewSecret(k, "sk-pool-"+k+"-0123456789", time.Now())
	}
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: "+up.URL+", secret: [a, b], pool: {cooldown: 1m}}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sink := &failingAudit{pick: func(m map[string]any) bool { return m["event"] == "use" && m["secret"] == "b" }}
	gw := New(NewSnapshot(cfg, keys), Options{Audit: testAudit(sink), Log: zerolog.Nop()})
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/openai/v1/models", nil)) // key a first
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("X-Till-Error") != CodeAuditUnavailable {
		t.Fatalf("got %d %q, want 503 audit_unavailable", w.Code, w.Header().Get("X-Till-Error"))
	}
	mu.Lock()
	if strings.Join(seen, " ") != "sk-pool-a-0123456789" {
		t.Fatalf("the upstream saw keys %v, want key a only", seen)
	}
	mu.Unlock()
	uses := sink.events(t, "use")
	if len(uses) != 1 || uses[0]["secret"] != "a" {
		t.Fatalf("use records %v, want key a's only", uses)
	}
	for _, r := range sink.events(t, "request") {
		if r["secret"] != "a" || r["key_fp"] != uses[0]["key_fp"] || r["attempt"] != 1.0 {
			t.Errorf("a request record names secret %v, key_fp %v, attempt %v; only key a (%v), attempt 1, went: %v",
				r["secret"], r["key_fp"], r["attempt"], uses[0]["key_fp"], r)
		}
	}
}
