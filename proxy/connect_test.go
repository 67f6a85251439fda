package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
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

	"github.com/rs/zerolog"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy/ca"
	"github.com/tillgw/till/vault"
)

type connectFixture struct {
	front *httptest.Server
	gw    *Gateway
	roots *x509.CertPool
	port  string
	seen  chan *http.Request
	audit *lockedBuffer
}

// connectFixture is a gateway in forward mode with one TLS upstream on
// 127.0.0.1 and a route to it that only client web may use.
// newConnectFixture: forward mode, one TLS upstream on 127.0.0.1, a route
// for it that needs client "web".
func newConnectFixture(tb testing.TB, extra string, token string) *connectFixture {
	tb.Helper()
	f := &connectFixture{seen: make(chan *http.Request, 16), audit: &lockedBuffer{}}
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.seen <- r.Clone(r.Context())
		io.WriteString(w, `{"ok":true}`)
	}))
	tb.Cleanup(up.Close)
	_, f.port, _ = net.SplitHostPort(up.Listener.Addr().String())
	sum := sha256.Sum256([]byte(token))
	yaml := fmt.Sprintf(`version: 1
forward: {enabled: true%[3]s}
clients:
  - name: web
    token_sha256: %[2]s
routes:
  - name: ip
    preset: openai
    upstream: https://127.0.0.1:%[1]s
    secret: openai
    clients: [web]
`, f.port, hex.EncodeToString(sum[:]), extra)
	cfg, err := config.Parse("till.yaml", []byte(yaml), tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	authority, _ := ca.New("connect-test", time.Now())
	leaves, _ := ca.NewLeaves(authority, 16)
	f.roots = x509.NewCertPool()
	f.roots.AddCert(authority.Certificate())
	transport := NewTransport()
	transport.TLSClientConfig.RootCAs = x509.NewCertPool()
	transport.TLSClientConfig.RootCAs.AddCert(up.Certificate())
	secrets := map[string]vault.Secret{"openai": vault.NewSecret("openai", testKey, time.Now())}
	f.gw = New(NewSnapshot(cfg, secrets), Options{Audit: testAudit(f.audit), Log: zerolog.Nop(), Transport: transport, Leaves: leaves})
	f.front = httptest.NewServer(f.gw)
	tb.Cleanup(f.front.Close)
	return f
}

// connect sends a CONNECT with extra header lines and returns the status
// and, when 200, the TLS connection inside.
func (f *connectFixture) connect(tb testing.TB, host, headers string) (int, *tls.Conn, http.Header) {
	c, err := net.Dial("tcp", f.front.Listener.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT %s:%s HTTP/1.1\r\nHost: %s:%s\r\n%s\r\n", host, f.port, host, f.port, headers)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode != 200 {
		c.Close()
		return resp.StatusCode, nil, resp.Header
	}
	tc := tls.Client(c, &tls.Config{ServerName: host, RootCAs: f.roots})
	if err := tc.Handshake(); err != nil {
		tb.Fatal(err)
	}
	return 200, tc, resp.Header
}

