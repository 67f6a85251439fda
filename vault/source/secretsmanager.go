package source

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"
	"github.com/aws/aws-sdk-go-v2/credentials/processcreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/signin"
	"github.com/aws/aws-sdk-go-v2/service/sso"
	"github.com/aws/aws-sdk-go-v2/service/ssooidc"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

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
	sent   sentCredentials
}

var _ Source = (*SecretsManager)(nil)

// Fetch reads the current version of the secret named path; its
// CreatedDate is the version time.
func (s *SecretsManager) Fetch(ctx context.Context, path string) ([]byte, Meta, error) {
	client, err := s.sdk(ctx)
	if err != nil {
		return nil, Meta{}, err
	}
	out, err := client.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(path)})
	if err != nil {
		if deleted(err) {
			return nil, Meta{}, gone("GetSecretValue: %v", awsError(err, s.sent.list()))
		}
		return nil, Meta{}, fmt.Errorf("GetSecretValue: %w", awsError(err, s.sent.list()))
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
		// Every client the configuration builds (the credential
		// chain's too) keeps what it sends as a credential, and reads
		// no answer past maxAnswer.
		awsconfig.WithAPIOptions([]func(*middleware.Stack) error{s.sent.record, capAnswers, requireCredentials}),
		awsconfig.WithEndpointCredentialOptions(func(o *endpointcreds.Options) {
			o.APIOptions = append(slices.Clip(o.APIOptions), nameContainerCall)
		}),
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
	})
	if endpointErr != nil {
		return nil, endpointErr
	}
	s.client = client
	return s.client, nil
}

// capAnswers adds to a client's stack a step, next to the transport,
// that caps each answer's body at maxAnswer. Every client the SDK's
// configuration builds, Secrets Manager's and the credential chain's,
// reads an answer whole before the source can look at its size (STS's
// XML decoder keeps a text whole, the JSON decoders a value, IMDS's
// client the body), and each takes the configuration's API options. An
// HTTP client of till's own would not do: the SDK loads AWS_CA_BUNDLE
// only into one of its own, and gives the container endpoint's client
// none from the configuration.
func capAnswers(stack *middleware.Stack) error {
	return stack.Deserialize.Add(middleware.DeserializeMiddlewareFunc("TillCapAnswer",
		func(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (middleware.DeserializeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleDeserialize(ctx, in)
			if res, ok := out.RawResponse.(*smithyhttp.Response); ok && res.Response != nil && res.Body != nil {
				res.Body = &cappedBody{ReadCloser: res.Body, left: maxAnswer}
			}
			return out, md, err
		}), middleware.After)
}

// requireCredentials adds to a client's stack a step that refuses an
// answer without the credential it is asked for, which the SDK reads
// unchecked: SSO GetRoleCredentials' roleCredentials, whose nil pointer
// dereference the credential cache panics again on a goroutine of its
// own, where nothing can recover it; SSO OIDC CreateToken's accessToken,
// without which the SDK writes an empty token, and no refresh token,
// over the SSO cache it shares with the AWS CLI.
func requireCredentials(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("TillRequireCredentials",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleInitialize(ctx, in)
			if err != nil {
				return out, md, err
			}
			missing := ""
			switch res := out.Result.(type) {
			case *sso.GetRoleCredentialsOutput:
				if res.RoleCredentials == nil {
					missing = "roleCredentials"
				}
			case *ssooidc.CreateTokenOutput:
				if aws.ToString(res.AccessToken) == "" {
					missing = "accessToken"
				}
			}
			if missing != "" {
				err = fmt.Errorf("the answer holds no %s (is something else answering at that endpoint, a proxy or a wrong address?)", missing)
			}
			return out, md, err
		}), middleware.After)
}

// keptCredentials is how many of the credentials sent last a
// sentCredentials keeps.
const keptCredentials = 8

// sentCredentials keeps the credentials that the requests of a source's
// clients carried, the credential chain's included: a refusal may quote
// the request it refused (AWS's InvalidSignatureException quotes the
// canonical request, session token and all; an endpoint from
// AWS_ENDPOINT_URL_STS or a container endpoint on loopback may echo it
// whole), and is then not quoted in turn. A refusal of the chain ends
// the call that waited for credentials, or every call waiting for the
// same ones: the credentials are the source's, not one call's.
type sentCredentials struct {
	mu   sync.Mutex
	sent []string // the latest sent last
}

// record adds to a client's stack the steps that keep what a request
// carries as a credential: its input's (the web identity token STS gets,
// the refresh token and client secret SSO OIDC and Signin get), and its
// headers', once signed (a session token, the SSO access token, the
// container endpoint's authorization token).
func (c *sentCredentials) record(stack *middleware.Stack) error {
	err := stack.Initialize.Add(middleware.InitializeMiddlewareFunc("TillSentInput",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			c.add(inputCredentials(in.Parameters)...)
			return next.HandleInitialize(ctx, in)
		}), middleware.Before)
	if err != nil {
		return err
	}
	return stack.Finalize.Add(middleware.FinalizeMiddlewareFunc("TillSentHeaders",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			if r, ok := in.Request.(*smithyhttp.Request); ok {
				c.add(headerCredentials(r.Header)...)
			}
			return next.HandleFinalize(ctx, in)
		}), middleware.After)
}

