package proxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy/ca"
	"github.com/tillgw/till/vault"
)

// Regression tests for findings of security reviews.

func TestRelayConnectionsEndWithTheirRules(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" || r.Header.Get("X-Api-Key") != "" {
			t.Error("a till token reached a host without a route")
		}
		io.WriteString(w, "internal")
	}))
	defer up.Close()
	allow := "version: 1\nforward: {enabled: true, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\nroutes: []\n"
	gw, _ := newTestGateway(t, allow, "", nil)
	front := httptest.NewServer(gw)
	defer front.Close()
	pu, _ := url.Parse(front.URL)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
	get := func() int {
		req, _ := http.NewRequest("GET", up.URL+"/", nil)
		req.Header.Set("Authorization", "Bearer till_"+strings.Repeat("a", 40))
		req.Header.Set("X-Api-Key", "till_"+strings.Repeat("b", 40))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get(); got != 200 {
		t.Fatalf("allowed: got %d", got)
	}
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nforward: {enabled: true, unknown_hosts: tunnel}\nroutes: []\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gw.Swap(NewSnapshot(cfg, nil))
	if got := get(); got != 403 {
		t.Errorf("after a reload that removed 127.0.0.0/8: got %d, want 403 (a pooled connection outlived its rules)", got)
	}
}

// TestRelayBrokenOffAnswers502: a host without a route (unknown_hosts:
// tunnel) that breaks off a short response before any of it reached the
// app gets the app a 502, as a route's upstream does, not a cut connection
// with nothing.
func TestRelayBrokenOffAnswers502(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100000")
		w.Write(make([]byte, 1000))
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer up.Close()
	gw, audit := newTestGateway(t, "version: 1\nforward: {enabled: true, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\nroutes: []\n", "", nil)
	front := httptest.NewServer(gw)
	defer front.Close()
	pu, _ := url.Parse(front.URL)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), DisableKeepAlives: true}}
	resp, err := client.Get(up.URL + "/")
	if err != nil {
		t.Fatalf("the app got no answer: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || err != nil || !strings.Contains(string(body), "upstream_unreachable") {
		t.Errorf("got %d %q (%v), want a complete 502 upstream_unreachable", resp.StatusCode, body, err)
	}
	recs := audit.records(t)
	if len(recs) != 1 || recs[0]["status"] != float64(502) || recs[0]["reason"] != "upstream_unreachable" {
		t.Errorf("audit: %v", recs)
	}
}

func TestCAKeyNeverInjected(t *testing.T) {
	var got string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Get("Authorization") }))
	defer up.Close()
	authority, _ := ca.New("t", time.Now())
	stored, _ := authority.StoredKey()
	// Config refuses the name; the snapshot refuses it too, for a config
	// built some other way.
	if _, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - name: x\n    preset: openai\n    secret: till-ca\n"), t.TempDir()); err == nil {
		t.Error("config accepted secret: till-ca")
	}
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - name: x\n    preset: openai\n    upstream: "+up.URL+"\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Routes[0].Secret = config.CASecret
	gw := New(NewSnapshot(cfg, map[string]vault.Secret{config.CASecret: vault.NewSecret(config.CASecret, stored, time.Now())}),
		Options{Audit: testAudit(io.Discard)})
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/x/", nil))
	if w.Code != 503 || strings.Contains(got, stored) {
		t.Errorf("got %d, and the upstream saw the CA key: %v", w.Code, strings.Contains(got, stored))
	}
}

