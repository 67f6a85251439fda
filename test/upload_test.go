package test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// uploadConfig routes /up to u with a one-second timeout.
func uploadConfig(u *upstream) string {
	return fmt.Sprintf(`version: 1
routes:
  - name: up
    preset: openai
    upstream: %s
    secret: openai
    timeout: 1s
`, u.URL)
}

// TestUploadToStalledUpstreamTimesOut: an upstream that stops reading a
// large upload no longer holds the request for as long as the app waits:
// with no progress for the route's timeout, the app gets 504
// upstream_timeout and the upstream request is cancelled.
func TestUploadToStalledUpstreamTimesOut(t *testing.T) {
	// An upstream that reads the request head, then nothing more.
	base, caFile := stalledUpstream(t)
	cfg := strings.Replace(uploadConfig(&upstream{Server: &httptest.Server{URL: base}}), "preset: openai", "preset: openai\n    allow_plaintext: true", 1)
	tl := startTill(t, cfg, providerSecrets, caFile)
	const size = 32 << 20
	req := newRequest(t, "POST", tl.url("/up/v1/files"), io.LimitReader(zeros{}, size))
	req.ContentLength = size
	start := time.Now()
	resp, body := do(t, req)
	took := time.Since(start)
	if resp.StatusCode != http.StatusGatewayTimeout || tillError(t, resp, body) != "upstream_timeout" {
		t.Errorf("got %d %s, want 504 upstream_timeout", resp.StatusCode, body)
	}
	// The route's timeout is 1 s; before the fix this took until the app
	// gave up (here the client's 20 s timeout).
	if took > 10*time.Second {
		t.Errorf("the stalled upload held the request for %v", took)
	}
	rec := lastAudit(t, tl)
	if rec["reason"] != "upstream_timeout" || rec["status"] != float64(504) || rec["key_fp"] == "" {
		t.Errorf("record: %v", rec)
	}
}

// rawUpstream listens as an upstream that speaks HTTP/1.1 by hand: over
// TLS (HTTP/1.1 only, its certificate in the returned CA file) unless the
// suite's upstreams are plain. serve runs for each connection, which is
// closed when it returns. It returns the base URL and the CA file.
func rawUpstream(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) (string, string) {
	t.Helper()
	srv, caFile := newTLSServer(t, http.NotFoundHandler())
	var ln net.Listener
	var err error
	scheme := "http"
	if plainUpstreams {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	} else {
		scheme = "https"
		ln, err = tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: srv.TLS.Certificates, NextProtos: []string{"http/1.1"}})
	}
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
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	return scheme + "://" + ln.Addr().String(), caFile
}

// stalledUpstream reads only the head of each request, then nothing more
// until the test ends.
func stalledUpstream(t *testing.T) (string, string) {
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	return rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		for {
			line, err := br.ReadString('\n')
			if err != nil || line == "\r\n" {
				break
			}
		}
		<-done
	})
}

// TestAppGoneMidUploadCancelsUpstream: an app that disconnects in the
// middle of its upload cancels the upstream request at once, and its
// record says 499 client_closed.
func TestAppGoneMidUploadCancelsUpstream(t *testing.T) {
	got := make(chan int64, 1)
	reading := make(chan struct{}) // the upload has begun to reach the upstream
	// Not newUpstream: its recorder reads the whole body before the
	// handler runs, and the handler must see the upload begin.
	u := &upstream{}
	u.Server, u.caFile = newTLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		first, _ := r.Body.Read(make([]byte, 1))
		close(reading)
		n, _ := io.Copy(io.Discard, r.Body) // reads as long as till sends
		got <- int64(first) + n
	}))
	tl := startTill(t, uploadConfig(u), providerSecrets, u.caFile)
	c, err := net.Dial("tcp", tl.addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST /up/v1/files HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n", 32<<20)
	c.Write(make([]byte, 256<<10))
	select {
	case <-reading:
	case <-time.After(10 * time.Second):
		t.Fatal("the upload did not reach the upstream")
	}
	c.Close()
	select {
	case n := <-got:
		if n >= 32<<20 {
			t.Errorf("the upstream got the whole body: %d bytes", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream request went on after the app left")
	}
	rec := lastAudit(t, tl)
	if rec["reason"] != "client_closed" || rec["status"] != float64(499) || rec["outcome"] != "error" {
		t.Errorf("record: %v", rec)
	}
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// lastAudit waits for the first request record and returns it.
func lastAudit(t *testing.T, tl *till) auditRecord {
	t.Helper()
	recs := tl.waitAudit(1)
	for _, r := range recs {
		if r["event"] == "request" && !strings.HasPrefix(fmt.Sprint(r["path"]), "/health") {
			return r
		}
	}
	t.Fatal("no request record")
	return nil
}
