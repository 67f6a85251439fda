package source

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/tillgw/till/test/fake"
)

// awsEnv points the AWS SDK's default chain at creds and the fake's CA,
// and away from this machine's own files and instance metadata.
func awsEnv(t *testing.T, creds aws.Credentials, sm *fake.SecretsManager) {
	t.Setenv("AWS_ACCESS_KEY_ID", creds.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", creds.SecretAccessKey)
	t.Setenv("AWS_SESSION_TOKEN", creds.SessionToken)
	t.Setenv("AWS_CA_BUNDLE", sm.CAFile)
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_PROFILE", "")
}

func TestSecretsManager(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "AKIAFAKE0000000001", SecretAccessKey: "fake/secret/access/key/0001", SessionToken: "fake-session-token-1"}
	sm := fake.NewSecretsManager(t, creds, "eu-west-1")
	awsEnv(t, creds, sm)
	sm.Put("prod/openai", "sk-aws-1")
	sm.Put("prod/json", `{"api_key": "sk-aws-json", "org": "org-1"}`)
	src := &SecretsManager{Region: "eu-west-1", Endpoint: sm.URL}
	c := NewCache(map[string]Spec{"aws": {Source: src, TTL: time.Minute}}, Options{})
	ctx := context.Background()
	r, err := c.Get(ctx, "aws:prod/openai")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := r.Secret.Value(); v != "sk-aws-1" {
		t.Errorf("got %q", v)
	}
	if time.Since(r.Secret.Updated) > time.Minute {
		t.Errorf("version time %v is not CreatedDate", r.Secret.Updated)
	}
	r, err = c.Get(ctx, "aws:prod/json#api_key")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := r.Secret.Value(); v != "sk-aws-json" {
		t.Errorf("#api_key: got %q", v)
	}
	if _, _, err := src.Fetch(ctx, "prod/absent"); err == nil || !strings.Contains(err.Error(), "ResourceNotFoundException") || !errors.Is(err, ErrGone) {
		t.Errorf("absent: %v", err)
	}
	sm.ScheduleDeletion("prod/openai")
	if _, _, err := src.Fetch(ctx, "prod/openai"); err == nil || !strings.Contains(err.Error(), "InvalidRequestException") || !errors.Is(err, ErrGone) {
		t.Errorf("scheduled for deletion: %v, want an ErrGone", err)
	}
	sm.SetDown(true)
	if _, _, err := src.Fetch(ctx, "prod/json"); err == nil || errors.Is(err, ErrGone) {
		t.Errorf("service down: %v, want an error that is not ErrGone", err)
	}
	sm.SetDown(false)
	if sm.Refused() != 0 {
		t.Errorf("the fake refused %d of the SDK's signatures", sm.Refused())
	}
	if sm.Calls("prod/openai") != 1 {
		t.Errorf("%d calls for prod/openai, want 1 (cached)", sm.Calls("prod/openai"))
	}
}

