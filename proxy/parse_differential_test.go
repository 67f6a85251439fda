package proxy

// Request-parsing differentials between what till judges and what the
// upstream runs. Each test fails on the current code and passes once the
// differential is closed.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy/ca"
	"github.com/tillgw/till/vault"
)

// diffUpstream answers every request with a small JSON body and
// remembers, per request, "PROTO METHOD REQUESTURI auth=AUTHORIZATION".
type diffUpstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string
}

func newRecordingUpstream(t *testing.T, h2 bool, reply func(w http.ResponseWriter, r *http.Request)) *diffUpstream {
	t.Helper()
	u := &diffUpstream{}
	u.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, fmt.Sprintf("%s %s %s auth=%q", r.Proto, r.Method, r.RequestURI, r.Header.Get("Authorization")))
		u.mu.Unlock()
		if reply != nil {
			reply(w, r)
			return
		}
		io.WriteString(w, `{"ok":true}`)
	}))
	u.EnableHTTP2 = h2
	u.StartTLS()
	t.Cleanup(u.Close)
	return u
}

func (u *diffUpstream) requests() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.seen...)
}

// diffInterceptFixture is a gateway in forward mode with interception, a
// client "web" (connectToken), and one route (routeYAML, indented as a
// list item, with {{UP}} for the upstream URL) to up.
func diffInterceptFixture(t *testing.T, up *diffUpstream, routeYAML string) (front *httptest.Server, roots *x509.CertPool) {
	t.Helper()
	front, roots, _ = diffAuditedFixture(t, up, routeYAML)
	return front, roots
}

