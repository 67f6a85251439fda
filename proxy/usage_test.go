package proxy

import (
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tillgw/till/config"
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
// the usage meter: its tokens are counted as any other's, also when the
// app asked for a compressed answer; a request that is no upgrade (no
// Connection: upgrade) is sent as any other is.
func TestUpgradeDeclinedIsMetered(t *testing.T) {
	const answer = `{"id":"x","model":"gpt-4o-mini","usage":{"prompt_tokens":500,"completion_tokens":500,"total_tokens":1000}}`
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			w.Header().Set("Content-Encoding", "gzip")
			zw := gzip.NewWriter(w)
			io.WriteString(zw, answer)
			zw.Close()
			return
		}
		io.WriteString(w, answer)
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: " + up.URL + "}\n"
	gw, buf := newTestGateway(t, y, up.URL, secrets(time.Now()))
	srv := httptest.NewServer(gw)
	defer srv.Close()
	for _, connection := range []string{"Upgrade", "", "keep-alive, upgrade"} {
		req, _ := http.NewRequest("POST", srv.URL+"/openai/v1/audio/transcriptions", strings.NewReader("RIFFxxxx"))
		req.Header.Set("Content-Type", "audio/wav") // a body streamed, never held
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Accept-Encoding", "gzip")
		if connection != "" {
			req.Header.Set("Connection", connection)
		}
		res, err := http.DefaultTransport.(*http.Transport).Clone().RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Errorf("Connection %q: status %d, want 200", connection, res.StatusCode)
		}
	}
	for i, r := range buf.records(t) {
		if r["tokens_in"] != 500.0 || r["tokens_out"] != 500.0 {
			t.Errorf("request %d recorded tokens %v in, %v out; want 500 and 500", i+1, r["tokens_in"], r["tokens_out"])
		}
	}
}

