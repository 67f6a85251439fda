package test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Requests that Go's HTTP server refuses while it reads them, before any
// handler runs: a request target that is not a valid URI (an escape such as
// %zz) and a head over the server's MaxHeaderBytes (64 KiB, plus the 4 KiB
// net/http allows for buffering). net/http has no hook for these answers
// (conn.serve writes them straight to the connection), so till cannot give
// them its JSON error format, an X-Till-Error header, a request id or an
// audit record. What the test pins instead: the answer is net/http's own
// plain-text one, the connection is closed, nothing reaches the upstream,
// no audit record claims the request, and till keeps serving.

// netHTTPRefusal checks that resp is net/http's own refusal: status want,
// text/plain, "Connection: close", none of till's headers.
func netHTTPRefusal(t *testing.T, name string, resp *http.Response, body string, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Errorf("%s: got %d %q, want %d", name, resp.StatusCode, body, want)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Errorf("%s: Content-Type %q, want net/http's text/plain", name, ct)
	}
	if !resp.Close {
		t.Errorf("%s: the connection is kept open after a refused request", name)
	}
	for _, h := range []string{"X-Till-Error", "X-Till-Request-Id"} {
		if v := resp.Header.Get(h); v != "" {
			t.Errorf("%s: %s %q: till saw the request; update this test and SECURITY.md", name, h, v)
		}
	}
}

func TestRefusedBeforeTill(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	tl := startTill(t, providerConfig(u, ""), providerSecrets, u.caFile)
	big := strings.Repeat("a", 70<<10)

	t.Run("invalid escape in the path", func(t *testing.T) {
		resp, body, err := rawSend(t, tl.addr, "GET /openai/v1/%zz HTTP/1.1\r\nHost: localhost\r\n\r\n")
		if err != nil {
			t.Fatalf("no response: %v", err)
		}
		netHTTPRefusal(t, "%zz", resp, body, http.StatusBadRequest)
		if body != "400 Bad Request" {
			t.Errorf("body %q, want net/http's %q", body, "400 Bad Request")
		}
	})

	t.Run("invalid escape after a good request on the same connection", func(t *testing.T) {
		c, err := net.Dial("tcp", tl.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(15 * time.Second))
		br := bufio.NewReader(c)
		io.WriteString(c, "GET /openai/v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != `{"ok":true}` {
			t.Fatalf("the good request: got %d %q, want 200", resp.StatusCode, body)
		}
		io.WriteString(c, "GET /openai/v1/models%zz HTTP/1.1\r\nHost: localhost\r\n\r\n")
		if resp, err = http.ReadResponse(br, nil); err != nil {
			t.Fatalf("no answer to the second request: %v", err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		netHTTPRefusal(t, "%zz after a good request", resp, string(body), http.StatusBadRequest)
		if n, err := br.ReadByte(); err == nil {
			t.Errorf("byte %q after the refusal, want the connection closed", n)
		}
	})

	t.Run("oversized head", func(t *testing.T) {
		resp, body, err := rawSend(t, tl.addr, "GET /openai/v1/models HTTP/1.1\r\nHost: localhost\r\nX-Big: "+big+"\r\n\r\n")
		if err != nil {
			t.Fatalf("no response: %v", err)
		}
		netHTTPRefusal(t, "oversized head", resp, body, http.StatusRequestHeaderFieldsTooLarge)
	})

	if n := len(u.requests()); n != 1 {
		t.Errorf("the upstream received %d requests, want only the good one", n)
	}
	stillServes(t, tl)
	tl.stop()
	var requests int
	for _, r := range tl.audit() {
		if r["event"] == "request" {
			requests++
			if p, _ := r["path"].(string); p != "/openai/v1/models" {
				t.Errorf("audit record of a request till never saw: %v", r)
			}
		}
	}
	if requests != 2 {
		t.Errorf("got %d request records, want 2 (the good request and stillServes)", requests)
	}
	tl.assertNoLeak(allKeys)
}
