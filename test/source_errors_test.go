package test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/tillgw/till/test/fake"
)

// TestSourceErrorQuotingTheTokenStaysOut: something at a Vault source's
// address that answers in Vault's shape ({"errors": [...]}) with words
// that quote the token till sent gets its status, not its words, into
// serve's log line (written at each request of the route), till check and
// till test; so does a Secrets Manager endpoint whose refusal quotes the
// session token, as AWS's InvalidSignatureException quotes the canonical
// request; and an exec helper's stderr that quotes a credential of its
// own from the environment till passed on, or, as it fails, the value it
// gave before.
func TestSourceErrorQuotingTheTokenStaysOut(t *testing.T) {
	up := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	v := fake.NewVault(t, time.Hour)
	token := v.IssueToken(0)
	suiteLeaks.key(token)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v.SetFront(http.StatusForbidden, `{"errors": ["permission denied: token `+token+` has no policy for this path"]}`)
	cfg := `version: 1
sources:
  - {name: corp, type: vault, address: "` + v.URL + `", ca_file: "` + v.CAFile + `", auth: {token_file: "` + tokenFile + `"}}
routes:
  - {name: openai, upstream: "` + up.URL + `", secret: "corp:secret/openai#api_key", inject: {header: Authorization, format: "Bearer {secret}"}}
`
	tl, get := storeRoutes(t, cfg, up.caFile)
	if code, e := get("/openai/v1/models"); code != 503 || e != "secret_unavailable" {
		t.Errorf("got %d %s, want 503 secret_unavailable", code, e)
	}
	const withheld = "403 Forbidden (the answer's words are not shown: they quote the credential sent)"
	if !tl.waitLog(withheld) {
		t.Errorf("serve's log does not say the fetch failed with 403: %s", tl.stderr.String())
	}
	out, errOut, code := runTill(t, tl.dir, "", nil, "check")
	if code != 1 || !strings.Contains(errOut, withheld) {
		t.Errorf("till check: exit %d: %s %s", code, out, errOut)
	}
	out, errOut, code = runTill(t, tl.dir, "", nil, "test", "GET", "/openai/v1/models")
	if code != 1 || !strings.Contains(out, withheld) {
		t.Errorf("till test: exit %d: %s %s", code, out, errOut)
	}
	for _, text := range []string{out, errOut} {
		if strings.Contains(text, "has no policy") {
			t.Errorf("the answer's words reached till's output: %s", text)
		}
	}
	tl.stop()
	tl.assertNoLeak([]string{token})

	session := keyed("aws-session-", "q1")
	aws := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"__type": "InvalidSignatureException", "Message": "The Canonical String should have been 'x-amz-security-token:%s'"}`, r.Header.Get("X-Amz-Security-Token"))
	}))
	defer aws.Close()
	cfg = `version: 1
sources:
  - {name: aws, type: aws_secretsmanager, region: eu-central-1, endpoint: "` + aws.URL + `"}
routes:
  - {name: plain, upstream: "` + up.URL + `", secret: "aws:prod/openai", inject: {header: X-Api-Key}}
`
	env := []string{"AWS_ACCESS_KEY_ID=AKIAFAKETILL0000E2E2", "AWS_SECRET_ACCESS_KEY=" + keyed("aws-secret-", "q2"),
		"AWS_SESSION_TOKEN=" + session, "AWS_EC2_METADATA_DISABLED=true"}
	tl, get = storeRoutes(t, cfg, up.caFile, env...)
	if code, e := get("/plain/v1/models"); code != 503 || e != "secret_unavailable" {
		t.Errorf("Secrets Manager: got %d %s, want 503 secret_unavailable", code, e)
	}
	const left = "InvalidSignatureException (the message is not shown: it quotes the credential sent)"
	if !tl.waitLog(left) {
		t.Errorf("serve's log does not give the error code: %s", tl.stderr.String())
	}
	out, errOut, code = runTill(t, tl.dir, "", env, "check")
	if code != 1 || !strings.Contains(errOut, left) || strings.Contains(errOut, "Canonical") {
		t.Errorf("till check: exit %d: %s %s", code, out, errOut)
	}
	tl.stop()
	tl.assertNoLeak([]string{session})

	// The value has no provider's prefix: a trace that shows it beside
	// a URL must be withheld all the same.
	helperToken, value := keyed("hvs.helper-", "h1"), keyed("Xk4", "Qa7Zp2")
	helper, mode := filepath.Join(dir, "helper"), filepath.Join(dir, "mode")
	script := `#!/bin/sh
set -x
key=` + value + `
: curl -H "X-Vault-Token: $VAULT_TOKEN" "https://vault.internal/v1/secret/$1"
[ "$(cat ` + mode + `)" = ok ] || { echo "the provider refused $key" >&2; exit 1; }
set +x
echo "$key"
`
	for name, content := range map[string]string{helper: script, mode: "ok"} {
		if err := os.WriteFile(name, []byte(content), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	cfg = `version: 1
sources:
  - {name: op, type: exec, command: [` + helper + `], ttl: 1s, failure_ttl: 1h}
routes:
  - {name: exec, upstream: "` + up.URL + `", secret: "op:item", inject: {header: X-Api-Key}}
