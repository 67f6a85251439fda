package proxy

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
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

// TestHangUpBeforeUsageCountsReservation: an app that reads a stream up to
// its text and hangs up before the usage chunk is charged the tokens it
// reserved (max_tokens), not 0: ending early does not dodge a budget.
func TestHangUpBeforeUsageCountsReservation(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"all of it"},"finish_reason":"stop"}]}`+"\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		io.WriteString(w, `data: {"choices":[],"usage":{"prompt_tokens":300,"completion_tokens":300}}`+"\n\ndata: [DONE]\n\n")
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}}\nbudgets:\n  - {name: b, window: 1d, tokens: 1000}\n"
	gw, buf := newTestGateway(t, y, up.URL, secrets(time.Now()))
	srv := httptest.NewServer(gw)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/openai/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","stream":true,"max_tokens":300,"messages":[]}`))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if line, _ := bufio.NewReader(res.Body).ReadString('\n'); !strings.Contains(line, "all of it") {
		t.Fatalf("first line %q", line)
	}
	cancel() // before the usage chunk
	res.Body.Close()
	srv.Close() // waits for the handler, and so for the settlement
	if recs := buf.records(t); len(recs) != 1 || recs[0]["reason"] != codeClientClosed {
		t.Fatalf("records %v, want one of a client that went away", recs)
	}
	rows, err := gw.Usage(context.Background())
	if err != nil || len(rows) != 1 || rows[0].Used != 300 {
		t.Errorf("usage %+v (%v), want the 300 tokens reserved counted", rows, err)
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
// input and 1 output token at once, the rest at its end: one cut before
// then is charged the rest of its reservation.
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
	y := "version: 1\nroutes:\n  - {name: anthropic, preset: anthropic, upstream: {{UP}}}\nbudgets:\n  - {name: b, window: 1d, tokens: 1000}\n"
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
