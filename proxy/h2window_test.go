package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy/ca"
	"github.com/tillgw/till/vault"
)

// TestLastWriteOverHTTP2IsBounded: over HTTP/2, what the server still
// buffers when the handler has returned (a refusal, a small answer: all
// of it) is written after it, out of the write watch's reach. An app
// that sets its flow-control window to 0 and never opens it held each
// such stream, with its goroutine and buffers, for as long as it kept
// the connection (whose idle timeout never runs while a stream is
// open): 250 streams per connection, never ended. The stream is now
// reset once that write has waited answerIdleTimeout.
func TestLastWriteOverHTTP2IsBounded(t *testing.T) {
	withAnswerIdleTimeout(t, 300*time.Millisecond)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"ok":true}`))
	}))
	defer up.Close()
	gw, _ := apiGateway(t, up.URL)
	front := httptest.NewUnstartedServer(gw)
	front.EnableHTTP2 = true
	front.StartTLS()
	defer front.Close()
	c, err := tls.Dial("tcp", front.Listener.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fr := h2Start(t, c, 0)
	paths := map[uint32]string{1: "/api/v1/x", 3: "/nowhere"} // an answer, a refusal
	// In ID order: a lower ID after a higher one is a protocol error.
	for _, id := range []uint32{1, 3} {
		h2Get(fr, id, "127.0.0.1", paths[id])
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(paths) > 0 {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("streams %v still open, their last write waiting on a window the app never opens: %v", paths, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.RSTStreamFrame:
			delete(paths, f.StreamID)
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v: the connection ended, not the streams", f.ErrCode)
		}
	}
}

// TestHTTP2AppThatStopsReadingIsCut: an app that stops reading its
// HTTP/2 connection (its stream windows open, its socket never read)
// blocks the connection's writer, so the write watch's reset of the
// stream is never written, and the handler's write, which waits for
// it, never ends: the request, its upstream request and its budget
// reservation were held for as long as the app kept its connection.
// The connection is now closed once nothing could be written to it
// for answerIdleTimeout (and crypto/tls's 5 s for its close_notify),
// and the request recorded as the app's leaving.
func TestHTTP2AppThatStopsReadingIsCut(t *testing.T) {
	withAnswerIdleTimeout(t, 300*time.Millisecond)
	upstreamDone := make(chan struct{})
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(upstreamDone)
		chunk := []byte(strings.Repeat("x", 64<<10))
		for range 4096 { // 256 MiB, far more than any socket buffers
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer up.Close()
	_, port, _ := net.SplitHostPort(up.Listener.Addr().String())
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nforward: {enabled: true}\nroutes:\n  - {name: api, upstream: \"https://127.0.0.1:"+port+"\", secret: api, inject: {header: Authorization, format: \"Bearer {secret}\"}}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	authority, _ := ca.New("h2-stall", time.Now())
	leaves, _ := ca.NewLeaves(authority, 8)
	roots := x509.NewCertPool()
	roots.AddCert(authority.Certificate())
	tr := NewTransport()
	tr.TLSClientConfig.RootCAs = x509.NewCertPool()
	tr.TLSClientConfig.RootCAs.AddCert(up.Certificate())
	records := &lockedBuffer{}
	gw := New(NewSnapshot(cfg, map[string]vault.Secret{"api": vault.NewSecret("api", testKey, time.Now())}), Options{Audit: testAudit(records), Log: zerolog.Nop(), Transport: tr, Leaves: leaves})
	front := httptest.NewUnstartedServer(gw)
	front.Listener = smallSendBuffers{front.Listener}
	front.Start()
	defer front.Close()

	raw, err := net.Dial("tcp", front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(raw, "CONNECT 127.0.0.1:%s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\n\r\n", port, port)
	br := bufio.NewReader(raw)
	if res, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect}); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %v %v", res, err)
	}
	c := tls.Client(raw, &tls.Config{ServerName: "127.0.0.1", RootCAs: roots, NextProtos: []string{"h2"}})
	if err := c.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	fr := h2Start(t, c, 1<<30)
	fr.WriteWindowUpdate(0, 1<<30)
	h2Get(fr, 1, "127.0.0.1:"+port, "/api/v1/x") // and read nothing from now on
	select {
	case <-upstreamDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream request still runs for an app that stopped reading its HTTP/2 connection")
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(records.records(t)) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if recs := records.records(t); len(recs) != 1 || recs[0]["reason"] != codeClientClosed {
		t.Errorf("got records %v, want one with reason %s", recs, codeClientClosed)
	}
}

// h2Start begins an HTTP/2 connection on c, whose handshake negotiated
// h2, with streams' initial flow-control window set to window.
func h2Start(t *testing.T, c *tls.Conn, window uint32) *http2.Framer {
	t.Helper()
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q, the test needs h2", p)
	}
	c.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(c, c)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: window})
	return fr
}

// h2Get writes the head of a GET of path from authority on stream id.
func h2Get(fr *http2.Framer, id uint32, authority, path string) {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", authority}, {":path", path}} {
		enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
}
