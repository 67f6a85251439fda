package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tillgw/till/vault"
)

// bedrockSecret is a SigV4 secret for the Bedrock tests.
func bedrockSecret() map[string]vault.Secret {
	return map[string]vault.Secret{"aws": vault.NewFieldSecret("aws", map[string]string{"access_key_id": "AKIATILLTSTBEDROCK01", "secret_access_key": "tst-bedrock-secret-0123456789abcdef"}, time.Now())}
}

// bedrockUpstream answers every request as Bedrock's InvokeModel does for
// Claude, and keeps the escaped paths it got.
func bedrockUpstream(t *testing.T) (*httptest.Server, func() []string) {
	var mu sync.Mutex
	var paths []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		paths = append(paths, r.URL.EscapedPath())
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":3,"output_tokens":4}}`)
	}))
	t.Cleanup(up.Close)
	return up, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), paths...)
	}
}

// TestBedrockModelRulesReadThePath: Bedrock runs the model its path
// names (/model/{modelId}/invoke), and no body field. A route that signs
// for Bedrock checks allow.models against that model, and records it,
// under a usage format (which reads a body's "model") or none: a body
// naming an allowed model does not carry a request for another one past
// the rules. Outside /model/ (Bedrock's OpenAI-compatible Chat
// Completions) the body's model is the one checked.
func TestBedrockModelRulesReadThePath(t *testing.T) {
	const haiku, opus = "anthropic.claude-3-haiku-20240307-v1:0", "anthropic.claude-3-opus-20240229-v1:0"
	for _, usage := range []string{"anthropic", "none"} {
		t.Run(usage, func(t *testing.T) {
			up, seen := bedrockUpstream(t)
			gw, records := newTestGateway(t, "version: 1\nroutes:\n  - {name: aws, upstream: {{UP}}, secret: aws, usage: "+usage+
				", allow: {models: [\"anthropic.claude-3-haiku*\"]}, inject: {aws_sigv4: {service: bedrock, region: us-east-1}}}\n", up.URL, bedrockSecret())
			tests := []struct {
				path, body, want string // want: the error code, "" for forwarded
				model            string // the model recorded
			}{
				{"/model/" + opus + "/invoke", `{"model":"` + haiku + `","max_tokens":5}`, CodeModelNotAllowed, opus},
				{"/model/" + opus + "/converse", `{"messages":[],"model":"` + haiku + `"}`, CodeModelNotAllowed, opus},
				{"/model/arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123/invoke", `{"model":"` + haiku + `"}`, CodeModelNotAllowed, "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123"},
				{"/Model/" + opus + "/invoke", `{"model":"` + haiku + `"}`, CodeModelNotAllowed, opus},
				{"/model/" + haiku + "/invoke", `{"max_tokens":5}`, "", haiku},
				{"/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke", `{"model":"` + opus + `"}`, "", haiku},
				{"/model/" + haiku + "/invoke-with-response-stream", ``, "", haiku},
			}
			if usage != "none" {
				tests = append(tests, struct{ path, body, want, model string }{"/openai/v1/chat/completions", `{"model":"` + haiku + `"}`, "", haiku})
			}
			for _, tt := range tests {
				w := httptest.NewRecorder()
				gw.ServeHTTP(w, httptest.NewRequest("POST", "/aws"+tt.path, strings.NewReader(tt.body)))
				if got := w.Header().Get("X-Till-Error"); got != tt.want {
					t.Errorf("%s with %s: got %d %q, want %q", tt.path, tt.body, w.Code, got, tt.want)
				}
				recs := records.records(t)
				if m := recs[len(recs)-1]["model"]; m != tt.model {
					t.Errorf("%s with %s: recorded the model %q, want %q", tt.path, tt.body, m, tt.model)
				}
			}
			for _, p := range seen() {
				if strings.Contains(p, "opus") || strings.Contains(p, "inference-profile") {
					t.Errorf("the upstream got %s, a model the route does not allow", p)
				}
			}
		})
	}
}
