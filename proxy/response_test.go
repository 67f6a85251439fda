package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// TestRecorderHoldsTheStart: the status and a short body wait in the
// recorder until the response is complete, larger than holdLimit or
// flushed, and 1xx responses go at once.
func TestRecorderHoldsTheStart(t *testing.T) {
	t.Run("short body", func(t *testing.T) {
		rec := httptest.NewRecorder()
		w := &responseRecorder{ResponseWriter: rec, x: &exchange{}}
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(201)
		w.Write([]byte("hello"))
		if rec.Code != 200 || rec.Body.Len() != 0 || w.committed {
			t.Fatalf("sent before the end: %d %q", rec.Code, rec.Body)
		}
		if err := w.commit(); err != nil || rec.Code != 201 || rec.Body.String() != "hello" || w.n != 5 {
			t.Errorf("after commit: %v %d %q, n=%d", err, rec.Code, rec.Body, w.n)
		}
	})
	t.Run("long body", func(t *testing.T) {
		rec := httptest.NewRecorder()
		w := &responseRecorder{ResponseWriter: rec, x: &exchange{}}
		w.Write([]byte(strings.Repeat("a", holdLimit)))
		if w.committed {
			t.Fatalf("committed at holdLimit bytes")
		}
		w.Write([]byte("b"))
		if !w.committed || rec.Code != 200 || rec.Body.Len() != holdLimit+1 || w.n != holdLimit+1 {
			t.Errorf("past holdLimit: committed %v, %d, %d bytes, n=%d", w.committed, rec.Code, rec.Body.Len(), w.n)
		}
	})
	t.Run("flush", func(t *testing.T) {
		rec := httptest.NewRecorder()
		w := &responseRecorder{ResponseWriter: rec, x: &exchange{}}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte("data: 1\n\n"))
		w.Flush()
		if !rec.Flushed || rec.Body.String() != "data: 1\n\n" {
			t.Errorf("flush did not send the event: flushed %v, %q", rec.Flushed, rec.Body)
		}
	})
	t.Run("1xx", func(t *testing.T) {
		rec := httptest.NewRecorder()
		w := &responseRecorder{ResponseWriter: rec, x: &exchange{}}
		w.WriteHeader(http.StatusEarlyHints)
		if rec.Code != http.StatusEarlyHints || w.status != 0 {
			t.Errorf("103 held back or taken for the final status: %d, status %d", rec.Code, w.status)
		}
	})
	t.Run("reset", func(t *testing.T) {
		rec := httptest.NewRecorder()
		w := &responseRecorder{ResponseWriter: rec, x: &exchange{}}
		w.Header().Set("Connection", "close")
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(200)
		w.Write([]byte("partial"))
		w.reset()
		writeError(w, "id", apiError{CodeUpstreamUnreachable, "broken"}, false, 0)
		w.commit()
		if rec.Code != 502 || rec.Header().Get("Connection") != "close" || rec.Header().Get("Content-Length") == "1000" ||
			strings.Contains(rec.Body.String(), "partial") {
			t.Errorf("after reset: %d %v %q", rec.Code, rec.Header(), rec.Body)
		}
	})
}

