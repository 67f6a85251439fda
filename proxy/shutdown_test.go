package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestShutdownCutIsRecordedAsShutdown ends the grace period while two
// requests are in flight, one still waiting for the upstream's headers and
// one streaming its body: till cut both, so their records say reason
// shutdown (not client_closed), with status 499 when nothing had gone out
// and the status sent otherwise.
func TestShutdownCutIsRecordedAsShutdown(t *testing.T) {
	arrived := make(chan struct{}, 2)
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/streaming") {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
		}
		arrived <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer up.Close()
	defer close(release)
	gw, audit := newTestGateway(t, baseYAML, up.URL, secrets(time.Now()))
	srv := httptest.NewUnstartedServer(gw)
	srv.Config.BaseContext = gw.BaseContext
	srv.Start()
	defer srv.Close()

	headers := make(chan struct{})
	for _, path := range []string{"/openai/v1/models/waiting", "/openai/v1/models/streaming"} {
		go func() {
			resp, err := http.Get(srv.URL + path)
			if err != nil {
				return
			}
			headers <- struct{}{}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	for range 2 {
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatal("the requests did not reach the upstream")
		}
	}
	<-headers // the streaming request's
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_ = gw.Shutdown(ctx) // past the grace: it cuts both
	want := map[string]float64{"/openai/v1/models/waiting": 499, "/openai/v1/models/streaming": 200}
	recs := audit.records(t)
	if len(recs) != 2 {
		t.Fatalf("got %d records, want 2: %v", len(recs), recs)
	}
	for _, r := range recs {
		if r["reason"] != "shutdown" || r["outcome"] != outcomeError || r["status"] != want[r["path"].(string)] {
			t.Errorf("%s: got status %v outcome %v reason %v, want %v error shutdown", r["path"], r["status"], r["outcome"], r["reason"], want[r["path"].(string)])
		}
	}
}
