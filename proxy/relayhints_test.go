package proxy

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestRelayedHintToAppThatReadsNothing: a host without a route answers a
// relayed request with informational responses (103 Early Hints) whose
// headers fill the socket buffers of an app that reads nothing. The
// relay's connections to the host are HTTP/1, one request at a time, so
// no other app's request waits on that write; and the write is cut as an
// answer's is once it has waited answerIdleTimeout, the request recorded
// as the app's leaving.
func TestRelayedHintToAppThatReadsNothing(t *testing.T) {
	withAnswerIdleTimeout(t, 300*time.Millisecond)
	link := "<" + strings.Repeat("a", 100<<10) + ">; rel=preload"
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hint" {
			for range 5 { // net/http's Transport takes 5 at most
				w.Header().Set("Link", link)
				w.WriteHeader(http.StatusEarlyHints)
			}
			w.Header().Del("Link")
		}
		w.Write([]byte("ok"))
	}))
	defer up.Close()
	gw, records := newTestGateway(t, "version: 1\nforward: {enabled: true, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\nroutes: []\n", "", nil)
	front := httptest.NewUnstartedServer(gw)
	front.Listener = smallSendBuffers{front.Listener}
	front.Start()
	defer front.Close()

	raw, err := net.Dial("tcp", front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(raw, "GET %s/hint HTTP/1.1\r\nHost: %s\r\n\r\n", up.URL, up.Listener.Addr())

	time.Sleep(100 * time.Millisecond) // the 103s are on their way
	other, err := http.NewRequest("GET", up.URL+"/other", nil)
	if err != nil {
		t.Fatal(err)
	}
	proxyURL, _ := url.Parse("http://" + front.Listener.Addr().String())
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}, Timeout: 5 * time.Second}
	res, err := client.Do(other)
	if err != nil {
		t.Fatalf("another app's relayed request: %v", err)
	}
	res.Body.Close()

	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, rec := range records.records(t) {
			if rec["path"] == "/hint" {
				if rec["reason"] != codeClientClosed {
					t.Errorf("the hinted request's record says %v, want %s", rec["reason"], codeClientClosed)
				}
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the relayed request whose 103 the app never reads is still held")
}
