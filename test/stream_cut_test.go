package test

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"
)

// reasoningLLM answers like OpenAI's reasoning models: a streamed answer
// whose first content delta comes only once the model has spent (and
// OpenAI bills) its hidden reasoning tokens, or a Responses stream that
// continues a stored conversation (previous_response_id) whose input the
// request body does not carry. The usage comes at the end, which an app
// that stops iterating early never lets through.
func reasoningLLM(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	f := w.(http.Flusher)
	wait := func() {
		select {
		case <-r.Context().Done():
		case <-time.After(2 * time.Second):
		}
	}
	switch r.URL.Path {
	case "/v1/chat/completions":
		io.WriteString(w, `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"o3-2025-04-16","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}`+"\n\n")
		f.Flush()
		io.WriteString(w, `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"o3-2025-04-16","choices":[{"index":0,"delta":{"content":"Paris"},"finish_reason":null}],"usage":null}`+"\n\n")
		f.Flush()
		wait()
		io.WriteString(w, `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"o3-2025-04-16","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}`+"\n\n")
		io.WriteString(w, `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"o3-2025-04-16","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":20001,"total_tokens":20021,"completion_tokens_details":{"reasoning_tokens":20000}}}`+"\n\ndata: [DONE]\n\n")
	case "/v1/responses":
		io.WriteString(w, "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_2\",\"object\":\"response\",\"status\":\"in_progress\",\"model\":\"o3-2025-04-16\",\"output\":[],\"usage\":null}}\n\n")
		f.Flush()
		io.WriteString(w, "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Paris\"}\n\n")
		f.Flush()
		wait()
		io.WriteString(w, "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_2\",\"object\":\"response\",\"status\":\"completed\",\"model\":\"o3-2025-04-16\",\"output\":[],\"usage\":{\"input_tokens\":50000,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":2,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":50002}}}\n\n")
	}
}

// TestStreamCutAfterFirstDeltaCharged: an app using the openai SDK
// breaks out of a stream at its first content delta (the SDK aborts the
// request). By then the provider had spent what it bills, which the
// answer tells only at its end: 20,000 reasoning tokens (o3, no
// max_completion_tokens), or the 50,000 input tokens of the conversation
// a Responses request continues (previous_response_id). An estimate from
// the body and the events seen comes to about 30 tokens; till reads the
// answer to its end instead, so the budget counts what the provider did.
func TestStreamCutAfterFirstDeltaCharged(t *testing.T) {
	for _, tt := range []struct {
		api   string
		spent float64
	}{
		{"chat", 20000},
		{"responses", 50000},
	} {
		t.Run(tt.api, func(t *testing.T) {
			up := newUpstream(t, http.HandlerFunc(reasoningLLM))
			cfg := "version: 1\nadmin: {listen: 127.0.0.1:0}\n" +
				"routes:\n  - {name: openai, preset: openai, upstream: \"" + up.URL + "\"}\n" +
				"budgets:\n  - {name: hourly, window: 1h, tokens: 10000}\n"
			tl := startTill(t, cfg, map[string]string{"openai": openaiKey}, up.caFile)
			var got struct {
				Text  string
				Error *struct{ Status int }
			}
			runSDK(t, "stream-cut.mjs", &got, "OPENAI_BASE_URL="+tl.url("/openai/v1"), "API="+tt.api)
			if got.Error != nil {
				if got.Error.Status >= 400 && got.Error.Status < 500 {
					return // refused before the key went: fine
				}
				t.Fatalf("SDK error %+v", got.Error)
			}
			if got.Text != "Paris" {
				t.Fatalf("the app got %+v", got)
			}
			recs := tl.waitAudit(1)
			code, body := adminGet(t, tl.adminAddr(), "/admin/usage", "")
			var rows []struct {
				Kind string
				Used float64
			}
			if code != 200 || json.Unmarshal([]byte(body), &rows) != nil || len(rows) != 1 {
				t.Fatalf("/admin/usage: %d %s", code, body)
			}
			if rows[0].Used < tt.spent {
				t.Errorf("a stream cut at its first delta, after the provider spent %v tokens, is charged %v tokens (record: %v)",
					tt.spent, rows[0].Used, recs[0])
			}
			tl.stop()
		})
	}
}
