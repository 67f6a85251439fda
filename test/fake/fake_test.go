package fake

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// TestVerifySigV4 checks the fake's own strictness: a request signed by
// the SDK passes; the same request with its body, a signed header or the
// credentials changed does not.
func TestVerifySigV4(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "AKIAFAKE", SecretAccessKey: "secret", SessionToken: "session"}
	body := []byte(`{"SecretId":"x"}`)
	signed := func() *http.Request {
		r, _ := http.NewRequest("POST", "https://secretsmanager.us-east-1.amazonaws.com/", bytes.NewReader(body))
		r.Header.Set("X-Amz-Target", "secretsmanager.GetSecretValue")
		sum := sha256.Sum256(body)
		if err := v4.NewSigner().SignHTTP(context.Background(), creds, r, hex.EncodeToString(sum[:]), "secretsmanager", "us-east-1", time.Now()); err != nil {
			t.Fatal(err)
		}
		return r
	}
	if why := VerifySigV4(signed(), body, creds, "secretsmanager", "us-east-1"); why != "" {
		t.Fatalf("a good signature was refused: %s", why)
	}
	if VerifySigV4(signed(), []byte(`{"SecretId":"y"}`), creds, "secretsmanager", "us-east-1") == "" {
		t.Error("a body changed after signing passed")
	}
	r := signed()
	r.Header.Set("X-Amz-Target", "secretsmanager.DeleteSecret")
	if VerifySigV4(r, body, creds, "secretsmanager", "us-east-1") == "" {
		t.Error("a signed header changed after signing passed")
	}
	other := creds
	other.SessionToken = ""
	if VerifySigV4(signed(), body, other, "secretsmanager", "us-east-1") == "" {
		t.Error("a session token the endpoint does not expect passed")
	}
	if VerifySigV4(signed(), body, creds, "secretsmanager", "eu-west-1") == "" {
		t.Error("a signature for another region passed")
	}
}
