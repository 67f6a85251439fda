package proxy

import (
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