// TestChunkedRequestClosesAfterInformational: a chunked HTTP/1 request
// ends its connection after its response (begin), so that a request
// hidden in its body, read by a Content-Length that the chunked coding
// overrides, is never served (RFC 9112, section 6.1). That must hold on
// the ReverseProxy paths too (a protocol switch the upstream declines, a
// relay), which clear the response's headers after relaying a 1xx
// (103 Early Hints; 100 Continue to an app's Expect).
func TestChunkedRequestClosesAfterInformational(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.Path)
		mu.Unlock()
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteHeader(http.StatusUpgradeRequired)
	})
	addr, host := routeAndRelay(t, handler)
	const upgrade = "Connection: Upgrade\r\nUpgrade: websocket\r\n"
	for name, head := range map[string]string{
		"route":         "POST /ws/v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\n",
		"route upgrade": "POST /ws/v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\n" + upgrade,
		"relay":         "POST http://" + host + "/relayed HTTP/1.1\r\nHost: " + host + "\r\n",
		"relay upgrade": "POST http://" + host + "/relayed HTTP/1.1\r\nHost: " + host + "\r\n" + upgrade,
	} {
		t.Run(name, func(t *testing.T) {
			hidden := "GET /ws/v1/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
			body := "0\r\n\r\n" + hidden
			c := sendRaw(t, addr, fmt.Sprintf("%sContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%s", head, len(body), body))
			br := bufio.NewReader(c)
			res, err := http.ReadResponse(br, nil)
			for err == nil && res.StatusCode < 200 {
				res, err = http.ReadResponse(br, nil)
			}
			if err != nil || res.StatusCode != http.StatusUpgradeRequired {
				t.Fatalf("response: %v %v, want the upstream's 426", res, err)
			}
			io.Copy(io.Discard, res.Body)
			if second, err := http.ReadResponse(br, nil); err == nil {
				t.Errorf("the request hidden in the body was served (%d): the connection stayed open", second.StatusCode)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if slices.Contains(seen, "/v1/smuggled") {
		t.Errorf("the upstream received the hidden request with the route's key: %v", seen)
	}
}

// TestNoInformationalToHTTP10: an HTTP/1.0 client knows no 1xx response
// (RFC 9110, section 15.2: a server must not send it one) and reads the
// upstream's 103 Early Hints as the answer to its request, leaving the
// real answer on the connection to be read as the next request's. On a
// route and relayed alike, the app's first response is the final one.
func TestNoInformationalToHTTP10(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "final")
	})
	addr, host := routeAndRelay(t, handler)
	for name, head := range map[string]string{
		"route":      "GET /ws/v1/models HTTP/1.0\r\nHost: 127.0.0.1\r\n",
		"relay":      "GET http://" + host + "/relayed HTTP/1.0\r\nHost: " + host + "\r\n",
		"route, 1.1": "GET /ws/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			c := sendRaw(t, addr, head+"Connection: keep-alive\r\n\r\n")
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			want := http.StatusOK
			if strings.Contains(head, "HTTP/1.1") {
				want = http.StatusEarlyHints // still passed on to HTTP/1.1
			}
			if res.StatusCode != want {
				t.Errorf("first response: got %d, want %d", res.StatusCode, want)
			}
		})
	}
}

// routeAndRelay starts a gateway with a route (prefix /ws) to one server
// of handler, and forward mode relaying to hosts without a route; it
// returns the gateway's address and the host of a second server of
// handler, which has no route.
func routeAndRelay(t *testing.T, handler http.Handler) (addr, host string) {
	t.Helper()
	up := httptest.NewServer(handler)
	t.Cleanup(up.Close)
	other := httptest.NewServer(handler)
	t.Cleanup(other.Close)
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nforward: {enabled: true, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\nroutes:\n  - {name: ws, preset: openai, prefix: /ws, upstream: "+up.URL+", secret: k}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	snap := NewSnapshot(cfg, map[string]vault.Secret{"k": vault.NewSecret("k", testKey, time.Now())})
	srv := httptest.NewServer(New(snap, Options{Audit: testAudit(io.Discard), Log: zerolog.Nop()}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), other.Listener.Addr().String()
}

// TestUpstreamCannotSpeakAsTill: X-Till-Error and X-Till-Request-Id are
// till's alone, so an app (and curl -i, which prints 1xx responses and
// trailers among the headers) can trust them: an upstream's are removed
// from its 1xx responses and its trailers, announced or not, as from its
// headers; on a route, and when the upstream declines a protocol switch.
func TestUpstreamCannotSpeakAsTill(t *testing.T) {
	addr, _ := routeAndRelay(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Till-Error", "secret_expired")
		w.Header().Set("X-Till-Request-Id", "spoofed")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("X-Till-Error")
		w.Header().Del("X-Till-Request-Id")
		w.Header().Set("Trailer", "X-Till-Request-Id")
		io.WriteString(w, "body")
		w.Header().Set("X-Till-Request-Id", "spoofed")
		w.Header().Set(http.TrailerPrefix+"X-Till-Error", "secret_expired")
	}))
	for name, head := range map[string]string{
		"route":            "GET /ws/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n",
		"declined upgrade": "GET /ws/v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			raw, _ := io.ReadAll(sendRaw(t, addr, head+"\r\n"))
			if !strings.Contains(string(raw), "body") || strings.Contains(string(raw), "spoofed") || strings.Contains(string(raw), "secret_expired") {
				t.Errorf("the upstream spoke as till:\n%s", raw)
			}
		})
	}
}

