package test

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Regression tests for issue 12, points 1, 4, 5, 6 and 7: each sends the
// attack as the issue describes it, over raw TCP where a client library
// would have cleaned the request up.

// holeToken is shaped like a till client token (till_ and 40 base62).
const holeToken = "till_" + "Zq3vN8xLr2TgW7bKc5HmYp1sJd9FaE4uQo6iVt0R"

// tunnelsEverywhere is forward mode that tunnels to any address at all.
const tunnelsEverywhere = `forward: {enabled: true, intercept: false, unknown_hosts: tunnel, allow_cidrs: ["0.0.0.0/0", "::/0"]}` + "\n"

// checkHostNotAllowed fails unless till refused with 403 host_not_allowed.
func checkHostNotAllowed(t *testing.T, what string, resp *http.Response, body string, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: no answer: %v", what, err)
		return
	}
	if resp.StatusCode != 403 || resp.Header.Get("X-Till-Error") != "host_not_allowed" {
		t.Errorf("%s: got %d %s %q, want 403 host_not_allowed", what, resp.StatusCode, resp.Header.Get("X-Till-Error"), body)
	}
}

// TestTunnelToTillThroughUnspecified (point 1): allow_cidrs 0.0.0.0/0 and
// ::/0 do not open till's own listeners through 0.0.0.0, :: or
// ::ffff:0.0.0.0, by CONNECT or by an absolute-form request.
func TestTunnelToTillThroughUnspecified(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	tl := startTill(t, providerConfig(u, "admin: {listen: 127.0.0.1:0}\n"+tunnelsEverywhere), providerSecrets, u.caFile)
	adminAddr := tl.adminAddr()
	_, adminPort, _ := net.SplitHostPort(adminAddr)
	_, tillPort, _ := net.SplitHostPort(tl.addr)
	for _, port := range []string{adminPort, tillPort} {
		for _, host := range []string{"0.0.0.0", "[::ffff:0.0.0.0]", "[::]", "0.0.0.1"} {
			target := host + ":" + port
			resp, body, err := rawConnect(t, tl.addr, target, target)
			checkHostNotAllowed(t, "CONNECT "+target, resp, body, err)
		}
	}
	for _, req := range []string{
		"GET http://0.0.0.0:" + adminPort + "/metrics HTTP/1.1\r\nHost: 0.0.0.0:" + adminPort + "\r\n\r\n",
		"POST http://[::]:" + adminPort + "/admin/reload HTTP/1.1\r\nHost: [::]:" + adminPort + "\r\nContent-Length: 0\r\n\r\n",
		"GET http://[::ffff:0.0.0.0]:" + tillPort + "/openai/v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n",
	} {
		resp, body, err := rawSend(t, tl.addr, req)
		checkHostNotAllowed(t, strings.SplitN(req, "\r\n", 2)[0], resp, body, err)
	}
	if n := len(u.requests()); n != 0 {
		t.Errorf("the upstream received %d requests through till's own listener", n)
	}
	stillServes(t, tl)
}

