package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
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
	"github.com/tillgw/till/vault"
)

// TestUpstreamStatusOutOfRange: an upstream's status that net/http
// cannot send on (HTTP/1 takes any three digits, "042" too; HTTP/2 any
// integer) gets the app a 502, for a request and for a protocol switch,
// not a cut connection after a panic; and no such status reaches the
// record, nor a series of till_requests_total of its own (one per
// status an upstream makes up).
func TestUpstreamStatusOutOfRange(t *testing.T) {
	h1 := func(status string) string {
		return "http://" + rawServer(t, func(c net.Conn) {
			c.Read(make([]byte, 4096))
			fmt.Fprintf(c, "HTTP/1.1 %s X\r\nContent-Length: 2\r\n\r\nhi", status)
		})
	}
	tests := []struct {
		name, upstream string
		upgrade        bool
	}{
		{name: "http1 042", upstream: h1("042")},
		{name: "http1 000", upstream: h1("000")},
		{name: "switch 042", upstream: h1("042"), upgrade: true},
		{name: "http2 1000", upstream: h2Status(t, "1000")},
		{name: "http2 -1", upstream: h2Status(t, "-1")},
		{name: "http2 7", upstream: h2Status(t, "7")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: api, upstream: \""+tt.upstream+"\", secret: api, inject: {header: Authorization, format: \"Bearer {secret}\"}}\n"), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			tr := NewTransport()
			tr.TLSClientConfig.RootCAs = h2Roots
			records := &lockedBuffer{}
			gw := New(NewSnapshot(cfg, map[string]vault.Secret{"api": vault.NewSecret("api", testKey, time.Now())}),
				Options{Audit: testAudit(records), Log: zerolog.Nop(), Transport: tr})
			front := httptest.NewServer(gw)
			defer front.Close()
			req, _ := http.NewRequest("GET", front.URL+"/api/v1/x", nil)
			if tt.upgrade {
				req.Header.Set("Connection", "Upgrade")
				req.Header.Set("Upgrade", "websocket")
			}
			res, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Fatalf("the app got no answer: %v", err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusBadGateway || res.Header.Get("X-Till-Error") != CodeUpstreamUnreachable {
				t.Errorf("got %d %q, want 502 %s", res.StatusCode, res.Header.Get("X-Till-Error"), CodeUpstreamUnreachable)
			}
			recs := records.records(t)
			if len(recs) != 1 || recs[0]["status"] != float64(http.StatusBadGateway) || recs[0]["reason"] != CodeUpstreamUnreachable {
				t.Errorf("got records %v, want one with status 502, reason %s", recs, CodeUpstreamUnreachable)
			}
		})
	}
}

// h2Roots trusts the certificate of the upstreams h2Status starts.
var h2Roots, h2Cert = func() (*x509.CertPool, tls.Certificate) {
	ts := httptest.NewTLSServer(http.NotFoundHandler())
	defer ts.Close()
	return ts.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs, ts.TLS.Certificates[0]
}()

// h2Status starts a bare HTTP/2 upstream that answers every stream with
// :status status, whatever it is, and returns its URL.
func h2Status(t *testing.T, status string) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{h2Cert}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var hb bytes.Buffer
	hpack.NewEncoder(&hb).WriteField(hpack.HeaderField{Name: ":status", Value: status})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := io.ReadFull(c, make([]byte, len(http2.ClientPreface))); err != nil {
					return
				}
				fr := http2.NewFramer(c, c)
				fr.WriteSettings()
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
					case *http2.HeadersFrame:
						fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: hb.Bytes(), EndHeaders: true})
						fr.WriteData(f.StreamID, true, []byte("hi"))
					}
				}
			}()
		}
	}()
	return "https://" + ln.Addr().String()
}

// TestRelayedStatusOutOfRange: a host without a route, to which forward
// mode relays an absolute-form http:// request, may answer a status
// net/http cannot send on ("042"), as a route's upstream may: the app
// gets 502, not a cut connection after a panic (a stack in the log at
// error, which any host could have written there), and the record no
// made-up status.
func TestRelayedStatusOutOfRange(t *testing.T) {
	for _, status := range []string{"042", "000"} {
		t.Run(status, func(t *testing.T) {
			host := rawServer(t, func(c net.Conn) {
				c.Read(make([]byte, 4096))
				fmt.Fprintf(c, "HTTP/1.1 %s X\r\nContent-Length: 2\r\n\r\nhi", status)
			})
			cfg, err := config.Parse("till.yaml", []byte("version: 1\nforward: {enabled: true, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\nroutes: []\n"), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			records, logs := &lockedBuffer{}, &lockedBuffer{}
			gw := New(NewSnapshot(cfg, nil), Options{Audit: testAudit(records), Log: zerolog.New(logs)})
			front := httptest.NewServer(gw)
			defer front.Close()
			c, err := net.Dial("tcp", front.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "GET http://%s/p HTTP/1.1\r\nHost: %s\r\n\r\n", host, host)
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("the app got no answer: %v", err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusBadGateway {
				t.Errorf("got %d %q, want 502", res.StatusCode, res.Header.Get("X-Till-Error"))
			}
			if strings.Contains(logs.String(), "panic") {
				t.Errorf("logged a panic: %s", logs.String())
			}
			if recs := records.records(t); len(recs) != 1 || recs[0]["status"] != float64(http.StatusBadGateway) {
				t.Errorf("got records %v, want one with status 502", recs)
			}
		})
	}
}