func innerGet(tb testing.TB, tc *tls.Conn, host string) (*http.Response, string) {
	fmt.Fprintf(tc, "GET /v1/models HTTP/1.1\r\nHost: %s\r\n\r\n", host)
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		tb.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

const connectToken = "till_" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789ABCD"

// A client's token on a CONNECT, in Proxy-Authorization or X-Till-Token,
// applies to every request inside it: the one that admitted the CONNECT
// is the one the inner requests go as.
func TestConnectTokenAppliesInside(t *testing.T) {
	f := newConnectFixture(t, "", connectToken)
	status, tc, _ := f.connect(t, "127.0.0.1", "X-Till-Token: "+connectToken+"\r\n")
	if status != 200 {
		t.Fatalf("CONNECT with X-Till-Token: %d, want 200 (admitted as web)", status)
	}
	defer tc.Close()
	resp, body := innerGet(t, tc, "127.0.0.1:"+f.port)
	if resp.StatusCode != 200 {
		t.Errorf("request inside a CONNECT that gave X-Till-Token: got %d %s (%s), want 200 as client web",
			resp.StatusCode, resp.Header.Get("X-Till-Error"), strings.TrimSpace(body))
	}
	// Control: the same token as Proxy-Authorization works.
	status, tc2, _ := f.connect(t, "127.0.0.1", "Proxy-Authorization: Bearer "+connectToken+"\r\n")
	if status != 200 {
		t.Fatalf("CONNECT with Proxy-Authorization: %d", status)
	}
	defer tc2.Close()
	if resp, _ := innerGet(t, tc2, "127.0.0.1:"+f.port); resp.StatusCode != 200 {
		t.Errorf("control with Proxy-Authorization: %d", resp.StatusCode)
	}
}

// An HTTP/2 request inside an intercepted CONNECT whose Host header names
// another host than its :authority (and the CONNECT target) is refused:
// 403 host_not_allowed, nothing upstream.
func TestInnerHTTP2HostMustMatch(t *testing.T) {
	f := newConnectFixture(t, "", connectToken)
	c, err := net.Dial("tcp", f.front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT 127.0.0.1:%s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nProxy-Authorization: Bearer %s\r\n\r\n", f.port, f.port, connectToken)
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "CONNECT"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	tc := tls.Client(c, &tls.Config{ServerName: "127.0.0.1", RootCAs: f.roots, NextProtos: []string{"h2"}})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	tc.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(tc, tc)
	fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "127.0.0.1:" + f.port}, {":path", "/v1/models"}, {"host", "evil.example"}} {
		enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	dec := hpack.NewDecoder(4096, nil)
	for {
		fm, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		switch fm := fm.(type) {
		case *http2.SettingsFrame:
			if !fm.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.RSTStreamFrame:
			return // refused by Go's server: fine too
		case *http2.GoAwayFrame:
			// the server closes the connection after answering
		case *http2.HeadersFrame:
			hf, _ := dec.DecodeFull(fm.HeaderBlockFragment())
			status := ""
			for _, h := range hf {
				if h.Name == ":status" {
					status = h.Value
				}
			}
			select {
			case r := <-f.seen:
				t.Errorf("status %s; forwarded with the key, upstream saw Host %q (the app's Host header was evil.example)", status, r.Host)
			default:
				if status != "403" {
					t.Errorf("status %s, want 403 host_not_allowed", status)
				}
			}
			return
		}
	}
}

// TestRefusedConnectClosesConnection: a CONNECT that till refuses ends the
// connection: the bytes an app already wrote for the tunnel (a request for
// the CONNECT's host) are never read as a request of their own, served
// with a route's key.
func TestRefusedConnectClosesConnection(t *testing.T) {
	f := newConnectFixture(t, "", connectToken)
	c, err := net.Dial("tcp", f.front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	// CONNECT to a host without a route (refused: unknown_hosts deny), then
	// the request the app meant for 10.0.0.1, sent optimistically into
	// the tunnel.
	fmt.Fprintf(c, "CONNECT 10.0.0.1:80 HTTP/1.1\r\nHost: 10.0.0.1:80\r\n\r\n"+
		"GET /ip/v1/models HTTP/1.1\r\nHost: 10.0.0.1\r\nX-Till-Token: %s\r\n\r\n", connectToken)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode == 200 {
		t.Fatalf("CONNECT 10.0.0.1:80 was accepted")
	}
	second, err := http.ReadResponse(br, nil)
	if err == nil {
		io.Copy(io.Discard, second.Body)
		t.Errorf("after a refused CONNECT (%d), till read the tunnel's bytes as a request and answered %d", resp.StatusCode, second.StatusCode)
	}
	select {
	case r := <-f.seen:
		t.Errorf("the request meant for the refused tunnel went upstream with the route's key: %s %s (Authorization %q)", r.Method, r.URL, r.Header.Get("Authorization"))
	default:
	}
}

// TestConnectRecordsItsClient: the record of a CONNECT names the client
// that asked, whether it is tunnelled or refused, not only intercepted.
func TestConnectRecordsItsClient(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer other.Close()
	for _, tt := range []struct{ extra, want string }{
		{", unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]", "200"},
		{"", "403"},
	} {
		f := newConnectFixture(t, tt.extra, connectToken)
		c, err := net.Dial("tcp", f.front.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		host := other.Listener.Addr().String()
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nX-Till-Token: %s\r\n\r\n", host, host, connectToken)
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "CONNECT"})
		if err != nil || strconv.Itoa(resp.StatusCode) != tt.want {
			t.Fatalf("CONNECT %s (%q): %v %v, want %s", host, tt.extra, resp, err, tt.want)
		}
		c.Close() // a tunnel's record is written once it ends
		var recs []map[string]any
		for deadline := time.Now().Add(5 * time.Second); len(recs) == 0 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			recs = f.audit.records(t)
		}
		if len(recs) != 1 || recs[0]["client"] != "web" {
			t.Errorf("%q: records %v, want one naming client web", tt.extra, recs)
		}
	}
}