func TestSecretsManagerWrongCredentialsAreRefused(t *testing.T) {
	good := aws.Credentials{AccessKeyID: "AKIAFAKE0000000002", SecretAccessKey: "fake/secret/access/key/0002"}
	sm := fake.NewSecretsManager(t, good, "us-east-1")
	sm.Put("k", "v")
	for name, creds := range map[string]aws.Credentials{
		"wrong secret key":      {AccessKeyID: good.AccessKeyID, SecretAccessKey: "not-the-secret-key-0002"},
		"unexpected session":    {AccessKeyID: good.AccessKeyID, SecretAccessKey: good.SecretAccessKey, SessionToken: "stray"},
		"wrong access key id":   {AccessKeyID: "AKIAFAKE9999999999", SecretAccessKey: good.SecretAccessKey},
		"right, control sample": good,
	} {
		t.Run(name, func(t *testing.T) {
			awsEnv(t, creds, sm)
			before := sm.Refused()
			_, _, err := (&SecretsManager{Region: "us-east-1", Endpoint: sm.URL}).Fetch(context.Background(), "k")
			if creds == good {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || sm.Refused() != before+1 {
				t.Fatalf("got %v, refused %d; want a refusal", err, sm.Refused()-before)
			}
			mustNotHold(t, err, creds.SecretAccessKey, good.SecretAccessKey)
		})
	}
}

// TestSecretsManagerCredentialProcessOutputStaysOut runs a profile's
// credential_process that prints its credentials in a way the SDK cannot
// read (a warning before the JSON, an Expiration that does not parse):
// the SDK's error quotes the helper's whole output, credentials and all,
// and the source's error is logged and printed by till check.
func TestSecretsManagerCredentialProcessOutputStaysOut(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "AKIAFAKE0000000010", SecretAccessKey: "fake/secret/access/key/0010", SessionToken: "fake-session-token-10"}
	sm := fake.NewSecretsManager(t, creds, "eu-west-1")
	sm.Put("k", "sk-aws-10")
	doc := fmt.Sprintf(`{"Version": 1, "AccessKeyId": %q, "SecretAccessKey": %q, "SessionToken": %q`, creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken)
	for _, tt := range []struct {
		name, output, want string
	}{
		{"a warning before the JSON", "warning: cache refreshed\n" + doc + "}", "not the JSON"},
		{"an Expiration that does not parse", doc + `, "Expiration": "tomorrow"}`, "not the JSON"},
		{"JSON cut short", doc, "not the JSON"},
		{"no secret key, control sample", `{"Version": 1, "AccessKeyId": "AKIAFAKE0000000010"}`, "missing SecretAccessKey"},
		{"the helper fails, control sample", "", "exit status 3"},
		{"good output, control sample", doc + "}", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			awsEnv(t, creds, sm)
			for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} {
				t.Setenv(k, "")
			}
			dir := t.TempDir()
			out := filepath.Join(dir, "output")
			if err := os.WriteFile(out, []byte(tt.output), 0o600); err != nil {
				t.Fatal(err)
			}
			script := "cat " + out
			if tt.output == "" {
				script = "exit 3"
			}
			helper := filepath.Join(dir, "helper.sh")
			if err := os.WriteFile(helper, []byte("#!/bin/sh\n"+script+"\n"), 0o700); err != nil {
				t.Fatal(err)
			}
			profile := filepath.Join(dir, "config")
			if err := os.WriteFile(profile, []byte("[default]\ncredential_process = "+helper+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			t.Setenv("AWS_CONFIG_FILE", profile)
			raw, _, err := (&SecretsManager{Region: "eu-west-1", Endpoint: sm.URL}).Fetch(context.Background(), "k")
			if tt.want == "" {
				if err != nil || string(raw) != "sk-aws-10" {
					t.Fatalf("got %q, %v", raw, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "credential_process") {
				t.Errorf("got %v, want an error naming credential_process and saying %q", err, tt.want)
			}
			mustNotHold(t, err, creds.SecretAccessKey, creds.SessionToken)
		})
	}
}

func TestSecretsManagerNeedsARegion(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "AKIAFAKE0000000003", SecretAccessKey: "fake/secret/access/key/0003"}
	sm := fake.NewSecretsManager(t, creds, "us-east-1")
	awsEnv(t, creds, sm)
	_, _, err := (&SecretsManager{Endpoint: sm.URL}).Fetch(context.Background(), "k")
	if err == nil || !strings.Contains(err.Error(), "no AWS region") {
		t.Errorf("got %v", err)
	}
}

// TestSecretsManagerEndpointMustBeHTTPS: config refuses an endpoint: in
// plain http off loopback, but the SDK also takes one from
// AWS_ENDPOINT_URL_SECRETS_MANAGER, AWS_ENDPOINT_URL or a profile's
// endpoint_url. Taken from there, a plain http endpoint got the session
// token and the signed request in clear, and whoever answered chose the
// key till then attached. 0.0.0.0 is not loopback, yet Linux dials it to
// the local host, where a listener stands in for the network's.
func TestSecretsManagerEndpointMustBeHTTPS(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "AKIAFAKE0000000004", SecretAccessKey: "fake/secret/access/key/0004", SessionToken: "fake-session-token-4"}
	sm := fake.NewSecretsManager(t, creds, "us-east-1")
	sm.Put("k", "sk-aws-4")
	var reached atomic.Bool
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Store(true)
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		_, _ = io.WriteString(w, `{"Name":"k","SecretString":"sk-chosen-by-the-network"}`)
	}))
	defer plain.Close()
	_, port, _ := net.SplitHostPort(plain.Listener.Addr().String())
	plainURL := "http://0.0.0.0:" + port
	for name, set := range map[string]func(t *testing.T){
		"AWS_ENDPOINT_URL_SECRETS_MANAGER": func(t *testing.T) { t.Setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", plainURL) },
		"AWS_ENDPOINT_URL":                 func(t *testing.T) { t.Setenv("AWS_ENDPOINT_URL", plainURL) },
		"endpoint_url": func(t *testing.T) {
			t.Setenv("AWS_CONFIG_FILE", writeFile(t, "config", "[default]\nendpoint_url = "+plainURL+"\n"))
		},
	} {
		t.Run(name, func(t *testing.T) {
			awsEnv(t, creds, sm)
			set(t)
			raw, _, err := (&SecretsManager{Region: "us-east-1"}).Fetch(context.Background(), "k")
			if err == nil || !strings.Contains(err.Error(), "must be https") {
				t.Errorf("got %q, %v; want a refusal of the plain http endpoint", raw, err)
			}
			if reached.Load() {
				t.Error("the request went in plain http to a host that is not loopback")
			}
			mustNotHold(t, err, creds.SessionToken, creds.SecretAccessKey)
		})
	}
	t.Run("https from the environment", func(t *testing.T) {
		awsEnv(t, creds, sm)
		t.Setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", sm.URL)
		raw, _, err := (&SecretsManager{Region: "us-east-1"}).Fetch(context.Background(), "k")
		if err != nil || string(raw) != "sk-aws-4" {
			t.Errorf("got %q, %v", raw, err)
		}
	})
	t.Run("the config's endpoint wins", func(t *testing.T) {
		awsEnv(t, creds, sm)
		t.Setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", plainURL)
		raw, _, err := (&SecretsManager{Region: "us-east-1", Endpoint: sm.URL}).Fetch(context.Background(), "k")
		if err != nil || string(raw) != "sk-aws-4" {
			t.Errorf("got %q, %v", raw, err)
		}
	})
}