// TestUnmeteredRefusedUnderTokenBudget: on a route under a token budget,
// a request whose usage till could not read is refused before any key is
// sent: a protocol switch (OpenAI's Realtime API over WebSocket), work
// done later (batches, fine-tuning, runs, videos, caches, background
// responses, managed agents' sessions and deployments), a session or key
// used without till (Realtime calls and
// keys, ChatKit, Gemini Live tokens), a stream whose body, not valid
// JSON, till could not ask for usage, and on Gemini an answer asked in
// another form or cut to a field mask; an answer in JSON or SSE, or a
// look at a batch, goes as any other.
func TestUnmeteredRefusedUnderTokenBudget(t *testing.T) {
	var sent atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":1}}`)
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}}\n  - {name: gemini, preset: gemini, upstream: {{UP}}, secret: openai}\n" +
		"  - {name: anthropic, preset: anthropic, upstream: {{UP}}, secret: openai}\n  - {name: batch, preset: openai, upstream: {{UP}}, secret: openai}\n" +
		"budgets:\n  - {name: b, window: 1d, tokens: 100000, routes: [openai, gemini, anthropic]}\n"
	gw, _ := newTestGateway(t, y, up.URL, secrets(time.Now()))
	srv := httptest.NewServer(gw)
	defer srv.Close()
	const gen = "/gemini/v1beta/models/gemini-2.5-flash:generateContent"
	for _, tt := range []struct {
		name, method, path string
		header             http.Header
		want               int
		body               string
	}{
		{"openai batch", "POST", "/openai/v1/batches", nil, 400, `{"input_file_id":"f","endpoint":"/v1/chat/completions"}`},
		{"anthropic batch", "POST", "/anthropic/v1/messages/batches", nil, 400, `{"requests":[]}`},
		{"gemini batch", "POST", "/gemini/v1beta/models/gemini-2.5-flash:batchGenerateContent", nil, 400, ""},
		{"gemini embed batch", "POST", "/gemini/v1beta/models/gemini-embedding-001:asyncBatchEmbedContent", nil, 400, ""},
		{"realtime key", "POST", "/openai/v1/realtime/client_secrets", nil, 400, `{"session":{"type":"realtime"}}`},
		{"realtime session", "POST", "/openai/v1/realtime/sessions", nil, 400, `{"model":"gpt-realtime"}`},
		{"batch, trailing slash", "POST", "/openai/v1/batches/", nil, 400, `{"input_file_id":"f","endpoint":"/v1/chat/completions"}`},
		{"batch, other case", "POST", "/openai/v1/Batches", nil, 400, `{"input_file_id":"f","endpoint":"/v1/chat/completions"}`},
		{"realtime call", "POST", "/openai/v1/realtime/calls", http.Header{"Content-Type": {"multipart/form-data; boundary=b"}}, 400,
			"--b\r\nContent-Disposition: form-data; name=\"sdp\"\r\n\r\nv=0\r\n--b--\r\n"},
		{"realtime call, sdp", "POST", "/openai/v1/realtime/calls", http.Header{"Content-Type": {"application/sdp"}}, 400, "v=0\r\n"},
		{"chatkit session", "POST", "/openai/v1/chatkit/sessions", nil, 400, `{"workflow":{"id":"wf"}}`},
		{"fine-tuning job", "POST", "/openai/v1/fine_tuning/jobs", nil, 400, `{"model":"gpt-4.1-mini","training_file":"f"}`},
		{"eval run", "POST", "/openai/v1/evals/eval_1/runs", nil, 400, `{"data_source":{}}`},
		{"assistants run", "POST", "/openai/v1/threads/runs", nil, 400, `{"assistant_id":"a"}`},
		{"tool outputs", "POST", "/openai/v1/threads/t/runs/r/submit_tool_outputs", nil, 400, `{"tool_outputs":[]}`},
		{"video", "POST", "/openai/v1/videos", nil, 400, `{"model":"sora-2","prompt":"x"}`},
		{"gemini live token", "POST", "/gemini/v1alpha/auth_tokens", nil, 400, `{"uses":1000}`},
		{"veo", "POST", "/gemini/v1beta/models/veo-3.0-generate-001:predictLongRunning", nil, 400, ""},
		{"tuned model", "POST", "/gemini/v1beta/tunedModels", nil, 400, ""},
		{"context cache", "POST", "/gemini/v1beta/cachedContents", nil, 400, `{"model":"models/gemini-2.5-flash","ttl":"86400s"}`},
		{"vertex batch", "POST", "/gemini/v1/projects/p/locations/us-central1/batchPredictionJobs", nil, 400,
			`{"displayName":"b","model":"publishers/google/models/gemini-2.5-pro","inputConfig":{},"outputConfig":{}}`},
		{"vertex tuning job", "POST", "/gemini/v1/projects/p/locations/us-central1/tuningJobs", nil, 400,
			`{"baseModel":"gemini-2.5-flash","supervisedTuningSpec":{}}`},
		{"anthropic agent session", "POST", "/anthropic/v1/sessions", nil, 400,
			`{"agent":"agent_1","environment_id":"env_1","initial_events":[{"type":"user.message","content":[]}]}`},
		{"anthropic agent session driven", "POST", "/anthropic/v1/sessions/sesn_1/events", nil, 400, `{"events":[{"type":"user.message","content":[]}]}`},
		{"anthropic agent deployment", "POST", "/anthropic/v1/deployments", nil, 400, `{"agent":"agent_1","environment_id":"env_1","schedule":{}}`},
		{"anthropic deployment run", "POST", "/anthropic/v1/deployments/depl_1/run", nil, 400, `{}`},
		{"anthropic deployment unpaused", "POST", "/anthropic/v1/deployments/depl_1/unpause", nil, 400, `{}`},
		{"openai agent session", "POST", "/openai/v1/agents/sessions", nil, 400, `{"environment":{"type":"none"},"agent":{"model":"gpt-5"},"input":"hi"}`},
		{"openai agent session driven", "POST", "/openai/v1/agents/sessions/sess_1/events", nil, 400, `{"events":[]}`},
		{"video remix", "POST", "/openai/v1/videos/video_1/remix", nil, 400, `{"prompt":"x"}`},
		{"video edit", "POST", "/openai/v1/videos/edits", nil, 400, `{"video":{"id":"video_1"},"prompt":"x"}`},
		{"video extension", "POST", "/openai/v1/videos/extensions", nil, 400, `{"video":{"id":"video_1"},"prompt":"x","seconds":"8"}`},
		{"fine-tuning job resumed", "POST", "/openai/v1/fine_tuning/jobs/ftjob_1/resume", nil, 400, `{}`},
		{"grader run", "POST", "/openai/v1/fine_tuning/alpha/graders/run", nil, 400, `{"grader":{"type":"score_model","model":"o3"},"model_sample":"x"}`},
		{"an agent session looked at", "GET", "/anthropic/v1/sessions/sesn_1/events", nil, 200, ""},
		{"stream with a body not JSON", "POST", "/openai/v1/chat/completions", nil, 400,
			`{"model":"gpt-4.1","stream":true,"tools":[{"x":NaN}],"messages":[]}`},
		{"background response", "POST", "/openai/v1/responses", nil, 400, `{"model":"gpt-5","input":"hi","background":true}`},
		{"background as a string", "POST", "/openai/v1/responses", nil, 400, `{"model":"gpt-5","input":"hi","background":"true"}`},
		{"foreground response", "POST", "/openai/v1/responses", nil, 200, `{"model":"gpt-5","input":"hi","background":false}`},
		{"a batch looked at", "GET", "/openai/v1/batches/batch_1", nil, 200, ""},
		{"batch cancelled", "POST", "/openai/v1/batches/batch_1/cancel", nil, 200, `{}`},
		{"batch with no budget", "POST", "/batch/v1/batches", nil, 200, `{"input_file_id":"f","endpoint":"/v1/chat/completions"}`},
		{"websocket", "GET", "/openai/v1/realtime?model=gpt-realtime", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"},
			"Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}, 400, ""},
		{"alt=proto", "POST", gen + "?alt=proto", nil, 400, ""},
		{"$alt=proto", "POST", gen + "?%24alt=proto", nil, 400, ""},
		{"encoded alt", "POST", gen + "?%61lt=media", nil, 400, ""},
		{"$fields", "POST", gen + "?%24fields=candidates", nil, 400, ""},
		{"fields", "POST", gen + "?fields=candidates", nil, 400, ""},
		{"field mask", "POST", gen, http.Header{"X-Goog-FieldMask": {"candidates"}}, 400, ""},
		{"alt=sse", "POST", "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", nil, 200, ""},
		{"alt=json", "POST", gen + "?alt=json", nil, 200, ""},
		{"no alt", "POST", gen, nil, 200, ""},
	} {
		before := sent.Load()
		req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
		if tt.method == "POST" {
			if tt.body == "" {
				tt.body = `{"contents":[]}`
			}
			req, _ = http.NewRequest(tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
		}
		for k, v := range tt.header {
			req.Header[k] = v
		}
		res, err := http.DefaultTransport.(*http.Transport).Clone().RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, res.StatusCode, tt.want)
		}
		if went := sent.Load() > before; went != (tt.want == 200) {
			t.Errorf("%s: sent upstream %v, want %v", tt.name, went, tt.want == 200)
		}
	}
}

