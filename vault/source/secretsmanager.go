package source

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os/exec"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/processcreds"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/signin"
	"github.com/aws/aws-sdk-go-v2/service/sso"
	"github.com/aws/aws-sdk-go-v2/service/ssooidc"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"

	"github.com/tillgw/till/internal/termtext"
)

// SecretsManager reads secrets from AWS Secrets Manager through the AWS
// SDK. Credentials and, unless Region is set, the region come from the
// SDK's default chain (environment, shared files, web identity, instance
// metadata). A ref's path is the secret's name or ARN; its value is the
// SecretString of the current version. An endpoint the SDK takes from the
// environment or its shared files, for Secrets Manager or for a service
// its credential chain calls (STS, SSO, Signin), must be https, as
// Endpoint must.
type SecretsManager struct {
	// Region overrides the SDK's region.
	Region string
	// Endpoint overrides the SDK's endpoint URL.
	Endpoint string

	mu     sync.Mutex
	client *secretsmanager.Client // built at the first fetch that needs it
}

var _ Source = (*SecretsManager)(nil)

// Fetch reads the current version of the secret named path; its
// CreatedDate is the version time.
func (s *SecretsManager) Fetch(ctx context.Context, path string) ([]byte, Meta, error) {
	client, err := s.sdk(ctx)
	if err != nil {
		return nil, Meta{}, err
	}
	sent := &sentToken{}
	out, err := client.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(path)}, func(o *secretsmanager.Options) {
		sent.c, o.HTTPClient = o.HTTPClient, sent
	})
	if err != nil {
		if deleted(err) {
			return nil, Meta{}, gone("GetSecretValue: %v", awsError(err, sent.tokens()))
		}
		return nil, Meta{}, fmt.Errorf("GetSecretValue: %w", awsError(err, sent.tokens()))
	}
	if out.SecretString == nil {
		return nil, Meta{}, errors.New("the secret holds binary data; till reads SecretString only")
	}
	if len(*out.SecretString) > maxRaw {
		return nil, Meta{}, fmt.Errorf("the secret is larger than %d bytes", maxRaw)
	}
	var meta Meta
	if out.CreatedDate != nil {
		meta.Version = *out.CreatedDate
	}
	return []byte(*out.SecretString), meta, nil
}

// sdk returns the client, loading the SDK's configuration the first time:
// that reads files and the environment, and may fail until they are right.
func (s *SecretsManager) sdk(ctx context.Context) (*secretsmanager.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		return s.client, nil
	}
	opts := []func(*awsconfig.LoadOptions) error{
		// The cache retries on its own; a request should not wait out
		// the SDK's backoffs.
		awsconfig.WithRetryMaxAttempts(1),
	}
	if s.Region != "" {
		opts = append(opts, awsconfig.WithRegion(s.Region))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load the AWS SDK's configuration: %w", err)
	}
	if cfg.Region == "" {
		return nil, errors.New("no AWS region: set region: on the source, or AWS_REGION")
	}
	if err := checkChainEndpoints(cfg); err != nil {
		return nil, err
	}
	var endpointErr error
	client := secretsmanager.NewFromConfig(cfg, func(o *secretsmanager.Options) {
		if s.Endpoint != "" {
			o.BaseEndpoint = aws.String(s.Endpoint)
		}
		endpointErr = checkEndpoint("Secrets Manager", o.BaseEndpoint)
		o.HTTPClient = cappedClient{o.HTTPClient}
	})
	if endpointErr != nil {
		return nil, endpointErr
	}
	s.client = client
	return s.client, nil
}

// cappedClient is cappedTransport for the SDK's client, which reads an
// answer whole before the source can look at its size.
type cappedClient struct{ c secretsmanager.HTTPClient }

func (c cappedClient) Do(r *http.Request) (*http.Response, error) { return capBody(c.c.Do(r)) }

// sentToken is the HTTP client of one call, which keeps the session
// token each request it sends carries (X-Amz-Security-Token): a refusal
// may quote it (AWS's InvalidSignatureException quotes the canonical
// request, token and all), and is then not quoted in turn.
type sentToken struct {
	c    secretsmanager.HTTPClient
	mu   sync.Mutex
	sent []string
}

func (s *sentToken) Do(r *http.Request) (*http.Response, error) {
	if t := r.Header.Get("X-Amz-Security-Token"); t != "" {
		s.mu.Lock()
		s.sent = append(s.sent, t)
		s.mu.Unlock()
	}
	return s.c.Do(r)
}