// TestTunnelIdleTimeout: a tunnel that moves no byte either way for the
// idle timeout is closed, and its record written; one that keeps moving
// bytes, even in one direction only, stays open past it.
func TestTunnelIdleTimeout(t *testing.T) {
	const idle = time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	marked := make(chan struct{}, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { // reads, never answers; tells of a marker received
				defer c.Close()
				b := make([]byte, 64)
				for {
					n, err := c.Read(b)
					if bytes.Contains(b[:n], []byte("mark")) {
						marked <- struct{}{}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	f := newConnectFixture(t, ", unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]", connectToken)
	f.gw.tunnelIdle = idle
	open := func() net.Conn {
		c, err := net.Dial("tcp", f.front.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		host := ln.Addr().String()
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nX-Till-Token: %s\r\n\r\n", host, host, connectToken)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "CONNECT"})
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("CONNECT %s: %v %v", host, resp, err)
		}
		return c
	}

	busy := open()
	defer busy.Close()
	stopBusy := make(chan struct{})
	busyErr := make(chan error, 1)
	go func() {
		tick := time.NewTicker(idle / 20)
		defer tick.Stop()
		for {
			select {
			case <-stopBusy:
				busyErr <- nil
				return
			case <-tick.C:
				if _, err := busy.Write([]byte("ping")); err != nil {
					busyErr <- err
					return
				}
			}
		}
	}()

	started := time.Now() // before the CONNECT: no later than till's idle timer starts
	quiet := open()
	defer quiet.Close()
	quiet.SetReadDeadline(time.Now().Add(20 * idle))
	if n, err := quiet.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("idle tunnel: read %d bytes, %v; want it closed (EOF) after %v", n, err, idle)
	}
	if waited := time.Since(started); waited < idle {
		t.Errorf("idle tunnel closed after %v, before the idle timeout %v", waited, idle)
	}
	// The busy tunnel, one way only, has outlived the idle timeout: it
	// must still carry bytes.
	for time.Since(started) < 3*idle {
		time.Sleep(idle / 4)
	}
	close(stopBusy)
	if err := <-busyErr; err != nil {
		t.Errorf("a tunnel moving bytes one way was closed as idle: %v", err)
	}
	// Still open: a marker written now reaches the upstream.
	if _, err := busy.Write([]byte("mark")); err != nil {
		t.Fatalf("a tunnel moving bytes one way was closed as idle: %v", err)
	}
	select {
	case <-marked:
	case <-time.After(10 * time.Second):
		t.Error("a tunnel moving bytes one way was closed as idle: the marker never reached the upstream")
	}
}

// TestRouteHostNeverTunnelled: a CONNECT to a host with a route that till
// cannot intercept (no CA: forward mode turned on by a reload; or
// forward.intercept off) is refused, not tunnelled untouched, whatever
// unknown_hosts says: the route's policy would not apply, and the app's
// own credentials would reach the provider.
func TestRouteHostNeverTunnelled(t *testing.T) {
	for _, tt := range []struct {
		name, forward string
		canIntercept  bool
		want          string
	}{
		{"no CA", "{enabled: true, unknown_hosts: tunnel}", false, "no CA"},
		{"intercept off", "{enabled: true, intercept: false, unknown_hosts: tunnel}", true, "forward.intercept is off"},
		{"intercepted", "{enabled: true, unknown_hosts: tunnel}", true, ""},
	} {
		cfg, err := config.Parse("till.yaml", []byte("version: 1\nforward: "+tt.forward+"\nroutes:\n  - {name: openai, preset: openai}\n"), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		s := NewSnapshot(cfg, secrets(time.Now()))
		_, mode, e := s.resolveConnect("api.openai.com:443", tt.canIntercept)
		switch {
		case tt.want == "" && (e != nil || mode != modeIntercept):
			t.Errorf("%s: mode %q, %v; want it intercepted", tt.name, mode, e)
		case tt.want != "" && (e == nil || e.code != CodeHostNotAllowed || !strings.Contains(e.message, tt.want)):
			t.Errorf("%s: mode %q, %v; want 403 host_not_allowed saying %q", tt.name, mode, e, tt.want)
		}
		// A host without a route is still tunnelled.
		if _, mode, e := s.resolveConnect("example.com:443", tt.canIntercept); e != nil || mode != modeTunnel {
			t.Errorf("%s: a host without a route: mode %q, %v; want it tunnelled", tt.name, mode, e)
		}
	}
}

// TestRouteHostInAnySpelling: a CONNECT to a route's host written another
// way (a port with leading zeros, upper case, a trailing dot, an IPv4
// address as IPv4-mapped IPv6) is the route's host: intercepted, never
// tunnelled untouched past the route's clients rule; an absolute-form
// request to it with an empty port ("host:") gets the route too.
func TestRouteHostInAnySpelling(t *testing.T) {
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nforward: {enabled: true, unknown_hosts: tunnel}\nroutes:\n"+
		"  - {name: openai, preset: openai}\n  - {name: ip, upstream: 'https://127.0.0.1:8443', secret: openai, inject: {header: X-Key}}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := NewSnapshot(cfg, secrets(time.Now()))
	for _, authority := range []string{"api.openai.com:0443", "API.OpenAI.com.:00443", "127.0.0.1:08443", "[::ffff:127.0.0.1]:8443", "[::ffff:7f00:1]:8443"} {
		if _, mode, e := s.resolveConnect(authority, true); e != nil || mode != modeIntercept {
			t.Errorf("CONNECT %s: mode %q, %v; want it intercepted", authority, mode, e)
		}
	}
	if _, mode, e := s.resolveConnect("127.0.0.2:8443", true); e != nil || mode != modeTunnel {
		t.Errorf("CONNECT to another address: mode %q, %v; want it tunnelled", mode, e)
	}
	// An empty port is the default one (RFC 3986, section 3.2.3), to the
	// relay's dialer as to the route lookup.
	for _, host := range []string{"api.openai.com:", "API.OpenAI.com.:"} {
		if tg, e := s.resolveURL(&url.URL{Scheme: "http", Host: host, Path: "/v1/models"}); e != nil || tg.mode != modeForward {
			t.Errorf("GET http://%s/v1/models: mode %q, %v; want the route's", host, tg.mode, e)
		}
	}
}

// TestRouteHostInUnicodeNeverRelayed: net/http's Transport dials a host
// that is not ASCII as IDNA's lookup maps it (a fullwidth letter or
// digit, an ideographic full stop, a soft hyphen left out), so such a
// spelling of a route's host, no route's host to till, was relayed
// untouched to the route's upstream (here at a path the route refuses),
// its own credentials with it. A host that is not ASCII is refused, in
// an absolute-form request and a CONNECT alike: apps send an
// internationalised name in its xn-- form.
func TestRouteHostInUnicodeNeverRelayed(t *testing.T) {
	var reached atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) }))
	defer up.Close()
	port := up.URL[strings.LastIndexByte(up.URL, ':')+1:]
	gw, _ := newTestGateway(t, "version: 1\nforward: {enabled: true, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\nroutes:\n"+
		"  - {name: local, preset: openai, upstream: {{UP}}, allow: {paths: [/v1/models]}}\n  - {name: openai, preset: openai}\n", up.URL, secrets(time.Now()))
	for _, host := range []string{"127.0.0.\uff11:" + port, "%EF%BC%91%EF%BC%92%EF%BC%97.0.0.\uff11:" + port} {
		req := httptest.NewRequest("GET", "http://"+host+"/admin", nil)
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, req)
		if n := reached.Load(); n != 0 || w.Code != http.StatusBadRequest {
			t.Errorf("GET http://%s/admin: got %d, and the route's upstream was reached %d time(s); want 400 and never", host, w.Code, n)
		}
	}
	s := gw.live.Load().Snapshot
	for _, host := range []string{"\uff41pi.openai.com", "api\u3002openai.com", "api.open\u00adai.com", "\u0430pi.openai.com"} {
		if tg, e := s.resolveURL(&url.URL{Scheme: "http", Host: host, Path: "/v1/models"}); e == nil || e.code != CodeBadRequest {
			t.Errorf("GET http://%s/v1/models: mode %q, %v; want 400 bad_request", host, tg.mode, e)
		}
		if _, mode, e := s.resolveConnect(host+":443", false); e == nil || e.code != CodeBadRequest {
			t.Errorf("CONNECT %s:443: mode %q, %v; want 400 bad_request", host, mode, e)
		}
	}
	// An internationalised name written as requests carry it is a host
	// like any other.
	if _, mode, e := s.resolveConnect("xn--80ak6aa92e.com:443", false); e != nil || mode != modeTunnel {
		t.Errorf("CONNECT xn--80ak6aa92e.com:443: mode %q, %v; want it tunnelled", mode, e)
	}
}

