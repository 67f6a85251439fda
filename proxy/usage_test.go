package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// chatAnswer is a chat completion of about 1 kB with its usage.
var chatAnswer = `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini-2024-07-18",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":"` + strings.Repeat("dolor sit amet ", 48) + `"},"finish_reason":"stop"}],` +
	`"usage":{"prompt_tokens":240,"completion_tokens":180,"total_tokens":420,"prompt_tokens_details":{"cached_tokens":40}}}`

// streamChunk is one event of a streamed chat completion.
var streamChunk = `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18",` +
	`"choices":[{"index":0,"delta":{"content":" word"},"finish_reason":null}],"usage":null}` + "\n\n"

// BenchmarkHandlerUsage measures the gateway's work per 1 kB chat request,
// answered with 1 kB of JSON or a 500-event stream, on a route that meters
// usage and on the same route without.
func BenchmarkHandlerUsage(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if strings.HasSuffix(r.URL.Path, "/stream500") {
			w.Header().Set("Content-Type", "text/event-stream")
			for range 500 {
				io.WriteString(w, streamChunk)
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, chatAnswer)
	}))
	defer up.Close()
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + strings.Repeat("lorem ipsum ", 80) + `"}]}`
	for _, c := range []struct{ usage, path string }{{"none", "/v1/chat/completions"}, {"openai", "/v1/chat/completions"}, {"none", "/v1/stream500"}, {"openai", "/v1/stream500"}} {
		usage := c.usage
		b.Run("usage="+usage+c.path, func(b *testing.B) {
			gw, _ := newTestGateway(b, "version: 1\nroutes:\n  - {name: openai, preset: openai, usage: "+usage+", upstream: {{UP}}}\n", up.URL, secrets(time.Now()))
			gw.audit = testAudit(io.Discard)
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				r := httptest.NewRequest("POST", "/openai"+c.path, strings.NewReader(body))
				r.Header.Set("Content-Type", "application/json")
				gw.ServeHTTP(w, r)
				if w.Code != 200 {
					b.Fatal(w.Code)
				}
			}
		})
	}
}

// An Upgrade header the upstream declines does not take a request around
// the usage meter: its tokens count against the budget like any other's,
// and a request that is no upgrade (no Connection: upgrade) is sent as
// any other is.
func TestUpgradeDeclinedIsMetered(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"x","model":"gpt-4o-mini","usage":{"prompt_tokens":500,"completion_tokens":500,"total_tokens":1000}}`)
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: " + up.URL + "}\nbudgets:\n  - {name: b, window: 1d, tokens: 2500}\n"
	gw, buf := newTestGateway(t, y, up.URL, secrets(time.Now()))
	srv := httptest.NewServer(gw)
	defer srv.Close()
	var codes []int
	for _, connection := range []string{"Upgrade", "", "keep-alive, upgrade", "Upgrade"} {
		req, _ := http.NewRequest("POST", srv.URL+"/openai/v1/audio/transcriptions", strings.NewReader("RIFFxxxx"))
		req.Header.Set("Content-Type", "audio/wav") // a body streamed, never held
		req.Header.Set("Upgrade", "foo")
		if connection != "" {
			req.Header.Set("Connection", connection)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		codes = append(codes, res.StatusCode)
	}
	if want := []int{200, 200, 200, 429}; fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Errorf("statuses %v, want %v: the fourth is past the 2,500 tokens the first three used", codes, want)
	}
	for i, r := range buf.records(t)[:3] {
		if r["tokens_in"] != 500.0 || r["tokens_out"] != 500.0 {
			t.Errorf("request %d recorded tokens %v in, %v out; want 500 and 500", i+1, r["tokens_in"], r["tokens_out"])
		}
	}
}
