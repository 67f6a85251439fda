package test

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tillgw/till/usage"
)

// fakeLLM answers like the OpenAI and Anthropic APIs do, with the usage
// they report, plain and streamed. It remembers whether streamed OpenAI
// requests asked for usage, and holds each stream for hold.
type fakeLLM struct {
	hold         time.Duration
	includeUsage atomic.Int32 // streamed OpenAI requests that asked for usage
	inFlight     atomic.Int32
	maxInFlight  atomic.Int32
}

// The usage the fake reports.
var (
	openaiJSONUsage   = usage.Usage{Model: "gpt-4o-mini-2024-07-18", InputTokens: 120, CachedInputTokens: 20, OutputTokens: 30, Known: true}
	openaiStreamUsage = usage.Usage{Model: "gpt-4o-mini-2024-07-18", InputTokens: 100, OutputTokens: 3, Known: true}
	claudeJSONUsage   = usage.Usage{Model: "claude-sonnet-4-5-20250929", InputTokens: 60, CachedInputTokens: 10, OutputTokens: 12, Known: true}
	claudeStreamUsage = usage.Usage{Model: "claude-sonnet-4-5-20250929", InputTokens: 50, OutputTokens: 9, Known: true}
)

func (f *fakeLLM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for m := f.maxInFlight.Load(); n > m && !f.maxInFlight.CompareAndSwap(m, n); m = f.maxInFlight.Load() {
	}
	var req struct {
		Model         string `json:"model"`
		Stream        bool   `json:"stream"`
		StreamOptions struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	body, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(w, `{"error":{"message":"bad json"}}`, http.StatusBadRequest)
		return
	}
	flush := func() { w.(http.Flusher).Flush() }
	switch r.URL.Path {
	case "/v1/chat/completions":
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini-2024-07-18",`+
				`"choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],`+
				`"usage":{"prompt_tokens":120,"completion_tokens":30,"total_tokens":150,"prompt_tokens_details":{"cached_tokens":20}}}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, word := range []string{"one ", "two ", "three"} {
			fmt.Fprintf(w, "data: {\"id\":\"c2\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}]}\n\n", word)
			flush()
			time.Sleep(f.hold / 3)
		}
		if req.StreamOptions.IncludeUsage {
			f.includeUsage.Add(1)
			io.WriteString(w, `data: {"id":"c2","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[],`+
				`"usage":{"prompt_tokens":100,"completion_tokens":3,"total_tokens":103}}`+"\n\n")
		}
		io.WriteString(w, "data: [DONE]\n\n")
	case "/v1/messages":
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",`+
				`"content":[{"type":"text","text":"hello"}],"stop_reason":"end_turn","stop_sequence":null,`+
				`"usage":{"input_tokens":50,"cache_read_input_tokens":10,"cache_creation_input_tokens":0,"output_tokens":12}}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		event := func(name, data string) {
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data)
			flush()
		}
		event("message_start", `{"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":50,"output_tokens":1}}}`)
		event("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`)
		for _, word := range []string{"one ", "two"} {
			event("content_block_delta", fmt.Sprintf(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":%q}}`, word))
			time.Sleep(f.hold / 2)
		}
		event("content_block_stop", `{"type":"content_block_stop","index":0}`)
		event("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":9}}`)
		event("message_stop", `{"type":"message_stop"}`)
	default:
		http.Error(w, `{"error":{"message":"not found"}}`, http.StatusNotFound)
	}
}

// runSDK runs a script of test/sdk with env, and decodes what it printed.
func runSDK(t *testing.T, script string, out any, env ...string) {
	t.Helper()
	if _, err := os.Stat("sdk/node_modules/@anthropic-ai/sdk"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("sdk/node_modules is missing: .ci/run must run npm ci in test/sdk")
		}
		t.Skip("run npm ci in test/sdk to enable the SDK tests")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	cmd := exec.Command(node, script)
	cmd.Dir = "sdk"
	cmd.Env = append(os.Environ(), env...)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("node %s printed %q", script, b)
	}
}

// costOf is what the built-in price table says u costs.
func costOf(t *testing.T, u usage.Usage) float64 {
	usd, ok := usage.DefaultPrices().Cost(u.Model, u)
	if !ok || usd <= 0 {
		t.Fatalf("the built-in price table has no price for %s", u.Model)
	}
	return usd
}

// checkUsage finds the request record of route with the path and tokens
// of u, and checks its model and price.
func checkUsage(t *testing.T, recs []auditRecord, route, model string, u usage.Usage) {
	t.Helper()
	for _, r := range recs {
		if r["route"] != route || r["tokens_in"] != float64(u.InputTokens) || r["tokens_out"] != float64(u.OutputTokens) {
			continue
		}
		if r["model"] != model || r["outcome"] != "forwarded" || r["reason"] != "" {
			t.Errorf("%s record: %v", route, r)
		}
		if got, want := r["cost_usd"].(float64), costOf(t, u); math.Abs(got-want) > 1e-12 {
			t.Errorf("%s record: cost_usd %v, want %v", route, got, want)
		}
		return
	}
	t.Errorf("no %s record with %d tokens in and %d out: %v", route, u.InputTokens, u.OutputTokens, recs)
}

// TestUsageFromSDKs drives the official openai and @anthropic-ai/sdk
// packages, plain and streamed, through till: the tokens and price land in
// the audit and the metrics; a streamed OpenAI call that does not ask for
// usage is counted all the same (till asks); the SDKs take the answers.
func TestUsageFromSDKs(t *testing.T) {
	f := &fakeLLM{}
	up := newUpstream(t, f)
	cfg := `version: 1
admin: {listen: 127.0.0.1:0}
routes:
  - {name: openai, preset: openai, upstream: "` + up.URL + `", allow: {models: ["gpt-4o-mini*", "gpt-4.1*"]}}
  - {name: anthropic, preset: anthropic, upstream: "` + up.URL + `"}
`
	tl := startTill(t, cfg, map[string]string{"openai": openaiKey, "anthropic": keyed("sk-ant-usage-", "u1")}, up.caFile)

	var oa struct {
		Completion, Streamed string
		Usage                struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
		StreamUsage *struct {
			PromptTokens int `json:"prompt_tokens"`
		} `json:"streamUsage"`
		Error any
	}
	runSDK(t, "usage-openai.mjs", &oa, "OPENAI_BASE_URL="+tl.url("/openai/v1"))
	if oa.Error != nil || oa.Completion != "hello" || oa.Streamed != "one two three" {
		t.Fatalf("openai SDK: %+v", oa)
	}
	if oa.Usage.PromptTokens != 120 || oa.Usage.CompletionTokens != 30 {
		t.Errorf("the app's SDK saw usage %+v, want the upstream's 120 and 30", oa.Usage)
	}
	if f.includeUsage.Load() != 1 || oa.StreamUsage == nil || oa.StreamUsage.PromptTokens != 100 {
		t.Errorf("the streamed request was not made to report usage (asked %d times; the SDK saw %+v)", f.includeUsage.Load(), oa.StreamUsage)
	}
	var an struct {
		Text, Streamed string
		Error          any
	}
	runSDK(t, "usage-anthropic.mjs", &an, "ANTHROPIC_BASE_URL="+tl.url("/anthropic"))
	if an.Error != nil || an.Text != "hello" || an.Streamed != "one two" {
		t.Fatalf("anthropic SDK: %+v", an)
	}
	recs := tl.waitAudit(4)
	checkUsage(t, recs, "openai", "gpt-4o-mini", openaiJSONUsage)
	checkUsage(t, recs, "openai", "gpt-4o-mini", openaiStreamUsage)
	checkUsage(t, recs, "anthropic", "claude-sonnet-4-5", claudeJSONUsage)
	checkUsage(t, recs, "anthropic", "claude-sonnet-4-5", claudeStreamUsage)

	code, m := adminGet(t, tl.adminAddr(), "/metrics", "")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	in := openaiJSONUsage.InputTokens + openaiStreamUsage.InputTokens
	if v, ok := metric(m, `till_tokens_total{client="anonymous",kind="input",route="openai"}`); !ok || v != float64(in) {
		t.Errorf("till_tokens_total input for openai: %v %v, want %d", v, ok, in)
	}
	want := costOf(t, claudeJSONUsage) + costOf(t, claudeStreamUsage)
	if v, ok := metric(m, `till_cost_usd_total{client="anonymous",route="anthropic"}`); !ok || math.Abs(v-want) > 1e-9 {
		t.Errorf("till_cost_usd_total for anthropic: %v %v, want %v", v, ok, want)
	}

	// Model rules: another model, a body that is not JSON, no model.
	for _, c := range []struct{ body, code string }{
		{`{"model":"gpt-3.5-turbo","messages":[]}`, "model_not_allowed"},
		{`model=gpt-4o-mini`, "bad_request"},
		{`{"messages":[]}`, "bad_request"},
	} {
		n := len(up.requests())
		resp, body := do(t, newRequest(t, "POST", tl.url("/openai/v1/chat/completions"), strings.NewReader(c.body)))
		if got := tillError(t, resp, body); got != c.code {
			t.Errorf("%s: got %d %s, want %s", c.body, resp.StatusCode, got, c.code)
		}
		if len(up.requests()) != n {
			t.Errorf("%s reached the upstream", c.body)
		}
	}
	for model, want := range map[string]int{"gpt-4.1-mini": 0, "gpt-3.5-turbo": 1} {
		out, _, code := runTill(t, tl.dir, "", nil, "test", "--model", model, "POST", "/openai/v1/chat/completions")
		if code != want || (want == 1 && !strings.Contains(out, "refused: model_not_allowed")) {
			t.Errorf("till test --model %s: exit %d: %s", model, code, out)
		}
	}
	tl.stop()
	tl.assertNoLeak([]string{openaiKey})
}

// budgetTill starts a till with one route and the budgets given, on redis
// when set, and returns it with a POST helper.
func budgetTill(t *testing.T, up *upstream, budgets, redis string) (*till, func(body string) (int, string, http.Header)) {
	t.Helper()
	limits := ""
	if redis != "" {
		limits = "{redis: \"redis://" + redis + "/0\"}"
	}
	return budgetTillLimits(t, up, budgets, limits)
}

// budgetTillLimits is budgetTill with the config's limits given whole.
func budgetTillLimits(t *testing.T, up *upstream, budgets, limits string) (*till, func(body string) (int, string, http.Header)) {
	t.Helper()
	cfg := "version: 1\nadmin: {listen: 127.0.0.1:0}\n"
	if limits != "" {
		cfg += "limits: " + limits + "\n"
	}
	cfg += "routes:\n  - {name: openai, preset: openai, upstream: \"" + up.URL + "\"}\nbudgets:\n" + budgets
	tl := startTill(t, cfg, map[string]string{"openai": openaiKey}, up.caFile)
	return tl, func(body string) (int, string, http.Header) {
		resp, b := do(t, newRequest(t, "POST", tl.url("/openai/v1/chat/completions"), strings.NewReader(body)))
		if resp.StatusCode != 200 {
			return resp.StatusCode, tillError(t, resp, b), resp.Header
		}
		return 200, "", resp.Header
	}
}

const chat = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`

// TestTokenBudget: a budget of 200 tokens lets the request that crosses it
// through and refuses the next, with Retry-After, before the upstream;
// till usage shows it spent.
func TestTokenBudget(t *testing.T) {
	up := newUpstream(t, &fakeLLM{})
	tl, post := budgetTill(t, up, "  - {name: hourly, window: 1h, tokens: 200}\n", "")
	for i, want := range []int{200, 200, 429} {
		n := len(up.requests())
		code, e, h := post(chat)
		if code != want {
			t.Fatalf("request %d: got %d %s, want %d", i+1, code, e, want)
		}
		if i == 0 {
			// One answer of 150 tokens: 50 left, on /metrics too, once
			// the request has settled.
			series := `till_budget_remaining{budget="hourly",counter="anonymous",kind="tokens"}`
			var v float64
			var ok bool
			for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
				_, m := adminGet(t, tl.adminAddr(), "/metrics", "")
				if v, ok = metric(m, series); ok && v == 50 {
					break
				}
			}
			if !ok || v != 50 {
				t.Errorf("%s after one request of 150 tokens: %v (present %v), want 50", series, v, ok)
			}
		}
		if want == 429 {
			if e != "budget_exceeded" || h.Get("Retry-After") == "" {
				t.Errorf("spent budget: %s, Retry-After %q", e, h.Get("Retry-After"))
			}
			if len(up.requests()) != n {
				t.Error("a request over budget reached the upstream")
			}
		}
	}
	denied := 0
	for _, r := range tl.waitAudit(3) {
		if r["outcome"] == "denied" && r["reason"] == "budget_exceeded" {
			denied++
		}
	}
	if denied != 1 {
		t.Errorf("%d records of a refusal for budget_exceeded, want 1: %v", denied, tl.audit())
	}
	// till usage asks the running till, which counts in memory.
	out, errOut, code := runTill(t, tl.dir, "", nil, "usage", "--url", tl.adminAddr())
	if code != 0 || !strings.Contains(out, "hourly  anonymous  tokens  200    300   0          rolling") {
		t.Errorf("till usage: exit %d: %s %s", code, out, errOut)
	}
	tl.stop()
}