func TestClientCertificateNeedsItsToken(t *testing.T) {
	digest := strings.Repeat("ab", 32)
	cfg, err := config.Parse("till.yaml", []byte(`version: 1
tls: {names: [till.test]}
clients:
  - name: web
    token_sha256: `+digest+`
    cert: true
  - name: plain
    token_sha256: `+strings.Repeat("cd", 32)+`
routes: []
`), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := NewSnapshot(cfg, nil)
	withCert := func(cn, uri string) *http.Request {
		r := httptest.NewRequest("GET", "/", nil)
		c := &x509.Certificate{Subject: pkix.Name{CommonName: cn}}
		if uri != "" {
			u, _ := url.Parse(uri)
			c.URIs = []*url.URL{u}
		}
		r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c}}}
		return r
	}
	tests := []struct {
		name string
		r    *http.Request
		want string
	}{
		{"bound to the current token", withCert("web", CertURI("web", digest)), "web"},
		{"bound to an old token", withCert("web", CertURI("web", strings.Repeat("ef", 32))), ""},
		{"no binding", withCert("web", ""), ""},
		{"a client without cert: true", withCert("plain", CertURI("plain", strings.Repeat("cd", 32))), ""},
		{"an unknown name", withCert("nobody", CertURI("nobody", digest)), ""},
		{"the binding with more after it", withCert("web", CertURI("web", digest)+"00"), ""},
		{"the binding in upper case", withCert("web", strings.ToUpper(CertURI("web", digest))), ""},
		{"another client's binding", withCert("web", CertURI("plain", digest)), ""},
	}
	for _, tt := range tests {
		id := s.clients.identify(tt.r, "", certID{}, nil)
		got := ""
		if _, ok := id.admit("127.0.0.1:1", []string{"web", "plain"}); ok && id.client != nil {
			got = id.client.name
		}
		if got != tt.want {
			t.Errorf("%s: admitted as %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestInterceptionEndsWithReload(t *testing.T) {
	f := newInterceptFixture(t, 16)
	tc := f.handshake(t, "127.0.0.1")
	defer tc.Close()
	br := bufio.NewReader(tc)
	get := func(host string) (int, string) {
		fmt.Fprintf(tc, "GET /v1/models HTTP/1.1\r\nHost: %s:%s\r\n\r\n", host, f.port)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("X-Till-Error")
	}
	if got, _ := get("127.0.0.1"); got != 200 {
		t.Fatalf("first request: %d", got)
	}
	if got, code := get("localhost"); got != 403 || code != CodeHostNotAllowed {
		t.Errorf("inner Host for another host: got %d %s", got, code)
	}
	cfg, err := config.Parse("till.yaml", []byte(fmt.Sprintf("version: 1\nforward: {enabled: false}\nroutes:\n  - name: ip\n    preset: openai\n    upstream: https://127.0.0.1:%s\n    secret: openai\n", f.port)), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f.gw.Swap(NewSnapshot(cfg, map[string]vault.Secret{"openai": vault.NewSecret("openai", testKey, time.Now())}))
	if got, _ := get("127.0.0.1"); got == 200 {
		t.Error("an intercepted connection opened before a reload that turned forward mode off still forwards")
	}
}

func TestHTTP2AuthorityMustMatchConnect(t *testing.T) {
	f := newInterceptFixture(t, 16)
	tr := &http.Transport{
		ForceAttemptHTTP2: true,
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return f.handshakeALPN(t, "127.0.0.1", "h2"), nil
		},
	}
	client := &http.Client{Transport: tr}
	for host, want := range map[string]int{"127.0.0.1": 200, "localhost": 403} {
		resp, err := client.Get("https://" + host + ":" + f.port + "/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != want {
			t.Errorf(":authority %s: got HTTP/%d %d, want HTTP/2 %d", host, resp.ProtoMajor, resp.StatusCode, want)
		}
	}
}

func TestAnonymousIPv6CountsBy64(t *testing.T) {
	if a, b := remoteIP("[2001:db8:1:2::1]:1000"), remoteIP("[2001:db8:1:2:ffff::9]:2000"); a != b {
		t.Errorf("two addresses of one /64: %q and %q", a, b)
	}
	if a, b := remoteIP("10.0.0.1:1"), remoteIP("10.0.0.2:1"); a == b {
		t.Error("two IPv4 addresses share a bucket")
	}
}

// TestAnonymousLoopbackCountsAsOne: an app cannot multiply a route's
// anonymous rate by binding more loopback addresses, nor by writing an
// address IPv4-mapped (issue 12, point 7).
func TestAnonymousLoopbackCountsAsOne(t *testing.T) {
	for _, group := range [][]string{
		{"127.0.0.1:1", "127.0.0.2:2", "127.255.0.9:3", "[::1]:4", "[::ffff:127.0.0.3]:5"},
		{"10.0.0.1:1", "[::ffff:10.0.0.1]:2"},
		{"[2001:db8:1:2::1]:1", "[2001:db8:1:2:ffff::9]:2"},
	} {
		for _, addr := range group[1:] {
			if a, b := remoteIP(group[0]), remoteIP(addr); a != b {
				t.Errorf("%s and %s: buckets %q and %q, want one", group[0], addr, a, b)
			}
		}
	}
	if a, b := remoteIP("127.0.0.1:1"), remoteIP("10.0.0.1:1"); a == b {
		t.Errorf("loopback and 10.0.0.1 share bucket %q", a)
	}
}

func TestStalledBodyIsCut(t *testing.T) {
	defer func(d time.Duration) { bodyIdleTimeout = d }(bodyIdleTimeout)
	bodyIdleTimeout = 300 * time.Millisecond
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
	}))
	defer up.Close()
	gw, audit := newTestGateway(t, "version: 1\nroutes:\n  - name: openai\n    preset: openai\n    upstream: {{UP}}\n", up.URL, secrets(time.Now()))
	front := httptest.NewServer(gw)
	defer front.Close()
	c, err := net.Dial("tcp", front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /openai/v1/files HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err == nil {
		resp.Body.Close()
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("a stalled body held the request for %v", d)
	}
	for deadline := time.Now().Add(5 * time.Second); len(audit.records(t)) == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if recs := audit.records(t); len(recs) != 1 || recs[0]["outcome"] == "forwarded" {
		t.Errorf("audit: %v", recs)
	}
}

// webHash is a client's token_sha256 in the tests below.
const webHash = "9a0b9a0b9a0b9a0b9a0b9a0b9a0b9a0b9a0b9a0b9a0b9a0b9a0b9a0b9a0b9a0b"

