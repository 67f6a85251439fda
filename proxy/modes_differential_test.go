package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawVerdict writes raw to front as is and returns the error code of the
// answer, "" when it came from the upstream.
func rawVerdict(t *testing.T, front *httptest.Server, raw string) string {
	t.Helper()
	status, code := rawStatus(t, front, raw)
	if status == 0 || code != "" || status == http.StatusOK {
		return code // status 0: code says there was no answer
	}
	return fmt.Sprintf("status %d %s", status, http.StatusText(status))
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

// h2Verdict sends one bodyless request over HTTP/2 on c, a TLS connection
// that negotiated h2: the pseudo-headers, then fields. It returns the
// answer's status and error code, or status 0 and why there is none (the
// server reset the stream).
func h2Verdict(t *testing.T, c *tls.Conn, method, authority, path string, fields ...[2]string) (int, string) {
	t.Helper()
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	pseudo := [][2]string{{":method", method}, {":scheme", "https"}, {":authority", authority}, {":path", path}}
	for _, kv := range append(pseudo, fields...) {
		enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	dec := hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return 0, "no answer: " + err.Error()
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.RSTStreamFrame:
			return 0, "reset: " + f.ErrCode.String()
		case *http2.HeadersFrame:
			hf, _ := dec.DecodeFull(f.HeaderBlockFragment())
			status, code := 0, ""
			for _, h := range hf {
				switch h.Name {
				case ":status":
					status, _ = strconv.Atoi(h.Value)
				case "x-till-error":
					code = h.Value
				}
			}
			if status >= 200 {
				return status, code
			}
		}
	}
}

// diffH2Front serves gw over TLS, HTTP/2 offered, as a tls.names listener
// does; dial returns a connection to it that negotiated proto.
func diffH2Front(t *testing.T, gw *Gateway) (dial func(proto string) *tls.Conn) {
	t.Helper()
	front := httptest.NewUnstartedServer(gw)
	front.EnableHTTP2 = true
	front.StartTLS()
	t.Cleanup(front.Close)
	roots := x509.NewCertPool()
	roots.AddCert(front.Certificate())
	return func(proto string) *tls.Conn {
		c, err := tls.Dial("tcp", front.Listener.Addr().String(), &tls.Config{ServerName: "127.0.0.1", RootCAs: roots, NextProtos: []string{proto}})
		if err != nil || c.ConnectionState().NegotiatedProtocol != proto {
			t.Fatalf("dial: %v, want %s", err, proto)
		}
		return c
	}
}

// TestMethodNotTokenRefusedOverHTTP2: a method is a token (RFC 9110,
// section 9.1). Go's HTTP/1 server refuses "G(T" or "GET,POST" (400)
// before till sees it; its HTTP/2 server passes such a :method on. Over
// HTTP/2 too, a base URL's, a proxied or an intercepted request with
// one is refused, as till test refuses it, before a use of the key is
// recorded: net/http's Transport would not send it, and the records
// would name a key use that never left, the app a 502 that blames the
// upstream.
func TestMethodNotTokenRefusedOverHTTP2(t *testing.T) {
	up := newRecordingUpstream(t, false, nil)
	front, roots, records := diffAuditedFixture(t, up, `  - name: any
    prefix: /r
    upstream: {{UP}}
    secret: openai
    inject: {header: Authorization, format: "Bearer {secret}"}
    clients: [web]
`)
	gw := front.Config.Handler.(*Gateway)
	dial := diffH2Front(t, gw)
	host := strings.TrimPrefix(up.URL, "https://")
	token := [2]string{"x-till-token", connectToken}
	for _, method := range []string{"G(T", "GET,POST", "G\u00c9T", "GET /V1/X HTTP/1.1"} {
		h1 := func(target string) string {
			return fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\nX-Till-Token: %s\r\nConnection: close\r\n\r\n", method, target, host, connectToken)
		}
		status := map[string]int{}
		status["reverse, HTTP/1.1"], _ = rawStatus(t, front, h1("/r/v1/x"))
		status["forward, HTTP/1.1"], _ = rawStatus(t, front, h1("http://"+host+"/v1/x"))
		status["intercept, HTTP/1.1"], _ = diffInterceptedRaw(t, front, roots, up, h1("/v1/x"))
		status["reverse, HTTP/2"], _ = h2Verdict(t, dial("h2"), method, "127.0.0.1", "/r/v1/x", token)
		status["intercept, HTTP/2"], _ = h2Verdict(t, diffTunnel(t, front, roots, up, "h2"), method, host, "/v1/x")
		for mode, got := range status {
			if got != http.StatusBadRequest {
				t.Errorf("%q, %s: status %d, want 400 as Go's HTTP/1 server answers", method, mode, got)
			}
		}
		s := gw.Snapshot()
		for _, target := range []string{"/r/v1/x", "http://" + host + "/v1/x", "https://" + host + "/v1/x"} {
			if v := s.Explain(method, target, "web", "127.0.0.1:1", "", time.Now()); v.Allowed {
				t.Errorf("till test %q %s: allowed, want refused", method, target)
			}
		}
	}
	for _, use := range records.uses(t) {
		t.Errorf("a use record of the key for a %q request, which no server takes", use["method"])
	}
	if seen := up.requests(); len(seen) != 0 {
		t.Errorf("the upstream got %q", seen)
	}
}