// inputCredentials returns the credentials in the input of the calls the
// credential chain makes.
func inputCredentials(params any) []string {
	switch in := params.(type) {
	case *sts.AssumeRoleWithWebIdentityInput:
		return []string{aws.ToString(in.WebIdentityToken)}
	case *ssooidc.CreateTokenInput:
		return []string{aws.ToString(in.ClientSecret), aws.ToString(in.RefreshToken)}
	case *signin.CreateOAuth2TokenInput:
		if in.TokenInput != nil {
			return []string{aws.ToString(in.TokenInput.RefreshToken)}
		}
	}
	return nil
}

// headerCredentials returns the credentials in a request's headers. A
// SigV4 Authorization header is left: it holds one request's signature,
// and the key id that a refusal names to say which key it refused.
func headerCredentials(h http.Header) []string {
	creds := []string{h.Get("X-Amz-Security-Token"), h.Get("X-Amz-Sso_bearer_token")}
	if auth := h.Get("Authorization"); !strings.HasPrefix(auth, "AWS4-") {
		creds = append(creds, auth)
	}
	return creds
}

// add keeps creds as the latest sent, dropping the oldest past
// keptCredentials.
func (c *sentCredentials) add(creds ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cred := range creds {
		if cred == "" {
			continue
		}
		c.sent = append(slices.DeleteFunc(c.sent, func(s string) bool { return s == cred }), cred)
		if len(c.sent) > keptCredentials {
			c.sent = slices.Delete(c.sent, 0, len(c.sent)-keptCredentials)
		}
	}
}

// list returns the credentials kept.
func (c *sentCredentials) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sent)
}

// nameContainerCall adds to the stack of the container credentials
// endpoint's client (AWS_CONTAINER_CREDENTIALS_FULL_URI or
// _RELATIVE_URI) a step that wraps its errors in the OperationError the
// SDK's other clients wrap theirs in, for refusedBy to name the call: the
// SDK's own wraps none, and its refusal read as Secrets Manager's.
func nameContainerCall(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("TillNameContainerCall",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleInitialize(ctx, in)
			if err != nil {
				err = &smithy.OperationError{ServiceID: "container credentials endpoint", OperationName: "GetCredentials", Err: err}
			}
			return out, md, err
		}), middleware.Before)
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

// awsError shortens the SDK's error to the code and message of the
// service that refused (Secrets Manager, or one the credential chain
// called) where it gave one, the message left out when it quotes sent,
// the credentials the source's requests carried; or to the call whose
// answer was past maxAnswer.
func awsError(err error, sent []string) error {
	if errors.Is(err, errAnswerTooLarge) {
		return fmt.Errorf("%s%w, the most till reads of an AWS answer (is something else answering at that endpoint, a proxy or a wrong address?)", refusedBy(err), errAnswerTooLarge)
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		// The service's words (or those of whatever answered at its
		// endpoint) reach a terminal: escaped, and cut as Vault's are.
		// What is shown comes from the message's first maxMessage
		// bytes: a credential is looked for there.
		msg := ae.ErrorMessage()
		by := refusedBy(err)
		if QuotesCredential(msg[:min(len(msg), maxMessage+minQuoted)], sent) {
			return fmt.Errorf("%s%s (the message is not shown: it quotes the credential sent)", by, termtext.Escape(ae.ErrorCode(), 64))
		}
		return fmt.Errorf("%s%s: %s", by, termtext.Escape(ae.ErrorCode(), 64), termtext.Escape(msg, maxMessage))
	}
	var pe *processcreds.ProviderError
	if errors.As(err, &pe) {
		return credentialProcessError(pe)
	}
	return err
}

// refusedBy names, to start an error, the call of the SDK's credential
// chain that err's refusal came from (STS AssumeRoleWithWebIdentity, SSO
// GetRoleCredentials, container credentials endpoint GetCredentials,
// ...): "" when it is Secrets Manager's own, which
// the error names already. A user told GetSecretValue was refused looks
// at the secret's policy; one told the chain was looks at the pod's role.
func refusedBy(err error) string {
	var last *smithy.OperationError
	for oe := (*smithy.OperationError)(nil); errors.As(err, &oe); err = oe.Err {
		last = oe
	}
	if last == nil || last.ServiceID == secretsmanager.ServiceID {
		return ""
	}
	service := last.ServiceID
	if service == imds.ServiceID {
		service = "EC2 IMDS"
	}
	return "getting the AWS credentials, " + termtext.Escape(service+" "+last.OperationName, 64) + ": "
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
