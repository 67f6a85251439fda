package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
)

// TestUsageURLWithRedis: till usage --url asks that admin listener even
// when the config sets limits.redis. It read Redis instead, saying
// nothing of the --url it was given: from a machine that reaches the
// admin listener and not Redis, it failed on a Redis it was not asked to
// read.
func TestUsageURLWithRedis(t *testing.T) {
	c := newCLI(t)
	var asked atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		w.Write([]byte(`[{"budget":"web-daily","counter":"anonymous","kind":"requests","limit":5,"used":1,"remaining":4,"reset":null}]`))
	}))
	defer srv.Close()
	// Port 1: no Redis answers there.
	os.WriteFile("till.yaml", []byte("version: 1\nlimits: {redis: \"redis://127.0.0.1:1/0\"}\nroutes: []\nbudgets: [{name: web-daily, window: day, requests: 5}]\n"), 0o644)
	out, errOut, code := c.run("", "usage", "--url", srv.URL)
	if code != 0 || !strings.Contains(out, "web-daily") || asked.Load() != 1 {
		t.Errorf("usage --url with limits.redis: exit %d, admin asked %d times: %s%s", code, asked.Load(), out, errOut)
	}
}