// TestSecretsManagerBodyIsCapped: the SDK reads an answer whole into
// memory, and the source refused a SecretString over maxRaw only once it
// was read. An endpoint answering with gigabytes (one in the environment's
// AWS_ENDPOINT_URL, a broken VPC endpoint) took till down with it, as the
// Vault source's cap prevents there.
func TestSecretsManagerBodyIsCapped(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "AKIAFAKE0000000005", SecretAccessKey: "fake/secret/access/key/0005"}
	awsEnv(t, creds, fake.NewSecretsManager(t, creds, "us-east-1"))
	const total = 32 << 20
	var written atomic.Int64
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		time.Sleep(50 * time.Millisecond) // as fake.STS's flood waits
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		n, _ := io.WriteString(w, `{"Name":"k","SecretString":"`)
		written.Add(int64(n))
		chunk := []byte(strings.Repeat("a", 64<<10))
		for written.Load() < total {
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return // the client stopped reading
			}
		}
		n, _ = io.WriteString(w, `"}`)
		written.Add(int64(n))
	}))
	defer srv.Close()
	raw, _, err := (&SecretsManager{Region: "us-east-1", Endpoint: srv.URL}).Fetch(context.Background(), "k")
	if want := fmt.Sprintf("GetSecretValue: the answer is larger than %d bytes", maxAnswer); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("a %d-byte answer: got %d bytes, %v; want %q", total, len(raw), err, want)
	}
	srv.CloseClientConnections()
	<-done
	if w := written.Load(); w >= total {
		t.Errorf("the source read all %d bytes of the answer; it should stop after about %d", w, maxAnswer)
	}
}

// TestSecretsManagerVersionsAndShapes: the current version (AWSCURRENT)
// is read, a rotation within a fetch; SecretBinary is refused; a
// SecretString that is not the JSON a #FIELD or a fields route needs
// gets an error that quotes none of it.
func TestSecretsManagerVersionsAndShapes(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "AKIAFAKE0000000006", SecretAccessKey: "fake/secret/access/key/0006"}
	sm := fake.NewSecretsManager(t, creds, "us-east-1")
	awsEnv(t, creds, sm)
	src := &SecretsManager{Region: "us-east-1", Endpoint: sm.URL}
	ctx := context.Background()
	sm.Put("rotated", "sk-previous-6")
	sm.Put("rotated", "sk-current-6")
	if raw, _, err := src.Fetch(ctx, "rotated"); err != nil || string(raw) != "sk-current-6" {
		t.Errorf("after a rotation: got %q, %v; want AWSCURRENT's value", raw, err)
	}
	sm.PutBinary("binary", []byte("sk-binary-6"))
	raw, _, err := src.Fetch(ctx, "binary")
	if err == nil || !strings.Contains(err.Error(), "binary data") {
		t.Errorf("SecretBinary: got %q, %v", raw, err)
	}
	mustNotHold(t, err, "sk-binary-6", "c2stYmluYXJ5LTY") // raw and base64
	sm.Put("broken", `{"api_key": sk-unquoted-6, "org": "org-6"}`)
	c := NewCache(map[string]Spec{"aws": {Source: src, TTL: time.Minute}}, Options{})
	for _, get := range []struct {
		ref  string
		form Form
	}{{"aws:broken#api_key", FormValue}, {"aws:broken", FormFields}, {"aws:broken#org", FormFields}} {
		_, err := c.GetAs(ctx, get.ref, get.form)
		if err == nil {
			t.Errorf("%s: fetched", get.ref)
		}
		mustNotHold(t, err, "sk-unquoted-6", "unquoted")
	}
}

// TestSecretsManagerNeverFollowsRedirects: the SDK's client follows 307
// and 308 to any host (without the signature), and what answers there
// would be taken as the secret. GetSecretValue's body cannot be sent
// again, so the redirect comes back as an error: kept so by this test
// across SDK upgrades.
func TestSecretsManagerNeverFollowsRedirects(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "AKIAFAKE0000000007", SecretAccessKey: "fake/secret/access/key/0007", SessionToken: "fake-session-token-7"}
	awsEnv(t, creds, fake.NewSecretsManager(t, creds, "us-east-1"))
	var reached atomic.Bool
	other := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Store(true)
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		_, _ = io.WriteString(w, `{"Name":"k","SecretString":"sk-from-elsewhere"}`)
	}))
	defer other.Close()
	for _, code := range []int{http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		endpoint := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.URL+r.URL.RequestURI(), code)
		}))
		raw, _, err := (&SecretsManager{Region: "us-east-1", Endpoint: endpoint.URL}).Fetch(context.Background(), "k")
		endpoint.Close()
		// UnknownError: the SDK's name for an answer that is no success
		// and names no error of the service's: the redirect itself.
		if err == nil || !strings.Contains(err.Error(), "UnknownError") || reached.Load() {
			t.Errorf("%d: got %q, %v; the redirect's target was reached: %v", code, raw, err, reached.Load())
		}
	}
}