// sendRaw writes raw on a new connection to addr, which it returns, to be
// read within 10 seconds; the test closes it.
func sendRaw(t *testing.T, addr, raw string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, raw)
	return c
}

// TestUnreadAnswerFreesItsReservation: an app that opens an HTTP/2
// stream on a budgeted route and never reads the answer (its stream's
// flow-control window stays shut) held the request's reservation for as
// long as it kept the connection, the upstream long done: every other
// app under the budget was refused budget_exceeded meanwhile; so did one
// that never read its HTTP/1.1 connection, once the buffers between were
// full. A write to the app that makes no progress for answerIdleTimeout
// now ends the answer as if the app had left: the rest is read for its
// usage, and the budget charged what it told.
func TestUnreadAnswerFreesItsReservation(t *testing.T) {
	withAnswerIdleTimeout(t, 200*time.Millisecond)
	const stalling = `{"model":"gpt-4o-mini","stream":true,"max_tokens":1000,"messages":[]}`
	for _, proto := range []string{"HTTP/2", "HTTP/1.1"} {
		t.Run(proto, func(t *testing.T) {
			streamed := make(chan struct{})
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				if !strings.Contains(string(body), `"stream":true`) {
					io.WriteString(w, `{"model":"gpt-4o-mini","usage":{"prompt_tokens":5,"completion_tokens":5}}`)
					return
				}
				defer close(streamed)
				w.Header().Set("Content-Type", "text/event-stream")
				chunk := `data: {"choices":[{"delta":{"content":"` + strings.Repeat("x", 1024) + `"}}]}` + "\n\n"
				for range 8 << 10 { // more than the buffers on the way hold
					io.WriteString(w, chunk)
					w.(http.Flusher).Flush()
				}
				io.WriteString(w, `data: {"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":5}}`+"\n\ndata: [DONE]\n\n")
			}))
			defer up.Close()
			y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}}\nbudgets:\n  - {name: b, per: all, window: 1d, tokens: 1000}\n"
			gw, buf := newTestGateway(t, y, up.URL, secrets(time.Now()))
			front := httptest.NewUnstartedServer(gw)
			if proto == "HTTP/2" {
				front.EnableHTTP2 = true
				front.StartTLS()
				defer front.Close() // after the app leaves
				tr := front.Client().Transport.(*http.Transport).Clone()
				tr.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: 1}
				defer tr.CloseIdleConnections()
				req, _ := http.NewRequest("POST", front.URL+"/openai/v1/chat/completions", strings.NewReader(stalling))
				res, err := tr.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				defer res.Body.Close() // never read
				if res.ProtoMajor != 2 {
					t.Fatalf("HTTP/%d, want HTTP/2", res.ProtoMajor)
				}
			} else {
				front.Start()
				defer front.Close()
				c, err := net.Dial("tcp", front.Listener.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close() // never read
				c.(*net.TCPConn).SetReadBuffer(4 << 10)
				fmt.Fprintf(c, "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(stalling), stalling)
			}
			select {
			case <-streamed:
				time.Sleep(4 * answerIdleTimeout)
			case <-time.After(5 * time.Second): // till holds the answer
			}
			other := front.Client().Transport.(*http.Transport).Clone()
			defer other.CloseIdleConnections()
			req, _ := http.NewRequest("POST", front.URL+"/openai/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o-mini","max_tokens":300,"messages":[]}`))
			res, err := other.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				t.Errorf("another app got %d %s while the first left its answer unread, want 200 (tokens counted %v)", res.StatusCode, res.Header.Get("X-Till-Error"), usedTokens(t, gw))
			}
			recs := buf.records(t)
			if len(recs) != 2 || recs[0]["reason"] != codeClientClosed || recs[0]["tokens_out"] != 5.0 {
				t.Errorf("records %v: want the unread answer's first, client_closed, with the usage it told", recs)
			}
		})
	}
}
