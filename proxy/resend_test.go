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
// that send, the key is not sent again: the app gets 503 audit_unavailable.
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
	sink := &failingWriter{}
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
	sink.mu.Lock()
	sink.ok = 1 // the record of the first send, not the resend's
	sink.mu.Unlock()
	resp := get()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Till-Error") != CodeAuditUnavailable {
		t.Errorf("got %d %q, want 503 audit_unavailable", resp.StatusCode, resp.Header.Get("X-Till-Error"))
	}
	if n := keys.Load(); n != 2 {
		t.Errorf("the upstream received the key %d times, want 2 (the unrecorded resend not sent)", n)
	}
}
