package proxy

import (
	"crypto/sha256"
	"encoding/hex"
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
	scrape := scrapeAfterPosts(t, func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"x","object":"chat.completion","model":"`+key+`","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`)
	}, `{"messages":[{"role":"user","content":"hi"}]}`)
	for _, line := range strings.Split(scrape, "\n") {
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
	var bodies []string
	for _, model := range []string{token, "x/" + token, token + "-mini"} {
		bodies = append(bodies, `{"model":"`+model+`","messages":[]}`)
	}
	scrape := scrapeAfterPosts(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`)
	}, bodies...)
	if !strings.Contains(scrape, `till_usage_unpriced_total{model="other",route="openai"} 3`) {
		t.Errorf("no unpriced count of 3 under other:\n%s", scrape)
	}
	for _, line := range strings.Split(scrape, "\n") {
		if strings.Contains(line, "till_Model") {
			t.Errorf("a client token is in a metrics label: %s", line)
		}
	}
}

// TestMetricsModelLabelNeverAHandMadeToken: a client's token made by hand
// (its token_sha256 of any token) has no shape that gives it away, but
// it is a client token all the same: pasted in the model field, and named
// back by an upstream that echoes the model asked for, it labels no
// series, as the audit record's model does not show it either.
func TestMetricsModelLabelNeverAHandMadeToken(t *testing.T) {
	const token = "till_handmade42"
	sum := sha256.Sum256([]byte(token))
	clients := "clients:\n  - {name: ci, token_sha256: " + hex.EncodeToString(sum[:]) + "}\n"
	for _, echo := range []bool{false, true} {
		scrape := scrapeAfterPostsWith(t, clients, func(w http.ResponseWriter, r *http.Request) {
			model := ""
			if echo {
				model = token
			}
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"x","object":"chat.completion","model":"`+model+`","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`)
		}, `{"model":"`+token+`","messages":[]}`)
		if !strings.Contains(scrape, `till_usage_unpriced_total{model="other",route="openai"} 1`) {
			t.Errorf("echo %v: no unpriced count of 1 under other:\n%s", echo, scrape)
		}
		if strings.Contains(scrape, token) {
			t.Errorf("echo %v: a client token made by hand is in a metrics label:\n%s", echo, scrape)
		}
	}
}

// scrapeAfterPosts posts each of bodies to a metered openai route whose
// upstream answers as upstream does, checks each got 200, and returns
// what the admin listener's /metrics then shows.
func scrapeAfterPosts(t *testing.T, upstream http.HandlerFunc, bodies ...string) string {
	t.Helper()
	return scrapeAfterPostsWith(t, "", upstream, bodies...)
}

// scrapeAfterPostsWith is scrapeAfterPosts with more of the config
// (clients:) before its routes.
func scrapeAfterPostsWith(t *testing.T, more string, upstream http.HandlerFunc, bodies ...string) string {
	t.Helper()
	up := httptest.NewServer(upstream)
	defer up.Close()
	cfg, err := config.Parse("till.yaml", []byte("version: 1\n"+more+"routes:\n  - {name: openai, preset: openai, upstream: "+up.URL+"}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(testAudit(io.Discard))
	gw := New(NewSnapshot(cfg, secrets(time.Now())), Options{Audit: testAudit(io.Discard), Log: zerolog.Nop(), Metrics: m})
	front := httptest.NewServer(gw)
	defer front.Close()
	for _, body := range bodies {
		resp, err := http.Post(front.URL+"/openai/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	rec := httptest.NewRecorder()
	NewAdmin(AdminOptions{Gateway: gw, Metrics: m}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// TestMetricsModelLabelNeverAProviderKey: an app that pastes a provider
// key it still holds in the model field, to an upstream that names the
// model asked for in its answer (as OpenAI-compatible servers do), must
// not put that key in a label either.
func TestMetricsModelLabelNeverAProviderKey(t *testing.T) {
	const held = "sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56"
	scrape := scrapeAfterPosts(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"x","object":"chat.completion","model":"`+held+`","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`)
	}, `{"model":"`+held+`","messages":[]}`)
	if !strings.Contains(scrape, `till_usage_unpriced_total{model="other",route="openai"} 1`) {
		t.Errorf("no unpriced count of 1 under other:\n%s", scrape)
	}
	if strings.Contains(scrape, held) {
		t.Errorf("a provider key is in a metrics label:\n%s", scrape)
	}
}
