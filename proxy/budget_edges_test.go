package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tillgw/till/vault"
)

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	res, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestRepeatedFieldRefused: a body that names a metered field twice
// ("stream" once false for till, once true for the provider) is refused,
// not forwarded unmetered.
func TestRepeatedFieldRefused(t *testing.T) {
	var sent atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent.Add(1)
		io.WriteString(w, `{"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}}\nbudgets:\n  - {name: b, window: 1d, tokens: 1000}\n"
	gw, buf := newTestGateway(t, y, up.URL, secrets(time.Now()))
	srv := httptest.NewServer(gw)
	defer srv.Close()
	code, body := post(t, srv.URL+"/openai/v1/chat/completions", `{"model":"gpt-4o-mini","stream":false,"stream":true,"messages":[]}`)
	if code != http.StatusBadRequest || !strings.Contains(body, `stream\" more than once`) || sent.Load() != 0 {
		t.Errorf("got %d %s, upstream asked %d times; want 400 naming the field, nothing sent", code, body, sent.Load())
	}
	srv.Close()
	if recs := buf.records(t); len(recs) != 1 || recs[0]["reason"] != CodeBadRequest {
		t.Errorf("records %v, want one bad_request refusal", recs)
	}
}

// TestPoolRetryKeepsBudgetWarning: a request over a warn-only budget whose
// first key is refused and retried with the next still says
// budget_exceeded (the retry drops the first key's warnings only).
func TestPoolRetryKeepsBudgetWarning(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.Header.Get("Authorization") == "Bearer key-a" {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		io.WriteString(w, `{"model":"gpt-4o-mini","usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n" +
		"  - {name: openai, preset: openai, upstream: {{UP}}, secret: [a, b]}\n" +
		"  - {name: other, preset: openai, upstream: {{UP}}, secret: b}\n" +
		"budgets:\n  - {name: w, window: 1d, requests: 1, on_exceeded: warn}\n"
	now := time.Now()
	gw, buf := newTestGateway(t, y, up.URL, map[string]vault.Secret{"a": vault.NewSecret("a", "key-a", now), "b": vault.NewSecret("b", "key-b", now)})
	srv := httptest.NewServer(gw)
	defer srv.Close()
	body := `{"model":"gpt-4o-mini","messages":[]}`
	if code, b := post(t, srv.URL+"/other/v1/chat/completions", body); code != 200 { // spends the budget
		t.Fatalf("got %d %s", code, b)
	}
	if code, b := post(t, srv.URL+"/openai/v1/chat/completions", body); code != 200 {
		t.Fatalf("got %d %s", code, b)
	}
	srv.Close()
	recs := buf.records(t)
	if last := recs[len(recs)-1]; last["route"] != "openai" || last["secret"] != "b" || last["reason"] != CodeBudgetExceeded {
		t.Errorf("the retried request's record: %v, want key b and reason budget_exceeded", last)
	}
	if retried := recs[len(recs)-2]; retried["reason"] != codePoolRetry || retried["secret"] != "a" {
		t.Errorf("the refused attempt's record: %v", retried)
	}
}

// TestHangUpBeforeUsageCountsReservation: an app that takes a stream's
// text and hangs up before the usage chunk does not dodge a budget. The
// provider bills the answer whole, so till reads it to its end and counts
// the usage it tells; when the answer breaks off before that, it charges
// the tokens the request reserved (max_tokens), or, when it set none or
// streamed more events than it reserved, a token per event: not 0.
func TestHangUpBeforeUsageCountsReservation(t *testing.T) {
	for _, tt := range []struct {
		name      string
		maxTokens string
		chunks    int
		output    int
	}{
		{"max_tokens", `"max_tokens":300,`, 1, 300},
		{"no max_tokens", "", 50, 50},
		{"more events than max_tokens", `"max_tokens":10,`, 50, 50},
	} {
		for _, breaks := range []bool{false, true} {
			name := tt.name + ", answer ends"
			if breaks {
				name = tt.name + ", answer breaks off"
			}
			t.Run(name, func(t *testing.T) {
				release := make(chan struct{})
				up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.Copy(io.Discard, r.Body)
					w.Header().Set("Content-Type", "text/event-stream")
					for range tt.chunks {
						io.WriteString(w, `data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" word"}}]}`+"\n\n")
					}
					w.(http.Flusher).Flush()
					<-release
					if breaks {
						panic(http.ErrAbortHandler)
					}
					io.WriteString(w, `data: {"choices":[],"usage":{"prompt_tokens":300,"completion_tokens":300}}`+"\n\ndata: [DONE]\n\n")
				}))
				defer up.Close()
				y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}}\nbudgets:\n  - {name: b, window: 1d, tokens: 100000}\n"
				gw, buf := newTestGateway(t, y, up.URL, secrets(time.Now()))
				srv := httptest.NewServer(gw)
				defer srv.Close()
				ctx, cancel := context.WithCancel(context.Background())
				req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/openai/v1/chat/completions",
					strings.NewReader(`{"model":"gpt-4o-mini","stream":true,`+tt.maxTokens+`"messages":[]}`))
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				br := bufio.NewReader(res.Body)
				for seen := 0; seen < tt.chunks; {
					line, err := br.ReadString('\n')
					if err != nil {
						t.Fatalf("after %d chunks: %v", seen, err)
					}
					if strings.Contains(line, " word") {
						seen++
					}
				}
				cancel() // before the usage chunk
				res.Body.Close()
				close(release)
				srv.Close() // waits for the handler, and so for the settlement
				// Whether till saw the app go before the answer ended
				// (client_closed) or not (forwarded; upstream_unreachable
				// when it broke off) depends on when the server notices:
				// the count does not.
				if recs := buf.records(t); len(recs) != 1 {
					t.Fatalf("records %v, want one", recs)
				}
				want := float64(600) // the usage the answer told at its end
				if breaks {
					// The body (with the include_usage till adds) at a
					// token per 4 bytes stands for the input the answer
					// never told.
					body := `{"model":"gpt-4o-mini","stream":true,` + tt.maxTokens + `"messages":[],"stream_options":{"include_usage":true}}`
					want = float64(tt.output + len(body)/4)
				}
				rows, err := gw.Usage(context.Background())
				if err != nil || len(rows) != 1 || rows[0].Used != want {
					t.Errorf("usage %+v (%v), want %v tokens counted", rows, err, want)
				}
			})
		}
	}
}

// TestLargeBodyUnderTokenBudget: a body too large to read on a route under
// a token budget is refused (its stream would report no usage), is read
// and metered when max_body allows it, and passes unread on a route no
// such budget covers.
func TestLargeBodyUnderTokenBudget(t *testing.T) {
	var asked atomic.Value
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		asked.Store(strings.Contains(string(b), `"include_usage":true`))
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"choices":[],"usage":{"prompt_tokens":300,"completion_tokens":300}}`+"\n\ndata: [DONE]\n\n")
	}))
	defer up.Close()
	big := `{"model":"gpt-4o-mini","messages":[],"pad":"` + strings.Repeat(" ", 3<<19) + `","stream":true}`
	for _, tt := range []struct {
		name, yaml string
		code       int
		metered    bool
	}{
		{"budgeted", "routes:\n  - {name: openai, preset: openai, upstream: {{UP}}}\nbudgets:\n  - {name: b, window: 1d, tokens: 1000}\n", 400, false},
		{"budgeted, max_body 4MB", "routes:\n  - {name: openai, preset: openai, upstream: {{UP}}, max_body: 4MB}\nbudgets:\n  - {name: b, window: 1d, tokens: 1000}\n", 200, true},
		{"request budget only", "routes:\n  - {name: openai, preset: openai, upstream: {{UP}}}\nbudgets:\n  - {name: b, window: 1d, requests: 10}\n", 200, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			asked.Store(false)
			gw, _ := newTestGateway(t, "version: 1\n"+tt.yaml, up.URL, secrets(time.Now()))
			srv := httptest.NewServer(gw)
			defer srv.Close()
			code, body := post(t, srv.URL+"/openai/v1/chat/completions", big)
			if code != tt.code || code == 400 && !strings.Contains(body, "larger than till reads to meter") {
				t.Fatalf("got %d %s, want %d", code, body, tt.code)
			}
			if asked.Load() != tt.metered {
				t.Errorf("the upstream was asked for usage: %v, want %v", asked.Load(), tt.metered)
			}
		})
	}
}

