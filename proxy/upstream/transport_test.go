package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// newTransport returns a Transport whose idle connections close when the
// test ends.
func newTransport(t testing.TB, cfg Config) *Transport {
	tr := New(cfg)
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// countConns counts the connections a test server accepts.
func countConns(s *httptest.Server) *atomic.Int64 {
	var n atomic.Int64
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			n.Add(1)
		}
	}
	return &n
}

func get(t *testing.T, tr *Transport, url string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Trailer
}

func TestKeepAlive(t *testing.T) {
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.RequestURI(), r.Host)
	}))
	conns := countConns(s)
	s.Start()
	defer s.Close()
	tr := newTransport(t, Config{})
	for i := range 20 {
		code, body, _ := get(t, tr, s.URL+"/v1/x?i="+fmt.Sprint(i))
		if want := fmt.Sprintf("GET /v1/x?i=%d %s", i, s.Listener.Addr()); code != 200 || body != want {
			t.Fatalf("got %d %q, want 200 %q", code, body, want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("20 sequential requests used %d connections, want 1", n)
	}
}

func TestConcurrentRequests(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Query().Get("n"))
	}))
	defer s.Close()
	tr := newTransport(t, Config{MaxIdlePerHost: 4})
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				n := fmt.Sprint(i*100 + j)
				if _, body, _ := get(t, tr, s.URL+"/?n="+n); body != n {
					t.Errorf("got %q, want %q: responses crossed", body, n)
				}
			}
		}()
	}
	wg.Wait()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for key, list := range tr.idle {
		if len(list) > 4 {
			t.Errorf("%s keeps %d idle connections, want at most 4", key, len(list))
		}
	}
}

// rawServer runs handle on each connection it accepts.
func rawServer(t *testing.T, handle func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c, bufio.NewReader(c))
			}()
		}
	}()
	return "http://" + l.Addr().String()
}

// waitIdle waits until every idle connection of tr is in the state
// idleHealthy reports as healthy, and fails the test after 10 s: it is how
// a test knows that what an upstream sent to an idle connection (a FIN,
// stray bytes) has arrived.
func waitIdle(t *testing.T, tr *Transport, healthy bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		tr.mu.Lock()
		settled := true
		for _, list := range tr.idle {
			for _, c := range list {
				settled = settled && idleHealthy(c.nc) == healthy
			}
		}
		tr.mu.Unlock()
		if settled {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("idle connections not healthy=%v after 10s", healthy)
		}
	}
}

// readRequest reads one request and its body.
func readRequest(br *bufio.Reader) (*http.Request, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, req.Body)
	return req, err
}

func TestClosedIdleConnectionIsNotUsed(t *testing.T) {
	var conns atomic.Int64
	url := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		conns.Add(1)
		if _, err := readRequest(br); err != nil {
			return
		}
		// A keep-alive answer, then the server's idle timeout closes it.
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	tr := newTransport(t, Config{})
	for range 5 {
		// A POST with a body: sent on a closed connection, it could not
		// be sent again.
		req, _ := http.NewRequest("POST", url, strings.NewReader("{}"))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("sent on a connection the upstream had closed: %v", err)
		}
		resp.Body.Close()
		waitIdle(t, tr, false) // the FIN arrives
	}
	if n := conns.Load(); n != 5 {
		t.Errorf("%d connections, want 5 (one per request)", n)
	}
}

