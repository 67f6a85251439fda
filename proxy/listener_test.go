package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"github.com/tillgw/till/proxy/ca"
)

// TestListenerPrefersHTTP1ForAProxy: a listener that is a forward proxy
// too (HTTP1First) chooses HTTP/1.1 for a client that offers h2 and
// http/1.1, since Go's Transport offers a proxy h2 and then writes its
// CONNECT in HTTP/1.1; a listener that is not keeps HTTP/2 for it, and
// a client that offers h2 alone gets h2 from either.
func TestListenerPrefersHTTP1ForAProxy(t *testing.T) {
	authority, err := ca.New("listener-test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(authority.Certificate())
	for _, tt := range []struct {
		proxy  bool
		offers []string
		want   string
	}{
		{false, []string{"h2", "http/1.1"}, "h2"},
		{true, []string{"h2", "http/1.1"}, "http/1.1"},
		{true, []string{"h2"}, "h2"},
		{true, []string{"http/1.1"}, "http/1.1"},
	} {
		tc, obtain := ListenerTLS{Names: []string{"till.internal"}, Authority: authority, HTTP1First: tt.proxy}.Config()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := obtain(ctx); err != nil {
			t.Fatalf("obtain: %v", err)
		}
		cancel()
		sc, cc := net.Pipe()
		go func() {
			_ = tls.Server(sc, tc).Handshake()
			sc.Close()
		}()
		c := tls.Client(cc, &tls.Config{ServerName: "till.internal", RootCAs: roots, NextProtos: tt.offers})
		if err := c.Handshake(); err != nil {
			t.Fatalf("handshake: %v", err)
		}
		if got := c.ConnectionState().NegotiatedProtocol; got != tt.want {
			t.Errorf("HTTP1First %v, client offering %q: got %q, want %q", tt.proxy, tt.offers, got, tt.want)
		}
		c.Close()
	}
}
