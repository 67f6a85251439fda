package proxy

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tillgw/till/vault"
)

// TestExplainMatchesLive: till test decides with the live path's resolve
// and decide, so a dry run gives the verdict a real request gets.
func TestExplainMatchesLive(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }))
	defer up.Close()
	webToken := "till_" + strings.Repeat("w", TokenLength)
	batchToken := "till_" + strings.Repeat("b", TokenLength)
	digest := func(tok string) string { d := sha256.Sum256([]byte(tok)); return hex.EncodeToString(d[:]) }
	yaml := `version: 1
forward: {enabled: true, intercept: false}
clients:
  - {name: web, token_sha256: ` + digest(webToken) + `}
  - {name: batch, token_sha256: ` + digest(batchToken) + `}
  - {name: office, token_sha256: ` + digest("till_"+strings.Repeat("o", TokenLength)) + `, cidrs: [10.0.0.0/8]}
routes:
  - name: openai
    preset: openai
    upstream: {{UP}}
    allow: {methods: [GET, POST], paths: ["/v1/models", "/v1/chat/completions"]}
    max_body: 100
  - name: private
    preset: openai
    upstream: {{UP}}/private
    secret: openai
    clients: [web, office]
  - name: old
    preset: openai
    upstream: {{UP}}/old
  - name: gone
    preset: openai
    upstream: {{UP}}/gone
`
	now := time.Now()
	old := vault.NewSecret("old", testKey, now)
	old.Expires = now.Add(-time.Hour)
	gw, _ := newTestGateway(t, yaml, up.URL, map[string]vault.Secret{"openai": vault.NewSecret("openai", testKey, now), "old": old})
	s := gw.Snapshot()
	upHost := strings.TrimPrefix(up.URL, "http://")
	for _, tt := range []struct {
		method, target, client string
		want                   string // error code; "" for allowed
	}{
		{"GET", "/openai/v1/models", "", ""},
		{"DELETE", "/openai/v1/models", "", CodeMethodNotAllowed},
		{"POST", "/openai/v1/files", "", CodePathNotAllowed},
		{"GET", "/nowhere", "", CodeRouteNotFound},
		{"GET", "/openai/v1/%2e%2e/files", "", CodeBadRequest},
		{"GET", "/private/x", "", CodeClientUnauthenticated},
		{"GET", "/private/x", "web", ""},
		{"GET", "/private/x", "batch", CodeClientForbidden},
		{"GET", "/private/x", "office", CodeClientForbidden},
		{"GET", "/old/x", "", CodeSecretExpired},
		{"GET", "/gone/x", "", CodeSecretMissing},
		{"GET", "http://" + upHost + "/v1/models", "", ""},
		{"GET", "http://" + upHost + "/v1/other", "", CodePathNotAllowed},
		{"GET", "http://unknown.example/x", "", CodeHostNotAllowed},
		{"GET", "https://unknown.example/x", "", CodeHostNotAllowed},
		// Methods are case-sensitive; targets read as request lines are.
		{"get", "/openai/v1/models", "", CodeMethodNotAllowed},
		{"GET", "//evil.example/openai/v1/models", "", CodeRouteNotFound},
		{"GET", "/openai/v1/models#/x", "", CodePathNotAllowed},
	} {
		t.Run(tt.method+" "+tt.target+" "+tt.client, func(t *testing.T) {
			v := s.Explain(tt.method, tt.target, tt.client, "127.0.0.1:1234", "", time.Now())
			var live string
			if strings.HasPrefix(tt.target, "https://") {
				live = liveConnect(gw, tt.target)
			} else {
				live = liveVerdict(gw, tt.method, tt.target, map[string]string{"": "", "web": webToken, "batch": batchToken, "office": "till_" + strings.Repeat("o", TokenLength)}[tt.client])
			}
			if v.Code != tt.want || live != tt.want {
				t.Errorf("till test: %q (%s), live: %q, want %q", v.Code, v.Reason, live, tt.want)
			}
			if v.Allowed != (tt.want == "") {
				t.Errorf("till test allowed: %v", v.Allowed)
			}
		})
	}
	t.Run("body over max_body", func(t *testing.T) {
		r := httptest.NewRequest("POST", "/openai/v1/chat/completions", strings.NewReader(strings.Repeat("x", 101)))
		r.RemoteAddr = "127.0.0.1:1234"
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, r)
		if got := w.Header().Get("X-Till-Error"); got != CodeBadRequest {
			t.Errorf("live: got %q, want %q", got, CodeBadRequest)
		}
	})
}