// TestDollarBudget: a dollar budget counts what the price table says a
// request cost, and refuses once spent; a model the table lacks would
// count as free, so under a budget that blocks it is refused before the
// upstream (403 model_not_allowed), in till test too. An answer naming a
// dated version the table lacks is priced as the model asked for.
func TestDollarBudget(t *testing.T) {
	dated := usage.Usage{Model: "gpt-4o-mini-2099-01-01", InputTokens: 1000, OutputTokens: 100, Known: true}
	up := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"c","object":"chat.completion","model":%q,"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`,
			dated.Model, dated.InputTokens, dated.OutputTokens, dated.InputTokens+dated.OutputTokens)
	}))
	tl, post := budgetTill(t, up, "  - {name: dollars, window: 1h, usd: 0.0001}\n", "")
	n := len(up.requests())
	if code, e, _ := post(`{"model":"gpt-9-preview","messages":[]}`); code != 403 || e != "model_not_allowed" {
		t.Errorf("an unpriced model under a dollar budget: got %d %s, want 403 model_not_allowed", code, e)
	}
	if len(up.requests()) != n {
		t.Error("a request for an unpriced model reached the upstream")
	}
	for model, want := range map[string]string{"gpt-9-preview": "refused: model_not_allowed", "gpt-4o-mini": "allowed"} {
		out, _, _ := runTill(t, tl.dir, "", nil, "test", "--model", model, "POST", "/openai/v1/chat/completions")
		if !strings.Contains(out, want) {
			t.Errorf("till test --model %s: want %q:\n%s", model, want, out)
		}
	}
	for i, want := range []int{200, 429} {
		if code, e, _ := post(chat); code != want {
			t.Fatalf("request %d: got %d %s, want %d", i+1, code, e, want)
		}
	}
	recs := tl.waitAudit(3)
	want := costOf(t, usage.Usage{Model: "gpt-4o-mini", InputTokens: dated.InputTokens, OutputTokens: dated.OutputTokens})
	forwarded := 0
	for _, r := range recs {
		if r["outcome"] == "forwarded" {
			forwarded++
			if got, _ := r["cost_usd"].(float64); math.Abs(got-want) > 1e-12 {
				t.Errorf("cost_usd of an answer from %s: %v, want gpt-4o-mini's %v", dated.Model, got, want)
			}
		}
	}
	if forwarded != 1 {
		t.Errorf("%d requests forwarded, want 1: %v", forwarded, recs)
	}

	// Under a budget that only warns, or counts tokens, the model goes.
	for _, b := range []string{"  - {name: dollars, window: 1h, usd: 5, on_exceeded: warn}\n", "  - {name: tokens, window: 1h, tokens: 5000}\n"} {
		_, post := budgetTill(t, up, b, "")
		if code, e, _ := post(`{"model":"gpt-9-preview","messages":[]}`); code != 200 {
			t.Errorf("an unpriced model under %q: got %d %s", strings.TrimSpace(b), code, e)
		}
	}
}

