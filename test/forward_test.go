package test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const providerKey = "sk-forward-0123456789abcdefPROVIDER"

// forwardEnv is till in forward mode in front of fake providers reachable
// by name: api.provider.test (has a route), other.provider.test and
// plain.provider.test (plain HTTP) have none.
type forwardEnv struct {
	tl                 *till
	provider, other    *upstream
	plain              *upstream
	providerURL        string // https://api.provider.test:PORT
	otherAuthority     string // other.provider.test:PORT
	plainAuthority     string
	vars               map[string]string // what till env printed
	proxyURL, caBundle string
	token              string // the client "web"'s, when the route needs a client
}

// providerHandler answers like the OpenAI API, plus /sse for timing and
// the Gemini Files API's resumable uploads.
func providerHandler(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/v1/chat/completions":
		fakeOpenAI(w, r)
	case "/sse":
		serveGatedSSE(w, r)
	case "/upload/v1beta/files":
		forwardGeminiFiles.ServeHTTP(w, r)
	default:
		okHandler(w, r)
	}
}

// sseGate lets an /sse upstream send its last event only once the app
// has the first: a proxy that held the first back until the stream ended
// makes the upstream wait out sseGateWait, which it notes.
type sseGate struct {
	seen     chan struct{}
	heldBack atomic.Bool
}

// sseGateWait is how long an /sse upstream waits for the app to have its
// first event: long past any delivery, only ever reached when a proxy
// holds the event back.
const sseGateWait = 10 * time.Second

var sseGates sync.Map // the gate query parameter → *sseGate

// newSSEGate returns a gate and the query that names it.
func newSSEGate(t *testing.T) (*sseGate, string) {
	g := &sseGate{seen: make(chan struct{})}
	id := strings.ReplaceAll(t.Name(), "/", "_")
	sseGates.Store(id, g)
	t.Cleanup(func() { sseGates.Delete(id) })
	return g, "?gate=" + id
}

// firstEventSeen tells the upstream the app has the first event, and
// fails t if the upstream had to wait it out.
func (g *sseGate) firstEventSeen(t *testing.T) {
	t.Helper()
	close(g.seen)
	if g.heldBack.Load() {
		t.Errorf("the first event reached the app only once the stream went on: held back")
	}
}

// serveGatedSSE streams two events, the last once the app has the first
// (its gate), or after 1.5 s without one.
func serveGatedSSE(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	io.WriteString(w, "data: first\n\n")
	w.(http.Flusher).Flush()
	if g, ok := sseGates.Load(r.URL.Query().Get("gate")); ok {
		select {
		case <-g.(*sseGate).seen:
		case <-time.After(sseGateWait):
			g.(*sseGate).heldBack.Store(true)
		}
	} else {
		time.Sleep(1500 * time.Millisecond)
	}
	io.WriteString(w, "data: last\n\n")
}