// TestRetryOnReusedConnection: an upstream that closes a kept-alive
// connection just as the next request arrives gets a safe request again on
// a new connection, and an unsafe one is not repeated.
func TestRetryOnReusedConnection(t *testing.T) {
	var seen atomic.Int64
	url := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
		// The next request is read and dropped without an answer.
		if req, err := readRequest(br); err == nil {
			seen.Add(1)
			if req.Method == "POST" {
				return
			}
		}
	})
	for _, tc := range []struct {
		method  string
		body    io.Reader
		headers map[string]string
		retried bool
	}{
		{"GET", nil, nil, true},
		{"HEAD", nil, nil, true},
		{"POST", strings.NewReader("{}"), nil, false},
		{"POST", nil, map[string]string{"Idempotency-Key": "k1"}, true},
		{"DELETE", nil, nil, false},
	} {
		t.Run(tc.method, func(t *testing.T) {
			seen.Store(0)
			tr := newTransport(t, Config{})
			get(t, tr, url)
			req, _ := http.NewRequest(tc.method, url, tc.body)
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resends := 0
			resp, err := tr.Send(req, 0, resendHooks(func() error { resends++; return nil }))
			if tc.retried {
				if err != nil {
					t.Fatalf("not retried: %v", err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				if resends != 1 {
					t.Errorf("Resend was called %d times before a second send, want 1", resends)
				}
				return
			}
			if err == nil {
				resp.Body.Close()
				t.Fatal("an unsafe request was sent twice")
			}
			if n := seen.Load(); n != 1 {
				t.Errorf("the upstream saw it %d times, want 1", n)
			}
		})
	}
}

// resendHooks calls f before a request is sent again.
type resendHooks func() error

func (resendHooks) Informational(int, http.Header) error { return nil }
func (f resendHooks) Resend() error                      { return f() }

// TestResendRefused: a request whose second send its Resend hook refuses
// (its key use could not be recorded) is sent once.
func TestResendRefused(t *testing.T) {
	var seen atomic.Int64
	served := make(chan struct{}, 8) // a connection's handler has ended
	url := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		defer func() { served <- struct{}{} }()
		if _, err := readRequest(br); err != nil {
			return
		}
		seen.Add(1)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
		if _, err := readRequest(br); err == nil {
			seen.Add(1) // read and dropped without an answer
		}
	})
	tr := newTransport(t, Config{})
	get(t, tr, url)
	req, _ := http.NewRequest("GET", url, nil)
	refused := errors.New("cannot record")
	_, err := tr.Send(req, 0, resendHooks(func() error { return refused }))
	if err == nil || errors.Is(err, refused) {
		t.Fatalf("got %v, want the first send's error", err)
	}
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream is still reading the second request")
	}
	if n := seen.Load(); n != 2 {
		t.Errorf("the upstream saw %d requests, want 2 (one per send)", n)
	}
}

// TestUnsolicitedResponseIsDiscarded: bytes an upstream sends on an idle
// connection are never read as the next request's response.
func TestUnsolicitedResponseIsDiscarded(t *testing.T) {
	answered := make(chan struct{}, 3) // the client has read an answer
	url := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		for i := 0; ; i++ {
			req, err := readRequest(br)
			if err != nil {
				return
			}
			body := req.URL.Path
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			select {
			case <-answered:
			case <-time.After(10 * time.Second):
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!")
		}
	})
	tr := newTransport(t, Config{})
	for _, p := range []string{"/one", "/two", "/three"} {
		if _, body, _ := get(t, tr, url+p); body != p {
			t.Fatalf("got %q, want %q", body, p)
		}
		answered <- struct{}{}
		waitIdle(t, tr, false) // the unsolicited answer has arrived
	}
}

func TestHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer s.Close()
	defer close(release)
	tr := newTransport(t, Config{})
	req, _ := http.NewRequest("GET", s.URL, nil)
	start := time.Now()
	_, err := tr.Send(req, 100*time.Millisecond, nil)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("got %v, want a timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the timeout took %v", d)
	}
}

