package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

// TestEverySendIsRecorded: a transport sends a request again when a reused
// connection fails under it; the upstream then receives the key twice for
// one request. Every key the upstream receives has its audit record: the
// request's own, and a "use" record for each send after the first.
func TestEverySendIsRecorded(t *testing.T) {
	var keys atomic.Int64
	base, caFile := dropSecondUpstream(t, &keys)
	cfg := fmt.Sprintf("version: 1\nroutes:\n  - name: openai\n    preset: openai\n    upstream: %s\n    allow_plaintext: true\n", base)
	tl := startTill(t, cfg, providerSecrets, caFile)
	for range 2 {
		resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
	}
	requests := tl.waitAudit(2)
	uses := tl.uses()
	if n := keys.Load(); n != 3 {
		t.Fatalf("the upstream received the key %d times, want 3 (the second request twice)", n)
	}
	if len(uses) != int(keys.Load()) || len(requests) != 2 {
		t.Fatalf("got %d request and %d use records for %d keys sent:\n%s", len(requests), len(uses), keys.Load(), tl.stdout.String())
	}
	var attempts []any
	for _, u := range uses {
		attempts = append(attempts, u["attempt"])
	}
	if !slices.Equal(attempts, []any{1.0, 1.0, 2.0}) {
		t.Errorf("use records' attempts: %v, want [1 1 2]", attempts)
	}
	u := uses[2]
	if u["id"] != requests[1]["id"] || u["key_fp"] != requests[1]["key_fp"] || u["key_fp"] == "" ||
		u["route"] != "openai" || u["path"] != "/openai/v1/models" || u["method"] != "GET" || requests[1]["attempt"] != 2.0 {
		t.Errorf("use record: %v, request: %v", u, requests[1])
	}
}

// dropSecondUpstream listens (TLS with HTTP/1.1 only, unless the suite's
// upstreams are plain) and answers the first request on each connection;
// it reads the second and closes the connection without an answer, as an
// upstream whose keep-alive timeout strikes just then. keys counts the
// requests that carried till's key.
func dropSecondUpstream(t *testing.T, keys *atomic.Int64) (string, string) {
	t.Helper()
	return rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		for i := 0; ; i++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			if strings.HasSuffix(req.Header.Get("Authorization"), openaiKey) {
				keys.Add(1)
			}
			if i == 1 {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}")
		}
	})
}