// noEnvCredentials leaves the SDK's chain to find no credentials in the
// environment, after awsEnv.
func noEnvCredentials(t *testing.T) {
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} {
		t.Setenv(k, "")
	}
}

// webIdentityChain makes the SDK's chain trade jwt, a pod's
// service-account token, for a role's credentials at STS.
func webIdentityChain(t *testing.T, jwt string) {
	t.Setenv("AWS_WEB_IDENTITY_TOKEN_FILE", writeFile(t, "jwt", jwt))
	t.Setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/till")
}

// ssoChain makes the SDK's chain log in with an SSO session whose cached
// token (accessToken, refreshed with refreshToken and clientSecret)
// expires at exp.
func ssoChain(t *testing.T, exp, accessToken, refreshToken, clientSecret string) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("AWS_CONFIG_FILE", writeFile(t, "config", "[default]\nsso_session = s\nsso_account_id = 123456789012\nsso_role_name = till\n\n"+
		"[sso-session s]\nsso_start_url = https://example.awsapps.com/start\nsso_region = us-east-1\n"))
	sum := sha1.Sum([]byte("s"))
	cache := filepath.Join(home, ".aws", "sso", "cache")
	if err := os.MkdirAll(cache, 0o700); err != nil {
		t.Fatal(err)
	}
	token := fmt.Sprintf(`{"accessToken": %q, "expiresAt": %q, "refreshToken": %q, "clientId": "client-1", "clientSecret": %q, "registrationExpiresAt": "2099-01-01T00:00:00Z", "region": "us-east-1", "startUrl": "https://example.awsapps.com/start"}`,
		accessToken, exp, refreshToken, clientSecret)
	if err := os.WriteFile(filepath.Join(cache, hex.EncodeToString(sum[:])+".json"), []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
}

// loginChain makes the SDK's chain use an `aws login` session whose
// cached credentials expired, to be refreshed with refreshToken.
func loginChain(t *testing.T, refreshToken string) {
	dir := t.TempDir()
	t.Setenv("AWS_LOGIN_CACHE_DIRECTORY", dir)
	t.Setenv("AWS_CONFIG_FILE", writeFile(t, "config", "[default]\nlogin_session = s\n"))
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dpop := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	token := fmt.Sprintf(`{"accessToken": {"accessKeyId": "AKIAFAKE0000000009", "secretAccessKey": "x", "sessionToken": "y", "accountId": "123456789012", "expiresAt": "2000-01-01T00:00:00Z"}, "refreshToken": %q, "clientId": "client-1", "dpopKey": %q}`,
		refreshToken, dpop)
	sum := sha256.Sum256([]byte("s"))
	if err := os.WriteFile(filepath.Join(dir, hex.EncodeToString(sum[:])+".json"), []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCredentialChainEndpointsMustBeHTTPS: the SDK's credential chain
// calls services of its own, whose endpoints AWS_ENDPOINT_URL_<SERVICE>
// or a profile's services section set too. STS gets the web identity
// token (a pod's service-account JWT, itself a credential) in its body,
// SSO the SSO access token in a header, SSO OIDC the refresh token and
// client secret, Signin an `aws login` session's refresh token. In plain
// http off loopback, these went in clear.
func TestCredentialChainEndpointsMustBeHTTPS(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "AKIAFAKE0000000008", SecretAccessKey: "fake/secret/access/key/0008"}
	sm := fake.NewSecretsManager(t, creds, "us-east-1")
	sm.Put("k", "v")
	const (
		jwt          = "eyJhbGciOiJSUzI1NiJ9.k8s-service-account.sig"
		ssoToken     = "sso-access-token-that-must-stay-secret"
		refreshToken = "sso-refresh-token-that-must-stay-secret"
		clientSecret = "sso-client-secret-that-must-stay-secret"
	)
	var reached atomic.Bool
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Store(true)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer plain.Close()
	_, port, _ := net.SplitHostPort(plain.Listener.Addr().String())
	plainURL := "http://0.0.0.0:" + port
	webIdentity := func(t *testing.T) { webIdentityChain(t, jwt) }
	sso := func(exp string) func(t *testing.T) {
		return func(t *testing.T) { ssoChain(t, exp, ssoToken, refreshToken, clientSecret) }
	}
	login := func(t *testing.T) { loginChain(t, refreshToken) }
	for _, tt := range []struct {
		name   string
		chain  func(t *testing.T)
		env    string
		config string // a services section setting the endpoint instead
	}{
		{"STS", webIdentity, "AWS_ENDPOINT_URL_STS", ""},
		{"STS services section", webIdentity, "", "sts"},
		{"SSO", sso("2099-01-01T00:00:00Z"), "AWS_ENDPOINT_URL_SSO", ""},
		{"SSO OIDC", sso("2000-01-01T00:00:00Z"), "AWS_ENDPOINT_URL_SSO_OIDC", ""},
		{"Signin", login, "AWS_ENDPOINT_URL_SIGNIN", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			awsEnv(t, creds, sm)
			noEnvCredentials(t)
			tt.chain(t)
			if tt.env != "" {
				t.Setenv(tt.env, plainURL)
			} else {
				t.Setenv("AWS_CONFIG_FILE", writeFile(t, "config",
					"[default]\nservices = plain\n\n[services plain]\n"+tt.config+" =\n  endpoint_url = "+plainURL+"\n"))
			}
			_, _, err := (&SecretsManager{Region: "us-east-1", Endpoint: sm.URL}).Fetch(context.Background(), "k")
			if err == nil || !strings.Contains(err.Error(), "must be https") {
				t.Errorf("got %v; want a refusal of the plain http endpoint", err)
			}
			if reached.Swap(false) {
				t.Error("the chain's credential went in plain http to a host that is not loopback")
			}
			mustNotHold(t, err, jwt, ssoToken, refreshToken, clientSecret)
		})
	}
}

