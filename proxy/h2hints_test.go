package proxy

import (
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// stuckInformational is an app's connection that takes no informational
// response (1xx): its write waits until released, as a write to an app
// whose socket buffers are full (it reads nothing) does.
type stuckInformational struct {
	http.ResponseWriter
	writing  chan struct{}
	released chan struct{}
}

func (w stuckInformational) WriteHeader(code int) {
	if code < 200 {
		w.writing <- struct{}{}
		<-w.released
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w stuckInformational) Flush() { w.ResponseWriter.(http.Flusher).Flush() }

func (w stuckInformational) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestStuckHintHoldsNoOtherRequest: an upstream's 1xx (103 Early Hints,
// 100 Continue to an app's Expect) is reported on the goroutine that
// reads the upstream's HTTP/2 connection, which every request to that
// upstream shares. Written to the app there, a write that waited (an app
// that reads nothing, its socket buffers full) kept that connection from
// being read: every other app's request on it waited too, until its
// route's timeout. The 1xx now goes to the app from a goroutine of its
// own, and the others' answers come.
func TestStuckHintHoldsNoOtherRequest(t *testing.T) {
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hint" {
			w.Header().Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
		}
		io.WriteString(w, "ok")
	}))
	up.EnableHTTP2 = true
	up.StartTLS()
	defer up.Close()
	tr := NewTransport()
	tr.TLSClientConfig.RootCAs = x509.NewCertPool()
	tr.TLSClientConfig.RootCAs.AddCert(up.Certificate())
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: api, upstream: \""+up.URL+"\", secret: api, timeout: 20s, inject: {header: Authorization, format: \"Bearer {secret}\"}}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gw := New(NewSnapshot(cfg, map[string]vault.Secret{"api": vault.NewSecret("api", testKey, time.Now())}), Options{Audit: testAudit(io.Discard), Log: zerolog.Nop(), Transport: tr})
	stuck := stuckInformational{writing: make(chan struct{}, 1), released: make(chan struct{})}
	stuckDone := make(chan struct{})
	defer func() { close(stuck.released); <-stuckDone }()
	go func() {
		defer close(stuckDone)
		stuck.ResponseWriter = httptest.NewRecorder()
		gw.ServeHTTP(stuck, httptest.NewRequest("GET", "/api/hint", nil))
	}()
	select {
	case <-stuck.writing:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream's 103 never reached the app")
	}
	answered := make(chan int, 1)
	go func() {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/other", nil))
		answered <- w.Code
	}()
	select {
	case code := <-answered:
		if code != http.StatusOK {
			t.Errorf("another app's request: %d, want 200", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("another app's request to the upstream waits on the write of a 103 to an app that takes none")
	}
}
