package proxy

import (
	"bufio"
	"crypto/tls"
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

	"github.com/rs/zerolog"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy/ca"
	"github.com/tillgw/till/vault"
)

// interceptFixture is a gateway in forward mode in front of a TLS upstream
// at 127.0.0.1, with routes for "127.0.0.1" and "localhost" on its port.
type interceptFixture struct {
	up     *httptest.Server
	front  *httptest.Server
	gw     *Gateway
	leaves *ca.Leaves
	roots  *x509.CertPool // trusts till's CA
	port   string
	logs   chan string // till's log lines, while there is room
}

// chanWriter sends each log line it is given to its channel, dropping
// it when the channel is full.
type chanWriter chan string

func (c chanWriter) Write(p []byte) (int, error) {
	select {
	case c <- string(p):
	default:
	}
	return len(p), nil
}

func newInterceptFixture(tb testing.TB, cacheSize int) *interceptFixture {
	tb.Helper()
	f := &interceptFixture{logs: make(chan string, 64)}
	f.up = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"ok":true}`)
	}))
	tb.Cleanup(f.up.Close)
	_, f.port, _ = net.SplitHostPort(f.up.Listener.Addr().String())
	yaml := fmt.Sprintf(`version: 1
forward: {enabled: true}
routes:
  - name: ip
    preset: openai
    upstream: https://127.0.0.1:%[1]s
    secret: openai
  - name: name
    preset: openai
    upstream: https://localhost:%[1]s
    secret: openai
`, f.port)
	cfg, err := config.Parse("till.yaml", []byte(yaml), tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	authority, err := ca.New("bench", time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	f.leaves, _ = ca.NewLeaves(authority, cacheSize)
	f.roots = x509.NewCertPool()
	f.roots.AddCert(authority.Certificate())
	transport := NewTransport()
	transport.TLSClientConfig.RootCAs = x509.NewCertPool()
	transport.TLSClientConfig.RootCAs.AddCert(f.up.Certificate())
	secrets := map[string]vault.Secret{"openai": vault.NewSecret("openai", testKey, time.Now())}
	f.gw = New(NewSnapshot(cfg, secrets), Options{Audit: testAudit(io.Discard), Log: zerolog.New(chanWriter(f.logs)), Transport: transport, Leaves: f.leaves})
	f.front = httptest.NewServer(f.gw)
	tb.Cleanup(f.front.Close)
	return f
}

// handshake opens a CONNECT to host and completes TLS with till's leaf.
func (f *interceptFixture) handshake(tb testing.TB, host string) *tls.Conn {
	return f.handshakeALPN(tb, host)
}

// handshakeALPN is handshake offering the given application protocols.
func (f *interceptFixture) handshakeALPN(tb testing.TB, host string, protos ...string) *tls.Conn {
	c, err := net.Dial("tcp", f.front.Listener.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT %s:%s HTTP/1.1\r\nHost: %s:%s\r\n\r\n", host, f.port, host, f.port)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil || resp.StatusCode != 200 {
		tb.Fatalf("CONNECT: %v %v", resp, err)
	}
	tc := tls.Client(c, &tls.Config{ServerName: host, RootCAs: f.roots, NextProtos: protos})
	if err := tc.Handshake(); err != nil {
		tb.Fatal(err)
	}
	return tc
}

// TestInterceptHandshakeHint: an app that was not given till's CA (the
// commonest mistake with HTTPS_PROXY) ends the handshake with an alert
// or a torn record that does not name the CA; till's log line hints at
// it, at plain HTTP sent inside a CONNECT, and at an app refused for its
// TLS version or its ALPN protocols, which is not sent to look for the CA.
func TestInterceptHandshakeHint(t *testing.T) {
	f := newInterceptFixture(t, 16)
	for _, tt := range []struct {
		name, want string
		send       func(c net.Conn)
	}{
		{"app without the CA", `"hint":"an app that does not trust till's CA ends the handshake: give it the CA (till env prints SSL_CERT_FILE`, func(c net.Conn) {
			tls.Client(c, &tls.Config{ServerName: "localhost", RootCAs: x509.NewCertPool()}).Handshake()
		}},
		{"plain HTTP in the tunnel", `"hint":"the app sent no TLS inside the CONNECT`, func(c net.Conn) {
			io.WriteString(c, "GET /v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n")
			io.Copy(io.Discard, c)
		}},
		// The app trusts till's CA: its version or its protocols, not
		// the CA, end these handshakes.
		{"app offering only TLS 1.1 and 1.0", `"hint":"the app offers only TLS 1.1 or older; till needs TLS 1.2 or later`, func(c net.Conn) {
			tls.Client(c, &tls.Config{ServerName: "localhost", RootCAs: f.roots, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}).Handshake()
		}},
		{"app asking for no HTTP protocol", `"hint":"the app asked for no HTTP protocol (ALPN)`, func(c net.Conn) {
			tls.Client(c, &tls.Config{ServerName: "localhost", RootCAs: f.roots, NextProtos: []string{"imap"}}).Handshake()
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", f.front.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "CONNECT localhost:%s HTTP/1.1\r\nHost: localhost:%s\r\n\r\n", f.port, f.port)
			br := bufio.NewReader(c)
			if resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"}); err != nil || resp.StatusCode != 200 {
				t.Fatalf("CONNECT: %v %v", resp, err)
			}
			tt.send(c)
			for {
				select {
				case line := <-f.logs:
					if !strings.Contains(line, "intercepted TLS handshake failed") {
						continue
					}
					if !strings.Contains(line, tt.want) {
						t.Errorf("log line lacks %s:\n%s", tt.want, line)
					}
					return
				case <-time.After(10 * time.Second):
					t.Fatal("no log line of the failed handshake")
				}
			}
		})
	}
}