// startForward starts till in forward mode; extra is added to the config's
// top level.
func startForward(t *testing.T, unknownHosts string, allowLoopback, needClient bool, extra ...string) *forwardEnv {
	t.Helper()
	p := newPKI(t)
	f := &forwardEnv{
		provider: newNamedUpstream(t, p, http.HandlerFunc(providerHandler), "api.provider.test"),
		other:    newNamedUpstream(t, p, http.HandlerFunc(okHandler), "other.provider.test"),
	}
	f.plain = newPlainUpstream(t, http.HandlerFunc(okHandler))
	f.providerURL = "https://api.provider.test:" + f.provider.port()
	f.otherAuthority = "other.provider.test:" + f.other.port()
	f.plainAuthority = "plain.provider.test:" + f.plain.port()
	wrapper := hostsWrapper(t, "api.provider.test", "other.provider.test", "plain.provider.test")

	dir := t.TempDir()
	allow := ""
	if allowLoopback {
		allow = "  allow_cidrs: [127.0.0.0/8]\n"
	}
	clients, routeClients := "", ""
	if needClient {
		var lines string
		f.token, lines = addClient(t, dir, "web")
		clients, routeClients = "clients:\n"+lines, "    clients: [web]\n"
	}
	// The config names the listen address, since till env prints it: a
	// port found free a moment ago, so another process may take it before
	// till binds it. Then till exits, and we try another.
	for attempt := 1; ; attempt++ {
		addr := freeAddr(t)
		cfg := fmt.Sprintf(`version: 1
%slisten: %s
forward:
  enabled: true
  unknown_hosts: %s
%s%sroutes:
  - name: provider
    preset: openai
    upstream: %s
%s`, strings.Join(extra, ""), addr, unknownHosts, allow, clients, f.providerURL, routeClients)
		if err := os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if attempt == 1 {
			setSecret(t, dir, "provider", providerKey)
			if out, errOut, code := runTill(t, dir, "", nil, "ca", "init"); code != 0 {
				t.Fatalf("till ca init: exit %d: %s %s", code, out, errOut)
			}
		}
		f.readEnv(t, dir, addr, needClient)
		tl, err := tryStartTillCmd(t, dir, p.caFile, wrapper, nil, "serve")
		if err != nil {
			if attempt < 5 && errors.Is(err, errExited) && strings.Contains(err.Error(), "address already in use") {
				t.Logf("attempt %d: %s was taken: trying another port", attempt, addr)
				continue
			}
			t.Fatal(err)
		}
		if tl.addr != addr {
			t.Fatalf("till listens on %s, till env said %s", tl.addr, addr)
		}
		f.tl = tl
		return f
	}
}

// readEnv runs till env in dir, whose config listens on addr, and keeps
// what it printed.
func (f *forwardEnv) readEnv(t *testing.T, dir, addr string, needClient bool) {
	t.Helper()
	out, errOut, code := runTill(t, dir, "", nil, "env", "--format", "dotenv")
	if code != 0 {
		t.Fatalf("till env: exit %d: %s", code, errOut)
	}
	f.vars = map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, "=")
		f.vars[k] = strings.Trim(v, `"`)
	}
	f.proxyURL, f.caBundle = f.vars["HTTPS_PROXY"], f.vars["SSL_CERT_FILE"]
	if needClient {
		out, errOut, code := runTill(t, dir, "", nil, "env", "--client", "web")
		want := `export HTTPS_PROXY="http://web:${TILL_TOKEN}@` + addr + `"`
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("till env --client web: exit %d: %s %s, want %s", code, out, errOut, want)
		}
	}
}

// newPlainUpstream starts a recording plain-HTTP upstream.
func newPlainUpstream(t *testing.T, h http.Handler) *upstream {
	u := &upstream{}
	u.Server = newHTTPServer(t, u.recorder(h))
	return u
}

// clientEnv is the environment of an app configured with till env's output.
func (f *forwardEnv) clientEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, set := f.vars[k]; !set {
			env = append(env, kv)
		}
	}
	for k, v := range f.vars {
		env = append(env, k+"="+v)
	}
	return env
}

// goClient is an in-process client that uses till as its proxy and trusts
// the bundle till env wrote.
func (f *forwardEnv) goClient(t *testing.T) *http.Client {
	t.Helper()
	return f.goClientAs(t, "")
}

// goClientAs is goClient with the client's credentials in the proxy URL
// ("" for none).
func (f *forwardEnv) goClientAs(t *testing.T, token string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(f.caBundle)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	proxy, _ := url.Parse(f.proxyURL)
	if token != "" {
		proxy.User = url.UserPassword("web", token)
	}
	return &http.Client{
		Timeout:   20 * time.Second,
		Transport: &http.Transport{Proxy: http.ProxyURL(proxy), TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true},
	}
}

func (f *forwardEnv) assertProviderSawKey(t *testing.T, n int) {
	t.Helper()
	got := f.provider.requests()
	if len(got) != n {
		t.Fatalf("provider received %d requests, want %d", len(got), n)
	}
	for _, r := range got {
		if v := r.Header.Values("Authorization"); len(v) != 1 || v[0] != "Bearer "+providerKey {
			t.Errorf("provider Authorization: got %d values, want exactly the real key", len(v))
		}
		if r.Header.Get("Proxy-Authorization") != "" {
			t.Error("Proxy-Authorization reached the provider")
		}
	}
}