`
	tl, get = storeRoutes(t, cfg, up.caFile, "VAULT_TOKEN="+helperToken)
	if code, e := get("/exec/v1/models"); code != 200 {
		t.Errorf("exec: got %d %s, want 200", code, e)
	}
	if !tl.waitLog("https://vault.internal/v1/secret/item") {
		t.Errorf("the helper's stderr was not logged: %s", tl.stderr.String())
	}
	// The helper fails after its trace showed the key: stdout tells
	// nothing, the value the cache holds is taken out.
	if err := os.WriteFile(mode, []byte("fail"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // past the ttl
	if code, e := get("/exec/v1/models"); code != 200 {
		t.Errorf("exec failing, within failure_ttl: got %d %s, want 200", code, e)
	}
	if !tl.waitLog("the provider refused") {
		t.Errorf("the failing helper's stderr was not logged: %s", tl.stderr.String())
	}
	tl.stop()
	tl.assertNoLeak([]string{helperToken, value})
	// A till that never had a value from the helper cannot take it out
	// of the trace by value: serve's log (its first fetch fails) and till
	// check's error (it fetches once) say the helper failed, and quote
	// the trace only while no key shows in it.
	tl, get = storeRoutes(t, cfg, up.caFile, "VAULT_TOKEN="+helperToken)
	if code, e := get("/exec/v1/models"); code != 503 || e != "secret_unavailable" {
		t.Errorf("exec failing from the start: got %d %s, want 503 secret_unavailable", code, e)
	}
	if !tl.waitLog("credential helper wrote to stderr") {
		t.Errorf("the failing helper's stderr was not logged: %s", tl.stderr.String())
	}
	tl.stop()
	tl.assertNoLeak([]string{helperToken, value})
	_, errOut, code = runTill(t, tl.dir, "", []string{"VAULT_TOKEN=" + helperToken}, "check")
	if code != 1 || !strings.Contains(errOut, "failed: exit status 1: (withheld") || strings.Contains(errOut, value) || strings.Contains(errOut, helperToken) {
		t.Errorf("till check of a failing helper: exit %d: %s", code, errOut)
	}
}

// TestCredentialChainRefusalStaysOut: the AWS SDK's credential chain
// calls STS with the pod's web identity token, or the container
// credentials endpoint with its authorization token, before Secrets
// Manager; its refusal was the fetch error whole. An endpoint that quotes
// the request it refused (AWS_ENDPOINT_URL_STS at a proxy, a container
// endpoint on loopback) put that credential in serve's log at every
// request of the route, and in till check's and till test's output: the
// code is kept, the words left out.
func TestCredentialChainRefusalStaysOut(t *testing.T) {
	up := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	creds := aws.Credentials{AccessKeyID: "ASIAFAKETILL0000E2E3", SecretAccessKey: keyed("aws-secret-", "c1"), SessionToken: keyed("aws-session-", "c2")}
	sm := fake.NewSecretsManager(t, creds, "eu-central-1")
	sm.Put("prod/openai", "sk-aws-chain")
	jwt, authToken := keyed("eyJhbGciOiJSUzI1NiJ9.", "c3"), keyed("ecs-", "c4")
	sts := fake.NewSTS(t, creds, jwt)
	sts.Refuse(func(token string) string { return "the token " + token + " is not trusted" })
	container := fake.NewContainerCredentials(t, creds, authToken)
	container.Refuse(func(auth string) string { return "Authorization: " + auth + " is not trusted" })
	dir := t.TempDir()
	jwtFile := filepath.Join(dir, "jwt")
	if err := os.WriteFile(jwtFile, []byte(jwt), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := `version: 1
sources:
  - {name: aws, type: aws_secretsmanager, region: eu-central-1, endpoint: "` + sm.URL + `"}
routes:
  - {name: plain, upstream: "` + up.URL + `", secret: "aws:prod/openai", inject: {header: X-Api-Key}}
`
	base := []string{"AWS_CA_BUNDLE=" + sm.CAFile, "AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + filepath.Join(dir, "none"), "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "none")}
	for _, tt := range []struct {
		name, code string
		env        []string
		secret     string
	}{
		{"STS", "InvalidIdentityToken", []string{"AWS_WEB_IDENTITY_TOKEN_FILE=" + jwtFile,
			"AWS_ROLE_ARN=arn:aws:iam::123456789012:role/till", "AWS_ENDPOINT_URL_STS=" + sts.URL}, jwt},
		{"container", "AccessDenied", []string{"AWS_CONTAINER_CREDENTIALS_FULL_URI=" + container.URL + "/v1/credentials",
			"AWS_CONTAINER_AUTHORIZATION_TOKEN=" + authToken}, authToken},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := append(slices.Clone(base), tt.env...)
			tl, get := storeRoutes(t, cfg, up.caFile, env...)
			if code, e := get("/plain/v1/models"); code != 503 || e != "secret_unavailable" {
				t.Errorf("got %d %s, want 503 secret_unavailable", code, e)
			}
			left := tt.code + " (the message is not shown: it quotes the credential sent)"
			if !tl.waitLog(left) {
				t.Errorf("serve's log does not give the error code: %s", tl.stderr.String())
			}
			out, errOut, code := runTill(t, tl.dir, "", env, "check")
			if code != 1 || !strings.Contains(errOut, left) || strings.Contains(errOut, "not trusted") {
				t.Errorf("till check: exit %d: %s %s", code, out, errOut)
			}
			out, errOut, code = runTill(t, tl.dir, "", env, "test", "GET", "/plain/v1/models")
			if code != 1 || !strings.Contains(out, left) || strings.Contains(out, "not trusted") {
				t.Errorf("till test: exit %d: %s %s", code, out, errOut)
			}
			tl.stop()
			tl.assertNoLeak([]string{tt.secret})
		})
	}
}