// TestRouteHostAtHTTPDefaultPort: http://host:80 is http://host (RFC 3986,
// section 6.2.3), which an https route on the default port serves: with
// the port written out (or as 080), an absolute-form request to the
// route's host was relayed untouched over plain HTTP to its port 80, past
// the route's policy, the app's request in clear on the network.
func TestRouteHostAtHTTPDefaultPort(t *testing.T) {
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nforward: {enabled: true, unknown_hosts: tunnel}\nroutes:\n"+
		"  - {name: openai, preset: openai}\n  - {name: v6, upstream: 'https://[2001:db8::1]', secret: openai, inject: {header: X-Key}}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := NewSnapshot(cfg, secrets(time.Now()))
	for raw, want := range map[string]string{
		"http://api.openai.com:80/v1/models":      "openai",
		"http://api.openai.com:080/v1/models":     "openai",
		"http://API.OpenAI.com.:80/v1/models":     "openai",
		"http://[2001:db8::1]:80/v1/models":       "v6",
		"http://[2001:db8:0::1]:0080/v1/models":   "v6",
		"http://api.openai.com/v1/models":         "openai",
		"http://api.openai.com:443/v1/models":     "openai",
		"http://api.openai.com:8080/v1/models":    "",
		"http://other.example.com:80/v1/models":   "",
		"http://[2001:db8::2]:80/v1/models":       "",
		"http://api.openai.com.example:80/v1/abc": "",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		tg, e := s.resolveURL(u)
		switch {
		case e != nil:
			t.Errorf("GET %s: %v", raw, e)
		case want == "" && tg.mode != modeTunnel:
			t.Errorf("GET %s: mode %q; want it relayed (a host without a route)", raw, tg.mode)
		case want != "" && (tg.mode != modeForward || tg.route.name != want):
			t.Errorf("GET %s: mode %q, route %v; want route %q", raw, tg.mode, tg.route, want)
		}
		if v := s.Explain("GET", raw, "", "127.0.0.1:1", "", time.Now()); want != "" && (!v.Allowed || v.Route != want) {
			t.Errorf("till test GET %s: allowed %v, route %q; want route %q", raw, v.Allowed, v.Route, want)
		}
	}
}

