package proxy

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	"github.com/tillgw/till/vault"
)

// bedrockSecret is a SigV4 secret for the Bedrock tests.
func bedrockSecret() map[string]vault.Secret {
	return map[string]vault.Secret{"aws": vault.NewFieldSecret("aws", map[string]string{"access_key_id": "AKIATILLTSTBEDROCK01", "secret_access_key": "tst-bedrock-secret-0123456789abcdef"}, time.Now())}
}

// bedrockUpstream answers every request as Bedrock's InvokeModel does for
// Claude (CountTokens as it does), and keeps the escaped paths it got.
func bedrockUpstream(t *testing.T) (*httptest.Server, func() []string) {
	var mu sync.Mutex
	var paths []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		paths = append(paths, r.URL.EscapedPath())
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/count-tokens") {
			_, _ = io.WriteString(w, `{"inputTokens":1234}`)
			return
		}
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
// Completions) the body's model is the one checked. A path with an empty
// segment, in which till would find no model or another, is refused.
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
				// A path in which till would find no model, or another.
				{"//model/" + opus + "/converse", `{"model":"` + haiku + `","messages":[]}`, CodeBadRequest, ""},
				{"/model/" + haiku + "/invoke/", `{"max_tokens":5}`, CodeBadRequest, ""},
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

// TestBedrockModelARN: a model id given as an ARN (an inference profile,
// which cross-region inference needs) goes in the path as the AWS SDKs
// send it, its "/" escaped (%2F) in the model's segment; till takes that
// encoded slash there only, on a route that signs for Bedrock, signs the
// path as sent, matches allow.paths with the id as one segment and
// allow.models with the ARN, or with its id when AWS names the resource
// after its model (a foundation model, a system-defined inference
// profile), never with the id of a resource an account names.
func TestBedrockModelARN(t *testing.T) {
	v := awsVerifier{accessKeyID: "AKIATILLTSTBEDROCK01", secretKey: "tst-bedrock-secret-0123456789abcdef", service: "bedrock", region: "us-east-1"}
	up, got := verifyingUpstream(t, v)
	gw, records := newTestGateway(t, "version: 1\nroutes:\n"+
		"  - {name: aws, upstream: {{UP}}, secret: aws, inject: {aws_sigv4: {service: bedrock, region: us-east-1}}, allow: {paths: [\"/model/*/invoke\", \"/model/*/converse\"],\n"+
		"     models: [\"us.anthropic.claude-3-haiku*\", \"anthropic.claude-3-haiku*\", \"arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/good1\"]}}\n"+
		"  - {name: s3, upstream: {{UP}}, secret: aws, inject: {aws_sigv4: {service: s3, region: us-east-1}}}\n", up.URL, bedrockSecret())
	const (
		profile  = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0"
		sdkPath  = "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-haiku-20240307-v1%3A0/invoke"
		foundHk  = "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A%3Afoundation-model%2Fanthropic.claude-3-haiku-20240307-v1%3A0/converse"
		literal  = "/model/" + profile + "/invoke"
		opusPath = "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-opus-20240229-v1%3A0/invoke"
	)
	tests := []struct {
		path, want, upstream, model string // want: the error code; upstream: the path it got
	}{
		{sdkPath, "", sdkPath, profile},
		// The Anthropic SDK escapes "/" only: sent as the AWS SDKs send it.
		{"/model/arn:aws:bedrock:us-east-1:123456789012:inference-profile%2fus.anthropic.claude-3-haiku-20240307-v1:0/invoke", "", sdkPath, profile},
		{foundHk, "", foundHk, "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0"},
		{literal, "", "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile/us.anthropic.claude-3-haiku-20240307-v1%3A0/invoke", profile},
		{"/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fgood1/invoke", "", "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fgood1/invoke", "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/good1"},
		{opusPath, CodeModelNotAllowed, "", "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-opus-20240229-v1:0"},
		// An account names these: a haiku-like id runs what it likes.
		{"/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fus.anthropic.claude-3-haiku-x/invoke", CodeModelNotAllowed, "", "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/us.anthropic.claude-3-haiku-x"},
		{"/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aimported-model%2Fanthropic.claude-3-haiku-x/invoke", CodeModelNotAllowed, "", "arn:aws:bedrock:us-east-1:123456789012:imported-model/anthropic.claude-3-haiku-x"},
		{"/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fx%2Fus.anthropic.claude-3-haiku-1/invoke", CodeModelNotAllowed, "", "arn:aws:bedrock:us-east-1:123456789012:inference-profile/x/us.anthropic.claude-3-haiku-1"},
		// The ARN is one segment to allow.paths: /model/*/invoke only.
		{strings.TrimSuffix(sdkPath, "invoke") + "count-tokens", CodePathNotAllowed, "", ""},
		// An encoded slash anywhere else, or on another route, is refused.
		{"/model/x%2Fy/invoke%2F", CodeBadRequest, "", ""},
		{"/model/x%2Fy/other", CodeBadRequest, "", ""},
		{"/v1%2Fmodel/x/invoke", CodeBadRequest, "", ""},
		{"/model/a%2F..%2Fb/invoke", CodeBadRequest, "", ""},
		{"/model/a%5Cb/invoke", CodeBadRequest, "", ""},
	}
	for _, tt := range tests {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("POST", "/aws"+tt.path, strings.NewReader(`{"messages":[]}`)))
		if code := w.Header().Get("X-Till-Error"); code != tt.want {
			t.Errorf("%s: got %d %q, want %q", tt.path, w.Code, code, tt.want)
			continue
		}
		if tt.want != "" {
			if rec := records.records(t); tt.model != "" && rec[len(rec)-1]["model"] != tt.model {
				t.Errorf("%s: recorded the model %q, want %q", tt.path, rec[len(rec)-1]["model"], tt.model)
			}
			continue
		}
		s := <-got
		if s.why != "" || s.escaped != tt.upstream {
			t.Errorf("%s: the upstream got %s (want %s); its check of the signature: %s", tt.path, s.escaped, tt.upstream, s.why)
		}
		if rec := records.records(t); rec[len(rec)-1]["model"] != tt.model {
			t.Errorf("%s: recorded the model %q, want %q", tt.path, rec[len(rec)-1]["model"], tt.model)
		}
	}
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("PUT", "/s3/model/x%2Fy/invoke", strings.NewReader(`{}`)))
	if code := w.Header().Get("X-Till-Error"); code != CodeBadRequest {
		t.Errorf("an encoded slash on a route that signs for S3: got %d %q, want bad_request", w.Code, code)
	}
}