// TestUnreadableBodyUnderTokenBudget: a body till cannot read (nested
// deeper than it reads) is refused on a route under a token budget, and
// passes on one without.
func TestUnreadableBodyUnderTokenBudget(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	}))
	defer up.Close()
	deep := `{"model":"gpt-4o-mini","x":` + strings.Repeat("[", 2000) + strings.Repeat("]", 2000) + `,"stream":true}`
	for yaml, want := range map[string]int{
		"budgets:\n  - {name: b, window: 1d, tokens: 1000}\n": 400,
		"budgets:\n  - {name: b, window: 1d, requests: 10}\n": 200,
	} {
		gw, _ := newTestGateway(t, "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}}\n"+yaml, up.URL, secrets(time.Now()))
		srv := httptest.NewServer(gw)
		if code, body := post(t, srv.URL+"/openai/v1/chat/completions", deep); code != want {
			t.Errorf("%s: got %d %s, want %d", yaml, code, body, want)
		}
		srv.Close()
	}
}

// TestAnthropicHangUpCountsReservation: an Anthropic stream tells its
// input and 1 output token at once, the rest at its end. The app hangs up
// before then, and the upstream sends no more (till reads an answer the
// app left to its end, but not past the route's timeout of silence): it
// is charged the rest of its reservation.
func TestAnthropicHangUpCountsReservation(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n")
		io.WriteString(w, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"all of it\"}}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		io.WriteString(w, "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":300}}\n\n")
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: anthropic, preset: anthropic, upstream: {{UP}}, timeout: 100ms}\nbudgets:\n  - {name: b, window: 1d, tokens: 1000}\n"
	gw, buf := newTestGateway(t, y, up.URL, map[string]vault.Secret{"anthropic": vault.NewSecret("anthropic", "sk-ant-test-key-000000000000", time.Now())})
	srv := httptest.NewServer(gw)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/anthropic/v1/messages",
		strings.NewReader(`{"model":"claude-sonnet-4-5","stream":true,"max_tokens":300,"messages":[]}`))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(res.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended before the text: %v", err)
		}
		if strings.Contains(line, "all of it") {
			break
		}
	}
	cancel() // before message_delta
	res.Body.Close()
	srv.Close()
	recs := buf.records(t)
	if len(recs) != 1 || recs[0]["reason"] != codeClientClosed {
		t.Fatalf("records %v, want one of a client that went away", recs)
	}
	rows, err := gw.Usage(context.Background())
	if err != nil || len(rows) != 1 {
		t.Fatalf("usage %+v (%v)", rows, err)
	}
	if rows[0].Used < 300 {
		t.Errorf("a cut Anthropic stream is charged %v tokens, want at least the 300 reserved (record: tokens_in %v tokens_out %v)",
			rows[0].Used, recs[0]["tokens_in"], recs[0]["tokens_out"])
	}
}

// usedTokens is what the gateway's one token budget has counted.
func usedTokens(t *testing.T, gw *Gateway) float64 {
	t.Helper()
	rows, err := gw.Usage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.Kind == "tokens" {
			return r.Used
		}
	}
	return 0
}

// recordingUpstream answers every request with answer (as contentType),
// and keeps the last body it was sent.
func recordingUpstream(t *testing.T, contentType, answer string) (*httptest.Server, func() string) {
	var got atomic.Value
	got.Store("")
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.Store(string(b))
		w.Header().Set("Content-Type", contentType)
		io.WriteString(w, answer)
	}))
	t.Cleanup(up.Close)
	return up, func() string { return got.Load().(string) }
}