// TestHeaderTimeoutIsNotRetried: a request that times out on a reused
// connection is not sent again, since the upstream may be working on it.
func TestHeaderTimeoutIsNotRetried(t *testing.T) {
	var requests atomic.Int64
	release := make(chan struct{})
	url := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		for {
			if _, err := readRequest(br); err != nil {
				return
			}
			if requests.Add(1) > 1 {
				<-release // never answers
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	defer close(release)
	tr := newTransport(t, Config{})
	if code, _, _ := get(t, tr, url); code != 200 {
		t.Fatalf("warm-up: got %d", code)
	}
	req, _ := http.NewRequest("GET", url, nil)
	_, err := tr.Send(req, 100*time.Millisecond, nil)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("got %v, want a timeout", err)
	}
	if n := requests.Load(); n != 2 {
		t.Errorf("the upstream received %d requests, want 2: the timed-out one was sent again", n)
	}
}

// TestHeaderTimeoutCountsFromEndOfUpload: a slow upload is not cut by the
// wait for the response.
func TestHeaderTimeoutCountsFromEndOfUpload(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprint(w, len(b))
	}))
	defer s.Close()
	tr := newTransport(t, Config{})
	pr, pw := io.Pipe()
	go func() {
		for range 4 {
			time.Sleep(100 * time.Millisecond) // the scenario: an upload slower than the header timeout
			pw.Write([]byte("abcd"))
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", s.URL, pr)
	resp, err := tr.Send(req, 150*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "16" {
		t.Errorf("got %q", b)
	}
}

// TestEarlyAnswerToUpload: an upstream that refuses a large upload without
// reading it is heard, not deadlocked on.
func TestEarlyAnswerToUpload(t *testing.T) {
	answered := make(chan struct{}) // closed once the client has the answer
	url := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 7\r\nConnection: close\r\n\r\ntoo big")
		// Closing with the upload unread would reset the connection, and
		// the reset could destroy the answer before the client reads it.
		select {
		case <-answered:
		case <-time.After(10 * time.Second):
		}
	})
	defer close(answered)
	tr := newTransport(t, Config{})
	endless := io.LimitReader(neverEnding('x'), 1<<30)
	req, _ := http.NewRequest("POST", url, io.NopCloser(endless))
	req.ContentLength = 1 << 30
	resp, err := tr.Send(req, 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 || string(b) != "too big" {
		t.Errorf("got %d %q", resp.StatusCode, b)
	}
}

// TestEarlyAnswerDuringUpload: a connection whose upload is still being
// written when the response has ended does not go back to the pool, where
// the next request would be written into the middle of the upload.
func TestEarlyAnswerDuringUpload(t *testing.T) {
	var conns atomic.Int64
	url := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		conns.Add(1)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.Method == "POST" {
				io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nnope")
				// The upload goes on, and whatever else comes on this
				// connection is taken as part of it, never answered.
				io.Copy(io.Discard, br)
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	tr := newTransport(t, Config{})
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write(make([]byte, 16<<10)) // then the upload stalls, unfinished
	req, _ := http.NewRequest("POST", url, pr)
	resp, err := tr.Send(req, 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("got %d, want the early 401", resp.StatusCode)
	}
	req, _ = http.NewRequest("GET", url, nil)
	resp, err = tr.Send(req, 2*time.Second, nil)
	if err != nil {
		t.Fatalf("the next request: %v", err)
	}
	resp.Body.Close()
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2: the one with the upload unfinished was reused", n)
	}
}

type neverEnding byte

func (b neverEnding) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

func TestCancelEndsBody(t *testing.T) {
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/short" {
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for r.Context().Err() == nil {
			io.WriteString(w, "data: x\n\n")
			w.(http.Flusher).Flush()
			time.Sleep(10 * time.Millisecond) // paced on purpose: a stream that lasts
		}
	}))
	conns := countConns(s)
	s.Start()
	defer s.Close()
	tr := newTransport(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Read(make([]byte, 64))
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Fatal("the stream ended cleanly after its context was cancelled")
	}
	resp.Body.Close()
	get(t, tr, s.URL+"/short") // a new connection: the cancelled one is gone
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// TestCloseDoesNotDrain: abandoning a large body closes the connection at
// once instead of reading the rest.
func TestCloseDoesNotDrain(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(1<<30))
		io.Copy(w, io.LimitReader(neverEnding('y'), 1<<30))
	}))
	defer s.Close()
	tr := newTransport(t, Config{})
	req, _ := http.NewRequest("GET", s.URL, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Read(make([]byte, 1024))
	done := make(chan struct{})
	go func() { resp.Body.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close is draining a 1 GiB body")
	}
	if n := len(tr.idle); n != 0 {
		t.Errorf("the abandoned connection went back to the pool")
	}
}

// TestConcurrentClose: Close from another goroutine ends a blocked Read
// (the race detector checks the rest).
func TestConcurrentClose(t *testing.T) {
	release := make(chan struct{})
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-release
	}))
	defer s.Close()
	defer close(release)
	tr := newTransport(t, Config{})
	req, _ := http.NewRequest("GET", s.URL, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, func() { resp.Body.Close() })
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("Read ended cleanly after Close")
	}
}

func TestInformationalResponses(t *testing.T) {
	url := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := readRequest(br)
			if err != nil {
				return
			}
			n := len(req.URL.Query().Get("hints"))
			for range n {
				io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	tr := newTransport(t, Config{})
	var got []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		got = append(got, fmt.Sprint(code, " ", h.Get("Link")))
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", url+"?hints=xx", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "103 </a.css>; rel=preload"; len(got) != 2 || got[0] != want {
		t.Errorf("1xx seen: %q, want two of %q", got, want)
	}
	req, _ = http.NewRequest("GET", url+"?hints=xxxxxxxxxx", nil)
	if _, err := tr.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "too many 1xx") {
		t.Errorf("ten 1xx responses: got %v", err)
	}
}

