package test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// tlsClient trusts the PEM roots and presents cert, when set.
func tlsClient(t *testing.T, rootsPEM []byte, cert *tls.Certificate) *http.Client {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootsPEM) {
		t.Fatal("no roots")
	}
	tc := &tls.Config{RootCAs: roots}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}}
}

// tlsListenerConfig is a TLS listener for localhost in front of u.
func tlsListenerConfig(u *upstream, tlsBlock, clients, routeClients string) string {
	return fmt.Sprintf(`version: 1
tls:
%s%sroutes:
  - name: openai
    preset: openai
    upstream: %s
%s`, tlsBlock, clients, u.URL, routeClients)
}

func TestTLSListenerWithClientCertificates(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := t.TempDir()
	tlsBlock := "  names: [localhost]\n"
	os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(tlsListenerConfig(u, tlsBlock, "", "")), 0o644)
	setSecret(t, dir, "openai", openaiKey)
	if _, errOut, code := runTill(t, dir, "", nil, "ca", "init"); code != 0 {
		t.Fatalf("ca init: %s", errOut)
	}
	webTok, webLines := addClient(t, dir, "web", "--cert")
	if !strings.Contains(webLines, "cert: true") {
		t.Fatalf("client add --cert lines: %q", webLines)
	}
	_, otherLines := addClient(t, dir, "other")
	cfg := tlsListenerConfig(u, tlsBlock, "clients:\n"+webLines+otherLines, "    clients: [web]\n")
	os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(cfg), 0o644)
	if _, errOut, code := runTill(t, dir, "", nil, "check"); code != 0 {
		t.Fatalf("check: %s", errOut)
	}
	tl := startTillIn(t, dir, u.caFile)
	_, port, _ := net.SplitHostPort(tl.addr)
	base := "https://localhost:" + port
	caPEM, _ := os.ReadFile(filepath.Join(dir, "till-ca.pem"))
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "web.crt"), filepath.Join(dir, "web.key"))
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "web.key")); st.Mode().Perm() != 0o600 {
		t.Errorf("web.key mode: %v", st.Mode().Perm())
	}

	get := func(client *http.Client, token string) (int, string) {
		req := newRequest(t, "GET", base+"/openai/v1/models", nil)
		if token != "" {
			req.Header.Set("X-Till-Token", token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.ProtoMajor != 2 {
			t.Errorf("listener: got HTTP/%d, want HTTP/2", resp.ProtoMajor)
		}
		return resp.StatusCode, string(b)
	}
	if code, body := get(tlsClient(t, caPEM, nil), webTok); code != 401 || !strings.Contains(body, "client_unauthenticated") {
		t.Errorf("token without the required certificate: got %d %s", code, body)
	}
	if code, body := get(tlsClient(t, caPEM, &cert), ""); code != 200 {
		t.Errorf("with the client certificate: got %d %s", code, body)
	}
	if code, body := get(tlsClient(t, caPEM, &cert), webTok); code != 200 {
		t.Errorf("with certificate and token: got %d %s", code, body)
	}
	recs := tl.waitAudit(3)
	if recs[1]["client"] != "web" || recs[2]["client"] != "web" {
		t.Errorf("audit clients: %v %v", recs[1]["client"], recs[2]["client"])
	}

	// till client rotate gives web a new token and certificate: the old
	// token and the certificate issued with it stop working at the reload
	// the config edit causes, and the new ones work, routes unchanged.
	out, errOut, code := runTill(t, dir, "", nil, "client", "rotate", "web")
	if code != 0 {
		t.Fatalf("client rotate: exit %d: %s", code, errOut)
	}
	newTok := regexp.MustCompile(`till_[0-9A-Za-z]{40}`).FindString(out)
	if newTok == "" || newTok == webTok || !strings.Contains(out, "web.crt and web.key") {
		t.Fatalf("client rotate output:\n%s", out)
	}
	if !tl.waitLog(`"message":"reloaded"`) {
		t.Fatal("no reload after client rotate")
	}
	if code, body := get(tlsClient(t, caPEM, &cert), ""); code != 401 || !strings.Contains(body, "no client has the till token or certificate sent") {
		t.Errorf("a certificate issued with the old token: got %d %s, want 401 saying it is revoked", code, body)
	}
	newCert, err := tls.LoadX509KeyPair(filepath.Join(dir, "web.crt"), filepath.Join(dir, "web.key"))
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "web.key")); st.Mode().Perm() != 0o600 {
		t.Errorf("rotated web.key mode: %v", st.Mode().Perm())
	}
	if code, body := get(tlsClient(t, caPEM, &newCert), webTok); code != 403 || !strings.Contains(body, "client_forbidden") {
		t.Errorf("the new certificate with the revoked token: got %d %s, want 403 client_forbidden", code, body)
	}
	if code, body := get(tlsClient(t, caPEM, &newCert), newTok); code != 200 {
		t.Errorf("the new certificate and token: got %d %s", code, body)
	}
	if code, body := get(tlsClient(t, caPEM, &newCert), ""); code != 200 {
		t.Errorf("the new certificate alone: got %d %s", code, body)
	}
	tl.stop()
	tl.assertNoLeak([]string{openaiKey, webTok, newTok})
}

