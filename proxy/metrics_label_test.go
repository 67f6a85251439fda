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
)

// TestMetricsModelLabelNeverAKey: on a metered route, the model an
// upstream's answer names labels till_usage_unpriced_total when the
// request named none. An upstream that sends the key back as that model
// gets "other" there: a key never reaches metrics.
func TestMetricsModelLabelNeverAKey(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"x","object":"chat.completion","model":"`+key+`","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`)
	}))
	defer up.Close()
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: "+up.URL+"}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(testAudit(io.Discard))
	gw := New(NewSnapshot(cfg, secrets(time.Now())), Options{Audit: testAudit(io.Discard), Log: zerolog.Nop(), Metrics: m})
	front := httptest.NewServer(gw)
	defer front.Close()
	resp, err := http.Post(front.URL+"/openai/v1/chat/completions", "application/json", strings.NewReader(`{"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	admin := NewAdmin(AdminOptions{Gateway: gw, Metrics: m})
	rec := httptest.NewRecorder()
	admin.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if strings.Contains(line, "test-key-0123456789") {
			t.Errorf("the route's key is in a metrics label: %s", line)
		}
	}
}

// TestMetricsModelLabelNeverAToken: the model an app asks for labels
// till_usage_unpriced_total when the price table lacks it. An app that
// sends a till client token there (its own, or one it holds, pasted in
// the wrong field) must not put it in every scrape: a token is no model
// name, and labels hold names only.
func TestMetricsModelLabelNeverAToken(t *testing.T) {
	const token = "till_ModelFieldToken0123456789abcdefghijKLMNO"
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`)
	}))
	defer up.Close()
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: "+up.URL+"}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(testAudit(io.Discard))
	gw := New(NewSnapshot(cfg, secrets(time.Now())), Options{Audit: testAudit(io.Discard), Log: zerolog.Nop(), Metrics: m})
	front := httptest.NewServer(gw)
	defer front.Close()
	for _, model := range []string{token, "x/" + token, token + "-mini"} {
		resp, err := http.Post(front.URL+"/openai/v1/chat/completions", "application/json", strings.NewReader(`{"model":"`+model+`","messages":[]}`))
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	admin := NewAdmin(AdminOptions{Gateway: gw, Metrics: m})
	rec := httptest.NewRecorder()
	admin.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), `till_usage_unpriced_total{model="other",route="openai"} 3`) {
		t.Errorf("no unpriced count of 3 under other:\n%s", rec.Body.String())
	}
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if strings.Contains(line, "till_Model") {
			t.Errorf("a client token is in a metrics label: %s", line)
		}
	}
}
