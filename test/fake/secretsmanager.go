package fake

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// SecretsManager fakes AWS Secrets Manager's GetSecretValue as documented
// for API version 2017-10-17: the JSON 1.1 protocol (POST /, Content-Type
// application/x-amz-json-1.1, X-Amz-Target secretsmanager.GetSecretValue)
// and its error shape ({"__type": ..., "Message": ...}). Every request's
// SigV4 signature is recomputed with the AWS SDK's signer and the fake's
// copy of the credentials, and a mismatch is refused as AWS refuses it.
type SecretsManager struct {
	*httptest.Server
	// CAFile is the PEM file of the server's certificate (AWS_CA_BUNDLE).
	CAFile string

	creds  aws.Credentials
	region string

	mu      sync.Mutex
	down    bool
	secrets map[string]smSecret
	calls   map[string]int
	refused int
}

type smSecret struct {
	deleted bool // scheduled for deletion (DeleteSecret with a recovery window)
	value   string
	binary  []byte // set: the version holds SecretBinary, not SecretString
	created time.Time
	version int
}

// NewSecretsManager starts a fake over TLS that accepts requests signed
// with these credentials for region.
func NewSecretsManager(t testing.TB, creds aws.Credentials, region string) *SecretsManager {
	t.Helper()
	s := &SecretsManager{creds: creds, region: region, secrets: map[string]smSecret{}, calls: map[string]int{}}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	s.CAFile = writeCA(t, s.Server)
	return s
}

// Put stores a new current version of the secret id, created now.
func (s *SecretsManager) Put(id, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.secrets[id]
	s.secrets[id] = smSecret{value: value, created: time.Now(), version: old.version + 1}
}

// PutBinary stores a new current version of the secret id that holds
// SecretBinary, created now.
func (s *SecretsManager) PutBinary(id string, value []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.secrets[id]
	s.secrets[id] = smSecret{binary: value, created: time.Now(), version: old.version + 1}
}

// ScheduleDeletion marks the secret id for deletion, as DeleteSecret
// does with a recovery window: GetSecretValue refuses it with
// InvalidRequestException until it is restored (Put).
func (s *SecretsManager) ScheduleDeletion(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.secrets[id]
	sec.deleted = true
	s.secrets[id] = sec
}

// SetDown makes every request fail with 500 InternalServiceError.
func (s *SecretsManager) SetDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

// Calls returns how many GetSecretValue calls for id were answered.
func (s *SecretsManager) Calls(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[id]
}

// Refused returns how many requests failed the signature check.
func (s *SecretsManager) Refused() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

func (s *SecretsManager) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		awsError(w, http.StatusBadRequest, "SerializationException", "cannot read the body")
		return
	}
	if why := s.verify(r, body); why != "" {
		s.mu.Lock()
		s.refused++
		s.mu.Unlock()
		awsError(w, http.StatusForbidden, "InvalidSignatureException", why)
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/" || r.Header.Get("Content-Type") != "application/x-amz-json-1.1" {
		awsError(w, http.StatusBadRequest, "UnknownOperationException", "want POST / with Content-Type application/x-amz-json-1.1")
		return
	}
	if op := r.Header.Get("X-Amz-Target"); op != "secretsmanager.GetSecretValue" {
		awsError(w, http.StatusBadRequest, "UnknownOperationException", "operation "+op+" is not faked")
		return
	}
	var in struct {
		SecretID     string `json:"SecretId"`
		VersionID    string `json:"VersionId"`
		VersionStage string `json:"VersionStage"`
	}
	if err := json.Unmarshal(body, &in); err != nil || in.SecretID == "" {
		awsError(w, http.StatusBadRequest, "InvalidParameterException", "SecretId is required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		awsError(w, http.StatusInternalServerError, "InternalServiceError", "the service is unavailable")
		return
	}
	sec, ok := s.secrets[in.SecretID]
	if !ok {
		awsError(w, http.StatusBadRequest, "ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
		return
	}
	if sec.deleted {
		awsError(w, http.StatusBadRequest, "InvalidRequestException", "You can't perform this operation on the secret because it was marked for deletion.")
		return
	}
	s.calls[in.SecretID]++
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Requestid", "00000000-0000-0000-0000-000000000000")
	out := map[string]any{
		"ARN":           fmt.Sprintf("arn:aws:secretsmanager:%s:123456789012:secret:%s-AbCdEf", s.region, in.SecretID),
		"Name":          in.SecretID,
		"SecretString":  sec.value,
		"CreatedDate":   float64(sec.created.UnixMilli()) / 1000,
		"VersionId":     fmt.Sprintf("00000000-0000-0000-0000-%012d", sec.version),
		"VersionStages": []string{"AWSCURRENT"},
	}
	if sec.binary != nil {
		delete(out, "SecretString")
		out["SecretBinary"] = sec.binary // a blob: base64 in JSON 1.1
	}
	_ = json.NewEncoder(w).Encode(out)
}

// maxSkew is how far a request's X-Amz-Date may be from now, as AWS
// allows.
const maxSkew = 5 * time.Minute

// verify recomputes r's signature over body and says why it does not
// match, or "" when it does.
func (s *SecretsManager) verify(r *http.Request, body []byte) string {
	return VerifySigV4(r, body, s.creds, "secretsmanager", s.region)
}

// VerifySigV4 recomputes the SigV4 signature of r, whose body is body,
// with the AWS SDK's signer and creds, for service in region, and says
// why it does not match r's, or "" when it does: the check an AWS
// endpoint makes.
func VerifySigV4(r *http.Request, body []byte, creds aws.Credentials, service, region string) string {
	auth := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(auth, "AWS4-HMAC-SHA256 ")
	if !ok {
		return "missing or non-SigV4 Authorization"
	}
	var scope, signedHeaders string
	for part := range strings.SplitSeq(rest, ",") {
		k, val, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			scope = val
		case "SignedHeaders":
			signedHeaders = val
		}
	}
	date, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return "missing or bad X-Amz-Date"
	}
	if d := time.Since(date); d > maxSkew || d < -maxSkew {
		return "Signature expired or not yet current"
	}
	wantScope := fmt.Sprintf("%s/%s/%s/%s/aws4_request", creds.AccessKeyID, date.Format("20060102"), region, service)
	if scope != wantScope {
		return "The security token included in the request is invalid (credential scope does not match)"
	}
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:])
	if h := r.Header.Get("X-Amz-Content-Sha256"); h != "" && h != hash {
		return "X-Amz-Content-Sha256 does not match the body (an unsigned payload is refused too)"
	}
	re, _ := http.NewRequest(r.Method, "https://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body))
	re.Host = r.Host
	for name := range strings.SplitSeq(signedHeaders, ";") {
		switch name {
		case "host", "x-amz-date", "x-amz-security-token":
			// The signer sets these itself, from the URL and arguments.
		case "content-length":
			re.ContentLength = int64(len(body))
		default:
			if vals := r.Header.Values(name); len(vals) > 0 {
				re.Header[http.CanonicalHeaderKey(name)] = vals
			}
		}
	}
	if !strings.Contains(";"+signedHeaders+";", ";content-length;") {
		re.ContentLength = 0
	}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, re, hash, service, region, date); err != nil {
		return "cannot sign: " + err.Error()
	}
	if subtle.ConstantTimeCompare([]byte(re.Header.Get("Authorization")), []byte(auth)) != 1 {
		return "The request signature we calculated does not match the signature you provided."
	}
	return ""
}

// awsError writes the JSON 1.1 protocol's error shape.
func awsError(w http.ResponseWriter, code int, typ, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Errortype", typ)
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": typ, "Message": msg})
}