// startPebble runs a local ACME CA (pebble) that issues without
// validating challenges, on free loopback ports, and returns its directory
// URL, the roots that verify its own HTTPS, and a client for its
// management API.
func startPebble(t *testing.T, p *pki) (dirURL string, mgmt string) {
	t.Helper()
	bin, err := exec.LookPath("pebble")
	if err != nil {
		if gopath, e := exec.Command("go", "env", "GOPATH").Output(); e == nil {
			bin, err = exec.LookPath(filepath.Join(strings.TrimSpace(string(gopath)), "bin", "pebble"))
		}
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("pebble is missing: .ci/run must go install it")
		}
		t.Skip("pebble is not installed (go install github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.3)")
	}
	dir := t.TempDir()
	leaf := p.issue(t, "localhost", "127.0.0.1")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificate[0]})
	kder, _ := x509.MarshalECPrivateKey(leaf.PrivateKey.(*ecdsa.PrivateKey))
	os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o644)
	os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	roots := x509.NewCertPool()
	roots.AddCert(p.cert)
	// Pebble binds the addresses its config names and cannot say which
	// port it got for port 0. A listener counts as pebble's once it shows
	// the certificate issued above.
	serves := func(addr string) bool {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots})
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	addrs, _ := startListening(t, 2, "address already in use",
		func(addrs []string) *exec.Cmd {
			conf := fmt.Sprintf(`{"pebble": {"listenAddress": %q, "managementListenAddress": %q, "certificate": %q, "privateKey": %q,
		"httpPort": 5002, "tlsPort": 5001, "ocspResponderURL": "", "externalAccountBindingRequired": false}}`,
				addrs[0], addrs[1], filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
			os.WriteFile(filepath.Join(dir, "pebble.json"), []byte(conf), 0o644)
			cmd := exec.Command(bin, "-config", filepath.Join(dir, "pebble.json"), "-strict=false")
			cmd.Env = append(os.Environ(), "PEBBLE_VA_ALWAYS_VALID=1", "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=100")
			return cmd
		},
		func(_ string, addrs []string) bool { return serves(addrs[0]) && serves(addrs[1]) })
	return "https://" + addrs[0] + "/dir", addrs[1]
}