// TestCompatEndpointsMetered: the OpenAI-compatible endpoints of other
// providers (Anthropic's and Gemini's /chat/completions) answer in
// OpenAI's shape: read on their routes, and their streams are asked for
// usage, however a lenient server would read their path; a stream of
// the provider's own API is not sent the field.
func TestCompatEndpointsMetered(t *testing.T) {
	up, _ := recordingUpstream(t, "application/json",
		`{"id":"msg_1","object":"chat.completion","model":"claude-sonnet-4-5","choices":[],"usage":{"prompt_tokens":600,"completion_tokens":600,"total_tokens":1200}}`)
	y := "version: 1\nroutes:\n  - {name: anthropic, preset: anthropic, upstream: {{UP}}, secret: openai}\nbudgets:\n  - {name: b, window: 1d, tokens: 1000}\n"
	gw, _ := newTestGateway(t, y, up.URL, secrets(time.Now()))
	srv := httptest.NewServer(gw)
	defer srv.Close()
	var codes []int
	for range 3 {
		code, _ := post(t, srv.URL+"/anthropic/v1/chat/completions", `{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[]}`)
		codes = append(codes, code)
	}
	if fmt.Sprint(codes) != "[200 429 429]" || usedTokens(t, gw) != 1200 {
		t.Errorf("statuses %v, tokens counted %v; want [200 429 429] and 1200", codes, usedTokens(t, gw))
	}

	sse, sent := recordingUpstream(t, "text/event-stream", "data: [DONE]\n\n")
	y = "version: 1\nroutes:\n  - {name: anthropic, preset: anthropic, upstream: {{UP}}, secret: openai}\n  - {name: gemini, preset: gemini, upstream: {{UP}}, secret: openai}\n"
	gw, _ = newTestGateway(t, y, sse.URL, secrets(time.Now()))
	srv2 := httptest.NewServer(gw)
	defer srv2.Close()
	for _, tt := range []struct {
		path string
		asks bool
	}{
		{"/anthropic/v1/chat/completions", true},
		{"/gemini/v1beta/openai/chat/completions", true},
		{"/anthropic/v1/messages", false},
		// As servers that merge slashes and drop ;parameters route them.
		{"/anthropic/v1/chat/completions/", true},
		{"/anthropic/v1/chat//completions;x", true},
	} {
		post(t, srv2.URL+tt.path, `{"model":"m","stream":true,"max_tokens":5,"messages":[]}`)
		if asked := strings.Contains(sent(), `"include_usage":true`); asked != tt.asks {
			t.Errorf("%s: sent %s; asked for usage %v, want %v", tt.path, sent(), asked, tt.asks)
		}
	}
}

// TestMistralNotAskedForStreamUsage: Mistral refuses stream_options (422
// extra_forbidden) and reports usage in every stream: its preset's
// streams go as the app wrote them, and their usage is counted.
func TestMistralNotAskedForStreamUsage(t *testing.T) {
	up, sent := recordingUpstream(t, "text/event-stream",
		"data: {\"model\":\"mistral-small-2503\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n")
	y := "version: 1\nroutes:\n  - {name: mistral, preset: mistral, upstream: {{UP}}, secret: openai}\nbudgets:\n  - {name: b, window: 1d, tokens: 1000}\n"
	gw, _ := newTestGateway(t, y, up.URL, secrets(time.Now()))
	srv := httptest.NewServer(gw)
	defer srv.Close()
	const body = `{"model":"mistral-small-latest","stream":true,"messages":[]}`
	post(t, srv.URL+"/mistral/v1/chat/completions", body)
	if sent() != body {
		t.Errorf("Mistral was sent %s, want the app's body unchanged", sent())
	}
	srv.Close() // waits for the handler, and so for the settlement
	if used := usedTokens(t, gw); used != 7 {
		t.Errorf("tokens counted %v, want 7", used)
	}
}

// TestHugeUsageSaturates: counts that add up past int64 (a broken or
// hostile upstream) saturate, so the budget is spent, not wrapped to 0.
func TestHugeUsageSaturates(t *testing.T) {
	up, _ := recordingUpstream(t, "application/json", `{"model":"gpt-4o-mini","usage":{"prompt_tokens":9223372036854775807,"completion_tokens":1}}`)
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}}\nbudgets:\n  - {name: b, window: 1d, tokens: 1000}\n"
	gw, _ := newTestGateway(t, y, up.URL, secrets(time.Now()))
	srv := httptest.NewServer(gw)
	defer srv.Close()
	c1, _ := post(t, srv.URL+"/openai/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`)
	c2, _ := post(t, srv.URL+"/openai/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`)
	if c1 != 200 || c2 != http.StatusTooManyRequests {
		t.Errorf("statuses %d %d, tokens counted %v: want 200, then 429", c1, c2, usedTokens(t, gw))
	}
}

// TestJSONAsUploadUnderTokenBudget: a JSON request sent under an upload's
// Content-Type on a route under a token budget is read all the same (its
// stream asked for usage), while a real upload streams on unread.
func TestJSONAsUploadUnderTokenBudget(t *testing.T) {
	up, sent := recordingUpstream(t, "text/event-stream", "data: [DONE]\n\n")
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}}\nbudgets:\n  - {name: b, window: 1d, tokens: 1000}\n"
	gw, _ := newTestGateway(t, y, up.URL, secrets(time.Now()))
	srv := httptest.NewServer(gw)
	defer srv.Close()
	for _, tt := range []struct{ ctype, body, want string }{
		{"application/octet-stream", ` {"model":"gpt-4o-mini","stream":true,"max_tokens":10,"messages":[]}`, `"include_usage":true`},
		{"multipart/form-data; boundary=x", strings.Repeat(" ", 600) + `{"model":"gpt-4o-mini","stream":true,"max_tokens":10}`, `"include_usage":true`},
		{"audio/wav", "RIFF" + strings.Repeat("x", 2000), "RIFF" + strings.Repeat("x", 2000)},
	} {
		res, err := http.Post(srv.URL+"/openai/v1/chat/completions", tt.ctype, strings.NewReader(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if !strings.Contains(sent(), tt.want) {
			t.Errorf("%s: status %d, upstream got %.80q…, want it to hold %.40q", tt.ctype, res.StatusCode, sent(), tt.want)
		}
	}
}

// TestStreamNotBooleanRefused: "stream": "true" (or 1), which lenient
// servers read as true, would stream an answer till did not ask usage
// of: refused on a metered route, as a repeated field is.
func TestStreamNotBooleanRefused(t *testing.T) {
	up, sent := recordingUpstream(t, "text/event-stream", "data: [DONE]\n\n")
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}}\n"
	gw, _ := newTestGateway(t, y, up.URL, secrets(time.Now()))
	srv := httptest.NewServer(gw)
	defer srv.Close()
	for _, body := range []string{`{"model":"m","stream":"true"}`, `{"model":"m","stream":1}`} {
		if code, _ := post(t, srv.URL+"/openai/v1/chat/completions", body); code != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", body, code)
		}
	}
	if code, _ := post(t, srv.URL+"/openai/v1/chat/completions", `{"model":"m","stream":null}`); code != 200 || sent() != `{"model":"m","stream":null}` {
		t.Errorf(`"stream": null: status %d, sent %s; want 200 and the body as it was`, code, sent())
	}
}

