package proxy

import (
	"bufio"
	"crypto/x509"
	"encoding/base64"
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

// queryKeyGateway is a gateway with one route, gem, to the loopback
// upstream at addr, whose key goes in the query (inject: {query: key}),
// logging into logs.
func queryKeyGateway(t *testing.T, addr, key string, logs io.Writer) *Gateway {
	t.Helper()
	yaml := "version: 1\nroutes:\n  - {name: gem, upstream: \"http://" + addr + "\", inject: {query: key}}\n"
	cfg, err := config.Parse("till.yaml", []byte(yaml), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return New(NewSnapshot(cfg, map[string]vault.Secret{"gem": vault.NewSecret("gem", key, time.Now())}),
		Options{Audit: testAudit(io.Discard), Log: zerolog.New(logs)})
}

// readHead reads a request head from c and returns its request line.
func readHead(c net.Conn) string {
	br := bufio.NewReader(c)
	first, _ := br.ReadString('\n')
	for {
		l, err := br.ReadString('\n')
		if err != nil || l == "\r\n" {
			break
		}
	}
	return first
}

// TestUpgradeReadErrorLogsNoKey: a protocol switch (WebSocket, as Gemini
// Live asks with ?key=) that the upstream declines, ending its chunked
// body with a malformed trailer line that quotes the key: ReverseProxy
// logs the read error, which must not hold the key.
func TestUpgradeReadErrorLogsNoKey(t *testing.T) {
	const key = "AIzaSyHostileUpgradeKey0123456789abcd"
	addr := rawServer(t, func(c net.Conn) {
		line := readHead(c)
		f := strings.Fields(line)
		if len(f) < 2 {
			return
		}
		u, _ := url.ParseRequestURI(f[1])
		k := u.Query().Get("key") // what till sent
		fmt.Fprintf(c, "HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnope\r\n0\r\nbad trailer %s\r\n\r\n", k)
	})
	var logs lockedBuffer
	gw := queryKeyGateway(t, addr, key, &logs)
	front := httptest.NewServer(gw)
	defer front.Close()
	req, _ := http.NewRequest("GET", front.URL+"/gem/ws", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	front.Close() // waits for the handler, which logs
	logs.mu.Lock()
	s := logs.b.String()
	logs.mu.Unlock()
	if !strings.Contains(s, "read error during body copy") {
		t.Fatalf("the test needs the body read error in the log: %s", s)
	}
	if strings.Contains(s, key) {
		t.Errorf("the key reached till's log:\n%s", s)
	}
}

// TestErrorTextWithholdsEncodedKey: an upstream's malformed answer that
// quotes back the key as query injection escaped it, with lower-case hex
// escapes, is not logged with it.
func TestErrorTextWithholdsEncodedKey(t *testing.T) {
	const key = "QXBp/S2V5+c2VjcmV0=Zm9vYmFyYmF6cXV4"
	addr := rawServer(t, func(c net.Conn) {
		f := strings.Fields(readHead(c))
		if len(f) < 2 {
			return
		}
		target := f[1]
		// lower-case every %XX escape
		var b strings.Builder
		for i := 0; i < len(target); i++ {
			if target[i] == '%' && i+2 < len(target) {
				b.WriteString(strings.ToLower(target[i : i+3]))
				i += 2
				continue
			}
			b.WriteByte(target[i])
		}
		fmt.Fprintf(c, "HTTP/1.1 %s OK\r\n\r\n", b.String())
	})
	var logs lockedBuffer
	gw := queryKeyGateway(t, addr, key, &logs)
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/gem/v1/models", nil))
	logs.mu.Lock()
	s := logs.b.String()
	logs.mu.Unlock()
	if w.Code != http.StatusBadGateway || !strings.Contains(s, "upstream request failed") {
		t.Fatalf("got %d, log %s; the test needs the upstream's failure logged", w.Code, s)
	}
	// only the %XX escapes lowered
	lowered := strings.NewReplacer("%2F", "%2f", "%2B", "%2b", "%3D", "%3d").Replace(url.QueryEscape(key))
	if strings.Contains(s, lowered) {
		dec, _ := url.QueryUnescape(lowered)
		t.Errorf("the key reached the log as %q (decodes to %q):\n%s", lowered, dec, s)
	}
}

// TestEscapedKeyEchoesScrubbed: a redirect whose Location carries the
// request URI in base64 (an OAuth state), key escaped and all, does not
// reach the app.
func TestEscapedKeyEchoesScrubbed(t *testing.T) {
	const key = "QXBp/S2V5+c2VjcmV0=Zm9vYmFyYmF6cXV4"
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		state := base64.RawURLEncoding.EncodeToString([]byte(r.URL.RequestURI()))
		w.Header().Set("Location", "https://login.example/auth?state="+state)
		w.WriteHeader(http.StatusFound)
	}))
	defer up.Close()
	yaml := "version: 1\nroutes:\n  - name: gem\n    upstream: {{UP}}\n    inject: {query: key}\n"
	gw, _ := newTestGateway(t, yaml, up.URL, map[string]vault.Secret{"gem": vault.NewSecret("gem", key, time.Now())})
	front := httptest.NewServer(gw)
	defer front.Close()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(front.URL + "/gem/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if loc == "" {
		return // scrubbed: fine
	}
	u, _ := url.Parse(loc)
	raw, _ := base64.RawURLEncoding.DecodeString(u.Query().Get("state"))
	ru, _ := url.ParseRequestURI(string(raw))
	if ru != nil && ru.Query().Get("key") == key {
		t.Errorf("the app got the key in Location %q (state decodes to %q)", loc, raw)
	}
}