func TestTLSListenerACME(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	p := newPKI(t)
	dirURL, mgmt := startPebble(t, p)
	// till trusts the upstream's certificate and pebble's HTTPS.
	upstreamCA, _ := os.ReadFile(u.caFile)
	pebbleCA, _ := os.ReadFile(p.caFile)
	roots := filepath.Join(t.TempDir(), "roots.pem")
	os.WriteFile(roots, append(upstreamCA, pebbleCA...), 0o644)

	tlsBlock := fmt.Sprintf("  names: [localhost]\n  acme: {email: ops@example.com, ca: %q}\n", dirURL)
	tl := startTill(t, tlsListenerConfig(u, tlsBlock, "", ""), map[string]string{"openai": openaiKey}, roots)
	_, port, _ := net.SplitHostPort(tl.addr)

	// The certificate chains to pebble's root, fetched from its management API.
	resp, err := tlsClient(t, pebbleCA, nil).Get("https://" + mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	pebbleRoot, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp, err = tlsClient(t, pebbleRoot, nil).Get("https://localhost:" + port + "/openai/v1/models")
	if err != nil {
		t.Fatalf("request over the ACME certificate: %v\n%s", err, tl.stderr.String())
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != `{"ok":true}` {
		t.Errorf("got %d %s", resp.StatusCode, b)
	}
	if issuer := resp.TLS.PeerCertificates[0].Issuer.CommonName; !strings.Contains(strings.ToLower(issuer), "pebble") {
		t.Errorf("certificate issuer: got %q, want pebble's", issuer)
	}
}

// startTLSListener runs till with a TLS listener for localhost (till's CA,
// no ACME) and returns it and its port.
func startTLSListener(t *testing.T) (*till, string) {
	t.Helper()
	return startTLSListenerTo(t, http.HandlerFunc(okHandler))
}

// startTLSListenerTo is startTLSListener with an upstream that h answers.
func startTLSListenerTo(t *testing.T, h http.Handler) (*till, string) {
	t.Helper()
	u := newUpstream(t, h)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(tlsListenerConfig(u, "  names: [localhost]\n", "", "")), 0o644)
	setSecret(t, dir, "openai", openaiKey)
	if _, errOut, code := runTill(t, dir, "", nil, "ca", "init"); code != 0 {
		t.Fatalf("ca init: %s", errOut)
	}
	tl := startTillIn(t, dir, u.caFile)
	_, port, _ := net.SplitHostPort(tl.addr)
	return tl, port
}

// TestTLSProbeHandshakesLoggedAtDebug: reference.md says failed TLS
// handshakes, which any TCP probe makes, are logged at debug. A probe
// that offers the ACME TLS-ALPN protocol to a listener that does not use
// ACME (certificates from till's CA) must not make till log an error.
func TestTLSProbeHandshakesLoggedAtDebug(t *testing.T) {
	tl, port := startTLSListener(t)
	probes := []*tls.Config{
		{ServerName: "evil.example", InsecureSkipVerify: true},                                  // unknown SNI
		{ServerName: "localhost", InsecureSkipVerify: true, NextProtos: []string{"acme-tls/1"}}, // ACME ALPN
	}
	for _, cfg := range probes {
		c, err := tls.Dial("tcp", "127.0.0.1:"+port, cfg)
		if err == nil {
			c.Close()
			t.Errorf("probe %q/%v: handshake succeeded", cfg.ServerName, cfg.NextProtos)
		}
	}
	// Watched for a second: certmagic logged it within milliseconds.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, line := range strings.Split(tl.stderr.String(), "\n") {
			if strings.Contains(line, `"level":"error"`) || strings.Contains(line, `"level":"warn"`) {
				t.Fatalf("a failed probe handshake was logged above debug: %s", line)
			}
		}
	}
}

// startACMEListener runs till with a TLS listener for localhost whose
// certificate comes from an ACME CA (pebble), and returns it and its port.
func startACMEListener(t *testing.T) (*till, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts an ACME server")
	}
	u := newUpstream(t, http.HandlerFunc(okHandler))
	p := newPKI(t)
	dirURL, _ := startPebble(t, p)
	upstreamCA, _ := os.ReadFile(u.caFile)
	pebbleCA, _ := os.ReadFile(p.caFile)
	roots := filepath.Join(t.TempDir(), "roots.pem")
	os.WriteFile(roots, append(upstreamCA, pebbleCA...), 0o644)
	tlsBlock := fmt.Sprintf("  names: [localhost]\n  acme: {email: ops@example.com, ca: %q}\n", dirURL)
	tl := startTill(t, tlsListenerConfig(u, tlsBlock, "", ""), map[string]string{"openai": openaiKey}, roots)
	_, port, _ := net.SplitHostPort(tl.addr)
	return tl, port
}