func TestUnexpectedSwitchingProtocols(t *testing.T) {
	url := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		readRequest(br)
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	})
	tr := New(Config{})
	req, _ := http.NewRequest("GET", url, nil)
	if _, err := tr.RoundTrip(req); err == nil {
		t.Error("a 101 to a request that did not ask to upgrade was accepted")
	}
}

func TestResponseHeadersTooLarge(t *testing.T) {
	url := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		readRequest(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("a", 128<<10)+"\r\nContent-Length: 0\r\n\r\n")
	})
	tr := New(Config{MaxResponseHeaderBytes: 64 << 10})
	req, _ := http.NewRequest("GET", url, nil)
	if _, err := tr.RoundTrip(req); !errors.Is(err, errHeadTooLarge) {
		t.Errorf("got %v, want %v", err, errHeadTooLarge)
	}
}

func TestChunkedTrailersHeadAndClose(t *testing.T) {
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/trailer":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "chunk")
			w.(http.Flusher).Flush()
			io.WriteString(w, "ed")
			w.Header().Set("X-Sum", "42")
		case "/close":
			w.Header().Set("Connection", "close")
			io.WriteString(w, "bye")
		default:
			w.Header().Set("Content-Length", "10")
			if r.Method != "HEAD" {
				io.WriteString(w, "0123456789")
			}
		}
	}))
	conns := countConns(s)
	s.Start()
	defer s.Close()
	tr := newTransport(t, Config{})
	if _, body, trailer := get(t, tr, s.URL+"/trailer"); body != "chunked" || trailer.Get("X-Sum") != "42" {
		t.Errorf("chunked: got %q, trailer %v", body, trailer)
	}
	req, _ := http.NewRequest("HEAD", s.URL+"/head", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil || resp.ContentLength != 10 {
		t.Fatalf("HEAD: %v %v", resp, err)
	}
	resp.Body.Close()
	get(t, tr, s.URL+"/plain")
	if n := conns.Load(); n != 1 {
		t.Errorf("chunked, HEAD and plain used %d connections, want 1", n)
	}
	get(t, tr, s.URL+"/close")
	get(t, tr, s.URL+"/plain")
	if n := conns.Load(); n != 2 {
		t.Errorf("after Connection: close, %d connections, want 2", n)
	}
}

func TestIdleTimeout(t *testing.T) {
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	closed := make(chan struct{}, 1)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			closed <- struct{}{}
		}
	}
	s.Start()
	defer s.Close()
	tr := New(Config{IdleTimeout: 50 * time.Millisecond})
	get(t, tr, s.URL)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("an idle connection outlived the idle timeout")
	}
}

func TestBadRequests(t *testing.T) {
	tr := New(Config{})
	for _, u := range []string{"https://example.com/", "ftp://example.com/", "http:///nohost"} {
		req, _ := http.NewRequest("GET", u, nil)
		if _, err := tr.RoundTrip(req); err == nil {
			t.Errorf("%s: no error", u)
		}
	}
}

func TestHostPort(t *testing.T) {
	for _, tc := range [][2]string{
		{"example.com", "example.com:80"},
		{"example.com:8080", "example.com:8080"},
		{"[::1]", "[::1]:80"},
		{"[::1]:81", "[::1]:81"},
	} {
		if got := hostPort(tc[0]); got != tc[1] {
			t.Errorf("hostPort(%q) = %q, want %q", tc[0], got, tc[1])
		}
	}
}