// TestTunnelToTillThroughNameOfUnspecified (point 1): a name that resolves
// to an unspecified address is refused too.
func TestTunnelToTillThroughNameOfUnspecified(t *testing.T) {
	wrapper := hostsWrapper(t, "unused.test")
	hosts := wrapper[len(wrapper)-1]
	f, err := os.OpenFile(hosts, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(f, "0.0.0.0 zero.test\n:: zero6.test\n")
	f.Close()
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := t.TempDir()
	cfg := providerConfig(u, "admin: {listen: 127.0.0.1:0}\n"+tunnelsEverywhere)
	if err := os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	tl := startTillCmd(t, dir, u.caFile, wrapper, nil, "serve", "--listen", "127.0.0.1:0")
	_, adminPort, _ := net.SplitHostPort(tl.adminAddr())
	for _, name := range []string{"zero.test", "zero6.test"} {
		target := name + ":" + adminPort
		resp, body, err := rawConnect(t, tl.addr, target, target)
		checkHostNotAllowed(t, "CONNECT "+target, resp, body, err)
		resp, body, err = rawSend(t, tl.addr, "GET http://"+target+"/metrics HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
		checkHostNotAllowed(t, "GET http://"+target+"/metrics", resp, body, err)
	}
}

// strippedConfig has a route with allow rules on the Authorization
// header, and one that injects X-Api-Key and strips a header of its own.
func strippedConfig(u *upstream, extra string) string {
	return fmt.Sprintf(`version: 1
%sroutes:
  - name: openai
    preset: openai
    upstream: %[2]s
    allow: {methods: [GET, POST]}
  - name: anthropic
    preset: anthropic
    upstream: %[2]s
    strip: [X-Org-Key]
`, extra, u.URL)
}

var strippedSecrets = map[string]string{"openai": openaiKey, "anthropic": providerKey}

// overrides are the method and URL overrides point 4 names, as sent and
// with underscores.
const overrides = "X-HTTP-Method-Override: DELETE\r\nX-HTTP-Method: DELETE\r\nX-Method-Override: DELETE\r\n" +
	"X-Original-URL: /v1/files/f\r\nX-Rewrite-URL: /v1/files/f\r\nX_HTTP_Method_Override: DELETE\r\n"

// checkNoOverride fails if a method or URL override reached the upstream.
func checkNoOverride(t *testing.T, what string, got seen) {
	t.Helper()
	for name := range got.Header {
		switch strings.ReplaceAll(strings.ToLower(name), "_", "-") {
		case "x-http-method-override", "x-http-method", "x-method-override", "x-original-url", "x-rewrite-url":
			t.Errorf("%s: the upstream received %s", what, name)
		}
	}
	if got.Method != "POST" {
		t.Errorf("%s: the upstream received %s, want POST", what, got.Method)
	}
}

// TestMethodOverridesNeverSent (point 4): a POST that allow.methods
// admits cannot ask the upstream for a DELETE, in reverse mode or by an
// absolute-form request to a route's host.
func TestMethodOverridesNeverSent(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	tl := startTill(t, strippedConfig(u, "forward: {enabled: true, intercept: false}\n"), strippedSecrets, u.caFile)
	for _, target := range []string{"/openai/v1/chat/completions", u.URL + "/v1/chat/completions"} {
		target = strings.Replace(target, "https://", "http://", 1)
		status, _, body := rawRequest(t, tl.addr, "POST "+target+" HTTP/1.1\r\nHost: localhost\r\n"+overrides+
			"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
		if status != 200 {
			t.Fatalf("POST %s: got %d %s, want 200", target, status, body)
		}
		checkNoOverride(t, target, u.last(t))
	}
}

// checkNoAttacker fails if a header value the app sent as "attacker" or
// a till token reached the upstream, or the upstream lacks the key.
func checkNoAttacker(t *testing.T, what string, got seen, header, key string) {
	t.Helper()
	for name, values := range got.Header {
		for _, v := range values {
			if strings.Contains(v, "attacker") || carriesHoleToken(v) {
				t.Errorf("%s: the upstream received %s: %q", what, name, v)
			}
		}
	}
	for name, values := range got.Query {
		for _, v := range values {
			if carriesHoleToken(name) || carriesHoleToken(v) {
				t.Errorf("%s: the upstream received a till token in the query (%s)", what, name)
			}
		}
	}
	if v := got.Header.Values(header); len(v) != 1 || !strings.Contains(v[0], key) {
		t.Errorf("%s: the upstream's %s: got %d values, want the key once", what, header, len(v))
	}
}

// carriesHoleToken reports whether v holds holeToken as is or in Basic
// credentials.
func carriesHoleToken(v string) bool {
	_, enc, _ := strings.Cut(v, "Basic ")
	d, _ := base64.StdEncoding.DecodeString(enc)
	return strings.Contains(v, holeToken[5:]) || strings.Contains(string(d), holeToken[5:])
}

// TestCredentialAliasesNeverSent (point 5): X_Api_Key or x_api_key (one
// header to a CGI, WSGI or PHP server) cannot ride beside the injected
// X-Api-Key, nor aliases of Authorization's companions beside it.
func TestCredentialAliasesNeverSent(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	tl := startTill(t, strippedConfig(u, ""), strippedSecrets, u.caFile)
	for _, tt := range []struct{ path, headers, header, key string }{
		{"/anthropic/v1/messages", "X_Api_Key: attacker\r\nx_api_key: attacker\r\nX-API_KEY: attacker\r\nX_Org_Key: attacker\r\n", "X-Api-Key", providerKey},
		{"/openai/v1/models", "authorization: Bearer attacker\r\nProxy_Authorization: Basic attacker\r\nX_Till_Token: attacker\r\n", "Authorization", "Bearer " + openaiKey},
	} {
		status, _, body := rawRequest(t, tl.addr, "GET "+tt.path+" HTTP/1.1\r\nHost: localhost\r\n"+tt.headers+"Connection: close\r\n\r\n")
		if status != 200 {
			t.Fatalf("GET %s: got %d %s, want 200", tt.path, status, body)
		}
		checkNoAttacker(t, tt.path, u.last(t), tt.header, tt.key)
	}
	tl.stop()
	tl.assertNoLeak([]string{openaiKey, providerKey})
}

// tokenHeaders carry holeToken in the ways point 6 lists.
var tokenHeaders = "Authorization: Token " + holeToken + "\r\nCookie: session=1; till=" + holeToken +
	"\r\nX-Auth: token=" + holeToken + "\r\nX-Basic: Basic " + base64.StdEncoding.EncodeToString([]byte("web:"+holeToken)) +
	"\r\nX-Trace: still_running\r\n"

// tokenQuery carries holeToken plain and percent-encoded.
var tokenQuery = "api_key=" + holeToken + "&q=1&k=%74ill_" + holeToken[5:] + "&t=till%5F" + holeToken[5:]

// TestClientTokensStayInTill (point 6): a till token in any header or
// query parameter reaches neither a host without a route (forward mode,
// unknown_hosts: tunnel) nor a route's upstream.
func TestClientTokensStayInTill(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	plain := newPlainUpstream(t, http.HandlerFunc(okHandler))
	tl := startTill(t, strippedConfig(u, "forward: {enabled: true, intercept: false, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\n"),
		strippedSecrets, u.caFile)
	for _, tt := range []struct {
		name, target string
		to           *upstream
	}{
		{"a host without a route", plain.URL + "/v1/models", plain},
		{"a route", "/openai/v1/models", u},
	} {
		status, _, body := rawRequest(t, tl.addr, "GET "+tt.target+"?"+tokenQuery+" HTTP/1.1\r\nHost: localhost\r\n"+tokenHeaders+"Connection: close\r\n\r\n")
		if status != 200 {
			t.Fatalf("%s: got %d %s, want 200", tt.name, status, body)
		}
		got := tt.to.last(t)
		for name, values := range got.Header {
			for _, v := range values {
				if carriesHoleToken(v) {
					t.Errorf("%s: received %s: %q", tt.name, name, v)
				}
			}
		}
		if q := got.Query.Encode(); q != "q=1" {
			t.Errorf("%s: received the query %q, want q=1", tt.name, q)
		}
		if got.Header.Get("X-Trace") != "still_running" {
			t.Errorf("%s: a header without a token was removed", tt.name)
		}
	}
}

// TestInterceptedRequestsStripped (points 4, 5, 6): inside an intercepted
// CONNECT too, no override, credential alias or till token goes upstream.
func TestInterceptedRequestsStripped(t *testing.T) {
	f := startForward(t, "deny", false, false)
	c, br, resp := connect(t, f.tl.addr, "api.provider.test:"+f.provider.port())
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	tc := tls.Client(&bufferedConn{c, br}, &tls.Config{ServerName: "api.provider.test", RootCAs: f.tillRoots(t), NextProtos: []string{"http/1.1"}})
	fmt.Fprintf(tc, "POST /v1/models?%s HTTP/1.1\r\nHost: api.provider.test:%s\r\n%s%sProxy_Authorization: Basic attacker\r\n"+
		"Content-Length: 2\r\nConnection: close\r\n\r\n{}", tokenQuery, f.provider.port(), overrides, tokenHeaders)
	iresp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, iresp.Body)
	iresp.Body.Close()
	if iresp.StatusCode != 200 {
		t.Fatalf("got %d, want 200", iresp.StatusCode)
	}
	got := f.provider.last(t)
	checkNoOverride(t, "intercepted", got)
	checkNoAttacker(t, "intercepted", got, "Authorization", "Bearer "+providerKey)
}

// TestAnonymousRateFromManyLoopbackAddresses (point 7): an app that binds
// ten loopback source addresses still gets one anonymous bucket of a
// route's rate, not ten.
func TestAnonymousRateFromManyLoopbackAddresses(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	tl := startTill(t, providerConfig(u, `  - name: limited
    preset: openai
    upstream: `+u.URL+`
    secret: openai
    rate: 2/m
`), providerSecrets, u.caFile)
	ok, limited := 0, 0
	for i := 2; i <= 11; i++ {
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(i))}
		c, err := (&net.Dialer{LocalAddr: src, Timeout: 5 * time.Second}).Dial("tcp", tl.addr)
		if err != nil {
			t.Fatalf("dial from %s: %v", src.IP, err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET /limited/v1/models HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("from %s: %v", src.IP, err)
		}
		resp.Body.Close()
		c.Close()
		switch resp.StatusCode {
		case 200:
			ok++
		case 429:
			limited++
		default:
			t.Errorf("from %s: got %d", src.IP, resp.StatusCode)
		}
	}
	if ok != 2 || limited != 8 {
		t.Errorf("10 requests from 10 loopback addresses: got %d × 200 and %d × 429, want 2 and 8", ok, limited)
	}
}