// TestACMEChallengeProbesLoggedAtDebug: failed handshakes, which any TCP
// probe makes, are logged at debug (reference.md), on an ACME listener
// too. It offers acme-tls/1, and certmagic logged an error for each
// client hello offering only that protocol with a name no challenge is
// pending for: anyone who reaches the listener (no token, no audit
// record) could fill the operator's error log, and page them, at
// handshake rate.
func TestACMEChallengeProbesLoggedAtDebug(t *testing.T) {
	tl, port := startACMEListener(t)
	before := len(tl.stderr.String())
	const probes = 20
	for i := 0; i < probes; i++ {
		name := fmt.Sprintf("probe%d.evil.example", i)
		if i%2 == 0 {
			name = "localhost" // a name till manages, no challenge pending
		}
		c, err := tls.Dial("tcp", "127.0.0.1:"+port, &tls.Config{
			ServerName: name, InsecureSkipVerify: true, NextProtos: []string{"acme-tls/1"},
		})
		if err == nil {
			c.Close()
		}
	}
	tl.stop() // all it logged for the probes is read
	var above int
	var sample string
	for _, line := range strings.Split(tl.stderr.String()[before:], "\n") {
		var ev map[string]any
		if json.Unmarshal([]byte(line), &ev) != nil {
			continue
		}
		if ev["level"] == "error" || ev["level"] == "warn" {
			above++
			sample = line
		}
	}
	if above > 0 {
		t.Errorf("%d anonymous TLS probes made %d log lines above debug, e.g.:\n%s", probes, above, sample)
	}
}

// TestHandshakeServerNameEscapedInLog: crypto/tls takes any bytes as a
// client hello's server name. On an ACME listener certmagic quotes it in
// the handshake error that net/http's error log writes as the message,
// which the console format (the default on a terminal) wrote as it is: a
// network caller wrote newlines and terminal escapes into the log, forged
// lines or escape sequences run on the operator's terminal.
func TestHandshakeServerNameEscapedInLog(t *testing.T) {
	tl, port := startACMEListener(t)
	cfgPath := filepath.Join(tl.dir, "till.yaml")
	cfg, _ := os.ReadFile(cfgPath)
	os.WriteFile(cfgPath, []byte(strings.Replace(string(cfg), "version: 1\n", "version: 1\nlog: {level: debug, format: console}\n", 1)), 0o644)
	tl.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "the reload", func() bool { return strings.Contains(tl.stderr.String(), "reloaded") })
	before := len(tl.stderr.String())

	const forged = "\n2026-01-01T00:00:00Z INF reloaded FORGED\x1b[2J"
	c, err := tls.Dial("tcp", "127.0.0.1:"+port, &tls.Config{
		ServerName: "probe.evil.example" + forged, InsecureSkipVerify: true, NextProtos: []string{"acme-tls/1"},
	})
	if err == nil {
		c.Close()
	}
	waitFor(t, 5*time.Second, "the handshake error", func() bool {
		return strings.Contains(tl.stderr.String()[before:], "http: TLS handshake error")
	})
	tl.stop() // all it logged is read
	out := tl.stderr.String()[before:]
	if strings.Contains(out, forged) || strings.Contains(out, "\x1b") {
		t.Errorf("a client hello's server name reached the log raw (newline and escape sequence):\n%q", out)
	}
	if !strings.Contains(out, `identifier: probe.evil.example\n2026-01-01T00:00:00Z INF reloaded FORGED\x1b[2J`) {
		t.Errorf("the handshake error does not show the server name escaped:\n%q", out)
	}
}

// TestTLSNameWithTrailingDot: tls.names [till.test.] passed check and
// serve, which then had certificates made for "till.test." and failed
// every handshake (for till.test and till.test. alike) with an internal
// error alert. A trailing dot is no part of the name, as in server_names.
func TestTLSNameWithTrailingDot(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(tlsListenerConfig(u, "  names: [till.test.]\n", "", "")), 0o644)
	setSecret(t, dir, "openai", openaiKey)
	if _, errOut, code := runTill(t, dir, "", nil, "ca", "init"); code != 0 {
		t.Fatalf("ca init: %s", errOut)
	}
	tl := startTillIn(t, dir, u.caFile)
	caPEM, _ := os.ReadFile(filepath.Join(dir, "till-ca.pem"))
	client := tlsClient(t, caPEM, nil)
	client.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, tl.addr)
	}
	_, port, _ := net.SplitHostPort(tl.addr)
	for _, host := range []string{"till.test", "till.test."} {
		resp, err := client.Do(newRequest(t, "GET", "https://"+host+":"+port+"/openai/v1/models", nil))
		if err != nil {
			t.Errorf("GET https://%s: %v", host, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET https://%s: %d, want 200", host, resp.StatusCode)
		}
	}
	tl.stop()
}