// TestRouteHostAtHTTPPortNeverTunnelled: undici's ProxyAgent (Node's
// fetch behind HTTP_PROXY) sends an http:// URL through a CONNECT to
// port 80, then plain HTTP. To a route's host on its default port that
// CONNECT was no route's (the route is the host at 443) and was tunnelled
// untouched under unknown_hosts: tunnel: the app's request reached the
// provider past the route's rules, in clear, its till token (its SDK's
// key) in it. It is refused, as the absolute-form request to that port
// goes to the route (TestRouteHostAtHTTPDefaultPort).
func TestRouteHostAtHTTPPortNeverTunnelled(t *testing.T) {
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nforward: {enabled: true, unknown_hosts: tunnel}\nroutes:\n"+
		"  - {name: openai, preset: openai}\n  - {name: v6, upstream: 'https://[2001:db8::1]', secret: openai, inject: {header: X-Key}}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := NewSnapshot(cfg, secrets(time.Now()))
	for _, authority := range []string{"api.openai.com:80", "API.OpenAI.com.:080", "[2001:db8::1]:80"} {
		if _, mode, e := s.resolveConnect(authority, true); e == nil || e.code != CodeHostNotAllowed {
			t.Errorf("CONNECT %s: mode %q, %v; want 403 host_not_allowed", authority, mode, e)
		}
	}
	for _, authority := range []string{"api.openai.com:8080", "other.example.com:80", "[2001:db8::2]:80"} {
		if _, mode, e := s.resolveConnect(authority, true); e != nil || mode != modeTunnel {
			t.Errorf("CONNECT %s: mode %q, %v; want it tunnelled", authority, mode, e)
		}
	}
}

