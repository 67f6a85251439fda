package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// TestUnnamableUpgradeRefused: a protocol switch to a protocol whose name
// is not printable ASCII, which ReverseProxy will not ask of the upstream,
// is the app's bad request (400 bad_request, denied), on a route or
// relayed, not an upstream that failed (502 upstream_unreachable): nothing
// went upstream.
func TestUnnamableUpgradeRefused(t *testing.T) {
	var hits atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer up.Close()
	other := httptest.NewServer(up.Config.Handler) // a host without a route
	defer other.Close()
	host := other.Listener.Addr().String()
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nforward: {enabled: true, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\nroutes:\n  - {name: ws, preset: openai, prefix: /ws, upstream: "+up.URL+", secret: k}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	snap := NewSnapshot(cfg, map[string]vault.Secret{"k": vault.NewSecret("k", testKey, time.Now())})
	for _, tt := range []struct{ name, head, protocol string }{
		{"route, not ASCII", "GET /ws/v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\n", "w\xe9bsocket"},
		{"route, a tab", "GET /ws/v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\n", "web\tsocket"},
		{"relayed", "GET http://" + host + "/ws HTTP/1.1\r\nHost: " + host + "\r\n", "w\xe9bsocket"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			buf := &lockedBuffer{}
			gw := New(snap, Options{Audit: testAudit(buf), Log: zerolog.Nop()})
			srv := httptest.NewServer(gw)
			defer srv.Close()
			c, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, tt.head+"Connection: Upgrade\r\nUpgrade: "+tt.protocol+"\r\n\r\n")
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != http.StatusBadRequest || res.Header.Get("X-Till-Error") != CodeBadRequest {
				t.Errorf("got %d %s, want 400 bad_request", res.StatusCode, body)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := gw.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			recs := buf.records(t)
			if len(recs) != 1 || recs[0]["outcome"] != outcomeDenied || recs[0]["reason"] != CodeBadRequest || recs[0]["key_fp"] != "" {
				t.Errorf("records %v; want one, denied with reason bad_request, no key", recs)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the upstreams got %d requests, want none", n)
	}
}

// TestRouteSwitchesOnlyToWebSocket: on a route, a protocol switch to
// anything but WebSocket alone (h2c, a list, two Upgrade headers) is
// refused before anything goes upstream; WebSocket, in any case, is
// asked of the upstream.
func TestRouteSwitchesOnlyToWebSocket(t *testing.T) {
	var asked atomic.Value
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Store(r.Header.Get("Upgrade"))
	}))
	defer up.Close()
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: ws, preset: openai, prefix: /ws, upstream: "+up.URL+", secret: k}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	snap := NewSnapshot(cfg, map[string]vault.Secret{"k": vault.NewSecret("k", testKey, time.Now())})
	gw := New(snap, Options{Audit: testAudit(io.Discard), Log: zerolog.Nop()})
	srv := httptest.NewServer(gw)
	defer srv.Close()
	for _, tt := range []struct {
		upgrade string
		want    int
	}{
		{"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n", http.StatusBadRequest},
		{"Upgrade: websocket, h2c\r\n", http.StatusBadRequest},
		{"Upgrade: websocket\r\nUpgrade: h2c\r\n", http.StatusBadRequest},
		{"Upgrade: TLS/1.2\r\n", http.StatusBadRequest},
		{"Upgrade: WebSocket\r\n", http.StatusOK},
	} {
		asked.Store("")
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET /ws/v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"+tt.upgrade+"\r\n")
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != tt.want {
			t.Errorf("%q: got %d, want %d", tt.upgrade, res.StatusCode, tt.want)
		}
		if got, want := asked.Load(), map[bool]string{true: "WebSocket", false: ""}[tt.want == http.StatusOK]; got != want {
			t.Errorf("%q: the upstream was asked to switch to %q, want %q", tt.upgrade, got, want)
		}
	}
}

// TestUpgradeKeyWentOnlyWhenWritten: a protocol switch's trace counts its
// request written (x.wrote, which makes a reload's end of it an error,
// not denied: see holdUpgrade) only when its key went with it. Caught: a
// reload that ended the switch as the Transport got its connection took
// the key off and dropped the connection, and the Transport's write of
// what was left still counted, so the record said a key that never went
// was used.
func TestUpgradeKeyWentOnlyWhenWritten(t *testing.T) {
	for _, reloaded := range []bool{false, true} {
		ctx, end := context.WithCancel(context.Background())
		if reloaded {
			end()
		}
		r := httptest.NewRequestWithContext(ctx, http.MethodGet, "http://upstream.test/v1/realtime", nil)
		r.Header.Set("Authorization", "Bearer "+testKey)
		x := &exchange{}
		trace := x.upgradeTrace(r, func(error) {})
		app, _ := net.Pipe()
		trace.GotConn(httptrace.GotConnInfo{Conn: app})
		trace.WroteHeaders()
		if x.wrote.Load() == reloaded || (r.Header.Get("Authorization") == "") != reloaded {
			t.Errorf("ended by a reload %v: counted written %v, key left %q; want the key to go and count only when not",
				reloaded, x.wrote.Load(), r.Header.Get("Authorization"))
		}
		end()
	}
}
