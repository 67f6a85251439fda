package test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime/types"

	"github.com/tillgw/till/test/fake"
)

// TestBedrockThroughTill is the README's Bedrock example: an app using the
// AWS SDK's bedrockruntime client with dummy credentials, pointed at till,
// calls InvokeModel; the fake Bedrock endpoint accepts only requests that
// the real credentials signed, body included. A body over max_body is
// refused before anything is sent.
func TestBedrockThroughTill(t *testing.T) {
	real := aws.Credentials{AccessKeyID: "AKIATILLBEDROCK00001", SecretAccessKey: keyed("bedrock-secret-", "b7")}
	var refused, answered atomic.Int32
	up := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refuseUnsigned(w, r, real) {
			refused.Add(1)
			return
		}
		if r.URL.Path != "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke" {
			http.Error(w, `{"message":"unknown model"}`, http.StatusNotFound)
			return
		}
		answered.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"content":[{"type":"text","text":"hello from bedrock"}]}`)
	}))
	cfg := `version: 1
routes:
  - name: bedrock
    upstream: ` + up.URL + `
    secret: aws
    max_body: 64KB
    inject: {aws_sigv4: {service: bedrock, region: us-west-2}}
`
	tl, client := bedrockThroughTill(t, cfg, real, up.caFile)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := client.InvokeModel(ctx, &bedrockruntime.InvokeModelInput{
		ModelId:     aws.String("anthropic.claude-3-haiku-20240307-v1:0"),
		ContentType: aws.String("application/json"),
		Body:        []byte(`{"anthropic_version":"bedrock-2023-05-31","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`),
	})
	if err != nil {
		t.Fatalf("InvokeModel through till: %v", err)
	}
	if !strings.Contains(string(out.Body), "hello from bedrock") || refused.Load() != 0 || answered.Load() != 1 {
		t.Errorf("got %s; the fake refused %d and answered %d", out.Body, refused.Load(), answered.Load())
	}
	_, err = client.InvokeModel(ctx, &bedrockruntime.InvokeModelInput{
		ModelId: aws.String("anthropic.claude-3-haiku-20240307-v1:0"), ContentType: aws.String("application/json"),
		Body: []byte(`{"big":"` + strings.Repeat("x", 70<<10) + `"}`),
	})
	if err == nil || !strings.Contains(err.Error(), "400") || answered.Load() != 1 || refused.Load() != 0 {
		t.Errorf("a body over max_body: %v (answered %d)", err, answered.Load())
	}
	tl.stop()
	tl.assertNoLeak([]string{real.SecretAccessKey})
}

