package proxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"testing"
)

// TestLeafPerAddress: a route's address written another way in a CONNECT
// (an IPv4-mapped IPv6 literal, in any of its spellings) gets the leaf
// cached for the address: an app cannot make till mint a leaf per
// CONNECT, nor push other hosts' leaves out of the cache.
func TestLeafPerAddress(t *testing.T) {
	f := newInterceptFixture(t, 4)
	connect := func(host string) {
		c, err := net.Dial("tcp", f.front.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		auth := net.JoinHostPort(host, f.port)
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", auth, auth)
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "CONNECT"})
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("CONNECT %s: %v %v", auth, resp, err)
		}
		tc := tls.Client(c, &tls.Config{ServerName: "127.0.0.1", RootCAs: f.roots})
		if err := tc.Handshake(); err != nil {
			t.Fatalf("handshake %s: %v", auth, err)
		}
	}
	connect("127.0.0.1")
	before := f.leaves.Mints()
	spellings := []string{
		"::ffff:127.0.0.1", "::ffff:7f00:1", "0::ffff:7f00:1", "0:0::ffff:7f00:1",
		"0:0:0::ffff:7f00:1", "0:0:0:0::ffff:7f00:1", "0:0:0:0:0:ffff:7f00:1",
		"::ffff:7f00:0001", "0000::ffff:7f00:1",
	}
	for _, s := range spellings {
		connect(s)
	}
	connect("127.0.0.1")
	if n := f.leaves.Mints() - before; n != 0 {
		t.Errorf("%d CONNECTs to one route host (127.0.0.1, spelled %d ways) minted %d new leaves, and evicted the cached 127.0.0.1 leaf; want 0 (the leaf cache should be keyed by the host's canonical form)", len(spellings)+1, len(spellings), n)
	}
}