// TestUpgradeHeaderSendsHeldBody: a request with an Upgrade header whose
// body till read (for the model it records, on a route whose usage it
// knows) sends that body upstream, not the spent one.
func TestUpgradeHeaderSendsHeldBody(t *testing.T) {
	up, sent := recordingUpstream(t, "application/json", `{"model":"gpt-4o-mini","usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}}\n"
	gw, _ := newTestGateway(t, y, up.URL, secrets(time.Now()))
	srv := httptest.NewServer(gw)
	defer srv.Close()
	const body = `{"model":"gpt-4o-mini","messages":[]}`
	req, _ := http.NewRequest("POST", srv.URL+"/openai/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	res, err := http.DefaultTransport.(*http.Transport).Clone().RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || sent() != body {
		t.Errorf("status %d %s; upstream got body %q, want %q", res.StatusCode, b, sent(), body)
	}
}

// TestModellessUsageNotFree: an answer that reports usage while neither it
// nor its request names a model (an image edit sent as multipart, which
// till does not read) was priced at $0, so a dollar budget never ran out.
// It is priced at the table's highest prices: the budget runs out.
func TestModellessUsageNotFree(t *testing.T) {
	var sent atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"data":[],"usage":{"input_tokens":1000,"output_tokens":1000}}`)
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}}\nbudgets:\n  - {name: b, window: 1d, usd: 0.05}\n"
	gw, buf := newTestGateway(t, y, up.URL, secrets(time.Now()))
	srv := httptest.NewServer(gw)
	defer srv.Close()
	codes := ""
	for range 3 {
		req, _ := http.NewRequest("POST", srv.URL+"/openai/v1/images/edits", strings.NewReader("--b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nx\r\n--b--\r\n"))
		req.Header.Set("Content-Type", "multipart/form-data; boundary=b")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		codes += strconv.Itoa(res.StatusCode) + " "
	}
	// 1000 in and 1000 out at the dearest prices (15 and 75 per million)
	// cost $0.09: the first request spends the budget.
	if codes != "200 429 429 " || sent.Load() != 1 {
		t.Errorf("got %s with %d sent; want 200 429 429 and 1", codes, sent.Load())
	}
	srv.Close()
	if recs := buf.records(t); len(recs) == 0 || recs[0]["cost_usd"] != 0.09 {
		t.Errorf("records %v; want the first priced at $0.09", recs)
	}
}

// TestWebSearchFeesCharged: each provider's web searches cost a fee
// besides tokens (Anthropic's and OpenAI's per search, Gemini 2.5's per
// answer that searched). A request asking for few tokens but many searches
// spends a dollar budget, and its record's cost says so.
func TestWebSearchFeesCharged(t *testing.T) {
	calls := strings.Repeat(`{"type":"web_search_call","id":"ws","status":"completed"},`, 20)
	tests := []struct {
		preset, path, body, answer string
		usd, cost                  float64
	}{
		// 20 searches at $10 per 1,000 cost $0.20 (tokens $0.00006):
		// the second request overspends $0.30, the third is refused.
		{"anthropic", "/v1/messages",
			`{"model":"claude-haiku-4-5","max_tokens":10,"messages":[],"tools":[{"type":"web_search_20250305","name":"web_search"}]}`,
			`{"type":"message","model":"claude-haiku-4-5-20251001","content":[],` +
				`"usage":{"input_tokens":10,"output_tokens":10,"server_tool_use":{"web_search_requests":20}}}`,
			0.3, 0.2},
		{"openai", "/v1/responses",
			`{"model":"gpt-5","max_output_tokens":10,"input":"news","tools":[{"type":"web_search"}]}`,
			`{"object":"response","model":"gpt-5-2025-08-07","output":[` + calls +
				`{"type":"message","content":[]}],"usage":{"input_tokens":10,"output_tokens":10}}`,
			0.3, 0.2},
		// One grounded answer costs $0.035 however many queries it ran.
		{"gemini", "/v1beta/models/gemini-2.5-flash:generateContent",
			`{"contents":[],"tools":[{"google_search":{}}],"generationConfig":{"maxOutputTokens":10}}`,
			`{"candidates":[{"content":{"parts":[]},"groundingMetadata":{"webSearchQueries":["a","b","c"]}}],` +
				`"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":10},"modelVersion":"gemini-2.5-flash"}`,
			0.05, 0.035},
	}
	for _, tt := range tests {
		t.Run(tt.preset, func(t *testing.T) {
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, tt.answer)
			}))
			defer up.Close()
			y := fmt.Sprintf("version: 1\nroutes:\n  - {name: r, preset: %s, upstream: {{UP}}, secret: openai}\n"+
				"budgets:\n  - {name: b, window: 1d, usd: %v}\n", tt.preset, tt.usd)
			gw, buf := newTestGateway(t, y, up.URL, secrets(time.Now()))
			srv := httptest.NewServer(gw)
			defer srv.Close()
			codes := ""
			for range 3 {
				res, err := http.Post(srv.URL+"/r"+tt.path, "application/json", strings.NewReader(tt.body))
				if err != nil {
					t.Fatal(err)
				}
				res.Body.Close()
				codes += strconv.Itoa(res.StatusCode) + " "
			}
			if codes != "200 200 429 " {
				t.Errorf("got %s; want 200 200 429", codes)
			}
			srv.Close()
			if recs := buf.records(t); len(recs) == 0 || recs[0]["cost_usd"].(float64) < tt.cost {
				t.Errorf("records %v; want the first priced at $%v and more", recs, tt.cost)
			}
		})
	}
}