// liveVerdict sends a request through the gateway and returns its error
// code, "" when the upstream answered.
func liveVerdict(gw *Gateway, method, target, token string) string {
	r := httptest.NewRequest(method, target, nil)
	r.RemoteAddr = "127.0.0.1:1234"
	if token != "" {
		r.Header.Set("X-Till-Token", token)
	}
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, r)
	return w.Header().Get("X-Till-Error")
}

// liveConnect sends the CONNECT an https:// URL needs and returns its
// error code.
func liveConnect(gw *Gateway, target string) string {
	host := strings.TrimPrefix(target, "https://")
	host, _, _ = strings.Cut(host, "/")
	r := httptest.NewRequest("CONNECT", "http://"+host+":443", nil)
	r.Host = host + ":443"
	r.RemoteAddr = "127.0.0.1:1234"
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, r)
	return w.Header().Get("X-Till-Error")
}

// TestExplainModelInGeminiPath: on a Gemini route the model in the path
// wins over the body's, live and in a dry run alike, whatever --model
// says.
func TestExplainModelInGeminiPath(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":1}}`))
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: gemini, preset: gemini, upstream: {{UP}}, secret: openai, allow: {models: [gemini-2.5-flash*]}}\n"
	gw, _ := newTestGateway(t, y, up.URL, secrets(time.Now()))
	for _, tt := range []struct{ path, model, want string }{
		{"/gemini/v1beta/models/gemini-2.5-pro:generateContent", "gemini-2.5-flash", CodeModelNotAllowed},
		{"/gemini/v1beta/models/gemini-2.5-flash:generateContent", "gemini-2.5-pro", ""},
	} {
		v := gw.Snapshot().Explain("POST", tt.path, "", "127.0.0.1:1234", tt.model, time.Now())
		r := httptest.NewRequest("POST", tt.path, strings.NewReader(`{"model":"`+tt.model+`","contents":[]}`))
		r.Header.Set("Content-Type", "application/json")
		r.RemoteAddr = "127.0.0.1:1234"
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, r)
		if live := w.Header().Get("X-Till-Error"); v.Code != tt.want || live != tt.want {
			t.Errorf("POST %s naming %s: till test %q, live %q; want %q", tt.path, tt.model, v.Code, live, tt.want)
		}
	}
}

// TestGeminiModelBehindEmptySegment: on a route read as Gemini's, a
// model behind a doubled slash (models//NAME) or a ";parameter"
// (models;x/NAME) is the model checked, live and in a dry run alike: a
// server that merges slashes and drops parameters (nginx, Tomcat,
// Spring) runs NAME, and the body's model, allowed, must not stand in
// for it.
func TestGeminiModelBehindEmptySegment(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":1}}`))
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: vertex, upstream: {{UP}}, usage: gemini, secret: openai, inject: {header: Authorization, format: \"Bearer {secret}\"}, allow: {models: [gemini-2.5-flash*, endpoints/7]}}\n"
	gw, _ := newTestGateway(t, y, up.URL, secrets(time.Now()))
	for _, path := range []string{
		"/vertex/v1beta/models//gemini-2.5-pro:generateContent",
		"/vertex/v1beta/models///gemini-2.5-pro:streamGenerateContent?alt=sse",
		"/vertex/v1beta/tunedModels//other:generateContent",
		"/vertex/v1/projects/p/locations/l/publishers/google/models//gemini-2.5-pro:generateContent",
		"/vertex/v1/projects/p/locations/l/endpoints//123:generateContent",
		"/vertex/v1beta/models;x/gemini-2.5-pro:generateContent",
		"/vertex/v1beta/models/;x/gemini-2.5-pro:generateContent",
	} {
		v := gw.Snapshot().Explain("POST", path, "", "127.0.0.1:1234", "gemini-2.5-flash", time.Now())
		r := httptest.NewRequest("POST", path, strings.NewReader(`{"model":"gemini-2.5-flash","contents":[]}`))
		r.Header.Set("Content-Type", "application/json")
		r.RemoteAddr = "127.0.0.1:1234"
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, r)
		if live := w.Header().Get("X-Till-Error"); v.Code != CodeModelNotAllowed || live != CodeModelNotAllowed {
			t.Errorf("POST %s naming gemini-2.5-flash: till test %q, live %q (%d); want %q", path, v.Code, live, w.Code, CodeModelNotAllowed)
		}
	}
}

