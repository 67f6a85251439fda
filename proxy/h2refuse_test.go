package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// TestRefusalKeepsHTTP2Connection: a refusal of a request whose body was
// not read asks net/http to close the connection (Connection: close), so
// that an HTTP/1 connection is not kept waiting for a body the app may
// never send. Over HTTP/2, Go's server reads it as a GOAWAY for the whole
// connection: every refused upload (a rate limit, a budget) cost the app
// its shared connection, each stream on it, and, inside an intercepted
// CONNECT, a new tunnel and TLS handshake. HTTP/2 resets the unread body
// of that one stream instead: the connection now stays.
func TestRefusalKeepsHTTP2Connection(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"ok":true}`)
	}))
	defer up.Close()
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: r, preset: openai, upstream: "+up.URL+", secret: k, rate: 1/m}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gw := New(NewSnapshot(cfg, map[string]vault.Secret{"k": vault.NewSecret("k", testKey, time.Now())}), Options{Audit: testAudit(io.Discard), Log: zerolog.Nop()})
	front := httptest.NewUnstartedServer(gw)
	front.EnableHTTP2 = true
	front.StartTLS()
	defer front.Close()
	client := front.Client()
	var conns []bool // whether each request reused a connection
	for i, want := range []int{200, 429, 429} {
		trace := &httptrace.ClientTrace{GotConn: func(c httptrace.GotConnInfo) { conns = append(conns, c.Reused) }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), "POST", front.URL+"/r/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != want {
			t.Fatalf("request %d: HTTP/%d %d, want HTTP/2 %d", i, resp.ProtoMajor, resp.StatusCode, want)
		}
	}
	if len(conns) != 3 || !conns[1] || !conns[2] {
		t.Errorf("connection reused by each request: %v, want the first's by the next two", conns)
	}
}