// BenchmarkRoundTrip compares this transport with net/http's on the same
// keep-alive exchange: wall time, and CPU time of the whole process (client
// and test server) per round trip.
func BenchmarkRoundTrip(b *testing.B) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"id":"chatcmpl-bench","object":"chat.completion","choices":[]}`)
	}))
	defer s.Close()
	for _, tc := range []struct {
		name string
		rt   http.RoundTripper
	}{
		{"upstream", New(Config{})},
		{"net-http", &http.Transport{DisableCompression: true}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			cpu0 := processCPU()
			for b.Loop() {
				req, _ := http.NewRequest("GET", s.URL+"/v1/chat/completions", nil)
				resp, err := tc.rt.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// TestBodyErrorIsReturned: when the request body fails, Send says why
// (here the gateway's body limit), not that the connection broke.
func TestBodyErrorIsReturned(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	}))
	defer s.Close()
	tr := newTransport(t, Config{})
	body := http.MaxBytesReader(nil, io.NopCloser(io.LimitReader(neverEnding('z'), 1<<20)), 1000)
	req, _ := http.NewRequest("POST", s.URL, body)
	req.ContentLength = -1
	_, err := tr.Send(req, 5*time.Second, nil)
	var tooBig *http.MaxBytesError
	if !errors.As(err, &tooBig) {
		t.Errorf("got %v, want an *http.MaxBytesError", err)
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestBodyUntilCloseAndNoContent: a response without a length ends when the upstream
// closes, and its connection is not reused; a 204 has no body and its
// connection is.
func TestBodyUntilCloseAndNoContent(t *testing.T) {
	var conns atomic.Int64
	url := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		conns.Add(1)
		for {
			req, err := readRequest(br)
			if err != nil {
				return
			}
			if req.URL.Path == "/eof" {
				io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\nuntil the end")
				return
			}
			io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
		}
	})
	tr := newTransport(t, Config{})
	if _, body, _ := get(t, tr, url+"/eof"); body != "until the end" {
		t.Fatalf("got %q", body)
	}
	for range 3 {
		if code, body, _ := get(t, tr, url+"/none"); code != 204 || body != "" {
			t.Fatalf("got %d %q", code, body)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (one closed by the upstream, one for the 204s)", n)
	}
}

// writeCounter counts the writes on the connections it dials.
type writeCounter struct {
	net.Conn
	n *atomic.Int64
}

func (w writeCounter) Write(p []byte) (int, error) {
	w.n.Add(1)
	return w.Conn.Write(p)
}

// TestSmallBodyGoesWithTheHead: a small body with a Content-Length is read
// first and sent with the head in one write; one without a length is
// streamed after the head.
func TestSmallBodyGoesWithTheHead(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprint(w, len(b))
	}))
	defer s.Close()
	var writes atomic.Int64
	var d net.Dialer
	tr := newTransport(t, Config{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		return writeCounter{c, &writes}, err
	}})
	for _, tc := range []struct {
		length int64
		writes int64 // at most, for the request
	}{
		{1000, 1},
		{-1, 3}, // the head, then the chunk and the last chunk
	} {
		writes.Store(0)
		body := strings.Repeat("b", 1000)
		req, _ := http.NewRequest("POST", s.URL, io.NopCloser(strings.NewReader(body)))
		req.ContentLength = tc.length
		resp, err := tr.Send(req, 5*time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		n := writes.Load()
		if string(b) != "1000" || n > tc.writes || tc.length < 0 && n < 2 {
			t.Errorf("Content-Length %d: upstream read %s bytes, in %d writes", tc.length, b, n)
		}
	}
}

// TestSmallBodyErrors: a small body that fails, or is shorter or longer than
// its Content-Length, fails the request with the body's own error, before
// anything is sent.
func TestSmallBodyErrors(t *testing.T) {
	var received atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		received.Add(1)
		io.Copy(io.Discard, r.Body)
	}))
	defer s.Close()
	tr := newTransport(t, Config{})
	send := func(body io.Reader, length int64) error {
		req, _ := http.NewRequest("POST", s.URL, io.NopCloser(body))
		req.ContentLength = length
		resp, err := tr.Send(req, 5*time.Second, nil)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	tooBig := http.MaxBytesReader(nil, io.NopCloser(strings.NewReader(strings.Repeat("z", 2000))), 1000)
	var mbe *http.MaxBytesError
	if err := send(tooBig, 2000); !errors.As(err, &mbe) {
		t.Errorf("over max_body: got %v, want an *http.MaxBytesError", err)
	}
	if err := send(strings.NewReader("short"), 100); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("shorter than its Content-Length: got %v, want io.ErrUnexpectedEOF", err)
	}
	if err := send(strings.NewReader("longer than said"), 4); err == nil || !strings.Contains(err.Error(), "longer than its Content-Length") {
		t.Errorf("longer than its Content-Length: got %v", err)
	}
	if n := received.Load(); n != 0 {
		t.Errorf("the upstream received %d requests with a broken body", n)
	}
	if err := send(strings.NewReader("fine"), 4); err != nil || received.Load() != 1 {
		t.Errorf("a good body after them: %v, %d received", err, received.Load())
	}
}