// budgetUsed returns what gw's budgets counted: tokens and dollars.
func budgetUsed(t *testing.T, gw *Gateway) (tokens, usd float64) {
	t.Helper()
	rows, err := gw.Usage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		switch r.Kind {
		case "tokens":
			tokens += r.Used
		case "usd":
			usd += r.Used
		}
	}
	return tokens, usd
}

// TestHangUpBeforeAnswerCharged: an app that hangs up once its request is
// upstream, before the answer's head, is charged what it reserved when no
// answer comes within the route's timeout: the provider works on
// regardless.
func TestHangUpBeforeAnswerCharged(t *testing.T) {
	arrived := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		arrived <- struct{}{}
		<-r.Context().Done()
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}, timeout: 100ms}\nbudgets:\n  - {name: b, window: 1d, tokens: 100000, usd: 100}\n"
	gw, buf := newTestGateway(t, y, up.URL, secrets(time.Now()))
	srv := httptest.NewServer(gw)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/openai/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","max_tokens":4000,"messages":[]}`))
	req.Header.Set("Content-Type", "application/json")
	done := make(chan struct{})
	go func() {
		defer close(done)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
		}
	}()
	<-arrived
	cancel()
	<-done
	srv.Close() // waits for the handler, and so for the settlement
	if recs := buf.records(t); len(recs) != 1 || recs[0]["reason"] != codeClientClosed {
		t.Fatalf("records %v, want one, client_closed", recs)
	}
	if tokens, usd := budgetUsed(t, gw); tokens < 4000 || usd == 0 {
		t.Errorf("the budget counted %v tokens and $%v; want the 4000 reserved, priced", tokens, usd)
	}
}

