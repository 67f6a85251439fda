package source

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/smithy-go"

	"github.com/tillgw/till/internal/termtext"
)

// SecretsManager reads secrets from AWS Secrets Manager through the AWS
// SDK. Credentials and, unless Region is set, the region come from the
// SDK's default chain (environment, shared files, web identity, instance
// metadata). A ref's path is the secret's name or ARN; its value is the
// SecretString of the current version.
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
	out, err := client.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(path)})
	if err != nil {
		return nil, Meta{}, fmt.Errorf("GetSecretValue: %w", awsError(err))
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
	s.client = secretsmanager.NewFromConfig(cfg, func(o *secretsmanager.Options) {
		if s.Endpoint != "" {
			o.BaseEndpoint = aws.String(s.Endpoint)
		}
	})
	return s.client, nil
}

// awsError shortens the SDK's error to the service's code and message
// where it gave one.
func awsError(err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		// The service's words (or those of whatever answered at its
		// endpoint) reach a terminal: escaped, and cut as Vault's are.
		return fmt.Errorf("%s: %s", termtext.Escape(ae.ErrorCode(), 64), termtext.Escape(ae.ErrorMessage(), maxMessage))
	}
	return err
}
