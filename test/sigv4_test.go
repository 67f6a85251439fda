package test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/smithy-go"

	"github.com/tillgw/till/test/fake"
)

// TestSigV4 drives the AWS SDK for Go, holding dummy credentials, through
// a route that signs with AWS SigV4: the fake endpoint recomputes every
// signature with the real credentials (session token included) and
// refuses a mismatch, so the app's dummy signature never passes; the
// record says credential sigv4; the long-lived secret never leaks.
func TestSigV4(t *testing.T) {
	real := aws.Credentials{AccessKeyID: "AKIATILLSIGV4000001", SecretAccessKey: keyed("sigv4-secret-", "s4"), SessionToken: keyed("sigv4-session-", "t4")}
	sm := fake.NewSecretsManager(t, real, "eu-west-1")
	sm.Put("prod/openai", "a stored value")
	cfg := `version: 1
routes:
  - name: aws
    upstream: ` + sm.URL + `
    secret: aws-creds
    inject: {aws_sigv4: {service: secretsmanager, region: eu-west-1}}
`
	tl := startTill(t, cfg, map[string]string{"aws-creds": `{"access_key_id":"` + real.AccessKeyID + `","secret_access_key":"` + real.SecretAccessKey + `","session_token":"` + real.SessionToken + `"}`}, sm.CAFile)
	client := secretsmanager.New(secretsmanager.Options{
		Region:           "eu-west-1",
		BaseEndpoint:     aws.String(tl.url("/aws")),
		Credentials:      credentials.NewStaticCredentialsProvider("AKIADUMMYHELDBYAPP01", "dummy-secret-held-by-the-app", ""),
		RetryMaxAttempts: 1,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 3 {
		out, err := client.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("prod/openai")})
		if err != nil {
			t.Fatalf("GetSecretValue through till: %v", err)
		}
		if aws.ToString(out.SecretString) != "a stored value" {
			t.Fatalf("got %q", aws.ToString(out.SecretString))
		}
	}
	if sm.Refused() != 0 || sm.Calls("prod/openai") != 3 {
		t.Errorf("the fake refused %d signatures and answered %d calls; want 0 and 3", sm.Refused(), sm.Calls("prod/openai"))
	}
	for _, r := range tl.waitAudit(3) {
		if r["credential"] != "sigv4" || r["key_fp"] == "" || r["outcome"] != "forwarded" {
			t.Errorf("record: %v", r)
		}
	}

	// The same app straight to the endpoint, with its dummy credentials:
	// refused, which is what till's signature replaced.
	direct := secretsmanager.New(secretsmanager.Options{
		Region:           "eu-west-1",
		BaseEndpoint:     aws.String(sm.URL),
		Credentials:      credentials.NewStaticCredentialsProvider("AKIADUMMYHELDBYAPP01", "dummy-secret-held-by-the-app", ""),
		HTTPClient:       &http.Client{Transport: &http.Transport{TLSClientConfig: sm.Client().Transport.(*http.Transport).TLSClientConfig}},
		RetryMaxAttempts: 1,
	})
	_, err := direct.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("prod/openai")})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "InvalidSignatureException" {
		t.Errorf("the dummy signature straight to the endpoint: %v, want InvalidSignatureException", err)
	}
	tl.stop()
	tl.assertNoLeak([]string{real.SecretAccessKey, real.SessionToken})
}

// TestSigV4Intercepted: the same, with the app's AWS SDK unchanged but for
// HTTPS_PROXY (its own endpoint, till's CA trusted): till intercepts the
// TLS, removes the app's signature and signs with the real credentials.
func TestSigV4Intercepted(t *testing.T) {
	real := aws.Credentials{AccessKeyID: "AKIATILLSIGV4000002", SecretAccessKey: keyed("sigv4-secret-", "s5")}
	sm := fake.NewSecretsManager(t, real, "us-east-1")
	sm.Put("k", "v")
	dir := t.TempDir()
	cfg := "version: 1\nforward: {enabled: true}\nroutes:\n  - {name: aws, upstream: \"" + sm.URL + "\", secret: aws-creds, inject: {aws_sigv4: {service: secretsmanager, region: us-east-1}}}\n"
	if err := os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	setSecret(t, dir, "aws-creds", `{"access_key_id":"`+real.AccessKeyID+`","secret_access_key":"`+real.SecretAccessKey+`"}`, "--json")
	if out, errOut, code := runTill(t, dir, "", nil, "ca", "init"); code != 0 {
		t.Fatalf("till ca init: exit %d: %s %s", code, out, errOut)
	}
	tl := startTillIn(t, dir, sm.CAFile)
	caPEM, err := os.ReadFile(filepath.Join(dir, "till-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	proxy, _ := url.Parse("http://" + tl.addr)
	client := secretsmanager.New(secretsmanager.Options{
		Region:           "us-east-1",
		BaseEndpoint:     aws.String(sm.URL),
		Credentials:      credentials.NewStaticCredentialsProvider("AKIADUMMYHELDBYAPP02", "dummy-secret-held-by-the-app", "dummy-session"),
		HTTPClient:       &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxy), TLSClientConfig: &tls.Config{RootCAs: roots}}},
		RetryMaxAttempts: 1,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := client.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("k")})
	if err != nil || aws.ToString(out.SecretString) != "v" {
		t.Fatalf("GetSecretValue through till's interception: %v", err)
	}
	if sm.Refused() != 0 {
		t.Errorf("the fake refused %d signatures", sm.Refused())
	}
	if r := tl.waitAudit(1)[0]; r["mode"] != "intercept" || r["credential"] != "sigv4" {
		t.Errorf("record: %v", r)
	}
	tl.stop()
	tl.assertNoLeak([]string{real.SecretAccessKey})
}