// TestSecretsManagerErrorQuotingTheSessionTokenStaysOut: an endpoint's
// refusal whose message quotes the session token the request carried
// (X-Amz-Security-Token), as AWS's own InvalidSignatureException quotes
// the canonical request, token line and all, or in part, has its message
// left out of the fetch error, which serve logs at every request of the
// route and till check prints; its code stays, and so does a message that
// quotes nothing sent.
func TestSecretsManagerErrorQuotingTheSessionTokenStaysOut(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "AKIAFAKE0000000011", SecretAccessKey: "fake/secret/access/key/0011", SessionToken: "IQoJb3JpZ2luX2VjEFAKE/session+token/0011=="}
	awsEnv(t, creds, fake.NewSecretsManager(t, creds, "us-east-1"))
	var message atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(http.StatusBadRequest)
		msg := strings.ReplaceAll(message.Load().(string), "TOKEN", r.Header.Get("X-Amz-Security-Token"))
		fmt.Fprintf(w, `{"__type": "InvalidSignatureException", "Message": %q}`, msg)
	}))
	defer srv.Close()
	src := &SecretsManager{Region: "us-east-1", Endpoint: srv.URL}
	for _, quoted := range []string{
		"Canonical String: 'x-amz-security-token:TOKEN'",
		"the security token TOKEN is invalid",
		"token IQoJb3JpZ2lu… is invalid",            // its start, as a server may cut it
		strings.Repeat("a", maxMessage-5) + "TOKEN", // across the cut: 5 characters shown, the rest looked for too
	} {
		message.Store(quoted)
		_, _, err := src.Fetch(context.Background(), "k")
		if err == nil || !strings.Contains(err.Error(), "InvalidSignatureException") {
			t.Errorf("%q: got %v, want the error code", quoted, err)
		}
		mustNotHold(t, err, creds.SessionToken, "IQoJb3JpZ2lu", "Canonical", "is invalid", "aaaa")
	}
	message.Store("The security token included in the request is expired")
	if _, _, err := src.Fetch(context.Background(), "k"); err == nil || !strings.Contains(err.Error(), "InvalidSignatureException: The security token included in the request is expired") {
		t.Errorf("a message that quotes nothing sent: got %v, want it kept", err)
	}
}

