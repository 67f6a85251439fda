package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// fakeOpenAI answers chat completions like the OpenAI API does, plain and
// streamed (Server-Sent Events).
func fakeOpenAI(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/chat/completions" {
		http.Error(w, `{"error":{"message":"not found"}}`, http.StatusNotFound)
		return
	}
	var req struct {
		Stream bool `json:"stream"`
	}
	body, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(body, &req)
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-test",`+
			`"choices":[{"index":0,"message":{"role":"assistant","content":"hello from upstream"},"finish_reason":"stop"}]}`)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	for _, word := range []string{"one ", "two ", "three"} {
		fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-2\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-test\","+
			"\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}]}\n\n", word)
		w.(http.Flusher).Flush()
		time.Sleep(20 * time.Millisecond) // paced on purpose: chunks arrive as a real stream's do
	}
	io.WriteString(w, "data: [DONE]\n\n")
}

func TestOpenAINodeSDK(t *testing.T) {
	if _, err := os.Stat("sdk/node_modules/openai"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("sdk/node_modules is missing: .ci/run must run npm ci in test/sdk")
		}
		t.Skip("run npm ci in test/sdk to enable the SDK test")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	u := newUpstream(t, http.HandlerFunc(fakeOpenAI))
	cfg := fmt.Sprintf("version: 1\nroutes:\n  - name: openai\n    preset: openai\n    upstream: %s\n", u.URL)
	tl := startTill(t, cfg, map[string]string{"openai": openaiKey}, u.caFile)

	cmd := exec.Command(node, "openai-chat.mjs")
	cmd.Dir = "sdk"
	cmd.Env = append(os.Environ(), "OPENAI_BASE_URL="+tl.url("/openai/v1"), "OPENAI_API_KEY=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	var res struct {
		Completion string `json:"completion"`
		Streamed   string `json:"streamed"`
		Chunks     int    `json:"chunks"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("node output: %q", out)
	}
	if res.Completion != "hello from upstream" || res.Streamed != "one two three" || res.Chunks != 3 {
		t.Errorf("SDK results: %+v", res)
	}
	got := u.requests()
	if len(got) != 2 {
		t.Fatalf("upstream received %d requests, want 2", len(got))
	}
	for _, r := range got {
		if v := r.Header.Values("Authorization"); len(v) != 1 || v[0] != "Bearer "+openaiKey {
			t.Errorf("upstream Authorization: want exactly the real key, got %d values", len(v))
		}
		if strings.Contains(r.Header.Get("Authorization"), "dummy") {
			t.Error("the app's dummy key reached the upstream")
		}
	}
	recs := tl.waitAudit(2)
	for _, r := range recs {
		if r["outcome"] != "forwarded" || r["route"] != "openai" {
			t.Errorf("audit record: %v", r)
		}
	}
	tl.stop()
	tl.assertNoLeak([]string{openaiKey}, string(out))
}

// TestAnthropicNodeSDKKeys drives the official @anthropic-ai/sdk, which
// sends its apiKey as "Authorization: Bearer", through the anthropic
// preset, which attaches the real key as X-Api-Key. A client's till token
// given as the SDK's apiKey names the client, as it does in X-Api-Key;
// the upstream gets the real key alone, in X-Api-Key only, and never the
// app's placeholders or its token, whichever header it used.
func TestAnthropicNodeSDKKeys(t *testing.T) {
	up := newUpstream(t, &fakeLLM{})
	tok, lines := addClient(t, t.TempDir(), "web")
	key := keyed("sk-ant-sdk-", "k1")
	cfg := "version: 1\nclients:\n" + lines + "routes:\n" +
		"  - {name: anthropic, preset: anthropic, upstream: \"" + up.URL + "\", clients: [web]}\n" +
		"  - {name: open, preset: anthropic, prefix: /open, upstream: \"" + up.URL + "\", secret: anthropic}\n"
	tl := startTill(t, cfg, map[string]string{"anthropic": key}, up.caFile)

	var got map[string]struct {
		Text    string
		Status  int
		Message string
	}
	runSDK(t, "anthropic-keys.mjs", &got, "BASE_WEB="+tl.url("/anthropic"), "BASE_OPEN="+tl.url("/open"), "TILL_TOKEN="+tok)
	for _, call := range []string{"token-as-apikey", "token-in-x-api-key", "placeholders"} {
		if got[call].Text != "hello" {
			t.Errorf("%s: the app got %+v, want the upstream's answer", call, got[call])
		}
	}
	for i, r := range up.requests() {
		if v := r.Header.Values("X-Api-Key"); len(v) != 1 || v[0] != key {
			t.Errorf("request %d: upstream X-Api-Key: want exactly the real key, got %d values", i, len(v))
		}
		if v := r.Header.Values("Authorization"); len(v) != 0 {
			t.Errorf("request %d: upstream got Authorization (%d values): the app's credential went on", i, len(v))
		}
		for name, vs := range r.Header {
			for _, v := range vs {
				if strings.Contains(v, "placeholder") || strings.Contains(v, tok) {
					t.Errorf("request %d: upstream header %s holds the app's placeholder or token", i, name)
				}
			}
		}
	}
	clients := map[string]int{}
	for _, r := range tl.waitAudit(3) {
		clients[fmt.Sprint(r["route"], "/", r["client"], "/", r["outcome"])]++
	}
	if want := map[string]int{"anthropic/web/forwarded": 2, "open/anonymous/forwarded": 1}; fmt.Sprint(clients) != fmt.Sprint(want) {
		t.Errorf("audit route/client/outcome: got %v, want %v", clients, want)
	}
	tl.stop()
	tl.assertNoLeak([]string{key, tok})
}
