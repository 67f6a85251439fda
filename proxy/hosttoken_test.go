package proxy

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
)

// namesAsked resolves every name to 127.0.0.1, and keeps the names.
type namesAsked struct {
	mu    sync.Mutex
	names []string
}

func (n *namesAsked) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.names = append(n.names, host)
	return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
}

func (n *namesAsked) String() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.names, " ")
}

// TestTokenInHostNeverLeaves: in forward mode, a host that holds a till
// client token (of the shape till client add makes, or a client's made by
// hand as the whole name) is refused with 400 bad_request before it is
// looked up, as a path that holds one is: no DNS query, relayed request,
// tunnel, log line or record carries the token.
func TestTokenInHostNeverLeaves(t *testing.T) {
	var reached atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) }))
	defer up.Close()
	_, port, _ := net.SplitHostPort(up.Listener.Addr().String())
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nforward: {enabled: true, intercept: false, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\n"+
		"clients:\n  - {name: web, token_sha256: "+handMadeDigest()+"}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	audit, log := &lockedBuffer{}, &lockedBuffer{}
	gw := New(NewSnapshot(cfg, nil), Options{Audit: testAudit(audit), Log: zerolog.New(log)})
	asked := &namesAsked{}
	gw.live.Load().guard.resolver = asked
	front := httptest.NewServer(gw)
	defer front.Close()
	proxyURL, _ := url.Parse(front.URL)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}

	for _, host := range []string{testToken + ".example", handMadeToken} {
		authority := net.JoinHostPort(host, port)
		resp, err := client.Get("http://" + authority + "/v1")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 || resp.Header.Get("X-Till-Error") != CodeBadRequest {
			t.Errorf("GET http://%s/v1: got %d %q, want 400 bad_request", authority, resp.StatusCode, resp.Header.Get("X-Till-Error"))
		}
		c, err := net.Dial("tcp", front.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("CONNECT " + authority + " HTTP/1.1\r\nHost: " + authority + "\r\n\r\n"))
		resp, err = http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 400 || resp.Header.Get("X-Till-Error") != CodeBadRequest {
			t.Errorf("CONNECT %s: got %d %q, want 400 bad_request", authority, resp.StatusCode, resp.Header.Get("X-Till-Error"))
		}
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("the relayed host was reached %d times", n)
	}
	for what, out := range map[string]string{"DNS": asked.String(), "audit": audit.String(), "log": log.String()} {
		if lower := strings.ToLower(out); strings.Contains(lower, strings.ToLower(testToken)) || strings.Contains(lower, handMadeToken) {
			t.Errorf("the %s holds a client token: %s", what, out)
		}
	}
}