// TestCredentialChainRefusalQuotingItsCredentialStaysOut: the SDK's
// credential chain calls services of its own before Secrets Manager, and
// their refusal is the fetch error, which serve logs at every request of
// the route and till check prints. An endpoint there that quotes the
// request it refused (AWS_ENDPOINT_URL_STS at a proxy, a container
// endpoint on loopback) put the credential that request carried in it:
// the pod's web identity token, the container endpoint's authorization
// token, an SSO access or refresh token, an SSO client secret. Their
// words are left out, as Secrets Manager's are, and their code kept.
func TestCredentialChainRefusalQuotingItsCredentialStaysOut(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "ASIAFAKE0000000012", SecretAccessKey: "fake/secret/access/key/0012", SessionToken: "fake-session-token-from-the-chain-12"}
	sm := fake.NewSecretsManager(t, creds, "us-east-1")
	sm.Put("k", "sk-aws-12")
	const (
		jwt          = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxMiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6dGlsbCJ9.c2lnbmF0dXJlLTEy"
		authToken    = "ecs-0012-Zq7xW3pLm9Kd2VbTf"
		ssoToken     = "sso-access-token-that-must-stay-secret-12"
		refreshToken = "sso-refresh-token-that-must-stay-secret-12"
		clientSecret = "sso-client-secret-that-must-stay-secret-12"
	)
	sts := fake.NewSTS(t, creds, jwt)
	container := fake.NewContainerCredentials(t, creds, authToken)
	// echo refuses as SSO, SSO OIDC and Signin do (REST JSON), quoting
	// the token the request carried: SSO's header, or the refresh token
	// in SSO OIDC's and Signin's body.
	var quote atomic.Value
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct{ RefreshToken string }
		_ = json.NewDecoder(r.Body).Decode(&body)
		sent := r.Header.Get("X-Amz-Sso_bearer_token") + body.RefreshToken
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Amzn-Errortype", "UnauthorizedException")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]string{"message": quote.Load().(func(string) string)(sent)})
	}))
	defer echo.Close()
	echoRefuse := func(message func(string) string) {
		if message != nil {
			quote.Store(message)
		}
	}
	viaSTS := func(t *testing.T) {
		webIdentityChain(t, jwt)
		t.Setenv("AWS_ENDPOINT_URL_STS", sts.URL)
	}
	viaContainer := func(t *testing.T) {
		t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", container.URL+"/v1/credentials")
		t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", authToken)
	}
	viaContainerFile := func(t *testing.T) {
		t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", container.URL+"/v1/credentials")
		t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", writeFile(t, "token", authToken))
	}
	viaEcho := func(env string, chain func(t *testing.T)) func(t *testing.T) {
		return func(t *testing.T) {
			chain(t)
			t.Setenv(env, echo.URL)
		}
	}
	whole := func(sent string) string { return "the request was refused: " + sent }
	part := func(sent string) string { return "token " + sent[:12] + "… is not valid here" }
	nothing := func(string) string { return "Not authorized to perform sts:AssumeRoleWithWebIdentity" }
	for _, tt := range []struct {
		name   string
		chain  func(t *testing.T)
		refuse func(message func(string) string)
		code   string // with the call that refused, when the chain's
		works  bool   // with refuse(nil), the chain gets credentials
	}{
		{"STS web identity", viaSTS, sts.Refuse, "getting the AWS credentials, STS AssumeRoleWithWebIdentity: InvalidIdentityToken", true},
		{"container authorization token", viaContainer, container.Refuse, "getting the AWS credentials, container credentials endpoint GetCredentials: AccessDenied", true},
		{"container authorization token file", viaContainerFile, container.Refuse, "getting the AWS credentials, container credentials endpoint GetCredentials: AccessDenied", true},
		{"SSO access token", viaEcho("AWS_ENDPOINT_URL_SSO", func(t *testing.T) { ssoChain(t, "2099-01-01T00:00:00Z", ssoToken, refreshToken, clientSecret) }),
			echoRefuse, "getting the AWS credentials, SSO GetRoleCredentials: UnauthorizedException", false},
		{"SSO OIDC refresh", viaEcho("AWS_ENDPOINT_URL_SSO_OIDC", func(t *testing.T) { ssoChain(t, "2000-01-01T00:00:00Z", ssoToken, refreshToken, clientSecret) }),
			echoRefuse, "getting the AWS credentials, SSO OIDC CreateToken: UnauthorizedException", false},
		{"Signin refresh", viaEcho("AWS_ENDPOINT_URL_SIGNIN", func(t *testing.T) { loginChain(t, refreshToken) }),
			echoRefuse, "getting the AWS credentials, Signin CreateOAuth2Token: UnauthorizedException", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			awsEnv(t, creds, sm)
			noEnvCredentials(t)
			tt.chain(t)
			if tt.works {
				tt.refuse(nil)
				if raw, _, err := (&SecretsManager{Region: "us-east-1", Endpoint: sm.URL}).Fetch(context.Background(), "k"); err != nil || string(raw) != "sk-aws-12" {
					t.Fatalf("the chain through the fake, control sample: got %q, %v", raw, err)
				}
			}
			for _, quoted := range []func(string) string{whole, part} {
				tt.refuse(quoted)
				_, _, err := (&SecretsManager{Region: "us-east-1", Endpoint: sm.URL}).Fetch(context.Background(), "k")
				if err == nil || !strings.Contains(err.Error(), tt.code+" (the message is not shown") {
					t.Errorf("got %v, want the code %s and the message left out", err, tt.code)
				}
				mustNotHold(t, err, jwt, authToken, ssoToken, refreshToken, clientSecret, "refused", "not valid")
				for _, c := range []string{jwt, authToken, ssoToken, refreshToken, clientSecret} {
					mustNotHold(t, err, c[:12])
				}
			}
			tt.refuse(nothing)
			_, _, err := (&SecretsManager{Region: "us-east-1", Endpoint: sm.URL}).Fetch(context.Background(), "k")
			if err == nil || !strings.Contains(err.Error(), tt.code+": "+nothing("")) {
				t.Errorf("a message that quotes nothing sent: got %v, want it kept", err)
			}
			tt.refuse(nil)
		})
	}
}