// TestVertexEndpointModelChecked: on a Vertex AI route read as Gemini's
// (usage: gemini), /endpoints/ID:generateContent serves the endpoint's
// model, whatever the body names: allow.models checks "endpoints/ID", so a
// body naming an allowed model no longer lets another model run.
func TestVertexEndpointModelChecked(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":1}}`))
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: vertex, upstream: {{UP}}, usage: gemini, secret: openai, inject: {header: Authorization, format: \"Bearer {secret}\"}, allow: {models: [gemini-2.5-flash*, endpoints/7]}}\n"
	gw, _ := newTestGateway(t, y, up.URL, secrets(time.Now()))
	base := "/vertex/v1/projects/p/locations/us-central1/"
	for _, tt := range []struct{ path, want string }{
		{base + "endpoints/123:generateContent", CodeModelNotAllowed},
		{base + "endpoints/123:streamGenerateContent?alt=sse", CodeModelNotAllowed},
		{base + "endpoints/7:generateContent", ""},
		{base + "endpoints/123/chat/completions", CodeModelNotAllowed},
		{base + "publishers/google/models/gemini-2.5-pro:generateContent", CodeModelNotAllowed},
		{base + "publishers/google/models/gemini-2.5-flash:generateContent", ""},
	} {
		r := httptest.NewRequest("POST", tt.path, strings.NewReader(`{"model":"gemini-2.5-flash","contents":[]}`))
		r.Header.Set("Content-Type", "application/json")
		r.RemoteAddr = "127.0.0.1:1234"
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, r)
		if got := w.Header().Get("X-Till-Error"); got != tt.want {
			t.Errorf("POST %s naming gemini-2.5-flash: %q (%d), want %q", tt.path, got, w.Code, tt.want)
		}
	}
}

