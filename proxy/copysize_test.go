package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// writeSizes is a ResponseWriter that keeps the largest write it took.
type writeSizes struct {
	*httptest.ResponseRecorder
	largest int
}

func (w *writeSizes) Write(p []byte) (int, error) {
	w.largest = max(w.largest, len(p))
	return w.ResponseRecorder.Write(p)
}

// TestAnswersCopiedInEightKiB: the answers httputil.ReverseProxy copies
// (the relay to hosts without a route, an upgrade the upstream declines)
// reach the app in writes of 8 KiB at most, as routes' answers do: the
// docs' bound on an app that reads slowly (a write not taken in 60 s is
// cut, so under ~8 KB a minute) holds for them too, and no copy takes
// ReverseProxy's own 32 KiB buffer per request. Caught: both wrote 32 KiB.
// The relay's host is another server than the route's upstream: a
// request to the route's host would go by the route.
func TestAnswersCopiedInEightKiB(t *testing.T) {
	body := strings.Repeat("x", 100<<10)
	answer := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body)
	})
	up, other := httptest.NewServer(answer), httptest.NewServer(answer)
	defer up.Close()
	defer other.Close()
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nforward: {enabled: true, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\nroutes:\n  - {name: ws, preset: openai, prefix: /ws, upstream: "+up.URL+", secret: k}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	snap := NewSnapshot(cfg, map[string]vault.Secret{"k": vault.NewSecret("k", testKey, time.Now())})
	gw := New(snap, Options{Audit: testAudit(io.Discard), Log: zerolog.Nop()})
	for name, r := range map[string]*http.Request{
		"relay":            httptest.NewRequest("GET", other.URL+"/p", nil),
		"declined upgrade": upgradeRequest("/ws/v1/realtime"),
	} {
		t.Run(name, func(t *testing.T) {
			r.RemoteAddr = "127.0.0.1:4000"
			w := &writeSizes{ResponseRecorder: httptest.NewRecorder()}
			gw.ServeHTTP(w, r)
			if w.Code != http.StatusOK || w.Body.Len() != len(body) {
				t.Fatalf("got %d with %d bytes, want 200 with %d", w.Code, w.Body.Len(), len(body))
			}
			if w.largest > 8<<10 {
				t.Errorf("the answer went to the app in writes of up to %d bytes, want 8 KiB at most", w.largest)
			}
		})
	}
}

// upgradeRequest asks, on the reverse listener, to switch path to WebSocket.
func upgradeRequest(path string) *http.Request {
	r := httptest.NewRequest("GET", path, nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	return r
}