// TestSentCredentialsKeepsTheLatest: a credential sent again is the
// latest, so the credentials of the request that just failed are kept
// however many rotations came before.
func TestSentCredentialsKeepsTheLatest(t *testing.T) {
	var c sentCredentials
	c.add("first", "")
	for i := range keptCredentials - 1 {
		c.add(fmt.Sprintf("rotated-%d", i))
	}
	c.add("first", "newest")
	got := c.list()
	if len(got) != keptCredentials || got[len(got)-2] != "first" || got[len(got)-1] != "newest" || slices.Contains(got, "rotated-0") {
		t.Errorf("got %q, want the %d sent last, first and newest at the end", got, keptCredentials)
	}
}

// TestCredentialChainAnswersAreCapped: the clients of the SDK's
// credential chain read an answer whole (STS's XML decoder keeps a text
// whole, the JSON decoders a value, IMDS's client the body itself), so
// an endpoint answering without end (a container endpoint on a shared
// network, a proxy in the path, an AWS_ENDPOINT_URL_* gone wrong) had
// till read it into memory until it ran out. Each stops at maxAnswer,
// as Secrets Manager's does, with an error that names the call.
func TestCredentialChainAnswersAreCapped(t *testing.T) {
	const size = 16 * maxAnswer
	creds := aws.Credentials{AccessKeyID: "ASIAFAKE0000000013", SecretAccessKey: "fake/secret/access/key/0013", SessionToken: "fake-session-token-13"}
	base := aws.Credentials{AccessKeyID: "AKIAFAKE0000000113", SecretAccessKey: "fake/secret/access/key/0113"}
	sm := fake.NewSecretsManager(t, creds, "us-east-1")
	sm.Put("k", "sk-aws-13")
	const (
		jwt       = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxMyJ9.eyJzdWIiOiJ0aWxsIn0.c2lnbmF0dXJlLTEz"
		authToken = "ecs-0013-Zq7xW3pLm9Kd2VbTf"
	)
	sts := fake.NewSTS(t, creds, jwt)
	sts.AllowAssumeRole(base, "us-east-1")
	container := fake.NewContainerCredentials(t, creds, authToken)
	imds := fake.NewIMDS(t, creds)
	rest := fake.NewFloodJSON(t, size)
	for _, tt := range []struct {
		name  string
		chain func(t *testing.T)
		fake  interface {
			Flood(n int64)
			Flooded() int64
		}
		call string
	}{
		{"STS web identity", func(t *testing.T) {
			webIdentityChain(t, jwt)
			t.Setenv("AWS_ENDPOINT_URL_STS", sts.URL)
		}, sts, "STS AssumeRoleWithWebIdentity"},
		{"STS assume role", func(t *testing.T) {
			t.Setenv("AWS_CONFIG_FILE", writeFile(t, "config", "[default]\nrole_arn = arn:aws:iam::123456789012:role/till\nsource_profile = base\n\n"+
				"[profile base]\naws_access_key_id = "+base.AccessKeyID+"\naws_secret_access_key = "+base.SecretAccessKey+"\n"))
			t.Setenv("AWS_ENDPOINT_URL_STS", sts.URL)
		}, sts, "STS AssumeRole"},
		{"container endpoint", func(t *testing.T) {
			t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", container.URL+"/v1/credentials")
			t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", authToken)
		}, container, "container credentials endpoint GetCredentials"},
		{"IMDS", func(t *testing.T) {
			t.Setenv("AWS_EC2_METADATA_DISABLED", "false")
			t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.URL)
		}, imds, "EC2 IMDS GetMetadata"},
		{"SSO", func(t *testing.T) {
			ssoChain(t, "2099-01-01T00:00:00Z", "sso-access-token-13", "sso-refresh-token-13", "sso-client-secret-13")
			t.Setenv("AWS_ENDPOINT_URL_SSO", rest.URL)
		}, rest, "SSO GetRoleCredentials"},
		{"SSO OIDC", func(t *testing.T) {
			ssoChain(t, "2000-01-01T00:00:00Z", "sso-access-token-13", "sso-refresh-token-13", "sso-client-secret-13")
			t.Setenv("AWS_ENDPOINT_URL_SSO_OIDC", rest.URL)
		}, rest, "SSO OIDC CreateToken"},
		{"Signin", func(t *testing.T) {
			loginChain(t, "login-refresh-token-13")
			t.Setenv("AWS_ENDPOINT_URL_SIGNIN", rest.URL)
		}, rest, "Signin CreateOAuth2Token"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			awsEnv(t, creds, sm)
			noEnvCredentials(t)
			tt.chain(t)
			if tt.fake != rest {
				tt.fake.Flood(0)
				if raw, _, err := (&SecretsManager{Region: "us-east-1", Endpoint: sm.URL}).Fetch(context.Background(), "k"); err != nil || string(raw) != "sk-aws-13" {
					t.Fatalf("the chain through the fake, control sample: got %q, %v", raw, err)
				}
				tt.fake.Flood(size)
			}
			written := tt.fake.Flooded()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, _, err := (&SecretsManager{Region: "us-east-1", Endpoint: sm.URL}).Fetch(ctx, "k")
			want := fmt.Sprintf("GetSecretValue: getting the AWS credentials, %s: the answer is larger than %d bytes", tt.call, maxAnswer)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("got %v, want %q", err, want)
			}
			if w := tt.fake.Flooded() - written; w >= size {
				t.Errorf("the chain read all %d bytes of the answer; it should stop after about %d", w, maxAnswer)
			}
		})
	}
}

