package proxy

import (
	"bytes"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
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
	old := answerIdleTimeout
	answerIdleTimeout = 300 * time.Millisecond
	t.Cleanup(func() { answerIdleTimeout = old })
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
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q, the test needs h2", p)
	}
	c.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(c, c)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	paths := map[uint32]string{1: "/api/v1/x", 3: "/nowhere"} // an answer, a refusal
	for id, path := range paths {
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "127.0.0.1"}, {":path", path}} {
			enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
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