// TestIPv4InOtherSpellingsRefused: a host that ends in a number is an
// IPv4 address to getaddrinfo (macOS, cgo builds), written the inet_aton
// way (127.1, 2130706433, 0x7f.0.0.1, octal 0177.0.0.1), which a route's
// IP upstream does not match: a CONNECT or an absolute-form request to a
// route's address so written was tunnelled or relayed untouched, past
// the route's rules. Such a host is refused, as the WHATWG URL standard
// refuses one that is no IPv4 address; a name, or an address written as
// one, is not.
func TestIPv4InOtherSpellingsRefused(t *testing.T) {
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nforward: {enabled: true, unknown_hosts: tunnel}\nroutes:\n"+
		"  - {name: ip, upstream: 'https://127.0.0.1:8443', secret: openai, inject: {header: X-Key}}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := NewSnapshot(cfg, secrets(time.Now()))
	for _, host := range []string{"127.1", "2130706433", "0x7f.0.0.1", "0X7F.1", "0177.0.0.1", "127.0.0.01", "127.0.0.1.1", "a.0x", "name.123", "127.1."} {
		if _, mode, e := s.resolveConnect(host+":8443", true); e == nil || e.code != CodeBadRequest {
			t.Errorf("CONNECT %s:8443: mode %q, %v; want 400 bad_request", host, mode, e)
		}
		if tg, e := s.resolveURL(&url.URL{Scheme: "http", Host: host + ":8443", Path: "/"}); e == nil || e.code != CodeBadRequest {
			t.Errorf("GET http://%s:8443/: mode %q, %v; want 400 bad_request", host, tg.mode, e)
		}
	}
	for authority, want := range map[string]string{"127.0.0.1:8443": modeIntercept, "127.0.0.1.:8443": modeIntercept,
		"[::ffff:127.0.0.1]:8443": modeIntercept, "10.1.2.3:443": modeTunnel, "[2001:db8::1]:443": modeTunnel,
		"example.com:443": modeTunnel, "host1.example:443": modeTunnel, "0x.example:443": modeTunnel, "123.example:443": modeTunnel} {
		if _, mode, e := s.resolveConnect(authority, true); e != nil || mode != want {
			t.Errorf("CONNECT %s: mode %q, %v; want %q", authority, mode, e, want)
		}
	}
}