// TestBudgetSharedInRedis: two tills on one Redis count one budget: the
// second refuses once the first spent it.
func TestBudgetSharedInRedis(t *testing.T) {
	redisAddr, _ := startRedis(t)
	up := newUpstream(t, &fakeLLM{})
	b := "  - {name: daily, window: day, requests: 2}\n"
	_, postA := budgetTill(t, up, b, redisAddr)
	tlB, postB := budgetTill(t, up, b, redisAddr)
	var got []int
	for _, post := range []func(string) (int, string, http.Header){postA, postA, postB} {
		code, _, _ := post(chat)
		got = append(got, code)
	}
	if fmt.Sprint(got) != "[200 200 429]" {
		t.Errorf("two tills sharing a budget of 2: got %v, want [200 200 429]", got)
	}
	out, errOut, code := runTill(t, tlB.dir, "", nil, "usage", "--json")
	var rows []struct {
		Budget, Counter, Kind string
		Limit, Used           float64
		Reset                 *time.Time
	}
	if code != 0 || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 1 {
		t.Fatalf("till usage --json: exit %d: %s %s", code, out, errOut)
	}
	if r := rows[0]; r.Budget != "daily" || r.Counter != "anonymous" || r.Kind != "requests" || r.Used != 2 || r.Limit != 2 || r.Reset == nil {
		t.Errorf("till usage row: %+v", r)
	}
}