// TestModelPath: the model a Bedrock route's path names, and the encoded
// slashes it takes: each of the app's must be in that model id, before
// an operation that names a model.
func TestModelPath(t *testing.T) {
	up, _ := url.Parse("https://bedrock-runtime.us-east-1.amazonaws.com")
	bedrock := &route{bedrock: true, upstream: up}
	tests := []struct {
		raw, out, rawOut string // the app's path, the upstream path decoded and escaped
		model            string
		names, refused   bool
	}{
		{"/b/model/m:1/invoke", "/model/m:1/invoke", "", "m:1", true, false},
		{"/b/MODEL/m/converse", "/MODEL/m/converse", "", "m", true, false},
		{"/b/model/a%2Fb/invoke", "/model/a/b/invoke", "/model/a%2Fb/invoke", "a/b", true, false},
		{"/b/model/a/b/invoke", "/model/a/b/invoke", "", "a/b", true, false},
		{"/b/model/", "/model/", "", "", true, false},
		{"/b/model", "/model", "", "", false, false},
		{"/b/v1/chat", "/v1/chat", "", "", false, false},
		{"/b/sessions/", "/sessions/", "", "", false, false},
		// An empty segment, where a server that merges slashes would
		// find another model than modelPath does (or one it reads none
		// in: the body's would be checked instead).
		{"/b//model/m/converse", "//model/m/converse", "", "", false, true},
		{"/b/model//m/converse", "/model//m/converse", "", "", false, true},
		{"/b/model/m/invoke/", "/model/m/invoke/", "", "", false, true},
		// An encoded slash outside the route's model id: in the app's
		// prefix, in an operation not of bedrockOps, off /model/.
		{"/b%2Fc/model/a/b/invoke", "/model/a/b/invoke", "/model/a/b/invoke", "", false, true},
		{"/b/model/a%2Fb/unknown", "/model/a/b/unknown", "/model/a%2Fb/unknown", "", false, true},
		{"/b/x/a%2Fb/invoke", "/x/a/b/invoke", "/x/a%2Fb/invoke", "", false, true},
	}
	for _, tt := range tests {
		tg := target{route: bedrock, outPath: tt.out, rawPath: tt.rawOut}
		e := tg.modelPath(tt.raw)
		if (e != nil) != tt.refused || !tt.refused && (tg.model != tt.model || tg.namesModel != tt.names) {
			t.Errorf("%s: got model %q (names %v), refused %v; want %q (%v), %v", tt.raw, tg.model, tg.namesModel, e != nil, tt.model, tt.names, tt.refused)
		}
	}
	other := target{route: &route{upstream: up}, outPath: "/model/a/b/invoke", rawPath: "/model/a%2Fb/invoke"}
	if e := other.modelPath("/b/model/a%2Fb/invoke"); e == nil || other.namesModel {
		t.Errorf("a route that does not sign for Bedrock took an encoded slash, or read a model (%q)", other.model)
	}
}

