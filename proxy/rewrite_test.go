package proxy

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// requestLineUpstream records the request line (RequestURI) and method of
// every request it receives; seen returns them and forgets them.
func requestLineUpstream(t *testing.T) (up *httptest.Server, seen func() []string) {
	t.Helper()
	var mu sync.Mutex
	var lines []string
	up = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		lines = append(lines, r.Method+" "+r.RequestURI)
		mu.Unlock()
		w.Write([]byte("{}"))
	}))
	t.Cleanup(up.Close)
	return up, func() []string {
		mu.Lock()
		defer mu.Unlock()
		out := lines
		lines = nil
		return out
	}
}

// decodedQueryNames returns the names of a request line's query
// parameters, decoded, split on & and ; as till splits them.
func decodedQueryNames(line string) []string {
	_, q, _ := strings.Cut(line, "?")
	var out []string
	for part := range queryParams(q) {
		k, _, _ := strings.Cut(part, "=")
		if d, err := url.QueryUnescape(k); err == nil {
			out = append(out, d)
		}
	}
	return out
}

const geminiYAML = `version: 1
routes:
  - name: gemini
    preset: gemini
    upstream: {{UP}}
    secret: openai
    allow:
      methods: [GET]
budgets:
  - {name: b, window: 1d, tokens: 100000}
`

// TestGoogleSystemParameters: Google reads each system parameter from
// ?$NAME too (?%24NAME escaped). $httpMethod, its X-HTTP-Method-Override,
// is removed, so a GET-only route cannot DELETE upstream, nor create a
// context cache past a token budget; $key, an app's key beside the one
// injected, is removed as key is.
func TestGoogleSystemParameters(t *testing.T) {
	up, seen := requestLineUpstream(t)
	gw, _ := newTestGateway(t, geminiYAML, up.URL, secrets(time.Now()))
	for _, target := range []string{
		"/gemini/v1beta/files/abc?$httpMethod=DELETE",
		"/gemini/v1beta/files/abc?%24httpMethod=DELETE&x=1",
		"/gemini/v1beta/cachedContents?$HTTPMETHOD=POST",
		"/gemini/v1beta/models?key=app-key",
		"/gemini/v1beta/models?$key=app-key",
		"/gemini/v1beta/models?x=1;%24key=app-key",
		"/gemini/v1beta/models?$ct=application/x-protobuf",
		"/gemini/v1beta/models?%24CT=application%2Fx-protobuf&x=1",
	} {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", target, nil))
		lines := seen()
		if w.Code != 200 || len(lines) != 1 || !strings.HasPrefix(lines[0], "GET ") {
			t.Errorf("%s: %d, upstream asked %q; want one GET", target, w.Code, lines)
			continue
		}
		for _, name := range decodedQueryNames(lines[0]) {
			if n := strings.ToLower(name); n == "$httpmethod" || n == "$ct" || n == "key" || n == "$key" {
				t.Errorf("%s reached the upstream as %s", target, lines[0])
			}
		}
	}
}

// TestQueryKeptAsSent: on a route that strips a query credential, a query
// with none keeps its separators (";" is data to many servers), and one
// with one loses only it.
func TestQueryKeptAsSent(t *testing.T) {
	up, seen := requestLineUpstream(t)
	gw, _ := newTestGateway(t, geminiYAML, up.URL, secrets(time.Now()))
	for target, want := range map[string]string{
		"/gemini/v1beta/models?pageToken=a;b":          "GET /v1beta/models?pageToken=a;b",
		"/gemini/v1beta/models?pageToken=a;b&key=x&c":  "GET /v1beta/models?pageToken=a;b&c",
		"/gemini/v1beta/models?key=x;pageToken=a;b&&c": "GET /v1beta/models?pageToken=a;b&&c",
	} {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", target, nil))
		if lines := seen(); len(lines) != 1 || !strings.HasPrefix(lines[0], want) {
			t.Errorf("%s: upstream asked %q, want %q then the injected key", target, lines, want)
		}
	}
}

// TestEncodedPrefixKeepsPath: a request whose route prefix is escaped
// (/%6Fpenai) reaches the upstream with the rest of its path as the app
// escaped it, as it does with the prefix written plainly.
func TestEncodedPrefixKeepsPath(t *testing.T) {
	up, seen := requestLineUpstream(t)
	gw, _ := newTestGateway(t, baseYAML, up.URL, secrets(time.Now()))
	for _, target := range []string{"/openai/v1/models/a%3Bb%2Bc", "/%6Fpenai/v1/models/a%3Bb%2Bc", "/%6f%70enai/v1/models/a%3Bb%2Bc"} {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", target, nil))
		if lines := seen(); w.Code != 200 || len(lines) != 1 || lines[0] != "GET /v1/models/a%3Bb%2Bc" {
			t.Errorf("%s: %d, upstream asked %q; want GET /v1/models/a%%3Bb%%2Bc", target, w.Code, lines)
		}
	}
}

// TestEncodedGlobMatches: an allow.paths glob written as the path is sent
// upstream, escapes and all, matches that path.
func TestEncodedGlobMatches(t *testing.T) {
	up, seen := requestLineUpstream(t)
	yaml := `version: 1
routes:
  - name: openai
    preset: openai
    upstream: {{UP}}
    allow:
      paths: ["/v1/models/ft%3Agpt-4o%3Aacme", "/v1/files/%C3%A9t%C3%A9"]
`
	gw, _ := newTestGateway(t, yaml, up.URL, secrets(time.Now()))
	for _, target := range []string{"/openai/v1/models/ft%3Agpt-4o%3Aacme", "/openai/v1/models/ft:gpt-4o:acme", "/openai/v1/files/%C3%A9t%C3%A9"} {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", target, nil))
		seen()
		if w.Code != 200 {
			t.Errorf("GET %s against the glob written as the path is sent upstream: %d %s", target, w.Code, w.Header().Get("X-Till-Error"))
		}
	}
}

// TestAbsoluteFormWithoutPath: "GET http://host HTTP/1.1" asks for "/"
// (RFC 9110, 4.2.3), in serve as in till test.
func TestAbsoluteFormWithoutPath(t *testing.T) {
	up, seen := requestLineUpstream(t)
	yaml := `version: 1
forward: {enabled: true, intercept: false}
routes:
  - name: local
    upstream: {{UP}}
    secret: openai
    inject: {header: Authorization, format: "Bearer {secret}"}
`
	gw, _ := newTestGateway(t, yaml, up.URL, secrets(time.Now()))
	v := gw.Snapshot().Explain("GET", up.URL, "", "127.0.0.1:1234", "", time.Now())
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", up.URL, nil))
	if lines := seen(); !v.Allowed || w.Code != 200 || len(lines) != 1 || lines[0] != "GET /" {
		t.Errorf("GET %s: till test says allowed=%v (%s), serve answers %d, upstream asked %q", up.URL, v.Allowed, v.Code, w.Code, lines)
	}
}
