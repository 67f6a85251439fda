package upstream

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// FuzzResponse feeds arbitrary bytes to the transport as an upstream's
// answer: it must not panic nor hang, must end the body within the
// upstream's bytes, and must never pool a connection with bytes left over
// (those would be read as the next request's response).
func FuzzResponse(f *testing.F) {
	for _, seed := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nuntil close",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, answer []byte) {
		server, client := net.Pipe()
		defer server.Close()
		go func() {
			if _, err := http.ReadRequest(bufio.NewReader(server)); err != nil {
				return
			}
			server.Write(answer)
			server.Close()
		}()
		tr := New(Config{
			Dial: func(context.Context, string, string) (net.Conn, error) { return client, nil },
		})
		defer tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://upstream.test/v1", nil)
		resp, err := tr.Send(req, time.Second, nil)
		if err != nil {
			return
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if ctx.Err() != nil {
			t.Fatal("the body did not end")
		}
		if n > int64(len(answer)) {
			t.Fatalf("read %d body bytes from a %d-byte answer", n, len(answer))
		}
		tr.mu.Lock()
		defer tr.mu.Unlock()
		for _, list := range tr.idle {
			for _, c := range list {
				if c.br.Buffered() > 0 {
					t.Fatal("a connection with unread bytes went back to the pool")
				}
			}
		}
	})
}
