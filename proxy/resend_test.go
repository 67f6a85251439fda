package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/tillgw/till/config"
)

// TestUnrecordedResendIsNotSent: when the transport would send a request
// again (a reused connection failed under it) and the audit cannot record
// that send, the key is not sent again: the app gets 503
// audit_unavailable, and the request record's attempt (sends of the key)
// says 1: one send, one use record.
func TestUnrecordedResendIsNotSent(t *testing.T) {
	var keys atomic.Int64
	addr := rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for i := 0; ; i++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			if strings.Contains(req.Header.Get("Authorization"), testKey) {
				keys.Add(1)
			}
			if i == 1 {
				return // the second request on a connection: dropped unanswered
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
		}
	})
	sink := &failingAudit{}
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - name: openai\n    preset: openai\n    upstream: http://"+addr+"\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gw := New(NewSnapshot(cfg, secrets(time.Now())), Options{Audit: testAudit(sink), Log: zerolog.Nop()})
	front := httptest.NewServer(gw)
	defer front.Close()
	get := func() *http.Response {
		resp, err := http.Get(front.URL + "/openai/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if resp := get(); resp.StatusCode != 200 {
		t.Fatalf("first request: %d", resp.StatusCode)
	}
	// Only the resend's use record (attempt 2) fails.
	sink.mu.Lock()
	sink.pick = func(m map[string]any) bool { return m["event"] == "use" && m["attempt"] == 2.0 }
	sink.mu.Unlock()
	resp := get()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Till-Error") != CodeAuditUnavailable {
		t.Fatalf("got %d %q, want 503 audit_unavailable", resp.StatusCode, resp.Header.Get("X-Till-Error"))
	}
	if n := keys.Load(); n != 2 {
		t.Fatalf("the upstream received the key %d times, want 2", n)
	}
	uses := sink.events(t, "use")
	reqs := sink.events(t, "request")
	if len(uses) != 2 || len(reqs) != 2 {
		t.Fatalf("%d use and %d request records, want 2 and 2", len(uses), len(reqs))
	}
	second := reqs[1]
	if second["attempt"] != 1.0 {
		t.Errorf("the request record says attempt %v (sends of the key), but the key was sent once for it, with one use record: %v", second["attempt"], second)
	}
}