// TestUntoldUsageCharged: an answer that tells no usage (an image, a
// transcription of an upload till does not read) is charged what its
// request could have used, at the dearest prices when it names no model;
// a model list, which asks for nothing, costs nothing.
func TestUntoldUsageCharged(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"data":[]}`)
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}}\nbudgets:\n  - {name: b, window: 1d, usd: 100}\n"
	for _, tt := range []struct {
		name, method, path, contentType, body string
		charged                               bool
	}{
		{"model list", "GET", "/v1/models", "", "", false},
		{"image without a model", "POST", "/v1/images/generations", "application/json", `{"prompt":"a cat","n":10}`, true},
		{"upload", "POST", "/v1/audio/transcriptions", "multipart/form-data; boundary=b",
			"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\n\r\nID3...\r\n--b--\r\n", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			gw, buf := newTestGateway(t, y, up.URL, secrets(time.Now()))
			r := httptest.NewRequest(tt.method, "/openai"+tt.path, strings.NewReader(tt.body))
			if tt.contentType != "" {
				r.Header.Set("Content-Type", tt.contentType)
			}
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				t.Fatalf("got %d %s", w.Code, w.Body)
			}
			_, usd := budgetUsed(t, gw)
			if charged := usd > 0; charged != tt.charged {
				t.Errorf("the budget counted $%v; want charged: %v", usd, tt.charged)
			}
			if recs := buf.records(t); tt.charged && recs[0]["reason"] != codeUsageUnknown {
				t.Errorf("record %v; want reason usage_unknown", recs[0])
			}
		})
	}
}

// TestUploadAnswerNamingUnpricedModelNotFree: an upload till does not read
// (a Mistral transcription, sent as multipart) names its model only in the
// form, so the unpriced-model refusal never sees it; its answer reports
// usage and names a model the price table lacks (voxtral-mini-2507). It was
// priced at $0, so a blocking dollar budget never ran out. As for an answer
// that names no model, it must not count as free.
func TestUploadAnswerNamingUnpricedModelNotFree(t *testing.T) {
	var sent atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		// Mistral's /v1/audio/transcriptions answer, as documented.
		io.WriteString(w, `{"model":"voxtral-mini-2507","text":"hello","language":null,"segments":[],`+
			`"usage":{"prompt_audio_seconds":203,"prompt_tokens":1000,"total_tokens":2000,"completion_tokens":1000}}`)
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: mistral, preset: mistral, upstream: {{UP}}, secret: openai}\nbudgets:\n  - {name: b, window: 1d, usd: 0.05}\n"
	gw, buf := newTestGateway(t, y, up.URL, secrets(time.Now()))
	srv := httptest.NewServer(gw)
	defer srv.Close()
	form := "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nvoxtral-mini-latest\r\n" +
		"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\nContent-Type: audio/mpeg\r\n\r\nID3xxxx\r\n--b--\r\n"
	codes := ""
	for range 3 {
		req, _ := http.NewRequest("POST", srv.URL+"/mistral/v1/audio/transcriptions", strings.NewReader(form))
		req.Header.Set("Content-Type", "multipart/form-data; boundary=b")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		codes += strconv.Itoa(res.StatusCode) + " "
	}
	srv.Close()
	recs := buf.records(t)
	if codes != "200 429 429 " || sent.Load() != 1 {
		var costs []any
		for _, r := range recs {
			costs = append(costs, r["cost_usd"])
		}
		t.Errorf("got %s with %d sent (costs %v); want 200 429 429 and 1: an unread upload answered by a model the table lacks counted as free", codes, sent.Load(), costs)
	}
}

// TestEncodedJSONAsUploadUnderTokenBudget: a JSON request sent under an
// upload's Content-Type on a route under a token budget is read, so that
// a stream is asked its usage and max_tokens reserved
// (TestJSONAsUploadUnderTokenBudget). The same request hidden from the
// "starts with {" look by an encoding the provider undoes (Content-Encoding:
// gzip, which api.anthropic.com takes; a UTF-8 byte order mark or UTF-16,
// which Python's json.loads(bytes) takes) streams on unread: no include_usage,
// no reservation, and an input estimate from the compressed size. It must be
// read, or refused, not forwarded unmetered.
func TestEncodedJSONAsUploadUnderTokenBudget(t *testing.T) {
	up, sent := recordingUpstream(t, "text/event-stream", "data: [DONE]\n\n")
	var hits atomic.Int32
	counting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		up.Config.Handler.ServeHTTP(w, r)
	}))
	defer counting.Close()
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}}\nbudgets:\n  - {name: b, window: 1d, tokens: 1000}\n"
	gw, _ := newTestGateway(t, y, counting.URL, secrets(time.Now()))
	srv := httptest.NewServer(gw)
	defer srv.Close()
	const js = `{"model":"gpt-4o-mini","stream":true,"max_tokens":10,"messages":[]}`
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(js))
	zw.Close()
	utf16 := []byte{0xff, 0xfe}
	for _, c := range js {
		utf16 = append(utf16, byte(c), 0)
	}
	for _, tt := range []struct {
		name, ctype, cenc string
		body              []byte
	}{
		{"gzip", "application/octet-stream", "gzip", gz.Bytes()},
		{"BOM", "application/octet-stream", "", append([]byte("\xef\xbb\xbf"), js...)},
		{"UTF-16", "multipart/form-data; boundary=x", "", utf16},
	} {
		before := hits.Load()
		req, _ := http.NewRequest("POST", srv.URL+"/openai/v1/chat/completions", bytes.NewReader(tt.body))
		req.Header.Set("Content-Type", tt.ctype)
		if tt.cenc != "" {
			req.Header.Set("Content-Encoding", tt.cenc)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if hits.Load() != before && !strings.Contains(sent(), `"include_usage":true`) {
			t.Errorf("%s: status %d, forwarded unread (upstream got %.40q…): want it read (usage asked) or refused", tt.name, res.StatusCode, sent())
		}
	}
}

// TestAnthropicStreamEndingInErrorCharged: Anthropic sends errors inside
// a 200 event stream ("overloaded_error" mid-answer, as its docs warn).
// Such a stream told its input and 1 output token in message_start, then
// streamed 200 text deltas to the app, then ended without message_delta.
// It is charged as a stream the app cut: its reservation or a token per
// event, not the 1 output token its start told; its record says
// usage_unknown, since the budget charged more than its tokens say.
func TestAnthropicStreamEndingInErrorCharged(t *testing.T) {
	const deltas = 200
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n")
		io.WriteString(w, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n")
		for i := range deltas {
			fmt.Fprintf(w, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"word%d \"}}\n\n", i)
		}
		io.WriteString(w, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n")
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: anthropic, preset: anthropic, upstream: {{UP}}}\nbudgets:\n  - {name: b, window: 1d, tokens: 100000}\n"
	gw, buf := newTestGateway(t, y, up.URL, map[string]vault.Secret{"anthropic": vault.NewSecret("anthropic", "sk-ant-test-key-000000000000", time.Now())})
	srv := httptest.NewServer(gw)
	defer srv.Close()
	code, body := post(t, srv.URL+"/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","stream":true,"max_tokens":4096,"messages":[{"role":"user","content":"write"}]}`)
	if code != 200 || strings.Count(body, "text_delta") != deltas {
		t.Fatalf("got %d, %d deltas", code, strings.Count(body, "text_delta"))
	}
	srv.Close()
	recs := buf.records(t)
	if used := usedTokens(t, gw); used < 10+deltas {
		t.Errorf("a stream that delivered %d text deltas then ended in an error event is charged %v tokens, want at least %d (record: outcome %v, tokens_in %v, tokens_out %v)",
			deltas, used, 10+deltas, recs[0]["outcome"], recs[0]["tokens_in"], recs[0]["tokens_out"])
	}
	// The record keeps the usage the stream told, and says that it is not
	// all the budget charged.
	if recs[0]["tokens_in"] != float64(10) || recs[0]["tokens_out"] != float64(1) || recs[0]["reason"] != codeUsageUnknown {
		t.Errorf("record %v; want tokens_in 10, tokens_out 1 (as told) and reason %s", recs[0], codeUsageUnknown)
	}
}

// TestUnsentRequestNotCharged: a request that never reached the provider
// (its upstream refused the connection) used nothing: it gives back its
// reservation. Charging it, as an answer cut short is, spent a token
// budget during an upstream outage on requests that all failed, and the
// budget then refused every request for the rest of its window.
func TestUnsentRequestNotCharged(t *testing.T) {
	up := httptest.NewServer(http.NotFoundHandler())
	up.Close() // its port now refuses connections
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}}\nbudgets:\n  - {name: b, window: 1d, tokens: 10000, usd: 100}\n"
	gw, buf := newTestGateway(t, y, up.URL, secrets(time.Now()))
	for range 5 {
		r := httptest.NewRequest("POST", "/openai/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o-mini","max_tokens":4000,"messages":[]}`))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, r)
		if w.Code != http.StatusBadGateway {
			t.Fatalf("got %d %s, want 502 while the upstream is down", w.Code, w.Body)
		}
	}
	if recs := buf.records(t); len(recs) != 5 || recs[4]["reason"] != CodeUpstreamUnreachable {
		t.Fatalf("records %v, want five, upstream_unreachable", recs)
	}
	if tokens, usd := budgetUsed(t, gw); tokens != 0 || usd != 0 {
		t.Errorf("the budget counted %v tokens and $%v for requests that never reached the upstream; want none", tokens, usd)
	}
}

// TestAppGoneBeforeSendNotSent: an app that leaves before its request
// went upstream (here while its body was read; also while its budget was
// counted or its token minted) has it neither sent nor charged. On a
// route under a token budget the attempt outlives the app, so such a
// request went, and was billed and counted for no one.
func TestAppGoneBeforeSendNotSent(t *testing.T) {
	var sent atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"model":"gpt-4o-mini","usage":{"prompt_tokens":1000,"completion_tokens":5,"total_tokens":1005}}`)
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}}\nbudgets:\n  - {name: b, window: 1d, tokens: 100000}\n"
	gw, buf := newTestGateway(t, y, up.URL, secrets(time.Now()))
	ctx, cancel := context.WithCancel(context.Background())
	body := `{"model":"gpt-4o-mini","max_tokens":10,"messages":[]}`
	r := httptest.NewRequest("POST", "/openai/v1/chat/completions", nil).WithContext(ctx)
	r.Body = &onFirstRead{Reader: strings.NewReader(body), hook: cancel}
	r.ContentLength = int64(len(body))
	r.Header.Set("Content-Type", "application/json")
	func() {
		defer func() { _ = recover() }() // the connection a server would cut
		gw.ServeHTTP(httptest.NewRecorder(), r)
	}()
	if n := sent.Load(); n != 0 {
		t.Errorf("the request of an app gone before it went reached the upstream %d times", n)
	}
	if tokens, _ := budgetUsed(t, gw); tokens != 0 {
		t.Errorf("the budget counted %v tokens for it, want 0", tokens)
	}
	if recs := buf.records(t); len(recs) != 1 || recs[0]["reason"] != codeClientClosed {
		t.Errorf("records %v, want one, client_closed", recs)
	}
	if n := len(buf.uses(t)); n != 0 {
		t.Errorf("%d use records, want none: the key must not go", n)
	}
}