// diffAuditedFixture is diffInterceptFixture, with the buffer its
// gateway writes its audit records to.
func diffAuditedFixture(t *testing.T, up *diffUpstream, routeYAML string) (front *httptest.Server, roots *x509.CertPool, records *lockedBuffer) {
	t.Helper()
	sum := sha256.Sum256([]byte(connectToken))
	yaml := fmt.Sprintf("version: 1\nforward: {enabled: true}\nclients:\n  - name: web\n    token_sha256: %s\nroutes:\n%s",
		hex.EncodeToString(sum[:]), strings.ReplaceAll(routeYAML, "{{UP}}", up.URL))
	cfg, err := config.Parse("till.yaml", []byte(yaml), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	authority, _ := ca.New("parse-differential-test", time.Now())
	leaves, _ := ca.NewLeaves(authority, 16)
	roots = x509.NewCertPool()
	roots.AddCert(authority.Certificate())
	transport := NewTransport()
	transport.TLSClientConfig.RootCAs = x509.NewCertPool()
	transport.TLSClientConfig.RootCAs.AddCert(up.Certificate())
	secrets := map[string]vault.Secret{"openai": vault.NewSecret("openai", testKey, time.Now())}
	records = &lockedBuffer{}
	gw := New(NewSnapshot(cfg, secrets), Options{Audit: testAudit(records), Log: zerolog.Nop(), Transport: transport, Leaves: leaves})
	front = httptest.NewServer(gw)
	t.Cleanup(front.Close)
	return front, roots, records
}

// diffInterceptedRaw opens a CONNECT to up's host as client web, writes raw
// inside the intercepted TLS (HTTP/1.1) and returns the first response.
func diffInterceptedRaw(t *testing.T, front *httptest.Server, roots *x509.CertPool, up *diffUpstream, raw string) (int, string) {
	t.Helper()
	tc := diffTunnel(t, front, roots, up, "http/1.1")
	defer tc.Close()
	io.WriteString(tc, strings.ReplaceAll(raw, "{{HOST}}", strings.TrimPrefix(up.URL, "https://")))
	r, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		return 0, err.Error()
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	return r.StatusCode, r.Header.Get("X-Till-Error") + " " + string(b)
}

// diffTunnel opens a CONNECT to up's host as client web and returns the
// TLS connection inside it, intercepted, speaking proto (ALPN).
func diffTunnel(t *testing.T, front *httptest.Server, roots *x509.CertPool, up *diffUpstream, proto string) *tls.Conn {
	t.Helper()
	host := strings.TrimPrefix(up.URL, "https://")
	c, err := net.Dial("tcp", front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Bearer %s\r\n\r\n", host, host, connectToken)
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "CONNECT"})
	if err != nil || resp.StatusCode != 200 {
		c.Close()
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	tc := tls.Client(c, &tls.Config{ServerName: "127.0.0.1", RootCAs: roots, NextProtos: []string{proto}})
	if err := tc.Handshake(); err != nil || tc.ConnectionState().NegotiatedProtocol != proto {
		c.Close()
		t.Fatalf("handshake: %v, protocol %q, want %q", err, tc.ConnectionState().NegotiatedProtocol, proto)
	}
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	return tc
}

// TestInterceptedConnectMethodNeverForwarded: net/http parses an HTTP/1.1
// "CONNECT /v1/models" as an origin-form request with that path. Inside an
// intercepted CONNECT it must not go upstream with the key: a CONNECT has
// no path there (over HTTP/2 only :method and :authority go, the body as
// tunnel data), so the upstream would not run the request till allowed.
func TestInterceptedConnectMethodNeverForwarded(t *testing.T) {
	for _, h2 := range []bool{true, false} {
		up := newRecordingUpstream(t, h2, nil)
		front, roots := diffInterceptFixture(t, up, `  - name: models-only
    upstream: {{UP}}
    secret: openai
    inject: {header: Authorization, format: "Bearer {secret}"}
    clients: [web]
    allow: {paths: ["/v1/models"]}
`)
		status, body := diffInterceptedRaw(t, front, roots, up, "CONNECT /v1/models HTTP/1.1\r\nHost: {{HOST}}\r\nContent-Length: 5\r\n\r\nhello")
		for _, line := range up.requests() {
			if strings.Contains(line, " CONNECT ") {
				t.Errorf("h2=%v: till answered %d %s and the upstream got %s: a CONNECT with the route's key, whose path (judged /v1/models) the upstream never saw", h2, status, strings.TrimSpace(body), line)
			}
		}
	}
}

// effectiveMethod is the method stock web frameworks run a request as:
// Laravel/Symfony (httpMethodParameterOverride, on by default in Laravel)
// take a POST's _method from the form body or the query; Rails
// (Rack::MethodOverride, in the default middleware stack) from the form
// body; Jersey's HttpMethodOverrideFilter and Express's method-override
// from the query (_method); IBM ODM and others from an
// x-http-method-override / x-method-override query parameter.
func effectiveMethod(r *http.Request) string {
	if r.Method != http.MethodPost {
		return r.Method
	}
	q := r.URL.Query()
	for _, name := range []string{"_method", "x-http-method-override", "x-method-override", "X-HTTP-Method-Override"} {
		if v := q.Get(name); v != "" {
			return strings.ToUpper(v)
		}
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		if err := r.ParseForm(); err == nil {
			if v := r.PostForm.Get("_method"); v != "" {
				return strings.ToUpper(v)
			}
		}
	}
	return r.Method
}

// TestMethodOverrideParamsNeverSent: a route that allows only POST does
// not reach its upstream as a DELETE through the query parameters stock
// frameworks honour: ?_method=DELETE (Laravel/Symfony, Jersey, Express's
// method-override) and ?x-http-method-override=DELETE (IBM ODM, several
// Java filters), in any case or escape. (A _method in a form body: see
// TestMethodInFormBodyNeverSent.)
func TestMethodOverrideParamsNeverSent(t *testing.T) {
	var mu sync.Mutex
	var ran []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := effectiveMethod(r)
		mu.Lock()
		if r.Header.Get("Authorization") == "Bearer "+testKey {
			ran = append(ran, m+" "+r.URL.Path)
		}
		mu.Unlock()
		io.WriteString(w, "{}")
	}))
	defer up.Close()
	yaml := `version: 1
routes:
  - name: items
    upstream: {{UP}}
    secret: openai
    inject: {header: Authorization, format: "Bearer {secret}"}
    allow:
      methods: [POST]
      paths: ["/api/items/*"]
`
	gw, _ := newTestGateway(t, yaml, up.URL, secrets(time.Now()))
	for _, tc := range []struct{ target, contentType, body string }{
		{"/items/api/items/7?_method=DELETE", "application/json", "{}"},
		{"/items/api/items/7?%5Fmethod=DELETE", "application/json", "{}"},
		{"/items/api/items/7?x-http-method-override=DELETE", "application/json", "{}"},
		{"/items/api/items/7?X-HTTP-Method-Override=DELETE", "application/json", "{}"},
	} {
		mu.Lock()
		ran = nil
		mu.Unlock()
		req := httptest.NewRequest("POST", tc.target, strings.NewReader(tc.body))
		req.Header.Set("Content-Type", tc.contentType)
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, req)
		mu.Lock()
		for _, r := range ran {
			if !strings.HasPrefix(r, "POST ") {
				t.Errorf("POST %s (%s %q): till answered %d and the upstream ran %s with the key, on a route that allows only POST", tc.target, tc.contentType, tc.body, w.Code, r)
			}
		}
		mu.Unlock()
	}
}