// TestBedrockUnderTokenBudgets: Bedrock's CountTokens
// (/model/{modelId}/count-tokens) costs nothing and tells no usage, as
// Anthropic's count_tokens: under a token budget it is not charged (it
// was, as untold usage: the body's size in tokens); an invocation is.
// An asynchronous invocation (StartAsyncInvoke, POST /async-invoke: a
// video generated later) or a batch job (CreateModelInvocationJob) spends
// out of any answer's sight: refused, as other providers' batches are.
func TestBedrockUnderTokenBudgets(t *testing.T) {
	up, _ := bedrockUpstream(t)
	body := `{"input":{"invokeModel":{"body":"` + strings.Repeat("x", 4000) + `"}}}`
	for _, tt := range []struct {
		op      string
		charged bool
	}{{"count-tokens", false}, {"invoke", true}} {
		gw, _ := newTestGateway(t, meteredBedrockYAML, up.URL, bedrockSecret())
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("POST", "/aws/model/anthropic.claude-3-haiku-20240307-v1:0/"+tt.op, strings.NewReader(body)))
		if w.Code != http.StatusOK {
			t.Fatalf("%s: got %d %s", tt.op, w.Code, w.Body)
		}
		if tokens, _ := budgetUsed(t, gw); (tokens > 0) != tt.charged {
			t.Errorf("%s: the budget counted %v tokens; want charged: %v", tt.op, tokens, tt.charged)
		}
	}
	gw, _ := newTestGateway(t, meteredBedrockYAML, up.URL, bedrockSecret())
	for _, p := range []string{"/aws/async-invoke", "/aws/model-invocation-job"} {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("POST", p, strings.NewReader(`{"modelId":"amazon.nova-reel-v1:0"}`)))
		if w.Code != http.StatusBadRequest {
			t.Errorf("%s under a token budget: got %d, want 400", p, w.Code)
		}
	}
}