// TestAnthropicIterationsCharged: Anthropic bills every sampling an
// answer took, and tells them apart only in usage.iterations: a
// compaction's tokens (its top-level fields are 0) and an advisor's (left
// out of them, billed at the advisor model's prices) count against
// budgets and in the audit record.
func TestAnthropicIterationsCharged(t *testing.T) {
	const (
		compaction = `{"model":"claude-opus-4-6","content":[{"type":"compaction","content":"s"}],"stop_reason":"compaction",` +
			`"usage":{"input_tokens":0,"output_tokens":0,"iterations":[{"type":"compaction","input_tokens":180000,"output_tokens":3500}]}}`
		advisor = `{"model":"claude-haiku-4-5","usage":{"input_tokens":1000,"output_tokens":100,"iterations":[` +
			`{"type":"message","input_tokens":1000,"output_tokens":100},{"type":"advisor_message","model":"claude-opus-4-8","input_tokens":100000,"output_tokens":2000}]}}`
	)
	for _, tt := range []struct {
		name, answer        string
		tokensIn, tokensOut float64
		usd                 float64
	}{
		{"compaction", compaction, 180000, 3500, (180000*5 + 3500*25) / 1e6},
		{"advisor", advisor, 101000, 2100, (1000*1+100*5)/1e6 + (100000*5+2000*25)/1e6},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, tt.answer)
			}))
			defer up.Close()
			y := "version: 1\nroutes:\n  - {name: anthropic, preset: anthropic, upstream: {{UP}}, secret: openai}\n" +
				"budgets:\n  - {name: b, window: 1d, tokens: 1000000, usd: 100}\n"
			gw, buf := newTestGateway(t, y, up.URL, secrets(time.Now()))
			r := httptest.NewRequest("POST", "/anthropic/v1/messages", strings.NewReader(`{"model":"claude-haiku-4-5","max_tokens":10,"messages":[]}`))
			r.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				t.Fatalf("got %d %s", w.Code, w.Body)
			}
			if tokens, usd := budgetUsed(t, gw); tokens != tt.tokensIn+tt.tokensOut || math.Abs(usd-tt.usd) > 1e-9 {
				t.Errorf("the budget counted %v tokens and $%v; want %v and $%v", tokens, usd, tt.tokensIn+tt.tokensOut, tt.usd)
			}
			if rec := buf.records(t)[0]; rec["tokens_in"] != tt.tokensIn || rec["tokens_out"] != tt.tokensOut {
				t.Errorf("record has tokens %v in, %v out; want %v, %v", rec["tokens_in"], rec["tokens_out"], tt.tokensIn, tt.tokensOut)
			}
		})
	}
}

// TestFreeAnswersNotCharged: an answer that costs nothing is not charged,
// though it may tell usage that is not its own: a stored response or a
// batch looked at again, or cancelled (their usage was charged when they
// ran), and the token counts of an input (Anthropic's count_tokens,
// OpenAI's input_tokens), which were charged as untold usage.
func TestFreeAnswersNotCharged(t *testing.T) {
	const stored = `{"id":"resp_1","object":"response","model":"gpt-5","status":"completed","usage":{"input_tokens":500,"output_tokens":500}}`
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(r.URL.Path, "/count_tokens"):
			io.WriteString(w, `{"input_tokens":1234}`)
		case strings.HasSuffix(r.URL.Path, "/input_tokens"):
			io.WriteString(w, `{"object":"response.input_tokens","input_tokens":1234}`)
		default:
			io.WriteString(w, stored)
		}
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}}\n  - {name: anthropic, preset: anthropic, upstream: {{UP}}, secret: openai}\n" +
		"budgets:\n  - {name: b, window: 1d, tokens: 1000000, usd: 100}\n"
	for _, tt := range []struct {
		name, method, path, body string
		charged                  bool
	}{
		{"a stored response looked at", "GET", "/openai/v1/responses/resp_1", "", false},
		{"a response cancelled", "POST", "/openai/v1/responses/resp_1/cancel", "", false},
		{"tokens counted", "POST", "/anthropic/v1/messages/count_tokens", `{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"` + strings.Repeat("x", 4000) + `"}]}`, false},
		{"input tokens counted", "POST", "/openai/v1/responses/input_tokens", `{"model":"gpt-5","input":"` + strings.Repeat("x", 4000) + `"}`, false},
		{"a response", "POST", "/openai/v1/responses", `{"model":"gpt-5","input":"hi"}`, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			gw, buf := newTestGateway(t, y, up.URL, secrets(time.Now()))
			r := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
			r.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				t.Fatalf("got %d %s", w.Code, w.Body)
			}
			if tokens, usd := budgetUsed(t, gw); (tokens > 0 || usd > 0) != tt.charged {
				t.Errorf("the budget counted %v tokens and $%v; want charged: %v", tokens, usd, tt.charged)
			}
			if rec := buf.records(t)[0]; rec["reason"] != "" {
				t.Errorf("record's reason %v, want none", rec["reason"])
			}
		})
	}
}