// tokens returns the session tokens sent.
func (s *sentToken) tokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent
}

// checkChainEndpoints holds to checkEndpoint's rule the endpoints of the
// services the credential chain may call, resolved as the chain's own
// clients resolve them: STS gets a web identity token (a pod's
// service-account JWT) or requests signed for a role, SSO and its OIDC
// service an SSO token, Signin a login's token.
func checkChainEndpoints(cfg aws.Config) error {
	var errs []error
	sts.NewFromConfig(cfg, func(o *sts.Options) { errs = append(errs, checkEndpoint("STS", o.BaseEndpoint)) })
	sso.NewFromConfig(cfg, func(o *sso.Options) { errs = append(errs, checkEndpoint("SSO", o.BaseEndpoint)) })
	ssooidc.NewFromConfig(cfg, func(o *ssooidc.Options) { errs = append(errs, checkEndpoint("SSO OIDC", o.BaseEndpoint)) })
	signin.NewFromConfig(cfg, func(o *signin.Options) { errs = append(errs, checkEndpoint("Signin", o.BaseEndpoint)) })
	return errors.Join(errs...)
}

// checkEndpoint holds the endpoint of service (its SDK id) that the SDK
// took from AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_<SERVICE> or a profile's
// endpoint_url to the rule config holds `endpoint:` to: https, or plain
// http to loopback. Over plain http, the credentials and the signed
// request go in clear, and whoever answers chooses the key till
// attaches. nil is the SDK's own endpoint, which is https.
func checkEndpoint(service string, endpoint *string) error {
	if endpoint == nil {
		return nil
	}
	u, err := url.Parse(*endpoint)
	if err == nil && (u.Scheme == "https" || u.Scheme == "http" && isLoopback(u.Hostname())) {
		return nil
	}
	env := "AWS_ENDPOINT_URL_" + strings.ToUpper(strings.ReplaceAll(service, " ", "_"))
	return fmt.Errorf("the AWS %s endpoint from %s, AWS_ENDPOINT_URL or the profile's endpoint_url must be https (plain http only for loopback)", service, env)
}

// isLoopback reports whether host is "localhost" or a loopback address.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// deleted reports an answer to GetSecretValue that the secret is gone:
// not found, or scheduled for deletion (InvalidRequestException, whose
// other causes are not GetSecretValue's).
func deleted(err error) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false
	}
	code := ae.ErrorCode()
	return code == "ResourceNotFoundException" || code == "InvalidRequestException"
}

// awsError shortens the SDK's error to the service's code and message
// where it gave one, the message left out when it quotes sent, the
// session tokens the call sent.
func awsError(err error, sent []string) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		// The service's words (or those of whatever answered at its
		// endpoint) reach a terminal: escaped, and cut as Vault's are.
		// What is shown comes from the message's first maxMessage
		// bytes: a credential is looked for there.
		msg := ae.ErrorMessage()
		if quotesCredential(msg[:min(len(msg), maxMessage+minQuoted)], sent) {
			return fmt.Errorf("%s (the message is not shown: it quotes the credential sent)", termtext.Escape(ae.ErrorCode(), 64))
		}
		return fmt.Errorf("%s: %s", termtext.Escape(ae.ErrorCode(), 64), termtext.Escape(msg, maxMessage))
	}
	var pe *processcreds.ProviderError
	if errors.As(err, &pe) {
		return credentialProcessError(pe)
	}
	return err
}

// credentialProcessError says why the credential_process of the AWS
// profile gave no credentials. The SDK's own error quotes the helper's
// whole output when it cannot read it (a warning printed before the
// JSON, an Expiration that does not parse), credentials included: that
// output is never quoted.
func credentialProcessError(pe *processcreds.ProviderError) error {
	var exitErr *exec.ExitError
	var execErr *exec.Error
	switch {
	case errors.Unwrap(pe.Err) == nil, errors.As(pe.Err, &exitErr), errors.As(pe.Err, &execErr):
		// The SDK's words alone (a field missing, a wrong version),
		// or how the helper ended: no output in them.
		return fmt.Errorf("get the AWS credentials from the profile's credential_process: %s", termtext.Escape(pe.Err.Error(), maxMessage))
	}
	return errors.New("get the AWS credentials from the profile's credential_process: its output is not the JSON the AWS SDK reads " +
		`({"Version": 1, "AccessKeyId": ..., "SecretAccessKey": ...} and nothing else on stdout, an RFC 3339 Expiration); not quoted here, as it holds the credentials`)
}