func TestForwardRealClients(t *testing.T) {
	f := startForward(t, "deny", false, false)
	var outputs []string
	run := func(t *testing.T, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = f.clientEnv()
		if name == "node" {
			cmd.Dir = "sdk"
		}
		out, err := cmd.CombinedOutput()
		outputs = append(outputs, string(out))
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		return string(out)
	}
	want := 0
	t.Run("curl -x", func(t *testing.T) {
		out := run(t, "curl", "-sS", "--fail-with-body", "-x", f.proxyURL, "--cacert", f.caBundle,
			"-H", "Authorization: Bearer sk-dummy", f.providerURL+"/v1/models")
		if out != `{"ok":true}` {
			t.Errorf("got %q", out)
		}
		want++
	})
	t.Run("curl from the environment, HTTP/2 inside", func(t *testing.T) {
		out := run(t, "curl", "-sS", "--fail-with-body", "--http2", "-o", "/dev/null", "-w", "%{http_version}", f.providerURL+"/v1/models")
		if out != "2" {
			t.Errorf("curl's HTTP version inside the tunnel: got %q, want 2", out)
		}
		want++
	})
	t.Run("python urllib", func(t *testing.T) {
		out := run(t, "python3", "-c", `import urllib.request, sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())`, f.providerURL+"/v1/models")
		if strings.TrimSpace(out) != `{"ok":true}` {
			t.Errorf("got %q", out)
		}
		want++
	})
	t.Run("go ProxyFromEnvironment", func(t *testing.T) {
		f.vars["TILL_TEST_CHILD"] = f.providerURL + "/v1/models"
		defer delete(f.vars, "TILL_TEST_CHILD")
		out := run(t, os.Args[0], "-test.run", "^TestHelperGoProxyClient$")
		if !strings.Contains(out, `{"ok":true}`) {
			t.Errorf("got %q", out)
		}
		want++
	})
	t.Run("node openai SDK with undici ProxyAgent", func(t *testing.T) {
		if _, err := os.Stat("sdk/node_modules/undici"); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("sdk/node_modules is missing: .ci/run must run npm ci in test/sdk")
			}
			t.Skip("run npm ci in test/sdk to enable the SDK test")
		}
		f.vars["OPENAI_BASE_URL"] = f.providerURL + "/v1"
		defer delete(f.vars, "OPENAI_BASE_URL")
		out := run(t, "node", "openai-proxy.mjs")
		var res struct {
			Completion, Streamed string
			Chunks               int
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.Completion != "hello from upstream" || res.Streamed != "one two three" {
			t.Errorf("got %q", out)
		}
		want += 2
	})
	f.assertProviderSawKey(t, want)
	recs := f.tl.waitAudit(want)
	for _, r := range recs {
		checkAuditFields(t, r)
		if r["mode"] != "intercept" || r["outcome"] != "forwarded" || r["route"] != "provider" || r["key_fp"] == "" {
			t.Errorf("audit record: %v", r)
		}
	}
	f.tl.stop()
	f.tl.assertNoLeak([]string{providerKey}, outputs...)
}

// TestHelperGoProxyClient is run as a child process by TestForwardRealClients
// with till env's variables: Go reads them once per process.
func TestHelperGoProxyClient(t *testing.T) {
	target := os.Getenv("TILL_TEST_CHILD")
	if target == "" {
		t.Skip("only run as a child process")
	}
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment}, Timeout: 20 * time.Second}
	resp, err := client.Get(target)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	fmt.Println(string(b))
}

func TestForwardSSEAndHTTP2(t *testing.T) {
	f := startForward(t, "deny", false, false)
	client := f.goClient(t)
	gate, query := newSSEGate(t)
	resp, err := client.Get(f.providerURL + "/sse" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Errorf("intercepted leg: got HTTP/%d, want HTTP/2", resp.ProtoMajor)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: first\n" {
		t.Fatalf("first line: %q %v", line, err)
	}
	gate.firstEventSeen(t)
}