// TestParallelTillsNeverOverspend: two tills on one Redis, hammered at
// once by 100 requests against a budget of 10, forward exactly 10: each
// Take checks and counts in one script, so no two tills both see the
// last request free. On a machine so loaded that Redis misses its 250 ms,
// on_redis_error decides: deny here, so a slow store refuses rather than
// lets requests by uncounted, and then no more than 10 are forwarded.
func TestParallelTillsNeverOverspend(t *testing.T) {
	redisAddr, _ := startRedis(t)
	up := newUpstream(t, &fakeLLM{})
	b := "  - {name: ten, window: 1h, requests: 10}\n"
	tlA, postA := budgetTillLimits(t, up, b, "{redis: \"redis://"+redisAddr+"/0\", on_redis_error: deny}")
	tlB, postB := budgetTillLimits(t, up, b, "{redis: \"redis://"+redisAddr+"/0\", on_redis_error: deny}")
	var ok, refused atomic.Int32
	var wg sync.WaitGroup
	for i := range 100 {
		post := postA
		if i%2 == 1 {
			post = postB
		}
		wg.Go(func() {
			switch code, e, _ := post(chat); {
			case code == 200:
				ok.Add(1)
			case code == 429 && e == "budget_exceeded":
				refused.Add(1)
			default:
				t.Errorf("got %d %s", code, e)
			}
		})
	}
	wg.Wait()
	if n := ok.Load(); n > 10 || refused.Load() != 100-n || len(up.requests()) != int(n) {
		t.Errorf("100 parallel requests on two tills against a budget of 10: %d forwarded, %d refused, %d reached the upstream; want at most 10, the rest refused",
			n, refused.Load(), len(up.requests()))
	}
	slow := strings.Contains(tlA.stderr.String(), "budget store unavailable") || strings.Contains(tlB.stderr.String(), "budget store unavailable")
	if !slow && ok.Load() != 10 {
		t.Errorf("Redis answered every Take in time, yet %d of 10 were forwarded", ok.Load())
	}
}