// TestRouteHostNeverRelayedOutsideItsPath: a route's host is never
// relayed untouched, whatever unknown_hosts says, and a CONNECT to it is
// intercepted (a path outside the route gets 404 route_not_found). An
// absolute-form request to that same host, at a path outside the route's
// upstream path, was instead relayed untouched (mode tunnel) over plain
// HTTP: past the route's clients rule, its method and override rules,
// with the app's own credential headers in clear. `till test` says the
// same.
func TestRouteHostNeverRelayedOutsideItsPath(t *testing.T) {
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nforward: {enabled: true, unknown_hosts: tunnel}\nclients:\n"+
		"  - {name: web, token_sha256: "+strings.Repeat("ab", 32)+"}\nroutes:\n"+
		"  - {name: gh, upstream: 'https://api.example.com/repos/acme', secret: openai, inject: {header: Authorization, format: 'Bearer {secret}'}, clients: [web]}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := NewSnapshot(cfg, secrets(time.Now()))
	// Control: a CONNECT to the route's host is intercepted, never tunnelled.
	if _, mode, e := s.resolveConnect("api.example.com:443", true); e != nil || mode != modeIntercept {
		t.Fatalf("control: CONNECT: mode %q, %v", mode, e)
	}
	for _, raw := range []string{"http://api.example.com/user", "http://api.example.com:443/orgs/other", "http://API.example.com./gists", "http://api.example.com/repos/acmex"} {
		u, _ := url.Parse(raw)
		tg, e := s.resolveURL(u)
		if e == nil || e.code != CodeRouteNotFound {
			t.Errorf("GET %s: mode %q, %v; want it refused (route_not_found), as inside a CONNECT", raw, tg.mode, e)
		}
		if v := s.Explain("GET", raw, "web", "127.0.0.1:1", "", time.Now()); v.Allowed || v.Code != CodeRouteNotFound {
			t.Errorf("till test GET %s: allowed %v, code %q; want route_not_found", raw, v.Allowed, v.Code)
		}
	}
	// The route's own path is routed, and a host without a route relayed.
	for raw, want := range map[string]string{"http://api.example.com/repos/acme/issues": modeForward, "http://example.com/user": modeTunnel} {
		u, _ := url.Parse(raw)
		if tg, e := s.resolveURL(u); e != nil || tg.mode != want {
			t.Errorf("control: GET %s: mode %q, %v; want %q", raw, tg.mode, e, want)
		}
	}
}

// TestTunnelsHoldClientsToTheirAddresses: a client's cidrs bind it in a
// tunnel and an absolute-form relay to a host without a route too (403
// client_forbidden), and a relayed request's record names its client,
// whether its token comes in X-Till-Token or in Authorization (as an
// SDK sends its api key, and as a refusal before a route reads it).
func TestTunnelsHoldClientsToTheirAddresses(t *testing.T) {
	for _, header := range []string{"X-Till-Token: ", "Authorization: Bearer "} {
		t.Run(strings.TrimSuffix(strings.Fields(header)[0], ":"), func(t *testing.T) { tunnelsHoldClients(t, header) })
	}
}