// TestInterceptedH2EchoesScrubbed: through intercepted CONNECT, HTTP/2
// on both sides, the echoes of an escaped key are removed: base64 of the
// request URI in a Location, and JSON that writes "/" as "\/".
func TestInterceptedH2EchoesScrubbed(t *testing.T) {
	const key = "QXBp/S2V5+c2VjcmV0Zm9vYmFyYmF6cXV4"
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := r.URL.Query().Get("key")
		w.Header().Set("Location", "/login?state="+base64.RawURLEncoding.EncodeToString([]byte(r.URL.RequestURI())))
		w.Header().Set("X-Debug", `{"key":"`+strings.ReplaceAll(k, "/", `\/`)+`"}`)
		w.WriteHeader(http.StatusFound)
	}))
	up.EnableHTTP2 = true
	up.StartTLS()
	defer up.Close()
	_, port, _ := net.SplitHostPort(up.Listener.Addr().String())
	yaml := fmt.Sprintf("version: 1\nforward: {enabled: true}\nroutes:\n  - {name: gem, upstream: \"https://127.0.0.1:%s\", secret: gem, inject: {query: key}}\n", port)
	cfg, err := config.Parse("till.yaml", []byte(yaml), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	authority, err := ca.New("hostile", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	leaves, _ := ca.NewLeaves(authority, 4)
	tr := NewTransport()
	tr.TLSClientConfig.RootCAs = x509.NewCertPool()
	tr.TLSClientConfig.RootCAs.AddCert(up.Certificate())
	gw := New(NewSnapshot(cfg, map[string]vault.Secret{"gem": vault.NewSecret("gem", key, time.Now())}),
		Options{Audit: testAudit(io.Discard), Log: zerolog.Nop(), Transport: tr, Leaves: leaves})
	front := httptest.NewServer(gw)
	defer front.Close()
	roots := x509.NewCertPool()
	roots.AddCert(authority.Certificate())
	f := &interceptFixture{front: front, roots: roots}
	client := f.client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Get("https://127.0.0.1:" + port + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusFound {
		t.Fatalf("HTTP/%d %d: the test needs an intercepted HTTP/2 redirect", resp.ProtoMajor, resp.StatusCode)
	}
	if loc := resp.Header.Get("Location"); loc != "" {
		u, _ := url.Parse(loc)
		raw, _ := base64.RawURLEncoding.DecodeString(u.Query().Get("state"))
		if ru, _ := url.ParseRequestURI(string(raw)); ru != nil && ru.Query().Get("key") == key {
			t.Errorf("Location %q hands the app the key (state is %q)", loc, raw)
		}
	}
	if v := resp.Header.Get("X-Debug"); v != "" && strings.ReplaceAll(v, `\/`, "/") == `{"key":"`+key+`"}` {
		t.Errorf("X-Debug %q hands the app the key, JSON-escaped", v)
	}
}

// TestFoldedHeaderEchoScrubbed: a header folded over two lines (obs-fold),
// which Go's client joins with a space, does not hand the app the key
// split in two.
func TestFoldedHeaderEchoScrubbed(t *testing.T) {
	const key = "AIzaSyHostileFoldKey0123456789abcdefgh"
	addr := rawServer(t, func(c net.Conn) {
		f := strings.Fields(readHead(c))
		if len(f) < 2 {
			return
		}
		u, _ := url.ParseRequestURI(f[1])
		k := u.Query().Get("key")
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nX-Echo: %s\r\n %s\r\nContent-Length: 2\r\n\r\nok", k[:19], k[19:])
	})
	gw := queryKeyGateway(t, addr, key, io.Discard)
	front := httptest.NewServer(gw)
	defer front.Close()
	resp, err := http.Get(front.URL + "/gem/x")
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if v := resp.Header.Get("X-Echo"); strings.ReplaceAll(v, " ", "") == key {
		t.Errorf("X-Echo %q hands the app the key", v)
	}
}
