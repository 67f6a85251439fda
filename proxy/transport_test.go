package proxy

import (
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// freezingRelay relays TCP connections to addr until freeze, after which
// it passes nothing on either way: a peer gone silent (a NAT that dropped
// the flow, a hung host), which no FIN or RST announces.
type freezingRelay struct {
	ln     net.Listener
	frozen atomic.Bool
	halt   chan struct{}
}

func newFreezingRelay(t *testing.T, addr string) *freezingRelay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &freezingRelay{ln: ln, halt: make(chan struct{})}
	t.Cleanup(func() { close(r.halt); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			go r.pipe(up, c)
			go r.pipe(c, up)
		}
	}()
	return r
}

func (r *freezingRelay) pipe(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if r.frozen.Load() {
			<-r.halt
			return
		}
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestSilentHTTP2ConnectionDropped: an HTTP/2 connection to an upstream
// that went silent is found out by its pings and closed, so that the
// requests on it fail and the next go on a new one, rather than each
// waiting out its route's timeout on a dead connection that every
// request to that upstream shares. NewTransport pings; here the pings'
// timeouts are cut short, to be seen in a test.
func TestSilentHTTP2ConnectionDropped(t *testing.T) {
	tr := NewTransport()
	if tr.HTTP2 == nil || tr.HTTP2.SendPingTimeout <= 0 || tr.HTTP2.PingTimeout <= 0 {
		t.Fatal("the upstream transport never pings an HTTP/2 connection that has gone quiet")
	}
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	up.EnableHTTP2 = true
	up.StartTLS()
	defer up.Close()
	relay := newFreezingRelay(t, up.Listener.Addr().String())
	roots := x509.NewCertPool()
	roots.AddCert(up.Certificate())
	tr.TLSClientConfig.RootCAs = roots
	tr.HTTP2.SendPingTimeout, tr.HTTP2.PingTimeout = 200*time.Millisecond, 200*time.Millisecond
	tr.ResponseHeaderTimeout = time.Minute
	client := &http.Client{Transport: tr}
	url := "https://" + relay.ln.Addr().String() + "/"
	res, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.ProtoMajor != 2 {
		t.Fatalf("the upstream spoke %s, want HTTP/2", res.Proto)
	}
	relay.frozen.Store(true)
	failed := make(chan error, 1)
	go func() {
		res, err := client.Get(url)
		if err == nil {
			res.Body.Close()
		}
		failed <- err
	}()
	select {
	case err := <-failed:
		if err == nil {
			t.Error("a request on the silent connection was answered")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a request on a silent connection still waits after 10 s: the connection is not pinged")
	}
}