// TestBedrockConverseMetered: on a route to Bedrock with a usage format,
// Converse (/model/{modelId}/converse) answers in a shape of its own; its
// usage is read as any answer's, and inferenceConfig.maxTokens reserved.
// Unread, a Converse call that used 10,000 tokens counted its input's
// estimate (24) against a token budget, and a client kept under one by
// /invoke was not by /converse.
func TestBedrockConverseMetered(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		arrived <- struct{}{}
		<-release
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"output":{"message":{"role":"assistant","content":[{"text":"hi"}]}},"stopReason":"end_turn","usage":{"inputTokens":3000,"outputTokens":7000,"totalTokens":10000},"metrics":{"latencyMs":10}}`)
	}))
	defer up.Close()
	gw, records := newTestGateway(t, meteredBedrockYAML, up.URL, bedrockSecret())
	done := make(chan int)
	go func() {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("POST", "/aws/model/anthropic.claude-3-haiku-20240307-v1:0/converse",
			strings.NewReader(`{"messages":[{"role":"user","content":[{"text":"hello"}]}],"inferenceConfig":{"maxTokens":8000}}`)))
		done <- w.Code
	}()
	<-arrived // taken, its maxTokens reserved
	if tokens, _ := budgetUsed(t, gw); tokens != 8000 {
		t.Errorf("in flight, the budget counted %v tokens, want the 8000 reserved", tokens)
	}
	close(release)
	if code := <-done; code != http.StatusOK {
		t.Fatalf("got %d", code)
	}
	if tokens, _ := budgetUsed(t, gw); tokens != 10000 {
		t.Errorf("the budget counted %v tokens, want 10000", tokens)
	}
	if rec := records.records(t)[0]; rec["tokens_in"] != 3000.0 || rec["tokens_out"] != 7000.0 || rec["reason"] != "" {
		t.Errorf("record %v, want 3000 tokens in, 7000 out, no reason", rec)
	}
}

// meteredBedrockYAML is a route to Bedrock that meters usage, under a
// token budget.
const meteredBedrockYAML = "version: 1\nroutes:\n  - {name: aws, upstream: {{UP}}, secret: aws, usage: anthropic, inject: {aws_sigv4: {service: bedrock, region: us-east-1}}}\n" +
	"budgets:\n  - {name: b, window: 1d, tokens: 1000000}\n"

// bedrockFrame encodes an event-stream event with the AWS SDK's encoder,
// as Bedrock's streams send them.
func bedrockFrame(t *testing.T, eventType, payload string) []byte {
	msg := eventstream.Message{Payload: []byte(payload)}
	msg.Headers.Set(":message-type", eventstream.StringValue("event"))
	msg.Headers.Set(":event-type", eventstream.StringValue(eventType))
	msg.Headers.Set(":content-type", eventstream.StringValue("application/json"))
	var b bytes.Buffer
	if err := eventstream.NewEncoder().Encode(&b, msg); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestBedrockStreamsMetered: Bedrock's streams (/converse-stream,
// /invoke-with-response-stream) answer in AWS's binary event-stream
// framing, whose usage went unread: charged as untold, a stream that set
// no maxTokens counted its input's estimate (a few tokens), its 10,000
// tokens free under a token budget. The metadata event's usage, or the
// invocation metrics of the last chunk, is now read as the frames pass,
// however the upstream splits them, and the app gets them unchanged.
func TestBedrockStreamsMetered(t *testing.T) {
	chunk := func(j string) string {
		return `{"bytes":"` + base64.StdEncoding.EncodeToString([]byte(j)) + `","p":"abcd"}`
	}
	streams := map[string][]byte{
		"converse-stream": slices.Concat(
			bedrockFrame(t, "messageStart", `{"role":"assistant","p":"ab"}`),
			bedrockFrame(t, "contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"hi"},"p":"abcdef"}`),
			bedrockFrame(t, "messageStop", `{"stopReason":"end_turn","p":"a"}`),
			bedrockFrame(t, "metadata", `{"usage":{"inputTokens":3000,"outputTokens":7000,"totalTokens":10000},"metrics":{"latencyMs":10},"p":"abc"}`)),
		"invoke-with-response-stream": slices.Concat(
			bedrockFrame(t, "chunk", chunk(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}`)),
			bedrockFrame(t, "chunk", chunk(`{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":3000,"outputTokenCount":7000,"invocationLatency":10,"firstByteLatency":5}}`))),
	}
	for op, stream := range streams {
		t.Run(op, func(t *testing.T) {
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/vnd.amazon.eventstream")
				for rest := stream; len(rest) > 0; {
					n := min(7, len(rest)) // frames split across writes
					_, _ = w.Write(rest[:n])
					w.(http.Flusher).Flush()
					rest = rest[n:]
				}
			}))
			defer up.Close()
			gw, records := newTestGateway(t, meteredBedrockYAML, up.URL, bedrockSecret())
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, httptest.NewRequest("POST", "/aws/model/anthropic.claude-3-haiku-20240307-v1:0/"+op,
				strings.NewReader(`{"messages":[{"role":"user","content":[{"text":"hello"}]}]}`)))
			if w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), stream) {
				t.Fatalf("got %d, %d bytes, want 200 and the %d bytes sent", w.Code, w.Body.Len(), len(stream))
			}
			if tokens, _ := budgetUsed(t, gw); tokens != 10000 {
				t.Errorf("the budget counted %v tokens, want the 10000 the stream told", tokens)
			}
			if rec := records.records(t)[0]; rec["tokens_in"] != 3000.0 || rec["tokens_out"] != 7000.0 || rec["reason"] != "" {
				t.Errorf("record %v, want 3000 tokens in, 7000 out, no reason", rec)
			}
		})
	}
}