// connect sends a CONNECT for target to till and returns the connection
// and till's answer.
func connect(t *testing.T, tillAddr, target string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	c, err := net.Dial("tcp", tillAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	return c, br, resp
}

// readError reads till's JSON error code from a response.
func readError(t *testing.T, resp *http.Response) string {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	return tillError(t, resp, body)
}

// TestForwardMatrix covers, in the spirit of smokescreen's integration
// tests: CONNECT vs absolute-form, host with a route vs without, deny vs
// tunnel, and a client authorised vs not (on a route that needs one).
func TestForwardMatrix(t *testing.T) {
	for _, policy := range []string{"deny", "tunnel"} {
		for _, authorised := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/authorised=%v", policy, authorised), func(t *testing.T) {
				forwardMatrixCase(t, policy, authorised)
			})
		}
	}
}

func forwardMatrixCase(t *testing.T, policy string, authorised bool) {
	f := startForward(t, policy, true, true)
	token, proxyAuth := "", ""
	if authorised {
		token = f.token
		proxyAuth = "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("web:"+token)) + "\r\n"
	}
	records := 0

	// CONNECT to the host with a route: intercepted, key attached.
	resp, err := f.goClientAs(t, token).Get(f.providerURL + "/v1/models")
	if authorised {
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("CONNECT with a route: %v %v", resp, err)
		}
		resp.Body.Close()
	} else if err == nil || !strings.Contains(err.Error(), "Proxy Authentication Required") {
		t.Errorf("CONNECT with a route, no client: got %v %v, want 407", resp, err)
	}
	records++
	if !authorised {
		_, _, cresp := connect(t, f.tl.addr, "api.provider.test:"+f.provider.port())
		if cresp.StatusCode != 407 || cresp.Header.Get("Proxy-Authenticate") != `Basic realm="till"` || readError(t, cresp) != "client_unauthenticated" {
			t.Errorf("CONNECT without credentials: got %d %q", cresp.StatusCode, cresp.Header.Get("Proxy-Authenticate"))
		}
		records++
	}

	// Absolute-form to the host with a route.
	status, header, body := rawRequest(t, f.tl.addr, "GET http://api.provider.test:"+f.provider.port()+"/v1/models HTTP/1.1\r\nHost: api.provider.test\r\n"+proxyAuth+"Connection: close\r\n\r\n")
	if authorised && status != 200 {
		t.Errorf("absolute-form with a route: got %d %s", status, body)
	}
	if !authorised && (status != 407 || !strings.Contains(header, `Proxy-Authenticate: Basic realm="till"`)) {
		t.Errorf("absolute-form with a route, no client: got %d %s", status, header)
	}
	records++
	if authorised {
		f.assertProviderSawKey(t, 2)
	} else if n := len(f.provider.requests()); n != 0 {
		t.Errorf("the provider received %d requests from an unauthorised client", n)
	}

	// CONNECT to a host without a route: no client needed, no key either.
	c, br, resp := connect(t, f.tl.addr, f.otherAuthority)
	if policy == "deny" {
		if resp.StatusCode != 403 || readError(t, resp) != "host_not_allowed" {
			t.Errorf("CONNECT without a route: got %d, want 403 host_not_allowed", resp.StatusCode)
		}
	} else {
		if resp.StatusCode != 200 {
			t.Fatalf("CONNECT without a route (tunnel): got %d", resp.StatusCode)
		}
		// The tunnel is untouched: the app talks TLS to the real host.
		tc := tls.Client(&bufferedConn{c, br}, &tls.Config{ServerName: "other.provider.test", RootCAs: f.rootsOf(t)})
		fmt.Fprintf(tc, "GET /tunnelled HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer app-own\r\nConnection: close\r\n\r\n", f.otherAuthority)
		tresp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil || tresp.StatusCode != 200 {
			t.Fatalf("through the tunnel: %v %v", tresp, err)
		}
		tc.Close() // ends the tunnel, and so writes its record
		if got := f.other.last(t); got.Header.Get("Authorization") != "Bearer app-own" {
			t.Error("the tunnel changed the app's request")
		}
	}
	records++

	// Absolute-form to a host without a route.
	status, _, body = rawRequest(t, f.tl.addr, "GET http://"+f.plainAuthority+"/x HTTP/1.1\r\nHost: "+f.plainAuthority+"\r\n"+proxyAuth+"Connection: close\r\n\r\n")
	if policy == "deny" {
		if status != 403 || !strings.Contains(body, "host_not_allowed") {
			t.Errorf("absolute-form without a route: got %d %s", status, body)
		}
		if n := len(f.plain.requests()); n != 0 {
			t.Errorf("the host without a route received %d requests", n)
		}
	} else {
		if status != 200 {
			t.Errorf("absolute-form without a route (tunnel): got %d %s", status, body)
		}
		got := f.plain.last(t)
		if got.Header.Get("Authorization") != "" || got.Header.Get("Proxy-Authorization") != "" {
			t.Error("credentials reached a host without a route")
		}
	}
	records++

	recs := f.tl.waitAudit(records)
	modes := map[string]int{}
	for _, r := range recs {
		checkAuditFields(t, r)
		modes[r["mode"].(string)]++
		if r["mode"] == "tunnel" && (r["secret"] != "" || r["key_fp"] != "") {
			t.Errorf("tunnel record names a key: %v", r)
		}
		if r["key_fp"] != "" && r["client"] != "web" {
			t.Errorf("a key use not attributed to the client: %v", r)
		}
	}
	if modes["intercept"] < 1 || modes["forward"] < 1 {
		t.Errorf("audit modes: %v", modes)
	}
	f.tl.stop()
	f.tl.assertNoLeak([]string{providerKey, f.token})
}

