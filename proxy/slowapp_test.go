package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// TestAppThatStopsReadingIsCut: an app that stops taking its response
// (over HTTP/1 or HTTP/2) is cut once a write to it has waited
// answerIdleTimeout: it cannot hold the request, its upstream
// connection and its budget reservation for as long as it keeps its
// connection open. The upstream request ends, and the record says the
// app closed it.
func TestAppThatStopsReadingIsCut(t *testing.T) {
	withAnswerIdleTimeout(t, 300*time.Millisecond)
	for _, proto := range []string{"http1", "http2"} {
		t.Run(proto, func(t *testing.T) {
			upstreamDone := make(chan struct{})
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer close(upstreamDone)
				chunk := []byte(strings.Repeat("x", 64<<10))
				for range 4096 { // 256 MiB, far more than any socket buffers
					if _, err := w.Write(chunk); err != nil {
						return
					}
				}
			}))
			defer up.Close()
			gw, records := apiGateway(t, up.URL)
			app := appOver(t, gw, proto)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", app.base+"/api/v1/x", nil)
			res, err := app.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close() // never read
			if res.ProtoMajor != map[string]int{"http1": 1, "http2": 2}[proto] {
				t.Fatalf("the app spoke %s", res.Proto)
			}
			select {
			case <-upstreamDone:
			case <-time.After(10 * time.Second):
				t.Fatal("the upstream request still runs for an app that stopped reading")
			}
			deadline := time.Now().Add(5 * time.Second)
			for len(records.records(t)) == 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			recs := records.records(t)
			if len(recs) != 1 || recs[0]["reason"] != codeClientClosed || recs[0]["status"] != float64(http.StatusOK) {
				t.Errorf("got records %v, want one with status 200, reason %s", recs, codeClientClosed)
			}
		})
	}
}

// TestResponseDeadlineCutsNoReader: the watch that cuts an app that stops
// reading cuts no other, over HTTP/1 or HTTP/2: an answer quiet for longer
// than answerIdleTimeout (a model thinking), and whose end comes long
// after its last bytes (when the server writes what it still holds, a
// chunked body's end), reaches the app whole.
func TestResponseDeadlineCutsNoReader(t *testing.T) {
	withAnswerIdleTimeout(t, 300*time.Millisecond)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Repeat("x", 3000))) // past what till holds back
		w.(http.Flusher).Flush()
		time.Sleep(2 * answerIdleTimeout)
		w.Write([]byte("end"))
		w.(http.Flusher).Flush()
		time.Sleep(2 * answerIdleTimeout)
	}))
	defer up.Close()
	gw, _ := apiGateway(t, up.URL)
	for _, proto := range []string{"http1", "http2"} {
		t.Run(proto, func(t *testing.T) {
			app := appOver(t, gw, proto)
			res, err := app.Get(app.base + "/api/v1/x")
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil || len(b) != 3003 {
				t.Errorf("got %d bytes, %v; want the whole answer", len(b), err)
			}
		})
	}
}

// appClient is an app's client of a gateway, and the gateway's URL.
type appClient struct {
	*http.Client
	base string
}

// appOver serves gw to an app that speaks proto (http1, or http2 over
// TLS), and returns the app's client.
func appOver(t *testing.T, gw *Gateway, proto string) appClient {
	front := httptest.NewUnstartedServer(gw)
	t.Cleanup(front.Close)
	if proto == "http1" {
		front.Start()
		return appClient{front.Client(), front.URL}
	}
	front.EnableHTTP2 = true
	front.StartTLS()
	app := front.Client()
	tr := app.Transport.(*http.Transport)
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true) // h2 alone
	return appClient{app, front.URL}
}

// TestSwitchOutlivesResponseDeadline: a protocol switch (WebSocket) made
// on a route is not cut by the write deadline of the response that made
// it: a quiet spell longer than answerIdleTimeout leaves it open.
func TestSwitchOutlivesResponseDeadline(t *testing.T) {
	withAnswerIdleTimeout(t, 200*time.Millisecond)
	up := switchingEcho(t, nil)
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: ws, preset: openai, prefix: /ws, upstream: "+up.URL+", secret: k}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gw := New(NewSnapshot(cfg, map[string]vault.Secret{"k": vault.NewSecret("k", testKey, time.Now())}), Options{Audit: testAudit(io.Discard), Log: zerolog.Nop()})
	c, br := openHeld(t, gw, "GET /ws/v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", http.StatusSwitchingProtocols)
	defer c.Close()
	for _, w := range []string{"one", "two"} {
		if err := echoLine(c, br, w); err != nil {
			t.Fatalf("%s: %v", w, err)
		}
		time.Sleep(3 * answerIdleTimeout)
	}
}

// TestInterceptionOutlivesResponseDeadline: an intercepted CONNECT is
// not cut by the write deadline of the response to the CONNECT: its
// connection serves requests after a quiet spell longer than
// answerIdleTimeout.
func TestInterceptionOutlivesResponseDeadline(t *testing.T) {
	withAnswerIdleTimeout(t, 200*time.Millisecond)
	f := newConnectFixture(t, "", connectToken)
	status, tc, _ := f.connect(t, "127.0.0.1", "X-Till-Token: "+connectToken+"\r\n")
	if status != 200 {
		t.Fatalf("CONNECT: %d", status)
	}
	defer tc.Close()
	for i := range 2 {
		time.Sleep(3 * answerIdleTimeout)
		if resp, body := innerGet(t, tc, "127.0.0.1:"+f.port); resp.StatusCode != 200 {
			t.Fatalf("request %d: got %d %s", i+1, resp.StatusCode, body)
		}
	}
}

