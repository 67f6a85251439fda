package proxy

import (
	"bufio"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/rs/zerolog"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// TestSendMatchesReverseProxy sends the same requests through till and
// through httputil.ReverseProxy (which carried them before send), to a
// plain-HTTP upstream and to a TLS one, and compares what the upstream
// received and what the app got, less what till changes on purpose (the
// key, its request id).
func TestSendMatchesReverseProxy(t *testing.T) {
	var mu sync.Mutex
	var received string
	sent := make(chan struct{}) // the first event has reached the app
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		h := r.Header.Clone()
		delete(h, "Authorization")
		trailers := http.Header{}
		for k, v := range r.Trailer {
			if len(v) > 0 && v[0] != "" {
				trailers[k] = v
			}
		}
		mu.Lock()
		received = fmt.Sprintf("%s %q %q %d bytes %.20q, length %d, %v, trailers %q", r.Method, h, r.TransferEncoding, len(body), body, r.ContentLength, err, trailers)
		mu.Unlock()
		h = w.Header()
		switch r.URL.Query().Get("case") {
		case "hop":
			h.Set("Connection", "X-Up-Hop")
			h.Set("X-Up-Hop", "1")
			h.Set("Keep-Alive", "timeout=5")
			h.Set("Proxy-Connection", "keep-alive")
			h.Set("X-Fine", "1")
			io.WriteString(w, "hop")
		case "hints":
			h.Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			h.Del("Link")
			h.Set("X-Final", "1")
			io.WriteString(w, "hints")
		case "trailers":
			h.Set("Trailer", "X-Announced")
			io.WriteString(w, "trailers")
			w.(http.Flusher).Flush()
			h.Set("X-Announced", "a")
			h.Set(http.TrailerPrefix+"X-Unannounced", "u")
		case "nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "sse":
			h.Set("Content-Type", "text/event-stream; charset=utf-8")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			for _, event := range []string{"headers", "1", "2"} {
				select {
				case <-sent:
				case <-time.After(5 * time.Second):
					io.WriteString(w, "data: held back before "+event+"\n\n")
					return
				}
				io.WriteString(w, "data: "+event+"\n\n")
				w.(http.Flusher).Flush()
			}
		default:
			w.WriteHeader(http.StatusTeapot)
			io.WriteString(w, r.URL.RawQuery)
		}
	})
	for _, scheme := range []string{"http", "https"} {
		t.Run(scheme, func(t *testing.T) {
			up := httptest.NewUnstartedServer(upstream)
			if scheme == "https" {
				up.EnableHTTP2 = true
				up.StartTLS()
			} else {
				up.Start()
			}
			defer up.Close()
			gw, tr := gatewayTo(t, up)
			till := httptest.NewServer(gw)
			defer till.Close()
			target, _ := url.Parse(up.URL)
			ref := httptest.NewServer(&httputil.ReverseProxy{
				Rewrite: func(pr *httputil.ProxyRequest) {
					pr.SetURL(target)
					pr.Out.URL.Path = strings.TrimPrefix(pr.In.URL.Path, "/openai")
					pr.Out.URL.RawQuery = pr.In.URL.RawQuery // till passes the query on as it came
					pr.Out.Host = ""
				},
				Transport: tr,
			})
			defer ref.Close()

			cases := []struct {
				name, method, body string
				chunked, expect    bool
			}{
				{name: "hop", method: "GET"},
				{name: "hints", method: "GET"},
				{name: "trailers", method: "GET"},
				{name: "sse", method: "GET"},
				{name: "other&a=1;b=%zz", method: "GET"},
				{name: "head", method: "HEAD"},
				{name: "nocontent", method: "DELETE"},
				{name: "post", method: "POST", body: `{"model":"x"}`},
				{name: "large", method: "POST", body: strings.Repeat("x", 100<<10)},
				{name: "chunked", method: "POST", body: "chunked", chunked: true},
				{name: "expect", method: "POST", body: "expect", expect: true},
			}
			for _, tc := range cases {
				c := tc.name
				var got [2]string
				for i, front := range []string{till.URL, ref.URL} {
					var out strings.Builder
					trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
						if code != http.StatusContinue {
							// How many 100 Continue the app sees (the
							// server's own, the upstream's) is timing.
							fmt.Fprintf(&out, "%d %q\n", code, h)
						}
						return nil
					}}
					var body io.Reader
					if tc.body != "" {
						body = strings.NewReader(tc.body)
						if tc.chunked {
							body = io.MultiReader(body) // no length: chunked
						}
					}
					req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), tc.method, front+"/openai/v1/x?case="+c, body)
					if tc.chunked {
						// The app's own key, in a trailer, must not reach
						// the upstream.
						req.Trailer = http.Header{"Authorization": {"Bearer app-own"}, "X-Api-Key": {"app-own"}}
					}
					if tc.expect {
						req.Header.Set("Expect", "100-continue")
					}
					req.Header.Set("Connection", "X-Hop")
					req.Header.Set("X-Hop", "1")
					req.Header.Set("Keep-Alive", "timeout=5")
					req.Header.Set("Te", "trailers")
					req.Header.Set("Upgrade-Insecure-Requests", "1")
					req.Header.Set("Forwarded", "for=10.1.2.3")
					req.Header.Set("X-Forwarded-For", "10.1.2.3")
					req.Header.Set("X-Forwarded-Host", "example.com")
					req.Header.Set("X-Forwarded-Proto", "https")
					req.Header["User-Agent"] = []string{""} // none
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					br := bufio.NewReader(resp.Body)
					if c == "sse" {
						// Each event must reach the app before the next
						// is sent; the headers before the first.
						for range 3 {
							select {
							case sent <- struct{}{}:
							case <-time.After(5 * time.Second):
							}
							line, _ := br.ReadString('\n')
							out.WriteString(line)
							br.ReadString('\n')
						}
					}
					answer, _ := io.ReadAll(br)
					resp.Body.Close()
					mu.Lock()
					fmt.Fprintf(&out, "upstream got %s\n", received)
					mu.Unlock()
					for _, h := range []string{"Date", "X-Till-Request-Id"} {
						resp.Header.Del(h)
					}
					fmt.Fprintf(&out, "%s %q %q\n%s\ntrailers %q\n", resp.Status, resp.Header, resp.TransferEncoding, answer, resp.Trailer)
					got[i] = out.String()
				}
				if got[0] != got[1] {
					t.Errorf("case %s: till and ReverseProxy differ\ntill:\n%s\nReverseProxy:\n%s", c, got[0], got[1])
				}
				hop := []string{"X-Hop", "Keep-Alive", "Forwarded", "X-Forwarded-For", "Proxy-Connection", "User-Agent", "app-own"}
				if scheme == "http" {
					// HTTP/2 has no Connection header to name it by.
					hop = append(hop, "X-Up-Hop")
				}
				for _, want := range hop {
					if strings.Contains(got[0], want) {
						t.Errorf("case %s: %s went through:\n%s", c, want, got[0])
					}
				}
			}
		})
	}
}