// TestCredentialChainTakesTheCABundle: the cap on the chain's answers
// is a step on each client's stack, not an HTTP client of till's own,
// into which the SDK would not load AWS_CA_BUNDLE: STS over TLS with a
// private CA is reached with the bundle, and refused without it.
func TestCredentialChainTakesTheCABundle(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "ASIAFAKE0000000014", SecretAccessKey: "fake/secret/access/key/0014", SessionToken: "fake-session-token-14"}
	sm := fake.NewSecretsManager(t, creds, "us-east-1")
	sm.Put("k", "sk-aws-14")
	const jwt = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxNCJ9.eyJzdWIiOiJ0aWxsIn0.c2lnbmF0dXJlLTE0"
	sts := fake.NewSTSOverTLS(t, creds, jwt)
	awsEnv(t, creds, sm)
	noEnvCredentials(t)
	webIdentityChain(t, jwt)
	t.Setenv("AWS_ENDPOINT_URL_STS", sts.URL)
	t.Setenv("AWS_CA_BUNDLE", sts.CAFile)
	if raw, _, err := (&SecretsManager{Region: "us-east-1", Endpoint: sm.URL}).Fetch(context.Background(), "k"); err != nil || string(raw) != "sk-aws-14" || sts.Calls() != 1 {
		t.Fatalf("with the bundle: got %q, %v after %d STS calls", raw, err, sts.Calls())
	}
	t.Setenv("AWS_CA_BUNDLE", "")
	_, _, err := (&SecretsManager{Region: "us-east-1", Endpoint: sm.URL}).Fetch(context.Background(), "k")
	if err == nil || !strings.Contains(err.Error(), "STS: AssumeRoleWithWebIdentity") || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without the bundle: got %v, want STS's certificate refused", err)
	}
}

// TestSSOAnswersWithoutCredentialsAreRefused: the SDK's SSO providers
// take an answer without the credential they asked for unchecked. A
// GetRoleCredentials 200 without roleCredentials (a proxy or an
// AWS_ENDPOINT_URL_SSO answering `{}`) was a nil pointer dereference,
// panicked again on a goroutine of its own by the credential cache: till
// stopped, every route with it. A CreateToken 200 without accessToken
// was written over the SSO cache the AWS CLI shares, its refresh token
// lost: every later fetch failed, and the CLI too, until `aws sso
// login`. Each is a failed fetch that names the call, and the cache is
// left as it was.
func TestSSOAnswersWithoutCredentialsAreRefused(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "AKIAFAKE0000000015", SecretAccessKey: "fake/secret/access/key/0015"}
	sm := fake.NewSecretsManager(t, creds, "us-east-1")
	sm.Put("k", "sk-aws-15")
	empty := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{}")
	}))
	defer empty.Close()
	for _, tt := range []struct{ name, expires, call, missing string }{
		{"SSO", "2099-01-01T00:00:00Z", "SSO: GetRoleCredentials", "roleCredentials"},
		{"SSO OIDC", "2000-01-01T00:00:00Z", "SSO OIDC: CreateToken", "accessToken"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			awsEnv(t, creds, sm)
			noEnvCredentials(t)
			ssoChain(t, tt.expires, "sso-access-token-15", "sso-refresh-token-15", "sso-client-secret-15")
			t.Setenv("AWS_ENDPOINT_URL_SSO", empty.URL)
			t.Setenv("AWS_ENDPOINT_URL_SSO_OIDC", empty.URL)
			caches, _ := filepath.Glob(filepath.Join(os.Getenv("HOME"), ".aws", "sso", "cache", "*.json"))
			if len(caches) != 1 {
				t.Fatalf("SSO cache files: %v, want one", caches)
			}
			before, _ := os.ReadFile(caches[0])
			_, _, err := (&SecretsManager{Region: "us-east-1", Endpoint: sm.URL}).Fetch(context.Background(), "k")
			if err == nil || !strings.Contains(err.Error(), tt.call) || !strings.Contains(err.Error(), "no "+tt.missing) {
				t.Errorf("got %v, want the call named (%s) and no %s", err, tt.call, tt.missing)
			}
			if after, _ := os.ReadFile(caches[0]); string(after) != string(before) {
				t.Errorf("the SSO cache was rewritten from an answer without a token:\n%s\nwas:\n%s", after, before)
			}
		})
	}
}