// TestBudgetedAnswerOfAppThatStopsReading: on a route under a token
// budget, the answer of an app cut for not reading is read on for its
// usage (drainAnswer), and an upstream that then stops sending ends it
// at the route's timeout, as for an app that left: it does not hold the
// request for good.
func TestBudgetedAnswerOfAppThatStopsReading(t *testing.T) {
	withAnswerIdleTimeout(t, 300*time.Millisecond)
	upstreamDone := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(upstreamDone)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"choices":[{"text":"`))
		chunk := []byte(strings.Repeat("x", 64<<10))
		for range 256 { // 16 MiB, more than the sockets hold
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
		w.(http.Flusher).Flush()
		<-r.Context().Done() // and then nothing
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}, timeout: 1s}\nbudgets:\n  - {name: b, window: 1d, tokens: 100000}\n"
	gw, records := newTestGateway(t, y, up.URL, secrets(time.Now()))
	front := httptest.NewServer(gw)
	defer front.Close()
	res, err := front.Client().Post(front.URL+"/openai/v1/chat/completions", "application/json", strings.NewReader(`{"model":"gpt-4o-mini","messages":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close() // never read
	select {
	case <-upstreamDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream request still runs for an app that stopped reading")
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(records.records(t)) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if recs := records.records(t); len(recs) != 1 || recs[0]["reason"] != codeClientClosed {
		t.Errorf("got records %v, want one with reason %s", recs, codeClientClosed)
	}
}

// TestLastWriteToAppThatStopsReadingIsBounded: over HTTP/1, what the
// server still buffers when the handler has returned (a held answer
// whole) is written after it, out of the write watch's reach: an app
// that sends request after request and reads nothing fills the sockets'
// buffers until that write waits. It waits answerIdleTimeout, then the
// connection is closed, rather than held, with its goroutine, for as
// long as the app keeps it.
func TestLastWriteToAppThatStopsReadingIsBounded(t *testing.T) {
	withAnswerIdleTimeout(t, 300*time.Millisecond)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("a", holdLimit-100)) // held whole
	}))
	defer up.Close()
	gw, _ := apiGateway(t, up.URL)
	closed := make(chan struct{}, 1)
	front := httptest.NewUnstartedServer(gw)
	front.Listener = smallSendBuffers{front.Listener}
	front.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed <- struct{}{}
		}
	}
	front.Start()
	defer front.Close()
	conn, err := net.Dial("tcp", front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	go func() { // the app sends, and never reads
		req := "GET /api/v1/x HTTP/1.1\r\nHost: till\r\n\r\n"
		for range 2000 {
			if _, err := io.WriteString(conn, req); err != nil {
				return
			}
		}
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection of an app that reads nothing is still open")
	}
}

// smallSendBuffers gives each connection it accepts a small send buffer,
// so that an app that reads nothing makes the server's writes wait soon.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(4096)
	}
	return c, err
}

// TestLastWriteBoundLeavesKeptConnection: the bound on the server's last
// write does not outlive it: a kept-alive connection idle for longer
// than answerIdleTimeout takes its next request as any other.
func TestLastWriteBoundLeavesKeptConnection(t *testing.T) {
	withAnswerIdleTimeout(t, 200*time.Millisecond)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer up.Close()
	gw, _ := apiGateway(t, up.URL)
	front := httptest.NewServer(gw)
	defer front.Close()
	conns := 0
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if !i.Reused {
			conns++
		}
	}}
	client := front.Client()
	for i := range 2 {
		if i == 1 {
			time.Sleep(3 * answerIdleTimeout) // past the bound: it must be gone
		}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", front.URL+"/api/v1/x", nil)
		res, err := client.Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || string(body) != "ok" {
			t.Fatalf("request %d: %q, %v", i+1, body, err)
		}
	}
	if conns != 1 {
		t.Errorf("%d connections, want the first kept for the second request", conns)
	}
}

// apiGateway is a gateway with one route, api, to upstream, its key in
// the vault; the audit records go to the buffer it returns.
func apiGateway(t *testing.T, upstream string) (*Gateway, *lockedBuffer) {
	return newTestGateway(t, "version: 1\nroutes:\n  - {name: api, upstream: \"{{UP}}\", secret: api, inject: {header: Authorization, format: \"Bearer {secret}\"}}\n",
		upstream, map[string]vault.Secret{"api": vault.NewSecret("api", testKey, time.Now())})
}

// withAnswerIdleTimeout shortens, for t, how long a write to the app may
// wait before it is cut.
func withAnswerIdleTimeout(t *testing.T, d time.Duration) {
	old := answerIdleTimeout
	answerIdleTimeout = d
	t.Cleanup(func() { answerIdleTimeout = old })
}
