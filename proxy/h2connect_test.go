package proxy

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy/ca"
	"github.com/tillgw/till/vault"
)

// TestConnectOverHTTP2Refused: a CONNECT sent over HTTP/2 (a client that
// offers a TLS listener h2 alone) cannot be taken over, as till takes an
// HTTP/1.1 connection over for a tunnel or an interception. The
// tunnel's host was dialled first, then the app got 400 "cannot be
// tunnelled" (or "cannot be intercepted"), recorded as an error; it is
// now refused before anything is dialled, told to speak HTTP/1.1 to the
// proxy, and recorded as denied.
func TestConnectOverHTTP2Refused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var dialled atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dialled.Add(1)
			c.Close()
		}
	}()
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nforward: {enabled: true, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\nroutes:\n  - {name: r, preset: openai, upstream: https://api.example.com, secret: k}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	buf := &lockedBuffer{}
	authority, err := ca.New("h2-connect", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	leaves, _ := ca.NewLeaves(authority, 8)
	gw := New(NewSnapshot(cfg, map[string]vault.Secret{"k": vault.NewSecret("k", testKey, time.Now())}), Options{Audit: testAudit(buf), Log: zerolog.Nop(), Leaves: leaves})
	front := httptest.NewUnstartedServer(gw)
	front.EnableHTTP2 = true
	front.StartTLS()
	defer front.Close()
	tr := front.Client().Transport.(*http.Transport)
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true) // h2 alone
	for _, target := range []string{ln.Addr().String(), "api.example.com:443"} {
		pr, pw := io.Pipe()
		req, _ := http.NewRequest(http.MethodConnect, front.URL, pr)
		req.Host = target
		resp, err := tr.RoundTrip(req)
		pw.Close()
		if err != nil {
			t.Fatalf("CONNECT %s over HTTP/2: %v", target, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTP/1.1") {
			t.Errorf("CONNECT %s: HTTP/%d %d %s, want HTTP/2 400 saying to use HTTP/1.1", target, resp.ProtoMajor, resp.StatusCode, body)
		}
	}
	if n := dialled.Load(); n != 0 {
		t.Errorf("the tunnel's host was dialled %d times for a CONNECT that cannot be tunnelled", n)
	}
	for _, r := range buf.records(t) {
		if r["outcome"] != outcomeDenied || r["reason"] != CodeBadRequest {
			t.Errorf("record %v, want denied with bad_request", r)
		}
	}
}