// rootsOf returns the public roots the fake providers chain to.
func (f *forwardEnv) rootsOf(t *testing.T) *x509.CertPool {
	pem, err := os.ReadFile(f.provider.caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	return roots
}

// bufferedConn reads through a bufio.Reader that may hold bytes already.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// tillRoots trusts the bundle till env wrote.
func (f *forwardEnv) tillRoots(t *testing.T) *x509.CertPool {
	pem, err := os.ReadFile(f.caBundle)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	return roots
}

func TestForwardAttacks(t *testing.T) {
	f := startForward(t, "tunnel", false, false)
	noneReached := func(t *testing.T) {
		t.Helper()
		if n := len(f.other.requests()); n != 0 {
			t.Errorf("the second server received %d requests", n)
		}
		if n := len(f.provider.requests()); n != 0 {
			t.Errorf("the provider received %d requests", n)
		}
	}

	t.Run("inner Host differs from the CONNECT target", func(t *testing.T) {
		c, br, resp := connect(t, f.tl.addr, "api.provider.test:"+f.provider.port())
		if resp.StatusCode != 200 {
			t.Fatalf("CONNECT: %d", resp.StatusCode)
		}
		tc := tls.Client(&bufferedConn{c, br}, &tls.Config{ServerName: "api.provider.test", RootCAs: f.tillRoots(t), NextProtos: []string{"http/1.1"}})
		fmt.Fprintf(tc, "GET /v1/models HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", f.otherAuthority)
		iresp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			t.Fatal(err)
		}
		if iresp.StatusCode != 403 || readError(t, iresp) != "host_not_allowed" {
			t.Errorf("got %d, want 403 host_not_allowed", iresp.StatusCode)
		}
		noneReached(t)
	})

	t.Run("SNI differs from the CONNECT target", func(t *testing.T) {
		c, br, resp := connect(t, f.tl.addr, "api.provider.test:"+f.provider.port())
		if resp.StatusCode != 200 {
			t.Fatalf("CONNECT: %d", resp.StatusCode)
		}
		tc := tls.Client(&bufferedConn{c, br}, &tls.Config{ServerName: "other.provider.test", RootCAs: f.tillRoots(t)})
		if err := tc.Handshake(); err == nil {
			t.Error("the handshake for another name succeeded")
		}
		noneReached(t)
	})

	t.Run("absolute URL host differs from the Host header", func(t *testing.T) {
		status, _, _ := rawRequest(t, f.tl.addr, "GET http://api.provider.test:"+f.provider.port()+"/v1/models HTTP/1.1\r\nHost: "+f.otherAuthority+"\r\nConnection: close\r\n\r\n")
		if status != 200 {
			t.Errorf("got %d, want 200 from the URL's host", status)
		}
		if n := len(f.other.requests()); n != 0 {
			t.Errorf("the Host header's server received %d requests", n)
		}
		if n := len(f.provider.requests()); n != 1 {
			t.Errorf("the URL's host received %d requests, want 1", n)
		}
	})

	_, tillPort, _ := net.SplitHostPort(f.tl.addr)
	for _, target := range []string{
		"127.0.0.1:" + f.other.port(),
		"169.254.169.254:80",
		"[::ffff:127.0.0.1]:" + f.other.port(),
		"10.0.0.1:443",
		"localhost:" + f.other.port(),
		"127.0.0.1:" + tillPort,
	} {
		t.Run("tunnel to "+target, func(t *testing.T) {
			_, _, resp := connect(t, f.tl.addr, target)
			if resp.StatusCode != 403 || readError(t, resp) != "host_not_allowed" {
				t.Errorf("got %d, want 403 host_not_allowed", resp.StatusCode)
			}
		})
	}
	if n := len(f.other.requests()); n != 0 {
		t.Errorf("the second server received %d requests", n)
	}
}