// TestBedrockInferenceProfileThroughTill: an app using the AWS SDK calls
// a model through a cross-region inference profile, its ARN as the model
// id, with InvokeModel and Converse: the SDK escapes the ARN's "/" in the
// path (%2F), till takes it in that model segment on the bedrock preset,
// checks allow.models against the ARN (a rule for the profile's id
// allows it), signs the path as sent, and the fake Bedrock endpoint
// accepts only requests the real credentials signed. A profile the rules
// do not allow is refused before anything is sent.
func TestBedrockInferenceProfileThroughTill(t *testing.T) {
	const (
		haiku   = "arn:aws:bedrock:us-west-2:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0"
		escaped = "arn%3Aaws%3Abedrock%3Aus-west-2%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-haiku-20240307-v1%3A0"
	)
	real := aws.Credentials{AccessKeyID: "AKIATILLBEDROCK00002", SecretAccessKey: keyed("bedrock-secret-", "c8")}
	var refused, answered atomic.Int32
	up := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refuseUnsigned(w, r, real) {
			refused.Add(1)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.EscapedPath() {
		case "/model/" + escaped + "/invoke":
			io.WriteString(w, `{"content":[{"type":"text","text":"hello from a profile"}]}`)
		case "/model/" + escaped + "/converse":
			io.WriteString(w, `{"output":{"message":{"role":"assistant","content":[{"text":"hello from a profile"}]}},"stopReason":"end_turn","usage":{"inputTokens":1,"outputTokens":1,"totalTokens":2},"metrics":{"latencyMs":1}}`)
		default:
			http.Error(w, `{"message":"The provided model identifier is invalid."}`, http.StatusBadRequest)
			return
		}
		answered.Add(1)
	}))
	cfg := `version: 1
routes:
  - name: bedrock
    preset: bedrock
    region: us-west-2
    upstream: ` + up.URL + `
    secret: aws
    allow: {models: ["us.anthropic.claude-3-haiku*"]}
`
	tl, client := bedrockThroughTill(t, cfg, real, up.caFile)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := client.InvokeModel(ctx, &bedrockruntime.InvokeModelInput{
		ModelId:     aws.String(haiku),
		ContentType: aws.String("application/json"),
		Body:        []byte(`{"anthropic_version":"bedrock-2023-05-31","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`),
	})
	if err != nil || !strings.Contains(string(out.Body), "hello from a profile") {
		t.Fatalf("InvokeModel with an inference profile through till: %v (the fake refused %d)", err, refused.Load())
	}
	conv, err := client.Converse(ctx, &bedrockruntime.ConverseInput{
		ModelId:  aws.String(haiku),
		Messages: []types.Message{{Role: types.ConversationRoleUser, Content: []types.ContentBlock{&types.ContentBlockMemberText{Value: "hi"}}}},
	})
	if err != nil || conv.Usage == nil || *conv.Usage.TotalTokens != 2 {
		t.Fatalf("Converse with an inference profile through till: %v (the fake refused %d)", err, refused.Load())
	}
	_, err = client.InvokeModel(ctx, &bedrockruntime.InvokeModelInput{
		ModelId:     aws.String(strings.Replace(haiku, "claude-3-haiku-20240307", "claude-3-opus-20240229", 1)),
		ContentType: aws.String("application/json"),
		Body:        []byte(`{"anthropic_version":"bedrock-2023-05-31","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`),
	})
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("a profile the rules do not allow: %v", err)
	}
	if refused.Load() != 0 || answered.Load() != 2 {
		t.Errorf("the fake refused %d and answered %d, want 0 and 2", refused.Load(), answered.Load())
	}
	recs := tl.waitAudit(3)
	for i, want := range []string{"", "", "model_not_allowed"} {
		if recs[i]["model"] != haiku && i < 2 || recs[i]["reason"] != want {
			t.Errorf("record %d: model %v, reason %v", i, recs[i]["model"], recs[i]["reason"])
		}
	}
	tl.stop()
	tl.assertNoLeak([]string{real.SecretAccessKey})
}

// bedrockThroughTill starts till with cfg, whose route bedrock signs with
// the real credentials (the secret aws), and returns it with an AWS SDK
// client pointed at that route, holding dummy credentials as an app does.
func bedrockThroughTill(t *testing.T, cfg string, real aws.Credentials, caFile string) (*till, *bedrockruntime.Client) {
	tl := startTill(t, cfg, map[string]string{"aws": `{"access_key_id":"` + real.AccessKeyID + `","secret_access_key":"` + real.SecretAccessKey + `"}`}, caFile)
	return tl, bedrockruntime.New(bedrockruntime.Options{
		Region:           "us-west-2",
		BaseEndpoint:     aws.String(tl.url("/bedrock")),
		Credentials:      credentials.NewStaticCredentialsProvider("AKIADUMMYHELDBYAPP03", "dummy", ""),
		RetryMaxAttempts: 1,
	})
}

// refuseUnsigned answers r as Bedrock does when the real credentials did
// not sign it, body included, and reports whether it did so.
func refuseUnsigned(w http.ResponseWriter, r *http.Request, real aws.Credentials) bool {
	body, _ := io.ReadAll(r.Body)
	why := fake.VerifySigV4(r, body, real, "bedrock", "us-west-2")
	if why != "" {
		w.Header().Set("X-Amzn-Errortype", "InvalidSignatureException")
		http.Error(w, `{"message":"`+why+`"}`, http.StatusForbidden)
	}
	return why != ""
}