func tunnelsHoldClients(t *testing.T, header string) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "reached") }))
	defer target.Close()
	host := strings.TrimPrefix(target.URL, "http://")
	sum := sha256.Sum256([]byte(connectToken))
	for _, tt := range []struct {
		cidrs string
		want  int
	}{{"10.0.0.0/8", 403}, {"127.0.0.0/8", 200}} {
		y := "version: 1\nforward: {enabled: true, intercept: false, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\n" +
			"clients:\n  - {name: web, token_sha256: " + hex.EncodeToString(sum[:]) + ", cidrs: [" + tt.cidrs + "]}\nroutes: []\n"
		cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		buf := &lockedBuffer{}
		gw := New(NewSnapshot(cfg, nil), Options{Audit: testAudit(buf), Log: zerolog.Nop()})
		srv := httptest.NewServer(gw)
		for _, line := range []string{"CONNECT " + host, "GET " + target.URL + "/"} {
			c, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, "%s HTTP/1.1\r\nHost: %s\r\n%s%s\r\n\r\n", line, host, header, connectToken)
			res, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: strings.Fields(line)[0]})
			c.Close()
			if err != nil || res.StatusCode != tt.want {
				t.Errorf("%s by client web (cidrs %s) from 127.0.0.1: %v %v, want %d", line, tt.cidrs, res, err, tt.want)
			}
		}
		srv.Close() // waits for the handlers, and so for the records
		for _, r := range buf.records(t) {
			if r["client"] != "web" {
				t.Errorf("cidrs %s: record of a %v in mode %v names client %q, want web", tt.cidrs, r["method"], r["mode"], r["client"])
			}
		}
	}
}

// TestRefusalsRecordTheirClient: a refusal that comes before a route is
// found records the client whose token came with it, as a refused CONNECT
// does (TestConnectRecordsItsClient): an absolute-form request to a host
// without a route, a reverse-mode request for no route, and a request
// inside an intercepted CONNECT whose Host differs from the CONNECT's (an
// attempt to steer the key), each sent with web's token.
func TestRefusalsRecordTheirClient(t *testing.T) {
	f := newConnectFixture(t, "", connectToken)
	front := f.front.Listener.Addr().String()
	send := func(raw string) int {
		c, err := net.Dial("tcp", front)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(c, raw)
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		return res.StatusCode
	}
	// Absolute form, host without a route, forward.unknown_hosts: deny.
	if st := send("GET http://example.invalid/x HTTP/1.1\r\nHost: example.invalid\r\nX-Till-Token: " + connectToken + "\r\n\r\n"); st != 403 {
		t.Fatalf("absolute-form to a host without a route: %d, want 403", st)
	}
	// Reverse mode, no route for the path.
	if st := send("GET /nosuchroute/v1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Till-Token: " + connectToken + "\r\n\r\n"); st != 404 {
		t.Fatalf("reverse mode, no route: %d, want 404", st)
	}
	// Intercepted: the CONNECT names web; the request inside asks for
	// another Host.
	st, tc, _ := f.connect(t, "127.0.0.1", "Proxy-Authorization: Bearer "+connectToken+"\r\n")
	if st != 200 {
		t.Fatalf("CONNECT by web: %d", st)
	}
	fmt.Fprintf(tc, "GET /v1/models HTTP/1.1\r\nHost: attacker.example\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil || res.StatusCode != 403 {
		t.Fatalf("inner request with another Host: %v %v, want 403", res, err)
	}
	tc.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.gw.Shutdown(ctx); err != nil { // waits for every record
		t.Fatal(err)
	}
	recs := f.audit.records(t)
	if len(recs) < 3 {
		t.Fatalf("records %v, want the three refusals", recs)
	}
	for _, r := range recs {
		if r["client"] != "web" {
			t.Errorf("%v record (%v %v %v, reason %v) names client %q; web's token came with it", r["mode"], r["method"], r["host"], r["path"], r["reason"], r["client"])
		}
	}
}
