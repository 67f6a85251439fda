package proxy

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// TestTokenAskResentIsRecorded: a token endpoint over HTTP/2 refuses the
// first stream (RST_STREAM REFUSED_STREAM) after it has read its headers,
// which hold the client secret (Basic credentials); net/http's Transport
// sends the ask again inside the one RoundTrip. Each send of the secret
// has its use record.
func TestTokenAskResentIsRecorded(t *testing.T) {
	// A certificate for 127.0.0.1, and a token client that trusts it, as
	// SSL_CERT_FILE would make it.
	ts := httptest.NewTLSServer(http.NotFoundHandler())
	cert := ts.TLS.Certificates[0]
	roots := ts.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	ts.Close()
	tr := NewTransport()
	tr.TLSClientConfig.RootCAs = roots
	oldTransport := tokenClient.Transport
	tokenClient.Transport = tr
	t.Cleanup(func() { tokenClient.Transport = oldTransport })

	const secret = "cs-h2-0123456789abcdef"
	basic := base64.StdEncoding.EncodeToString([]byte("app:" + secret))
	var mu sync.Mutex
	secretSends := 0
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveRefuseFirstStream(c, func(hf []hpack.HeaderField) {
				for _, h := range hf {
					if h.Name == "authorization" && strings.Contains(h.Value, basic) {
						mu.Lock()
						secretSends++
						mu.Unlock()
					}
				}
			})
		}
	}()
	tokenURL := "https://" + ln.Addr().String() + "/token"

	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer api.Close()
	y := "version: 1\nroutes:\n  - {name: api, upstream: " + api.URL + ", secret: cred, inject: {oauth2: {token_url: " + tokenURL + ", auth_style: header}}}\n"
	cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cred := vault.NewFieldSecret("cred", map[string]string{"client_id": "app", "client_secret": secret}, time.Now())
	records := &lockedBuffer{}
	gw := New(NewSnapshot(cfg, map[string]vault.Secret{"cred": cred}), Options{Audit: testAudit(records), Log: zerolog.Nop()})
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
	asks := 0
	for _, u := range records.uses(t) {
		if u["path"] == "/token" {
			asks++
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if w.Code != http.StatusOK || secretSends != 2 {
		t.Fatalf("app got %d, the endpoint was asked %d times: want 200 after the one resend", w.Code, secretSends)
	}
	if secretSends != asks {
		t.Errorf("the client secret was sent %d times, with %d use records", secretSends, asks)
	}
}

// serveRefuseFirstStream is a bare HTTP/2 token endpoint: it refuses the
// first stream after reading its headers, and answers the others with a
// token. seen gets every request's headers.
func serveRefuseFirstStream(c net.Conn, seen func([]hpack.HeaderField)) {
	defer c.Close()
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil {
		return
	}
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	dec := hpack.NewDecoder(4096, nil)
	first := true
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				fr.WritePing(true, f.Data)
			}
		case *http2.HeadersFrame:
			hf, _ := dec.DecodeFull(f.HeaderBlockFragment())
			seen(hf)
			if first {
				first = false
				fr.WriteRSTStream(f.StreamID, http2.ErrCodeRefusedStream)
				continue
			}
			var hb bytes.Buffer
			enc := hpack.NewEncoder(&hb)
			enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
			enc.WriteField(hpack.HeaderField{Name: "content-type", Value: "application/json"})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: hb.Bytes(), EndHeaders: true})
			fr.WriteData(f.StreamID, true, []byte(`{"access_token":"tok-h2-0123456789abcdef","token_type":"Bearer","expires_in":3600}`))
		}
	}
}