// TestTraceNeverForwardedWithKey: TRACE and TRACK never leave till, even
// on a route that allows every method: an upstream that answers TRACE as
// RFC 9110 says (Apache's default) returns the request it received, the
// key among its headers, as the body, which till does not scrub.
func TestTraceNeverForwardedWithKey(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "TRACE" || r.Method == "TRACK" {
			w.Header().Set("Content-Type", "message/http")
			fmt.Fprintf(w, "%s %s %s\r\n", r.Method, r.RequestURI, r.Proto)
			r.Header.Write(w)
			return
		}
		io.WriteString(w, "{}")
	}))
	defer up.Close()
	yaml := `version: 1
routes:
  - name: internal
    upstream: {{UP}}
    secret: openai
    inject: {header: Authorization, format: "Bearer {secret}"}
    allow:
      paths: ["/v1/**"]
`
	gw, _ := newTestGateway(t, yaml, up.URL, secrets(time.Now()))
	for _, method := range []string{"TRACE", "TRACK"} {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest(method, "/internal/v1/status", nil))
		if strings.Contains(w.Body.String(), testKey) {
			t.Errorf("%s /internal/v1/status: %d, and the app read the route's key in the body:\n%s", method, w.Code, w.Body)
		}
	}
}

// TestMethodInFormBodyNeverSent: Rails (Rack::MethodOverride), Laravel
// and Symfony run a POST whose form holds _method=DELETE as a DELETE. On
// a route to an upstream of the user's own that allows only POST, such a
// form, urlencoded or multipart, however its field is written, is refused
// before the key goes; a form that names an allowed method, or none,
// passes, as does one too large to read once max_body allows it. A
// provider's route (a preset) reads no such field, and is left alone.
func TestMethodInFormBodyNeverSent(t *testing.T) {
	var mu sync.Mutex
	var ran []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		ran = append(ran, r.URL.Path)
		mu.Unlock()
		io.WriteString(w, "{}")
	}))
	defer up.Close()
	yaml := `version: 1
routes:
  - name: items
    upstream: {{UP}}
    secret: openai
    inject: {header: Authorization, format: "Bearer {secret}"}
    allow: {methods: [POST, GET]}
  - name: big
    upstream: {{UP}}
    secret: openai
    inject: {header: Authorization, format: "Bearer {secret}"}
    allow: {methods: [POST]}
    max_body: 4MB
  - name: openai
    preset: openai
    upstream: {{UP}}
    allow: {methods: [POST]}
`
	gw, _ := newTestGateway(t, yaml, up.URL, secrets(time.Now()))
	multipartForm := func(disposition, value string, pad int) (string, string) {
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		mw.WriteField("title", strings.Repeat("x", pad))
		h := textproto.MIMEHeader{"Content-Disposition": {disposition}}
		p, _ := mw.CreatePart(h)
		io.WriteString(p, value)
		mw.Close()
		return mw.FormDataContentType(), b.String()
	}
	const form = "application/x-www-form-urlencoded"
	for _, tc := range []struct {
		name, path, contentType, body string
		code                          int
	}{
		{"urlencoded", "/items/posts/7", form, "title=x&_method=DELETE", 403},
		{"urlencoded, escaped, lower case", "/items/posts/7", form, "title=x&%5Fmethod=delete", 403},
		{"urlencoded, after a semicolon", "/items/posts/7", form, "title=x;_method=PUT", 403},
		{"urlencoded, nested", "/items/posts/7", form, "_method[]=PATCH", 403},
		{"urlencoded, allowed method", "/items/posts/7", form, "title=x&_method=get", 200},
		{"urlencoded, none", "/items/posts/7", form, "title=x&method=DELETE", 200},
		{"urlencoded, badly escaped", "/items/posts/7", form, "title=x&%zz=1", 400},
		{"urlencoded on a provider's route", "/openai/v1/files", form, "_method=DELETE", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			ran = nil
			mu.Unlock()
			req := httptest.NewRequest("POST", tc.path, strings.NewReader(tc.body))
			req.Header.Set("Content-Type", tc.contentType)
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, req)
			mu.Lock()
			defer mu.Unlock()
			if w.Code != tc.code || (tc.code != 200) != (len(ran) == 0) {
				t.Errorf("POST %s %q: %d, upstream asked %d times; want %d", tc.path, tc.body, w.Code, len(ran), tc.code)
			}
		})
	}
	for _, tc := range []struct {
		name, path, disposition, value string
		pad, code                      int
	}{
		{"multipart", "/items/posts/7", `form-data; name="_method"`, "DELETE", 0, 403},
		{"multipart, an attachment's name", "/items/posts/7", `attachment; name="_method"`, "DELETE", 0, 403},
		{"multipart, unquoted", "/items/posts/7", `form-data; name=_method`, "put", 0, 403},
		{"multipart, unparsable disposition naming it", "/items/posts/7", `form-data; name="_method`, "DELETE", 0, 400},
		{"multipart, allowed", "/items/posts/7", `form-data; name="_method"`, "POST", 0, 200},
		{"multipart, other field", "/items/posts/7", `form-data; name="body"`, "DELETE", 0, 200},
		{"multipart over 1 MiB", "/items/posts/7", `form-data; name="_method"`, "DELETE", 2 << 20, 400},
		{"multipart over 1 MiB, within max_body", "/big/posts/7", `form-data; name="_method"`, "DELETE", 2 << 20, 403},
		{"multipart over 1 MiB, within max_body, none", "/big/posts/7", `form-data; name="body"`, "x", 2 << 20, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			ran = nil
			mu.Unlock()
			ct, body := multipartForm(tc.disposition, tc.value, tc.pad)
			req := httptest.NewRequest("POST", tc.path, strings.NewReader(body))
			req.Header.Set("Content-Type", ct)
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, req)
			mu.Lock()
			defer mu.Unlock()
			if w.Code != tc.code || (tc.code != 200) != (len(ran) == 0) {
				t.Errorf("POST %s (%s: %q): %d %s, upstream asked %d times; want %d", tc.path, tc.disposition, tc.value, w.Code, w.Body, len(ran), tc.code)
			}
		})
	}
}