// TestExplainRelayHoldsClientAddresses: a request to a host without a
// route, relayed (http://) or tunnelled (CONNECT), is refused to a client
// outside its cidrs, live and in a dry run alike.
func TestExplainRelayHoldsClientAddresses(t *testing.T) {
	tok := "till_" + strings.Repeat("o", TokenLength)
	d := sha256.Sum256([]byte(tok))
	y := "version: 1\nforward: {enabled: true, intercept: false, unknown_hosts: tunnel}\nclients:\n" +
		"  - {name: office, token_sha256: " + hex.EncodeToString(d[:]) + ", cidrs: [10.0.0.0/8]}\n" +
		"routes:\n  - {name: openai, preset: openai}\n"
	gw, _ := newTestGateway(t, y, "", secrets(time.Now()))
	for _, tt := range []struct{ target, method, url, host string }{
		{"http://example.com/x", "GET", "http://example.com/x", "example.com"},
		{"https://example.com/x", "CONNECT", "http://example.com:443", "example.com:443"},
	} {
		v := gw.Snapshot().Explain("GET", tt.target, "office", "192.0.2.7:0", "", time.Now())
		r := httptest.NewRequest(tt.method, tt.url, nil)
		r.Host, r.RemoteAddr = tt.host, "192.0.2.7:1234"
		r.Header.Set("Proxy-Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, r)
		if live := w.Header().Get("X-Till-Error"); v.Allowed || v.Code != CodeClientForbidden || live != CodeClientForbidden {
			t.Errorf("%s from outside office's cidrs: till test %q (allowed %v), live %q; want client_forbidden", tt.target, v.Code, v.Allowed, live)
		}
	}
}

// FuzzExplainMatchesLive: for any request line, client, source address
// and model, till test gives the verdict a live request gets: the same
// refusal code, or allowed where the upstream answers.
func FuzzExplainMatchesLive(f *testing.F) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }))
	f.Cleanup(up.Close)
	tokens := []string{"", "till_" + strings.Repeat("w", TokenLength), "till_" + strings.Repeat("o", TokenLength)}
	digest := func(tok string) string { d := sha256.Sum256([]byte(tok)); return hex.EncodeToString(d[:]) }
	y := "version: 1\nforward: {enabled: true, intercept: false}\nclients:\n" +
		"  - {name: web, token_sha256: " + digest(tokens[1]) + "}\n" +
		"  - {name: office, token_sha256: " + digest(tokens[2]) + ", cidrs: [10.0.0.0/8, \"fd00::/8\"]}\n" +
		"routes:\n" +
		"  - {name: openai, preset: openai, upstream: {{UP}}, allow: {methods: [GET, POST], paths: [/v1/models, \"/v1/chat/*\"]}}\n" +
		"  - {name: private, preset: openai, upstream: {{UP}}/private, secret: openai, clients: [web, office]}\n" +
		"  - {name: gemini, preset: gemini, upstream: {{UP}}/g, secret: openai, allow: {models: [gemini-2.5-flash*]}}\n" +
		"  - {name: gone, preset: openai, upstream: {{UP}}/gone}\n" +
		"  - {name: bedrock, upstream: {{UP}}/b, secret: aws, allow: {models: [\"anthropic.claude-3-haiku*\"]}, inject: {aws_sigv4: {service: bedrock, region: us-east-1}}}\n"
	sec := secrets(time.Now())
	sec["aws"] = bedrockSecret()["aws"]
	gw, _ := newTestGateway(f, y, up.URL, sec)
	gw.audit = testAudit(io.Discard)
	upHost := strings.TrimPrefix(up.URL, "http://")
	names := []string{"", "web", "office"}
	sources := []string{"127.0.0.1", "10.1.2.3", "192.0.2.7", "fd00::5", "::1"}
	f.Add("GET", "/openai/v1/models", uint8(0), uint8(0), "")
	f.Add("POST", "/openai/v1/chat/completions", uint8(1), uint8(2), "gpt-4o")
	f.Add("GET", "/private/x", uint8(2), uint8(3), "")
	f.Add("POST", "/gemini/v1beta/models/gemini-2.5-pro:generateContent", uint8(0), uint8(0), "gemini-2.5-flash")
	f.Add("GET", "http://"+upHost+"/v1/models", uint8(0), uint8(0), "")
	f.Add("GET", "/openai/v1/%2e%2e/files", uint8(0), uint8(0), "")
	f.Add("DELETE", "//x/openai/v1/models#a", uint8(1), uint8(1), "")
	f.Add("POST", "/bedrock/model/anthropic.claude-3-opus-20240229-v1:0/invoke", uint8(0), uint8(0), "anthropic.claude-3-haiku-20240307-v1:0")
	f.Add("POST", "/bedrock/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse", uint8(0), uint8(0), "")
	f.Add("POST", "/bedrock/async-invoke", uint8(0), uint8(0), "anthropic.claude-3-haiku-20240307-v1:0")
	f.Add("POST", "/bedrock/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.anthropic.claude-3-haiku%3A0/invoke", uint8(0), uint8(0), "")
	f.Add("POST", "http://"+upHost+"/b/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A%3Afoundation-model%2Fanthropic.claude-3-haiku-1/converse", uint8(0), uint8(0), "x")
	f.Fuzz(func(t *testing.T, method, target string, client, from uint8, model string) {
		if method == "" || strings.Trim(method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" || method == "CONNECT" || !utf8.ValidString(model) {
			return // till test takes upper-case methods; a model is a JSON string
		}
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(method + " " + target + " HTTP/1.1\r\nHost: till\r\n\r\n")))
		if err != nil {
			return // not a request line net/http reads
		}
		name, token, source := names[int(client)%len(names)], tokens[int(client)%len(tokens)], sources[int(from)%len(sources)]
		remote := net.JoinHostPort(source, "1234")
		v := gw.Snapshot().Explain(method, target, name, remote, model, time.Now())
		if model != "" {
			m, _ := json.Marshal(model)
			body := `{"model":` + string(m) + `}`
			req.Body, req.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
			req.Header.Set("Content-Type", "application/json")
		}
		req.RemoteAddr = remote
		if token != "" {
			req.Header.Set("X-Till-Token", token)
			req.Header.Set("Proxy-Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, req)
		live := w.Header().Get("X-Till-Error")
		if v.Code != live || v.Allowed != (live == "") {
			t.Fatalf("%s %s as %q from %s, model %q: till test %q (allowed %v: %s), live %q (%d)",
				method, target, name, source, model, v.Code, v.Allowed, v.Reason, live, w.Code)
		}
	})
}

// TestVertexDropsAppAPIKey: Vertex AI also takes an API key (express
// mode), in ?key= or X-Goog-Api-Key; the vertex preset strips both, so an
// app's own key never rides along next to the token till attaches.
func TestVertexDropsAppAPIKey(t *testing.T) {
	var got http.Header
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		w.Write([]byte(`{}`))
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: vertex, preset: vertex, region: us-central1, upstream: {{UP}}, secret: openai, inject: {header: Authorization, format: \"Bearer {secret}\"}}\n"
	gw, _ := newTestGateway(t, y, up.URL, secrets(time.Now()))
	r := httptest.NewRequest("POST", "/vertex/v1/publishers/google/models/gemini-2.5-flash:generateContent", strings.NewReader(`{}`))
	r.Header.Set("X-Goog-Api-Key", "AIzaAppOwnKey0123456789abcdefghijklmno")
	r.RemoteAddr = "127.0.0.1:1234"
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, r)
	if w.Code != 200 || got == nil {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	if v := got.Get("X-Goog-Api-Key"); v != "" {
		t.Errorf("the upstream got the app's X-Goog-Api-Key %q next to till's token", v)
	}
}