// parseOrRefused parses yaml; ok is false when the config is refused,
// which is how till now answers each of the configs below: the tests
// check what such a config would mean at request time if it loaded.
func parseOrRefused(t *testing.T, yaml, upstream string) (*config.Config, bool) {
	t.Helper()
	cfg, err := config.Parse("till.yaml", []byte(strings.ReplaceAll(yaml, "{{UP}}", upstream)), t.TempDir())
	if err != nil {
		t.Logf("config refused (fixed): %v", err)
		return nil, false
	}
	return cfg, true
}

// TestDuplicateTokenCannotCrossClients: web and billing given the same
// token_sha256 (a pasted line) let web's app, with web's token and from
// outside web's cidrs, spend billing's route: the key was sent.
func TestDuplicateTokenCannotCrossClients(t *testing.T) {
	tok := TokenPrefix + strings.Repeat("w", TokenLength)
	sum := sha256.Sum256([]byte(tok))
	digest := hex.EncodeToString(sum[:])
	sent := false
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { sent = true }))
	defer up.Close()
	cfg, ok := parseOrRefused(t, `version: 1
clients:
  - {name: web, token_sha256: `+digest+`, cidrs: [10.0.0.0/8]}
  - {name: billing, token_sha256: `+digest+`}
routes:
  - {name: chat, preset: openai, upstream: {{UP}}, secret: openai, clients: [web]}
  - {name: billing, preset: openai, upstream: {{UP}}, secret: openai, clients: [billing]}
`, up.URL)
	if !ok {
		return
	}
	gw := New(NewSnapshot(cfg, secrets(time.Now())), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
	req := httptest.NewRequest("GET", "/billing/v1/models", nil)
	req.RemoteAddr = "192.0.2.7:4000" // outside web's cidrs
	req.Header.Set("X-Till-Token", tok)
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, req)
	if sent || w.Code == http.StatusOK {
		t.Errorf("web's token from 192.0.2.7 on billing's route: %d, key sent=%v; the duplicate token_sha256 made web billing", w.Code, sent)
	}
}

// TestCommentedOutClientsKeepRouteClosed: a route whose clients: list
// has every entry commented out served anyone on the listener without a
// token; clients: [] is refused for exactly this reason.
func TestCommentedOutClientsKeepRouteClosed(t *testing.T) {
	sent := false
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { sent = true }))
	defer up.Close()
	cfg, ok := parseOrRefused(t, `version: 1
clients:
  - {name: web, token_sha256: `+webHash+`}
routes:
  - name: openai
    preset: openai
    upstream: {{UP}}
    clients:
      # - web     (removed while web's token is rotated)
`, up.URL)
	if !ok {
		return
	}
	gw := New(NewSnapshot(cfg, secrets(time.Now())), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
	req := httptest.NewRequest("GET", "/openai/v1/models", nil)
	req.RemoteAddr = "127.0.0.1:5000"
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, req)
	if sent || w.Code == http.StatusOK {
		t.Errorf("anonymous request on a route with clients: (entries commented out): %d, key sent=%v", w.Code, sent)
	}
}

// TestUpstreamEmptyPortKeepsRouteInForwardMode: upstream
// "https://api.example.com:" (an empty port, which url.Parse accepts)
// loaded, and reverse mode dialled :443 as usual, but the route's host key
// was "api.example.com:" so forward mode never found it: CONNECT
// api.example.com:443 was tunnelled untouched (unknown_hosts: tunnel),
// which resolveConnect promises never to do for a route's host: the
// app's till token, sent as its SDK's key, reached the provider.
func TestUpstreamEmptyPortKeepsRouteInForwardMode(t *testing.T) {
	cfg, ok := parseOrRefused(t, `version: 1
forward: {enabled: true, unknown_hosts: tunnel}
routes:
  - {name: x, preset: openai, upstream: "https://api.example.com:"}
`, "")
	if !ok {
		return
	}
	s := NewSnapshot(cfg, secrets(time.Now()))
	_, mode, e := s.resolveConnect("api.example.com:443", true)
	if e == nil && mode == modeTunnel {
		t.Errorf("CONNECT api.example.com:443, the host of route x (upstream %s): tunnelled untouched", cfg.Routes[0].Upstream)
	}
	if rt := s.matchHost(hostKey("https", "api.example.com:443"), "/v1/models"); rt == nil {
		t.Errorf("forward mode finds no route for https://api.example.com/v1/models")
	}
}

// TestMaxBodyZeroIsNotUnlimited: max_body: 0 loaded as "no cap", so a
// route whose author wanted no request body (GET-only use) took any.
func TestMaxBodyZeroIsNotUnlimited(t *testing.T) {
	var got int
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = len(b)
	}))
	defer up.Close()
	cfg, ok := parseOrRefused(t, `version: 1
routes:
  - {name: openai, preset: openai, upstream: {{UP}}, max_body: 0}
`, up.URL)
	if !ok {
		return
	}
	gw := New(NewSnapshot(cfg, secrets(time.Now())), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
	req := httptest.NewRequest("POST", "/openai/v1/files", strings.NewReader(strings.Repeat("x", 1<<20)))
	req.RemoteAddr = "127.0.0.1:5000"
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, req)
	if got > 0 {
		t.Errorf("max_body: 0 forwarded a %d-byte body (status %d)", got, w.Code)
	}
}