// TestFieldInAnotherCaseRefused: Go's encoding/json (behind Ollama and
// the Go relays that serve OpenAI's API) and ASP.NET Core read a JSON
// member whose name matches a field in any case (Unicode's simple
// folding: "ſtream" is "stream"), the last one winning. A body naming a
// field till reads in another case than till reads it would ask the
// upstream for a model the route does not allow, or a stream till did
// not ask the usage of: it is refused before anything is sent.
func TestFieldInAnotherCaseRefused(t *testing.T) {
	var ran []string
	var mu sync.Mutex
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model  string `json:"model"`
			Stream bool   `json:"stream"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		mu.Lock()
		ran = append(ran, fmt.Sprintf("%s stream=%v", req.Model, req.Stream))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"model":"gpt-4o-mini","usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n" +
		"  - {name: models, preset: openai, upstream: {{UP}}, secret: openai, allow: {models: [gpt-4o-mini]}}\n" +
		"  - {name: budgeted, preset: openai, upstream: {{UP}}, secret: openai}\n" +
		"budgets:\n  - {name: b, routes: [budgeted], window: 1d, tokens: 100000}\n"
	gw, _ := newTestGateway(t, y, up.URL, secrets(time.Now()))
	srv := httptest.NewServer(gw)
	defer srv.Close()
	for _, tt := range []struct{ route, body string }{
		{"models", `{"model":"gpt-4o-mini","MODEL":"gpt-5","messages":[]}`},
		{"models", `{"Model":"gpt-5","messages":[]}`},
		{"budgeted", `{"model":"gpt-4o-mini","Stream":true,"messages":[]}`},
		{"budgeted", `{"model":"gpt-4o-mini","\u017ftream":true,"messages":[]}`},  // ſ: long s
		{"budgeted", `{"model":"gpt-4o-mini","max_to\u212aens":5,"messages":[]}`}, // K: Kelvin sign
		{"budgeted", `{"model":"gpt-4o-mini","generationConfig":{"MaxOutputTokens":5}}`},
	} {
		code, body := post(t, srv.URL+"/"+tt.route+"/v1/chat/completions", tt.body)
		if code != http.StatusBadRequest || !strings.Contains(body, "another case") {
			t.Errorf("%s %s: got %d %s, want 400 naming the case", tt.route, tt.body, code, body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ran) != 0 {
		t.Errorf("the upstream ran %q, want nothing", ran)
	}
}
