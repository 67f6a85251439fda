package test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/tillgw/till/test/fake"
)

// TestCredentialsFromSource keeps the long-lived credentials of a signing
// and a minting route in a source rather than till's vault: a JSON
// document of AWS credentials and a GitHub App's PEM key, each a file of
// a files source; an OAuth2 client too. The fakes check the signature and the JWT as before;
// till check fetches each ref in the form its route reads; a file that
// is not the right shape is refused with the reason, never the value.
func TestCredentialsFromSource(t *testing.T) {
	real := aws.Credentials{AccessKeyID: "AKIATILLSOURCED00001", SecretAccessKey: keyed("sourced-aws-", "sa"), SessionToken: keyed("sourced-session-", "st")}
	sm := fake.NewSecretsManager(t, real, "eu-west-1")
	sm.Put("prod/openai", "a stored value")
	gh, pemKey := newFakeGitHub(t)
	ghUp := newUpstream(t, gh)
	oa := &fakeOAuth{id: "sourced-client", secret: keyed("sourced-oauth-", "so"), issued: map[string]int{}, valid: map[string]bool{}}
	oaUp := newUpstream(t, oa)

	keys := t.TempDir()
	write := func(name, v string) {
		if err := os.WriteFile(filepath.Join(keys, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("aws.json", "{\n  \"access_key_id\": \""+real.AccessKeyID+"\",\n  \"secret_access_key\": \""+real.SecretAccessKey+"\",\n  \"session_token\": \""+real.SessionToken+"\"\n}\n")
	write("app.pem", pemKey)
	write("oauth.json", `{"client_id":"sourced-client","client_secret":"`+oa.secret+`"}`)
	write("broken.pem", "not a key at all, "+keyed("broken-", "bk"))
	cfg := `version: 1
sources:
  - {name: mounted, type: files, dir: ` + keys + `}
routes:
  - {name: aws, upstream: "` + sm.URL + `", secret: "mounted:aws.json", inject: {aws_sigv4: {service: secretsmanager, region: eu-west-1}}}
  - {name: github, upstream: "` + ghUp.URL + `", secret: "mounted:app.pem", inject: {github_app: {app_id: 12345, installation_id: 678}}}
  - {name: partner, upstream: "` + oaUp.URL + `", secret: "mounted:oauth.json", inject: {oauth2: {token_url: "` + oaUp.URL + `/oauth/token"}}}
`
	dir := t.TempDir()
	writeConfig(t, dir, cfg)
	if out, errOut, code := runTill(t, dir, "", nil, "check"); code != 0 {
		t.Fatalf("till check: exit %d\n%s%s", code, out, errOut)
	}
	bundle := caBundle(t, dir, sm.CAFile, ghUp.caFile, oaUp.caFile)
	// till test --mint fetches the client from the source and mints.
	out, _, code := runTill(t, dir, "", []string{"SSL_CERT_FILE=" + bundle}, "test", "--mint", "GET", "/partner/v1/things")
	if code != 0 || !strings.Contains(out, "credential: oauth2") || !strings.Contains(out, "a token was obtained") || oa.count("/oauth/token") != 1 {
		t.Errorf("till test --mint, client from a source: exit %d: %s", code, out)
	}
	tl := startTillIn(t, dir, bundle)

	if got, err := getSecretThrough(tl.url("/aws")); err != nil || got != "a stored value" || sm.Refused() != 0 {
		t.Fatalf("GetSecretValue through till, credentials from a source: %v (refused %d)", err, sm.Refused())
	}
	for range 3 {
		resp, body := do(t, newRequest(t, "GET", tl.url("/github/repos/till/till"), nil))
		if resp.StatusCode != 200 {
			t.Fatalf("GitHub App, key from a source: %d %s", resp.StatusCode, body)
		}
	}
	gh.mu.Lock()
	issued := gh.issued
	gh.mu.Unlock()
	if issued != 1 {
		t.Errorf("3 requests minted %d tokens, want 1", issued)
	}
	if resp, body := do(t, newRequest(t, "GET", tl.url("/partner/v1/things"), nil)); resp.StatusCode != 200 {
		t.Errorf("OAuth2, client from a source: %d %s", resp.StatusCode, body)
	}
	for _, r := range tl.waitAudit(5) {
		if r["outcome"] != "forwarded" || r["key_fp"] == "" {
			t.Errorf("record: %v", r)
		}
	}
	tl.stop()
	gh.mu.Lock()
	secrets := []string{real.SecretAccessKey, real.SessionToken, pemKey, oa.secret}
	for tok := range gh.tokens {
		secrets = append(secrets, tok)
	}
	gh.mu.Unlock()
	oa.mu.Lock()
	secrets = append(secrets, oa.tokens...)
	oa.mu.Unlock()
	tl.assertNoLeak(secrets)

	// A route that reads a PEM key from a file that holds none: till
	// check names the ref and why, and never prints the file.
	writeConfig(t, dir, strings.Replace(cfg, "mounted:app.pem", "mounted:broken.pem", 1))
	stdout, stderr, code := runTill(t, dir, "", nil, "check")
	if code != 1 || !strings.Contains(stdout+stderr, "mounted:broken.pem") || !strings.Contains(stdout+stderr, "not PEM") {
		t.Errorf("till check with a broken PEM: exit %d\n%s%s", code, stdout, stderr)
	}
	if strings.Contains(stdout+stderr, "not a key at all") {
		t.Errorf("till check printed the file's content:\n%s%s", stdout, stderr)
	}
}

// TestCredentialsFromVault keeps signed and minted credentials in Vault,
// read through the strict fake: AWS credentials as an entry's fields, and
// a service-account key file kept whole in one field (#key_json), whose
// private_key spans lines. The fakes verify the signature and the signed
// assertion; nothing secret leaks.
func TestCredentialsFromVault(t *testing.T) {
	real := aws.Credentials{AccessKeyID: "AKIATILLVAULTED00001", SecretAccessKey: keyed("vaulted-aws-", "va")}
	sm := fake.NewSecretsManager(t, real, "eu-west-1")
	sm.Put("prod/openai", "a stored value")
	priv, pemKey := newRSAKey(t)
	suiteLeaks.key(pemKey)
	g := &fakeGoogle{pub: &priv.PublicKey, email: "till@project.iam.gserviceaccount.com"}
	gUp := newUpstream(t, g)
	g.tokenURL = gUp.URL + "/token"
	keyJSON, _ := json.MarshalIndent(map[string]string{"type": "service_account", "project_id": "project", "private_key_id": "k1",
		"private_key": pemKey, "client_email": g.email, "client_id": "1", "token_uri": g.tokenURL}, "", "  ")

	v := fake.NewVault(t, time.Hour)
	token := v.IssueToken(0)
	suiteLeaks.key(token)
	v.Put("secret/aws", map[string]string{"access_key_id": real.AccessKeyID, "secret_access_key": real.SecretAccessKey}, nil)
	v.Put("secret/gcp", map[string]string{"key_json": string(keyJSON), "owner": "ml-team"}, nil)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "vault-token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, dir, `version: 1
sources:
  - {name: corp, type: vault, address: "`+v.URL+`", ca_file: `+v.CAFile+`, auth: {token_file: `+tokenFile+`}}
routes:
  - {name: aws, upstream: "`+sm.URL+`", secret: "corp:secret/aws", inject: {aws_sigv4: {service: secretsmanager, region: eu-west-1}}}
  - {name: vertex, upstream: "`+gUp.URL+`", secret: "corp:secret/gcp#key_json", inject: {google: {}}}
`)
	bundle := caBundle(t, dir, sm.CAFile, gUp.caFile)
	tl := startTillIn(t, dir, bundle)
	if got, err := getSecretThrough(tl.url("/aws")); err != nil || got != "a stored value" || sm.Refused() != 0 {
		t.Fatalf("GetSecretValue through till, credentials from Vault: %v (refused %d)", err, sm.Refused())
	}
	for range 3 {
		resp, body := do(t, newRequest(t, "POST", tl.url("/vertex/v1/projects/project/locations/us-central1/endpoints/e:predict"), strings.NewReader(`{}`)))
		if resp.StatusCode != 200 {
			g.mu.Lock()
			t.Fatalf("Google, key from Vault: %d %s (the fake refused: %v)", resp.StatusCode, body, g.refused)
		}
	}
	g.mu.Lock()
	issued := append([]string(nil), g.issued...)
	g.mu.Unlock()
	if len(issued) != 1 {
		t.Errorf("3 requests minted %d tokens, want 1", len(issued))
	}
	records := tl.waitAudit(4)
	for _, r := range records {
		if r["outcome"] != "forwarded" || r["key_fp"] == "" || (r["credential"] != "sigv4" && r["credential"] != "google") {
			t.Errorf("record: %v", r)
		}
	}
	tl.stop()
	tl.assertNoLeak(append([]string{real.SecretAccessKey, pemKey, token}, issued...))
}

// caBundle writes the CA files in one bundle under dir and returns its
// path: till trusts one SSL_CERT_FILE. An empty name (an upstream of
// plain http, TILL_TEST_UPSTREAM=http) is left out.
func caBundle(t *testing.T, dir string, files ...string) string {
	var cas []byte
	for _, f := range files {
		if f == "" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cas = append(cas, b...)
	}
	bundle := filepath.Join(dir, "cas.pem")
	if err := os.WriteFile(bundle, cas, 0o600); err != nil {
		t.Fatal(err)
	}
	return bundle
}

// getSecretThrough asks Secrets Manager for prod/openai with the AWS SDK
// for Go, holding dummy credentials, at base URL endpoint (a till route
// that signs), and returns the value.
func getSecretThrough(endpoint string) (string, error) {
	client := secretsmanager.New(secretsmanager.Options{
		Region:           "eu-west-1",
		BaseEndpoint:     aws.String(endpoint),
		Credentials:      credentials.NewStaticCredentialsProvider("AKIADUMMYHELDBYAPP01", "dummy-secret-held-by-the-app", ""),
		RetryMaxAttempts: 1,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := client.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("prod/openai")})
	if err != nil {
		return "", err
	}
	return aws.ToString(out.SecretString), nil
}