func TestForwardTunnelToTillItself(t *testing.T) {
	f := startForward(t, "tunnel", true, false, "admin: {listen: 127.0.0.1:0}\n") // loopback allowed, till itself still not
	adminAddr := f.tl.adminAddr()
	_, tillPort, _ := net.SplitHostPort(f.tl.addr)
	_, adminPort, _ := net.SplitHostPort(adminAddr)
	for _, target := range []string{"127.0.0.1:" + tillPort, "localhost:" + tillPort, "127.0.0.1:" + adminPort} {
		_, _, resp := connect(t, f.tl.addr, target)
		if resp.StatusCode != 403 || readError(t, resp) != "host_not_allowed" {
			t.Errorf("CONNECT %s: got %d, want 403 host_not_allowed", target, resp.StatusCode)
		}
	}
	status, _, body := rawRequest(t, f.tl.addr, "GET http://"+adminAddr+"/admin/routes HTTP/1.1\r\nHost: "+adminAddr+"\r\nConnection: close\r\n\r\n")
	if status != 403 || !strings.Contains(body, "host_not_allowed") {
		t.Errorf("absolute-form to the admin listener: got %d %s, want 403 host_not_allowed", status, body)
	}
}

// TestForwardOverTLSListener: under tls.names, till env's proxy URL is
// https://, and Go's Transport with HTTP/2 on (http.DefaultTransport's
// ForceAttemptHTTP2) offers h2 in the TLS handshake with the proxy, then
// writes an HTTP/1.1 CONNECT on it. The listener chose h2 for it, read the
// CONNECT as a broken HTTP/2 preface and closed the connection: every Go
// app given till env's variables failed ("malformed HTTP response"), with
// no record. Curl, which offers the proxy no ALPN, and a base-URL client
// over HTTP/2 keep working.
func TestForwardOverTLSListener(t *testing.T) {
	f := startForward(t, "deny", false, false, "tls: {names: [localhost]}\n")
	if !strings.HasPrefix(f.proxyURL, "https://") {
		t.Fatalf("till env's proxy URL under tls.names: %q, want https://", f.proxyURL)
	}
	resp, err := f.goClient(t).Get(f.providerURL + "/v1/models")
	if err != nil {
		t.Fatalf("Go through the https:// proxy: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `{"ok":true}` || resp.ProtoMajor != 2 {
		t.Errorf("Go through the https:// proxy: HTTP/%d %d %q, want HTTP/2 200 inside", resp.ProtoMajor, resp.StatusCode, body)
	}
	out, err := exec.Command("curl", "-sS", "--fail-with-body", "-x", f.proxyURL, "--proxy-cacert", f.caBundle,
		"--cacert", f.caBundle, f.providerURL+"/v1/models").CombinedOutput()
	if err != nil || string(out) != `{"ok":true}` {
		t.Errorf("curl through the https:// proxy: %v %q", err, out)
	}
	f.assertProviderSawKey(t, 2)
	for _, r := range f.tl.waitAudit(2) {
		if r["mode"] != "intercept" || r["outcome"] != "forwarded" {
			t.Errorf("audit record: %v", r)
		}
	}
}
