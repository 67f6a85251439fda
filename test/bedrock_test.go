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
		body, _ := io.ReadAll(r.Body)
		if why := fake.VerifySigV4(r, body, real, "bedrock", "us-west-2"); why != "" {
			refused.Add(1)
			w.Header().Set("X-Amzn-Errortype", "InvalidSignatureException")
			http.Error(w, `{"message":"`+why+`"}`, http.StatusForbidden)
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
	tl := startTill(t, cfg, map[string]string{"aws": `{"access_key_id":"` + real.AccessKeyID + `","secret_access_key":"` + real.SecretAccessKey + `"}`}, up.caFile)
	client := bedrockruntime.New(bedrockruntime.Options{
		Region:           "us-west-2",
		BaseEndpoint:     aws.String(tl.url("/bedrock")),
		Credentials:      credentials.NewStaticCredentialsProvider("AKIADUMMYHELDBYAPP03", "dummy", ""),
		RetryMaxAttempts: 1,
	})
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