// TestEncodedAnswerMetered: on a metered route till asks for an answer
// without a content coding (Accept-Encoding: identity; no such header
// lets a server pick any, RFC 9110 §12.5.3), and an upstream that gzips
// the answer all the same, JSON or a stream, has it read for its usage
// and passed on to the app plain. Read compressed, it told none, and a
// request without max_tokens was charged its input's estimate alone.
func TestEncodedAnswerMetered(t *testing.T) {
	for _, tt := range []struct{ name, contentType, answer string }{
		{"json", "application/json", `{"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":4000,"completion_tokens":6000}}`},
		{"stream", "text/event-stream", "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n" +
			"data: {\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":4000,\"completion_tokens\":6000}}\n\ndata: [DONE]\n\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var asked atomic.Value
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				asked.Store(r.Header.Values("Accept-Encoding"))
				w.Header().Set("Content-Type", tt.contentType)
				w.Header().Set("Content-Encoding", "gzip")
				zw := gzip.NewWriter(w)
				io.WriteString(zw, tt.answer)
				zw.Close()
			}))
			defer up.Close()
			y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}}\nbudgets:\n  - {name: b, window: 1d, tokens: 100000}\n"
			gw, buf := newTestGateway(t, y, up.URL, secrets(time.Now()))
			srv := httptest.NewServer(gw)
			defer srv.Close()
			req, _ := http.NewRequest("POST", srv.URL+"/openai/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o-mini","messages":[]}`))
			req.Header.Set("Accept-Encoding", "gzip")
			res, err := http.DefaultTransport.(*http.Transport).Clone().RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(res.Body)
			res.Body.Close()
			srv.Close() // waits for the handler, and so for the settlement
			if fmt.Sprint(asked.Load()) != "[identity]" {
				t.Errorf("the upstream was sent Accept-Encoding %v, want [identity]", asked.Load())
			}
			if string(got) != tt.answer || res.Header.Get("Content-Encoding") != "" {
				t.Errorf("the app got Content-Encoding %q and %q, want the answer plain", res.Header.Get("Content-Encoding"), got)
			}
			if used := usedTokens(t, gw); used != 10000 {
				t.Errorf("tokens counted %v, want 10000", used)
			}
			if rec := buf.records(t)[0]; rec["tokens_in"] != 4000.0 || rec["tokens_out"] != 6000.0 {
				t.Errorf("record %v, want 4000 tokens in, 6000 out", rec)
			}
		})
	}
}

// TestUndecodedAnswerChargesTheReservation: an answer the upstream sends
// in a coding till does not undo (br, zstd), although it was asked for
// none, is passed on unread: its usage is unknown, so the budget charges
// the request's reservation and an estimate of its input, and the
// record says usage_unknown. Charging nothing would leave the budget
// unspent whatever the answer used.
func TestUndecodedAnswerChargesTheReservation(t *testing.T) {
	for _, coding := range []string{"br", "zstd", "gzip, br"} {
		t.Run(coding, func(t *testing.T) {
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Encoding", coding)
				io.WriteString(w, "\x1b\x03\x00 compressed, usage inside")
			}))
			defer up.Close()
			y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}}\nbudgets:\n  - {name: b, window: 1d, tokens: 100000}\n"
			gw, buf := newTestGateway(t, y, up.URL, secrets(time.Now()))
			srv := httptest.NewServer(gw)
			defer srv.Close()
			body := `{"model":"gpt-4o-mini","max_tokens":100,"messages":[{"role":"user","content":"` + strings.Repeat("x", 400) + `"}]}`
			if code, _ := post(t, srv.URL+"/openai/v1/chat/completions", body); code != 200 {
				t.Fatalf("got %d, want 200", code)
			}
			srv.Close()
			if used, want := usedTokens(t, gw), float64(100+len(body)/4); used != want {
				t.Errorf("tokens counted %v, want %v: the reservation and the input's estimate", used, want)
			}
			if recs := buf.records(t); len(recs) != 1 || recs[0]["reason"] != codeUsageUnknown {
				t.Errorf("records %v, want one usage_unknown", recs)
			}
		})
	}
}

// TestMethodInLowerCaseRefused: a method spelt in other than upper case
// ("post") is refused before anything is sent. Servers that read methods
// in any case (Django, Flask, ASP.NET Core) run it as a POST, which till,
// comparing methods as RFC 9110 spells them, would neither meter nor
// charge (a "post" to /v1/batches would pass a token budget too), and
// "trace" as a TRACE, which echoes the key.
func TestMethodInLowerCaseRefused(t *testing.T) {
	var sent atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"model":"gpt-4o-mini","usage":{"prompt_tokens":400,"completion_tokens":600}}`)
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}}\nbudgets:\n  - {name: b, window: 1d, tokens: 1000}\n"
	gw, _ := newTestGateway(t, y, up.URL, secrets(time.Now()))
	srv := httptest.NewServer(gw)
	defer srv.Close()
	for _, tt := range []struct{ method, path string }{
		{"post", "/v1/chat/completions"},
		{"PoSt", "/v1/chat/completions"},
		{"post", "/v1/batches"},
		{"trace", "/v1/models"},
	} {
		req, _ := http.NewRequest(tt.method, srv.URL+"/openai"+tt.path, strings.NewReader(`{"model":"gpt-4o-mini","messages":[]}`))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusForbidden || !strings.Contains(string(b), CodeMethodNotAllowed) {
			t.Errorf("%s %s: got %d %s, want 403 %s", tt.method, tt.path, res.StatusCode, b, CodeMethodNotAllowed)
		}
	}
	if n := sent.Load(); n != 0 {
		t.Errorf("the upstream was sent %d requests, want none", n)
	}
	if code, b := post(t, srv.URL+"/openai/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`); code != 200 {
		t.Errorf("POST: got %d %s, want 200", code, b)
	}
}