// gatewayTo returns a gateway with one route, openai, to up, and the
// transport it uses, which trusts up's certificate.
func gatewayTo(t *testing.T, up *httptest.Server) (*Gateway, *http.Transport) {
	t.Helper()
	tr := NewTransport()
	if up.TLS != nil {
		roots := x509.NewCertPool()
		roots.AddCert(up.Certificate())
		tr.TLSClientConfig.RootCAs = roots
	}
	// usage: none: plain forwarding is compared; a metered route also
	// drops Accept-Encoding, so that the meter reads the answer.
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: openai, preset: openai, usage: none, upstream: "+up.URL+"}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return New(NewSnapshot(cfg, secrets(time.Now())), Options{Audit: testAudit(io.Discard), Log: zerolog.Nop(), Transport: tr}), tr
}

// TestUnannouncedTrailersScrubbed: over HTTP/2 an upstream may send
// trailers it never announced, after a body with a Content-Length; one that
// echoes the key must not reach the app.
func TestUnannouncedTrailersScrubbed(t *testing.T) {
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "4")
		io.WriteString(w, "body")
		w.Header().Set(http.TrailerPrefix+"X-Echo", "key="+testKey)
		w.Header().Set(http.TrailerPrefix+"X-Fine", "fine")
	}))
	up.EnableHTTP2 = true
	up.StartTLS()
	defer up.Close()
	gw, _ := gatewayTo(t, up)
	front := httptest.NewUnstartedServer(gw)
	front.EnableHTTP2 = true
	front.StartTLS()
	defer front.Close()
	resp, err := front.Client().Get(front.URL + "/openai/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.Trailer.Get("X-Fine") != "fine" {
		t.Fatalf("HTTP/%d, trailers %q: the test needs HTTP/2 trailers to reach the app", resp.ProtoMajor, resp.Trailer)
	}
	if v := resp.Trailer.Get("X-Echo"); v != "" {
		t.Errorf("a trailer echoing the key reached the app: %q", v)
	}
}

