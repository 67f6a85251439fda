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
