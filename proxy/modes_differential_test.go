package proxy

import (
	"bufio"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// rawVerdict writes raw to front as is and returns the error code of the
// answer, "" when it came from the upstream.
func rawVerdict(t *testing.T, front *httptest.Server, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, raw)
	r, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "no answer: " + err.Error()
	}
	r.Body.Close()
	if code := r.Header.Get("X-Till-Error"); code != "" || r.StatusCode == http.StatusOK {
		return code
	}
	return "status " + r.Status
}

// TestAllowRulesBiteAlikeInEveryMode: one route's method and path rules
// give one verdict for one request whichever way it comes (its prefix,
// an absolute-form URL, inside an intercepted CONNECT) and in till test
// for each (issue 13), however the path is written.
func TestAllowRulesBiteAlikeInEveryMode(t *testing.T) {
	up := newRecordingUpstream(t, false, nil)
	front, roots := diffInterceptFixture(t, up, `  - name: models
    prefix: /r
    upstream: {{UP}}
    secret: openai
    inject: {header: Authorization, format: "Bearer {secret}"}
    clients: [web]
    allow: {methods: [GET, POST], paths: ["/v1/models/*", "/v1/chat/completions"]}
`)
	gw := front.Config.Handler.(*Gateway)
	host := strings.TrimPrefix(up.URL, "https://")
	for _, tt := range []struct{ method, path string }{
		{"GET", "/v1/models/gpt-4o"},
		{"POST", "/v1/chat/completions"},
		{"DELETE", "/v1/models/gpt-4o"},
		{"GET", "/v1/models"},
		{"GET", "/v1/models/"},
		{"GET", "/v1/models/gpt-4o/"},
		{"GET", "/v1/models//x"},
		{"GET", "/v1//models/x"},
		{"GET", "/v1/models/a/b"},
		{"GET", "/v1/models/a%2fb"},
		{"GET", "/v1/models/a%2Fb"},
		{"GET", "/v1/models/a%5cb"},
		{"GET", "/v1/models/..%2fx"},
		{"GET", "/v1/models/%2e%2e"},
		{"GET", "/v1/models/%2E"},
		{"GET", "/v1/models/x/.."},
		{"GET", "/v1/models/x/../../files"},
		{"GET", "/v1/models/..;/files"},
		{"GET", "/v1/models/x;y"},
		{"GET", "/v1/models/;x"},
		{"GET", "/v1/models;x/y"},
		{"GET", "/v1/chat/completions;x"},
		{"GET", "/V1/models/x"},
		{"GET", "/v1/models/%78"},
		{"GET", "/v1/%6dodels/x"},
		{"GET", "/v1/models/x?y=/../files"},
		{"GET", "/v1/models/x#frag"},
		{"GET", "/v1/models/%252e%252e"},
		{"GET", "/v1/models/x%00"},
		{"GET", "/v1/models/%c0%af"},
		{"GET", "/v1/models/x%20"},
		{"GET", "/v1/models/.."},
		{"GET", "/v1/chat/completions/."},
	} {
		line := func(target string) string {
			return fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\nX-Till-Token: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", tt.method, target, host, connectToken)
		}
		live := map[string]string{
			"reverse":   rawVerdict(t, front, line("/r"+tt.path)),
			"forward":   rawVerdict(t, front, line("http://"+host+tt.path)),
			"intercept": interceptedCode(t, front, roots, up, line(tt.path)),
		}
		s := gw.Snapshot()
		dry := map[string]string{
			"reverse":   s.Explain(tt.method, "/r"+tt.path, "web", "127.0.0.1:1", "", time.Now()).Code,
			"forward":   s.Explain(tt.method, "http://"+host+tt.path, "web", "127.0.0.1:1", "", time.Now()).Code,
			"intercept": s.Explain(tt.method, "https://"+host+tt.path, "web", "127.0.0.1:1", "", time.Now()).Code,
		}
		want := live["reverse"]
		for _, mode := range []string{"reverse", "forward", "intercept"} {
			if live[mode] != want || dry[mode] != want {
				t.Errorf("%s %s: live %v, till test %v: every mode and its dry run must agree", tt.method, tt.path, live, dry)
				break
			}
		}
	}
	for _, seen := range up.requests() {
		_, uri, _ := strings.Cut(strings.TrimPrefix(seen, "HTTP/1.1 "), " ")
		uri, _, _ = strings.Cut(uri, " ")
		// A segment empty before its ";parameters" is empty to Tomcat,
		// Jetty and Spring: "/v1/models/;x" is "/v1/models/" there.
		if p, err := url.PathUnescape(uri); err != nil || strings.Contains(p, "/;") || !strings.HasPrefix(p, "/v1/models/") && p != "/v1/chat/completions" {
			t.Errorf("the upstream got %s, outside the route's paths", seen)
		}
	}
}

// interceptedCode is diffInterceptedRaw's answer as an error code.
func interceptedCode(t *testing.T, front *httptest.Server, roots *x509.CertPool, up *diffUpstream, raw string) string {
	status, body := diffInterceptedRaw(t, front, roots, up, raw)
	if status == 0 {
		return "no answer: " + body
	}
	code, _, _ := strings.Cut(body, " ")
	return code
}