// rawStatus is rawVerdict's answer as a status and error code.
func rawStatus(t *testing.T, front *httptest.Server, raw string) (int, string) {
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
		return 0, "no answer: " + err.Error()
	}
	r.Body.Close()
	return r.StatusCode, r.Header.Get("X-Till-Error")
}

// TestSpaceInTargetRefusedOverHTTP2: HTTP/1.1 cannot carry a space in
// the request target (RFC 9112, section 3: the request line splits at
// spaces), and Go's HTTP/1 server refuses one (400); its HTTP/2 server
// takes a :path with one. Over HTTP/2 too, in every mode and in till
// test, such a request is refused before its key goes: its query went
// upstream as is, and wrote the key onto a request line split into
// other parts than till judged ("GET /v1/x?a /v1/y HTTP/1.0&key=…").
func TestSpaceInTargetRefusedOverHTTP2(t *testing.T) {
	up := newRecordingUpstream(t, false, nil)
	front, roots, records := diffAuditedFixture(t, up, `  - name: query
    prefix: /r
    upstream: {{UP}}
    secret: openai
    inject: {query: key}
    clients: [web]
`)
	gw := front.Config.Handler.(*Gateway)
	dial := diffH2Front(t, gw)
	host := strings.TrimPrefix(up.URL, "https://")
	token := [2]string{"x-till-token", connectToken}
	for _, target := range []string{"/v1/x?a b", "/v1/x?a /v1/y HTTP/1.0", "/v1/x y", "/v1/x y?a"} {
		h1 := func(target string) string {
			return fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nX-Till-Token: %s\r\nConnection: close\r\n\r\n", target, host, connectToken)
		}
		type answer struct {
			status int
			code   string
		}
		var a answer
		got := map[string]answer{}
		a.status, _ = rawStatus(t, front, h1("/r"+target))
		got["reverse, HTTP/1.1"] = answer{a.status, "bad_request"} // net/http's own 400
		a.status, _ = rawStatus(t, front, h1("http://"+host+target))
		got["forward, HTTP/1.1"] = answer{a.status, "bad_request"}
		a.status, _ = diffInterceptedRaw(t, front, roots, up, h1(target))
		got["intercept, HTTP/1.1"] = answer{a.status, "bad_request"}
		a.status, a.code = h2Verdict(t, dial("h2"), "GET", "127.0.0.1", "/r"+target, token)
		got["reverse, HTTP/2"] = a
		a.status, a.code = h2Verdict(t, dial("h2"), "GET", "127.0.0.1", "http://"+host+target, token)
		got["forward, HTTP/2"] = a
		a.status, a.code = h2Verdict(t, diffTunnel(t, front, roots, up, "h2"), "GET", host, target)
		got["intercept, HTTP/2"] = a
		for mode, a := range got {
			if a.status != http.StatusBadRequest || a.code != CodeBadRequest {
				t.Errorf("%q, %s: %d %q, want 400 bad_request, as Go's HTTP/1 server refuses it", target, mode, a.status, a.code)
			}
		}
		s := gw.Snapshot()
		for _, u := range []string{"/r" + target, "http://" + host + target, "https://" + host + target} {
			if v := s.Explain("GET", u, "web", "127.0.0.1:1", "", time.Now()); v.Allowed {
				t.Errorf("till test GET %q: allowed, want refused", u)
			}
		}
	}
	for _, use := range records.uses(t) {
		t.Errorf("the key went for %s %s, whose target holds a space", use["method"], use["path"])
	}
}

// TestRelayMethodNotTokenRefusedOverHTTP2: a request relayed to a host
// without a route (unknown_hosts: tunnel) with a :method that is not a
// token is refused with 400, as Go's HTTP/1 server refuses it and as a
// route refuses it, before anything is sent: net/http's Transport would
// not send it, and the app would get a 502 that blames the host.
func TestRelayMethodNotTokenRefusedOverHTTP2(t *testing.T) {
	var hits atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	t.Cleanup(up.Close)
	gw, _ := newTestGateway(t, "version: 1\nforward: {enabled: true, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\nroutes: []\n", "", nil)
	dial := diffH2Front(t, gw)
	for _, method := range []string{"G(T", "GET,POST", "G\u00c9T", "GET /V1/X HTTP/1.1"} {
		status, code := h2Verdict(t, dial("h2"), method, "127.0.0.1", up.URL+"/v1/x")
		if status != http.StatusBadRequest || code != CodeBadRequest {
			t.Errorf("%q relayed over HTTP/2: %d %s, want 400 %s as Go's HTTP/1 server answers", method, status, code, CodeBadRequest)
		}
		v := gw.Snapshot().Explain(method, up.URL+"/v1/x", "", "127.0.0.1:1", "", time.Now())
		if v.Allowed || v.Code != CodeBadRequest {
			t.Errorf("till test %q %s: allowed %v, code %s, want refused with %s", method, up.URL, v.Allowed, v.Code, CodeBadRequest)
		}
	}
	if status, code := h2Verdict(t, dial("h2"), "GET", "127.0.0.1", up.URL+"/v1/x"); status != http.StatusOK {
		t.Errorf("GET relayed over HTTP/2: %d %s, want 200", status, code)
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("the host got %d requests, want the GET alone", n)
	}
}