// TestHTTP2AppThatStopsReadingIsCut: an app that stops reading its
// HTTP/2 connection to the TLS listener (its windows open, its socket
// never read) blocks the connection's writer, so the reset of its
// stalled stream is never written: the request, and its upstream
// request, were held for as long as the app kept the connection. The
// connection is closed once nothing could be written to it for 60 s.
func TestHTTP2AppThatStopsReadingIsCut(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: waits for the 60 s write bound")
	}
	upstreamDone := make(chan struct{})
	tl, port := startTLSListenerTo(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(upstreamDone)
		chunk := []byte(strings.Repeat("x", 64<<10))
		for range 16384 { // 1 GiB, far more than any socket buffers
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		// A small receive window, set before the handshake.
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	raw, err := d.Dial("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	c := tls.Client(raw, &tls.Config{ServerName: "localhost", InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err := c.Handshake(); err != nil || c.ConnectionState().NegotiatedProtocol != "h2" {
		t.Fatalf("handshake: %v, protocol %q; the test needs h2", err, c.ConnectionState().NegotiatedProtocol)
	}
	c.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(c, c)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
	fr.WriteWindowUpdate(0, 1<<30)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "localhost:" + port}, {":path", "/openai/v1/files/f/content"}} {
		enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	// The app reads nothing from now on.
	select {
	case <-upstreamDone:
	case <-time.After(90 * time.Second):
		t.Fatal("the upstream request still runs for an app that stopped reading its HTTP/2 connection")
	}
	recs := tl.waitAudit(1)
	if len(recs) != 1 || recs[0]["reason"] != "client_closed" {
		t.Errorf("got records %v, want one with reason client_closed", recs)
	}
}

// TestModelRulesSameOverHTTP2: a request without a body (the SDKs' GET
// of the model list) asks for no model, so a route with model rules lets
// it through, over HTTP/2 as over HTTP/1.1: Go's HTTP/2 server gives
// such a request a body to read, empty, where HTTP/1's gives none, and
// till took that for a body that named no model (400 bad_request). Go
// apps speak HTTP/2 to a TLS listener and inside an intercepted CONNECT.
func TestModelRulesSameOverHTTP2(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := t.TempDir()
	cfg := `version: 1
tls:
  names: [localhost]
routes:
  - name: openai
    preset: openai
    upstream: ` + u.URL + `
    allow:
      models: [gpt-4o-mini]
`
	os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(cfg), 0o644)
	setSecret(t, dir, "openai", openaiKey)
	if _, errOut, code := runTill(t, dir, "", nil, "ca", "init"); code != 0 {
		t.Fatalf("ca init: %s", errOut)
	}
	tl := startTillIn(t, dir, u.caFile)
	_, port, _ := net.SplitHostPort(tl.addr)
	caPEM, _ := os.ReadFile(filepath.Join(dir, "till-ca.pem"))
	h2 := tlsClient(t, caPEM, nil)
	h1 := tlsClient(t, caPEM, nil)
	h1.Transport.(*http.Transport).ForceAttemptHTTP2 = false
	h1.Transport.(*http.Transport).TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	for _, tt := range []struct {
		name   string
		client *http.Client
		proto  int
	}{{"HTTP/1.1", h1, 1}, {"HTTP/2", h2, 2}} {
		resp, err := tt.client.Get("https://localhost:" + port + "/openai/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != tt.proto || resp.StatusCode != 200 {
			t.Errorf("%s GET of the model list on a route with model rules: HTTP/%d %d %s, want HTTP/%d 200", tt.name, resp.ProtoMajor, resp.StatusCode, body, tt.proto)
		}
	}
	tl.stop()
	tl.assertNoLeak([]string{openaiKey})
}