// TestTrailerNamedAfterKey: a trailer the upstream announces under a name
// that holds the key is neither announced to the app nor passed on; the
// others are.
func TestTrailerNamedAfterKey(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		w.Header().Set("Trailer", "X-"+key+", X-Fine")
		io.WriteString(w, "body")
		w.Header().Set("X-"+key, "v")
		w.Header().Set("X-Fine", "fine")
	}))
	defer up.Close()
	gw, _ := newTestGateway(t, baseYAML, up.URL, secrets(time.Now()))
	front := httptest.NewServer(gw)
	defer front.Close()
	resp, err := http.Post(front.URL+"/openai/v1/chat/completions", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	announced := fmt.Sprint(resp.Trailer) // before the body: the announcement
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Trailer.Get("X-Fine") != "fine" {
		t.Fatalf("trailers %q: the test needs trailers to reach the app", resp.Trailer)
	}
	all := announced + fmt.Sprint(resp.Header, resp.Trailer)
	if strings.Contains(strings.ToLower(all), strings.ToLower(testKey)) {
		t.Errorf("the key reached the app in a trailer's name: announced %s, then %q", announced, resp.Trailer)
	}
}

// TestUnaskedSwitchingProtocols: an upstream that answers 101 to a
// request that asked for no protocol switch gets the app a 502 and none of
// its bytes, over either transport.
func TestUnaskedSwitchingProtocols(t *testing.T) {
	for _, scheme := range []string{"http", "https"} {
		up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nraw bytes")
			brw.Flush()
		}))
		if scheme == "https" {
			up.StartTLS() // HTTP/1.1: HTTP/2 has no 101
		} else {
			up.Start()
		}
		defer up.Close()
		gw, _ := gatewayTo(t, up)
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", "/openai/v1/models", nil))
		if w.Code != http.StatusBadGateway || strings.Contains(w.Body.String(), "raw bytes") {
			t.Errorf("%s: got %d %q, want 502 without the upstream's bytes", scheme, w.Code, w.Body)
		}
	}
}

// TestCountingBodyClose: the body handed to a transport cannot be read
// once closed (send closes it when the handler returns, since a transport
// may still hold it), closing it leaves the app's body to the server, and
// once closed it no longer moves the connection's read deadline, which is
// the server's again (not even when a read in flight then ends).
func TestCountingBodyClose(t *testing.T) {
	app := &closeSpy{Reader: iotest.DataErrReader(strings.NewReader("abc"))}
	w := &deadlineSpy{ResponseWriter: httptest.NewRecorder()}
	b := &countingBody{ReadCloser: app, x: &exchange{}, rc: http.NewResponseController(w)}
	if n, err := b.Read(make([]byte, 1)); n != 1 || err != nil || w.calls != 1 {
		t.Fatalf("read before close: %d, %v, %d deadline(s) set", n, err, w.calls)
	}
	app.onRead = func() { b.Close() } // the handler returns during the next read
	if n, err := b.Read(make([]byte, 8)); n != 2 || err != io.EOF {
		t.Fatalf("read in flight: %d, %v; want the rest and EOF", n, err)
	}
	if n, err := b.Read(make([]byte, 1)); n != 0 || err != errBodyClosed {
		t.Errorf("read after close: %d, %v; want 0, errBodyClosed", n, err)
	}
	if w.calls != 2 {
		t.Errorf("%d deadline(s) set, want 2: none after the close", w.calls)
	}
	if app.closed {
		t.Error("the app's body was closed: the server drains it after the handler")
	}
}

// deadlineSpy counts the read deadlines set through it.
type deadlineSpy struct {
	http.ResponseWriter
	calls int
}

func (d *deadlineSpy) SetReadDeadline(time.Time) error { d.calls++; return nil }

type closeSpy struct {
	io.Reader
	closed bool
	onRead func()
}

func (c *closeSpy) Read(p []byte) (int, error) {
	if c.onRead != nil {
		c.onRead()
	}
	return c.Reader.Read(p)
}

func (c *closeSpy) Close() error { c.closed = true; return nil }