// TestUnpricedModels: check warns of a route's allowed models that a
// blocking dollar budget would refuse for want of a price, and of no
// other.
func TestUnpricedModels(t *testing.T) {
	y := "version: 1\nroutes:\n" +
		"  - {name: openai, preset: openai, allow: {models: [gpt-4.1*, gpt-4o-mini, gpt-9*]}}\n" +
		"  - {name: other, preset: openai, secret: openai, allow: {models: [gpt-9*]}}\n" +
		"budgets:\n  - {name: money, window: 1d, usd: 5, routes: [openai]}\n  - {name: watch, window: 1d, usd: 5, on_exceeded: warn}\n"
	cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	got := UnpricedModels(cfg)
	if len(got) != 1 || !strings.Contains(got[0], `route "openai" allows model "gpt-9*", which the price table does not price, and budget "money" limits dollars`) {
		t.Errorf("got %q", got)
	}
}

// TestUnpricedModelsOneLinePerModel: a route's unpriced model is one
// warning however many dollar budgets cover the route; with one per
// budget, 7,000 budgets over 7,000 routes made till check print 49
// million lines.
func TestUnpricedModelsOneLinePerModel(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: 1\nroutes:\n")
	for i := range 100 {
		fmt.Fprintf(&b, "  - {name: r%d, preset: openai, secret: k, prefix: /r%d, allow: {models: [gpt-9*]}}\n", i, i)
	}
	b.WriteString("budgets:\n")
	for i := range 100 {
		fmt.Fprintf(&b, "  - {name: b%d, window: 1d, usd: 5}\n", i)
	}
	cfg, err := config.Parse("till.yaml", []byte(b.String()), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	got := UnpricedModels(cfg)
	if len(got) != 100 || !strings.Contains(got[0], `route "r0" allows model "gpt-9*", which the price table does not price, and budgets "b0" and 99 more limit dollars`) {
		t.Errorf("got %d warnings, want 100; the first: %q", len(got), got[0])
	}
}

// TestPricesReadOnce: the price table a load read is the one its
// snapshot and its checks use; the file changed or gone since (an edit
// mid-reload) changes nothing. Each used to read the file again, and a
// file broken since fell back to the built-in table unsaid.
func TestPricesReadOnce(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "prices.yaml")
	if err := os.WriteFile(file, []byte("models:\n  gpt-9: {input: 1, output: 2}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	y := "version: 1\nprices: {file: prices.yaml}\nroutes:\n  - {name: openai, preset: openai, allow: {models: [gpt-9]}}\n" +
		"budgets:\n  - {name: money, window: 1d, usd: 5}\n"
	parsed, err := config.Parse("till.yaml", []byte(y), dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := parsed.WithPrices()
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Prices.Table != nil {
		t.Error("WithPrices changed the config it was given")
	}
	if err := os.WriteFile(file, []byte("models:\n  gpt-9: {input: cheap}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !NewSnapshot(cfg, nil).prices.Priced("gpt-9") {
		t.Error("the snapshot does not price gpt-9 as the table read at load does")
	}
	if got := UnpricedModels(cfg); len(got) != 0 {
		t.Errorf("check warns of a model the table read at load prices: %q", got)
	}
}

// TestSpendsUnseen: the paths of work that spends out of any answer's
// sight, on every metered preset, however a lenient server would read
// the path, and none of the calls that report their usage.
func TestSpendsUnseen(t *testing.T) {
	for _, p := range []string{"/mistral/v1/batch/jobs", "/cohere/v1/embed-jobs", "/openai/v1/batches", "/anthropic/v1/messages/batches/",
		"/gemini/v1beta/models/m:batchGenerateContent", "/openai/v1/fine_tuning/jobs", "/openai/v1/realtime/calls", "/bedrock/async-invoke", "/bedrock/model-invocation-job",
		// As servers that merge slashes and drop ;parameters route them.
		"/openai/v1/batches;x", "/openai/v1/fine_tuning//jobs", "/openai/v1/batches;x/"} {
		if !spendsUnseen(p) {
			t.Errorf("%s: not refused under a token budget", p)
		}
	}
	for _, p := range []string{"/openai/v1/chat/completions", "/openai/v1/responses", "/openai/v1/embeddings", "/anthropic/v1/messages",
		"/gemini/v1beta/models/m:generateContent", "/gemini/v1beta/models/m:streamGenerateContent", "/gemini/v1beta/models/m:batchEmbedContents",
		"/cohere/v2/chat", "/cohere/v2/embed", "/mistral/v1/chat/completions", "/groq/openai/v1/chat/completions",
		"/anthropic/v1/messages/count_tokens", "/openai/v1/responses/input_tokens", "/openai/v1/conversations",
		"/bedrock/model/m/invoke", "/bedrock/model/m/converse", "/bedrock/model/m/count-tokens"} {
		if spendsUnseen(p) {
			t.Errorf("%s: refused, though its answer reports its usage", p)
		}
	}
}

// TestOtherModelsChecked: on a route with model rules, every model a
// request names for the provider to run is checked, not only "model":
// Anthropic's advisor tool, its server-side fallbacks and OpenAI's
// image_generation tool; a request that lets the provider pick one
// (fallbacks "default", an image tool without a model) is refused.
func TestOtherModelsChecked(t *testing.T) {
	var sent atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"usage":{"input_tokens":1,"output_tokens":1}}`)
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: anthropic, preset: anthropic, upstream: {{UP}}, secret: openai, allow: {models: [claude-haiku-*, claude-sonnet-*]}}\n" +
		"  - {name: openai, preset: openai, upstream: {{UP}}, allow: {models: [gpt-5-mini, gpt-image-1-mini]}}\n"
	gw, _ := newTestGateway(t, y, up.URL, secrets(time.Now()))
	srv := httptest.NewServer(gw)
	defer srv.Close()
	const messages, responses = "/anthropic/v1/messages", "/openai/v1/responses"
	for _, tt := range []struct {
		name, path, body string
		want             int
	}{
		{"advisor not allowed", messages, `{"model":"claude-haiku-4-5","tools":[{"type":"advisor_20260301","name":"advisor","model":"claude-opus-4-8"}]}`, 403},
		{"advisor allowed", messages, `{"model":"claude-haiku-4-5","tools":[{"type":"advisor_20260301","name":"advisor","model":"claude-sonnet-5"}]}`, 200},
		{"advisor in a second tools", messages, `{"model":"claude-haiku-4-5","tools":[{"type":"advisor_20260301","name":"advisor","model":"claude-opus-4-8"}],"tools":[]}`, 403},
		{"fallback not allowed", messages, `{"model":"claude-sonnet-5","fallbacks":[{"model":"claude-opus-4-8"}]}`, 403},
		{"fallback allowed", messages, `{"model":"claude-sonnet-5","fallbacks":[{"model":"claude-haiku-4-5"}]}`, 200},
		{"fallbacks anthropic picks", messages, `{"model":"claude-sonnet-5","fallbacks":"default"}`, 400},
		{"fallbacks off", messages, `{"model":"claude-sonnet-5","fallbacks":"off"}`, 200},
		{"image model not allowed", responses, `{"model":"gpt-5-mini","tools":[{"type":"image_generation","model":"gpt-image-2"}]}`, 403},
		{"image model allowed", responses, `{"model":"gpt-5-mini","tools":[{"type":"image_generation","model":"gpt-image-1-mini"}]}`, 200},
		{"image tool's default model", responses, `{"model":"gpt-5-mini","tools":[{"type":"image_generation"}]}`, 400},
		{"other tools", responses, `{"model":"gpt-5-mini","tools":[{"type":"function","name":"f","parameters":{"properties":{"model":{}}}}]}`, 200},
	} {
		before := sent.Load()
		res, err := http.Post(srv.URL+tt.path, "application/json", strings.NewReader(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, res.StatusCode, tt.want)
		}
		if went := sent.Load() > before; went != (tt.want == 200) {
			t.Errorf("%s: sent upstream %v, want %v", tt.name, went, tt.want == 200)
		}
	}
}