func TestInterceptedRequest(t *testing.T) {
	f := newInterceptFixture(t, 16)
	client := f.client()
	for _, host := range []string{"127.0.0.1", "localhost"} {
		resp, err := client.Get("https://" + host + ":" + f.port + "/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// localhost is not in the upstream's certificate: the fresh,
		// verified upstream connection must fail rather than skip checks.
		want := map[string]int{"127.0.0.1": 200, "localhost": 502}[host]
		if resp.StatusCode != want {
			t.Errorf("%s: got %d %s, want %d", host, resp.StatusCode, b, want)
		}
	}
}

// client is an app that uses the fixture's gateway as its HTTPS proxy.
func (f *interceptFixture) client() *http.Client {
	proxy, _ := url.Parse(f.front.URL)
	return &http.Client{Transport: &http.Transport{
		Proxy:             http.ProxyURL(proxy),
		TLSClientConfig:   &tls.Config{RootCAs: f.roots},
		ForceAttemptHTTP2: true,
	}}
}

// BenchmarkInterceptHandshake measures CONNECT plus the TLS handshake with
// till's leaf: cached, and freshly minted each time (a cache of one leaf
// alternating between two hosts).
func BenchmarkInterceptHandshake(b *testing.B) {
	b.Run("cached", func(b *testing.B) {
		f := newInterceptFixture(b, 16)
		for b.Loop() {
			f.handshake(b, "127.0.0.1").Close()
		}
	})
	b.Run("fresh", func(b *testing.B) {
		f := newInterceptFixture(b, 1)
		hosts := []string{"127.0.0.1", "localhost"}
		i := 0
		for b.Loop() {
			f.handshake(b, hosts[i%2]).Close()
			i++
		}
		if m := f.leaves.Mints(); m < int64(i) {
			b.Fatalf("%d mints for %d handshakes: not fresh", m, i)
		}
	})
}

// BenchmarkInterceptRequest is a request through an intercepted keep-alive
// connection; BenchmarkReverseRequest the same request in reverse mode.
func BenchmarkInterceptRequest(b *testing.B) {
	f := newInterceptFixture(b, 16)
	client := f.client()
	target := "https://127.0.0.1:" + f.port + "/v1/models"
	b.ReportAllocs()
	for b.Loop() {
		benchGet(b, client, target)
	}
}

func BenchmarkReverseRequest(b *testing.B) {
	f := newInterceptFixture(b, 16)
	client := &http.Client{Transport: &http.Transport{}}
	target := f.front.URL + "/ip/v1/models"
	b.ReportAllocs()
	for b.Loop() {
		benchGet(b, client, target)
	}
}

func benchGet(b *testing.B, client *http.Client, target string) {
	resp, err := client.Get(target)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Proto, "HTTP/") {
		b.Fatalf("status %d", resp.StatusCode)
	}
}