// TestParallelStreamsRespectReservations: 50 parallel streamed requests,
// each reserving its max_tokens of 100, against a budget of 1,000 tokens:
// no more than ten are ever forwarded, the rest refused.
func TestParallelStreamsRespectReservations(t *testing.T) {
	f := &fakeLLM{hold: 600 * time.Millisecond}
	up := newUpstream(t, f)
	_, post := budgetTill(t, up, "  - {name: burst, window: 1h, tokens: 1000}\n", "")
	body := `{"model":"gpt-4o-mini","stream":true,"max_tokens":100,"messages":[]}`
	var wg sync.WaitGroup
	var ok, refused atomic.Int32
	for range 50 {
		wg.Go(func() {
			switch code, _, _ := post(body); code {
			case 200:
				ok.Add(1)
			case 429:
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() > 10 || ok.Load()+refused.Load() != 50 {
		t.Errorf("50 parallel streams reserving 100 of 1,000 tokens: %d forwarded, %d refused; want at most 10 forwarded", ok.Load(), refused.Load())
	}
	if f.maxInFlight.Load() > 10 {
		t.Errorf("%d streams were in flight at once, want at most 10", f.maxInFlight.Load())
	}
}

// TestPricesFile: prices.file merges over the built-in table and prices
// the answers; a file that does not parse fails till check with its line.
func TestPricesFile(t *testing.T) {
	up := newUpstream(t, &fakeLLM{})
	cfg := "version: 1\nprices: {file: prices.yaml}\nroutes:\n  - {name: openai, preset: openai, upstream: \"" + up.URL + "\"}\n"
	dir := t.TempDir()
	write := func(name, s string) {
		t.Helper()
		if err := os.WriteFile(dir+"/"+name, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("till.yaml", cfg)
	write("prices.yaml", "models:\n  gpt-4o-mini-2024-07-18: {input: 1000000, output: 0}\n")
	setSecret(t, dir, "openai", openaiKey)
	tl := startTillIn(t, dir, up.caFile)
	resp, _ := do(t, newRequest(t, "POST", tl.url("/openai/v1/chat/completions"), strings.NewReader(chat)))
	if resp.StatusCode != 200 {
		t.Fatalf("%d", resp.StatusCode)
	}
	// 120 input tokens at $1 each (the override); cached ones too, as the
	// override sets no cached_input price.
	if r := tl.waitAudit(1)[0]; r["cost_usd"] != float64(120) {
		t.Errorf("cost_usd %v, want 120 from the override", r["cost_usd"])
	}
	tl.stop()
	write("prices.yaml", "models:\n  gpt-4o-mini: {input: cheap}\n")
	_, errOut, code := runTill(t, dir, "", nil, "check")
	if code != 1 || !strings.Contains(errOut, "prices.yaml:2") {
		t.Errorf("till check with a bad prices file: exit %d: %s", code, errOut)
	}
}

// TestBadPricesFileKeepsPrices: a reload that finds prices.file broken
// is refused, says which line, and the prices served stay in force, also
// when a key rotation meanwhile serves the vault with the previous config
// (which once read the broken file again and priced by the built-in
// table instead).
func TestBadPricesFileKeepsPrices(t *testing.T) {
	up := newUpstream(t, &fakeLLM{})
	dir := t.TempDir()
	write := func(name, s string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("till.yaml", "version: 1\nprices: {file: prices.yaml}\nroutes:\n  - {name: openai, preset: openai, upstream: \""+up.URL+"\"}\n")
	write("prices.yaml", "models:\n  gpt-4o-mini-2024-07-18: {input: 1000000, output: 0}\n")
	setSecret(t, dir, "openai", openaiKey)
	tl := startTillIn(t, dir, up.caFile)
	cost := func(n int) any {
		t.Helper()
		resp, body := do(t, newRequest(t, "POST", tl.url("/openai/v1/chat/completions"), strings.NewReader(chat)))
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		return tl.waitAudit(n)[n-1]["cost_usd"]
	}
	if c := cost(1); c != float64(120) {
		t.Fatalf("cost_usd %v, want 120 from prices.yaml", c)
	}
	write("prices.yaml", "models:\n  gpt-4o-mini-2024-07-18: {input: cheap}\n")
	tl.cmd.Process.Signal(sighup)
	if !tl.waitLog("reload failed") {
		t.Fatal("no failed reload logged")
	}
	if !strings.Contains(tl.stderr.String(), "prices.yaml:2") {
		t.Errorf("the failed reload does not name the price file's line:\n%s", tl.stderr.String())
	}
	setSecret(t, dir, "openai", "sk-test-0123456789abcdefROTATED")
	if !tl.waitLog("serve with the previous config") {
		t.Fatalf("the rotation was not served:\n%s", tl.stderr.String())
	}
	if c := cost(2); c != float64(120) {
		t.Errorf("after a refused reload and a rotation: cost_usd %v, want 120 from the prices served", c)
	}
}

// TestGeminiModelRules: on a Gemini route, the model in the path is the
// one the rules check; a request for another is refused before it is
// sent.
func TestGeminiModelRules(t *testing.T) {
	up := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"candidates":[],"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":3,"totalTokenCount":10},"modelVersion":"gemini-2.5-flash"}`)
	}))
	cfg := "version: 1\nroutes:\n  - {name: gemini, preset: gemini, upstream: \"" + up.URL + "\", allow: {models: [\"gemini-2.5-flash*\"]}}\n"
	tl := startTill(t, cfg, map[string]string{"gemini": keyed("gemini-key-", "g1")}, up.caFile)
	body := `{"contents":[{"parts":[{"text":"hi"}]}]}`
	for path, want := range map[string]int{
		"/gemini/v1beta/models/gemini-2.5-flash:generateContent": 200,
		"/gemini/v1beta/models/gemini-2.5-pro:generateContent":   403,
	} {
		resp, b := do(t, newRequest(t, "POST", tl.url(path), strings.NewReader(body)))
		if resp.StatusCode != want {
			t.Errorf("%s: got %d %s, want %d", path, resp.StatusCode, b, want)
		}
	}
	for _, r := range tl.waitAudit(2) {
		switch r["model"] {
		case "gemini-2.5-flash":
			if r["tokens_in"] != float64(7) || r["tokens_out"] != float64(3) {
				t.Errorf("gemini record: %v", r)
			}
		case "gemini-2.5-pro":
			if r["reason"] != "model_not_allowed" {
				t.Errorf("refused gemini record: %v", r)
			}
		default:
			t.Errorf("record without the path's model: %v", r)
		}
	}
}