// TestUpstreamErrorsHideTheKey: an upstream whose answer quotes the
// request back (here, its target as the status code) makes the parse
// error quote the key; the log must not.
func TestUpstreamErrorsHideTheKey(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		line, _ := bufio.NewReader(c).ReadString('\n')
		if f := strings.Fields(line); len(f) > 1 {
			fmt.Fprintf(c, "HTTP/1.1 %s OK\r\n\r\n", f[1])
		}
	})
	yaml := "version: 1\nroutes:\n  - {name: gem, upstream: \"http://" + addr + "\", inject: {query: key}}\n"
	cfg, err := config.Parse("till.yaml", []byte(yaml), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// The second is sent escaped in the query, and quoted back so.
	for _, key := range []string{"real-key-123", "QXBp/S2V5+c2VjcmV0=Zm9vYmFy"} {
		var logs strings.Builder
		gw := New(NewSnapshot(cfg, map[string]vault.Secret{"gem": vault.NewSecret("gem", key, time.Now())}),
			Options{Audit: testAudit(io.Discard), Log: zerolog.New(&logs)})
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", "/gem/v1/models", nil))
		if w.Code != http.StatusBadGateway || !strings.Contains(logs.String(), "malformed") {
			t.Fatalf("got %d, log %s; the test needs a parse error", w.Code, logs.String())
		}
		if strings.Contains(logs.String(), key) || strings.Contains(logs.String(), url.QueryEscape(key)) {
			t.Errorf("the key reached the log: %s", logs.String())
		}
	}
}

// rawServer listens on loopback as an upstream written by hand: serve runs
// for each connection, which is closed when it returns. It returns the
// listener's address.
func rawServer(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// TestStalledUploadOfHeldBody: a body till holds in memory (to meter it,
// on every metered route) that the upstream stops reading ends with 504
// upstream_timeout after the route's timeout, as a streamed one does:
// the transport's response header timeout starts only once it is sent.
func TestStalledUploadOfHeldBody(t *testing.T) {
	done := make(chan struct{})
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // never reads the body
		case <-done:
		case <-r.Context().Done():
		}
	}))
	up.EnableHTTP2 = true
	up.Config.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: 65536, MaxReceiveBufferPerConnection: 65536}
	up.StartTLS()
	defer up.Close()
	defer close(done)
	tr := NewTransport()
	tr.TLSClientConfig.RootCAs = x509.NewCertPool()
	tr.TLSClientConfig.RootCAs.AddCert(up.Certificate())
	for _, usage := range []string{"none", "openai"} {
		cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: openai, preset: openai, usage: "+usage+", upstream: "+up.URL+", timeout: 300ms}\n"), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		gw := New(NewSnapshot(cfg, secrets(time.Now())), Options{Audit: testAudit(io.Discard), Log: zerolog.Nop(), Transport: tr})
		body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + strings.Repeat("x", 512<<10) + `"}]}`
		// The app's own limit, far past the route's timeout: only for the
		// test to end if till never does.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		req := httptest.NewRequest("POST", "/openai/v1/chat/completions", strings.NewReader(body)).WithContext(ctx)
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, req)
		cancel()
		if w.Code != http.StatusGatewayTimeout || w.Header().Get("X-Till-Error") != CodeUpstreamTimeout {
			t.Errorf("usage %s: a stalled upload got %d %s, want 504 upstream_timeout", usage, w.Code, w.Header().Get("X-Till-Error"))
		}
	}
}

// TestAppGoneBeforeHeadIs499: an answer whose head till held back (its
// first bytes, to retry or replace it) and never sent, because the app
// left first, is recorded with status 499, not the upstream's 200.
func TestAppGoneBeforeHeadIs499(t *testing.T) {
	sent, done := make(chan struct{}), make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		close(sent)
		select {
		case <-done:
		case <-r.Context().Done():
		}
	}))
	defer up.Close()
	defer close(done)
	gw, buf := newTestGateway(t, "version: 1\nroutes:\n  - {name: openai, preset: openai, usage: none, upstream: {{UP}}}\n", up.URL, secrets(time.Now()))
	front := httptest.NewServer(gw)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-sent; cancel() }()
	req, _ := http.NewRequestWithContext(ctx, "GET", front.URL+"/openai/v1/models", nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("the test needs the head held back; got %d", resp.StatusCode)
	}
	front.Close() // waits for the handler, and so for the record
	recs := buf.records(t)
	if len(recs) != 1 || recs[0]["status"] != float64(statusClientClosed) || recs[0]["reason"] != codeClientClosed {
		t.Errorf("records %v, want one with status %d, reason %s", recs, statusClientClosed, codeClientClosed)
	}
}
