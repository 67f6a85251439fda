package fake

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// STS fakes AWS STS's AssumeRoleWithWebIdentity as documented for API
// version 2011-06-15: the query protocol (POST / with a form body of
// Action, Version, RoleArn, RoleSessionName and WebIdentityToken, sent
// unsigned) and its XML answers. A request bearing the web identity token
// the fake was made with gets the credentials it was made with; any
// other is refused with InvalidIdentityToken in the ErrorResponse shape.
// It listens in plain http on loopback, as the SDK allows an
// AWS_ENDPOINT_URL_STS there.
type STS struct {
	*httptest.Server

	creds aws.Credentials
	token string

	mu      sync.Mutex
	refusal func(token string) string
	calls   int
}

// NewSTS starts a fake that trades token for creds.
func NewSTS(t testing.TB, creds aws.Credentials, token string) *STS {
	t.Helper()
	s := &STS{creds: creds, token: token}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// Refuse makes every call refused with InvalidIdentityToken and the
// message message(the token received): what an endpoint that quotes the
// request it refused (a proxy, a misrouted address) answers. nil makes
// the fake answer as STS does again.
func (s *STS) Refuse(message func(token string) string) {
	s.mu.Lock()
	s.refusal = message
	s.mu.Unlock()
}

// Calls returns how many AssumeRoleWithWebIdentity calls were answered.
func (s *STS) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func (s *STS) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	form, perr := url.ParseQuery(string(body))
	if err != nil || perr != nil || r.Method != http.MethodPost || r.URL.Path != "/" ||
		r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		stsError(w, http.StatusBadRequest, "MalformedQueryString", "want POST / with a form body")
		return
	}
	if form.Get("Action") != "AssumeRoleWithWebIdentity" || form.Get("Version") != "2011-06-15" {
		stsError(w, http.StatusBadRequest, "InvalidAction", "only AssumeRoleWithWebIdentity of version 2011-06-15 is faked")
		return
	}
	if form.Get("RoleArn") == "" || form.Get("RoleSessionName") == "" || form.Get("WebIdentityToken") == "" {
		stsError(w, http.StatusBadRequest, "MissingParameter", "RoleArn, RoleSessionName and WebIdentityToken are required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.refusal != nil {
		stsError(w, http.StatusBadRequest, "InvalidIdentityToken", s.refusal(form.Get("WebIdentityToken")))
		return
	}
	if form.Get("WebIdentityToken") != s.token {
		stsError(w, http.StatusBadRequest, "InvalidIdentityToken", "Couldn't retrieve verification key from your identity provider, please reference AssumeRoleWithWebIdentity documentation for requirements")
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	fmt.Fprintf(w, `<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <AccessKeyId>%s</AccessKeyId>
      <SecretAccessKey>%s</SecretAccessKey>
      <SessionToken>%s</SessionToken>
      <Expiration>%s</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <Arn>%s/till</Arn>
      <AssumedRoleId>AROAFAKE:till</AssumedRoleId>
    </AssumedRoleUser>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>`, xmlText(s.creds.AccessKeyID), xmlText(s.creds.SecretAccessKey), xmlText(s.creds.SessionToken),
		time.Now().Add(time.Hour).UTC().Format(time.RFC3339), xmlText(form.Get("RoleArn")))
}

// stsError writes the query protocol's error shape.
func stsError(w http.ResponseWriter, code int, typ, msg string) {
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(code)
	fmt.Fprintf(w, `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error>
  <RequestId>00000000-0000-0000-0000-000000000000</RequestId>
</ErrorResponse>`, xmlText(typ), xmlText(msg))
}

func xmlText(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// ContainerCredentials fakes the ECS and EKS Pod Identity container
// credentials endpoint (AWS_CONTAINER_CREDENTIALS_FULL_URI): a GET whose
// Authorization header is the token the fake was made with gets the
// credentials it was made with, as JSON; any other is refused with the
// JSON error shape the SDK reads ({"code": ..., "message": ...}). It
// listens in plain http on loopback, as the SDK allows there.
type ContainerCredentials struct {
	*httptest.Server

	creds aws.Credentials
	token string

	mu      sync.Mutex
	refusal func(authorization string) string
}

// NewContainerCredentials starts a fake that answers creds to token.
func NewContainerCredentials(t testing.TB, creds aws.Credentials, token string) *ContainerCredentials {
	t.Helper()
	c := &ContainerCredentials{creds: creds, token: token}
	c.Server = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.Close)
	return c
}

// Refuse makes every request refused with AccessDenied and the message
// message(the Authorization header received); nil makes the fake answer
// as the endpoint does again.
func (c *ContainerCredentials) Refuse(message func(authorization string) string) {
	c.mu.Lock()
	c.refusal = message
	c.mu.Unlock()
}

func (c *ContainerCredentials) serve(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	refusal := c.refusal
	c.mu.Unlock()
	auth := r.Header.Get("Authorization")
	switch {
	case r.Method != http.MethodGet:
		containerError(w, http.StatusMethodNotAllowed, "InvalidRequest", "want GET")
	case refusal != nil:
		containerError(w, http.StatusForbidden, "AccessDenied", refusal(auth))
	case auth != c.token:
		containerError(w, http.StatusForbidden, "AccessDenied", "the authorization token is not valid")
	default:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"AccessKeyId":     c.creds.AccessKeyID,
			"SecretAccessKey": c.creds.SecretAccessKey,
			"Token":           c.creds.SessionToken,
			"Expiration":      time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
		})
	}
}

func containerError(w http.ResponseWriter, code int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"code": typ, "message": msg})
}
