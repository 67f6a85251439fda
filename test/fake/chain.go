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
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// STS fakes AWS STS's AssumeRoleWithWebIdentity and AssumeRole as
// documented for API version 2011-06-15: the query protocol (POST / with
// a form body of Action, Version, RoleArn, RoleSessionName and, for
// AssumeRoleWithWebIdentity, WebIdentityToken, sent unsigned; AssumeRole
// signed with SigV4) and its XML answers. A request bearing the web
// identity token the fake was made with, or an AssumeRole signed with
// the credentials AllowAssumeRole names, gets the credentials the fake
// was made with; any other is refused in the ErrorResponse shape
// (InvalidIdentityToken, InvalidClientTokenId). It listens in plain http
// on loopback, as the SDK allows an AWS_ENDPOINT_URL_STS there, or over
// TLS.
type STS struct {
	*httptest.Server
	flood
	// CAFile is the PEM file of the certificate of a fake over TLS
	// (AWS_CA_BUNDLE).
	CAFile string

	creds aws.Credentials
	token string

	mu      sync.Mutex
	refusal func(token string) string
	calls   int
	source  aws.Credentials // AssumeRole's signer
	region  string
}

// NewSTS starts a fake that trades token for creds.
func NewSTS(t testing.TB, creds aws.Credentials, token string) *STS {
	t.Helper()
	s := &STS{creds: creds, token: token}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// NewSTSOverTLS starts the fake over TLS, with a certificate of its own.
func NewSTSOverTLS(t testing.TB, creds aws.Credentials, token string) *STS {
	t.Helper()
	s := &STS{creds: creds, token: token}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	s.CAFile = writeCA(t, s.Server)
	return s
}

// AllowAssumeRole makes the fake answer AssumeRole signed with source
// for region (a profile's role_arn over its source_profile).
func (s *STS) AllowAssumeRole(source aws.Credentials, region string) {
	s.mu.Lock()
	s.source, s.region = source, region
	s.mu.Unlock()
}

// Refuse makes every AssumeRoleWithWebIdentity call refused with
// InvalidIdentityToken and the message message(the token received): what
// an endpoint that quotes the request it refused (a proxy, a misrouted
// address) answers. nil makes the fake answer as STS does again.
func (s *STS) Refuse(message func(token string) string) {
	s.mu.Lock()
	s.refusal = message
	s.mu.Unlock()
}

// Calls returns how many calls were answered.
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
	action := form.Get("Action")
	if action != "AssumeRoleWithWebIdentity" && action != "AssumeRole" || form.Get("Version") != "2011-06-15" {
		stsError(w, http.StatusBadRequest, "InvalidAction", "only AssumeRoleWithWebIdentity and AssumeRole of version 2011-06-15 are faked")
		return
	}
	if form.Get("RoleArn") == "" || form.Get("RoleSessionName") == "" || action == "AssumeRoleWithWebIdentity" && form.Get("WebIdentityToken") == "" {
		stsError(w, http.StatusBadRequest, "MissingParameter", "RoleArn, RoleSessionName and, for AssumeRoleWithWebIdentity, WebIdentityToken are required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	switch {
	case action == "AssumeRole":
		if s.source.AccessKeyID == "" {
			stsError(w, http.StatusForbidden, "InvalidClientTokenId", "AssumeRole is not allowed: call AllowAssumeRole")
			return
		}
		if why := VerifySigV4(r, body, s.source, "sts", s.region); why != "" {
			stsError(w, http.StatusForbidden, "SignatureDoesNotMatch", why)
			return
		}
	case s.refusal != nil:
		stsError(w, http.StatusBadRequest, "InvalidIdentityToken", s.refusal(form.Get("WebIdentityToken")))
		return
	case form.Get("WebIdentityToken") != s.token:
		stsError(w, http.StatusBadRequest, "InvalidIdentityToken", "Couldn't retrieve verification key from your identity provider, please reference AssumeRoleWithWebIdentity documentation for requirements")
		return
	}
	answer := fmt.Sprintf(`<%[1]sResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <%[1]sResult>
    <Credentials>
      <AccessKeyId>%[2]s</AccessKeyId>
      <SecretAccessKey>%[3]s</SecretAccessKey>
      <SessionToken>%[4]s</SessionToken>
      <Expiration>%[5]s</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <Arn>%[6]s/till</Arn>
      <AssumedRoleId>AROAFAKE:till</AssumedRoleId>
    </AssumedRoleUser>
  </%[1]sResult>
  <ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ResponseMetadata>
</%[1]sResponse>`, action, xmlText(s.creds.AccessKeyID), xmlText(s.creds.SecretAccessKey), xmlText(s.creds.SessionToken),
		time.Now().Add(time.Hour).UTC().Format(time.RFC3339), xmlText(form.Get("RoleArn")))
	w.Header().Set("Content-Type", "text/xml")
	if !s.write(w, answer, xmlText(s.creds.AccessKeyID)) {
		_, _ = io.WriteString(w, answer)
	}
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
	flood

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
		answer, _ := json.Marshal(map[string]string{
			"AccessKeyId":     c.creds.AccessKeyID,
			"SecretAccessKey": c.creds.SecretAccessKey,
			"Token":           c.creds.SessionToken,
			"Expiration":      time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
		})
		if !c.write(w, string(answer), c.creds.AccessKeyID) {
			_, _ = w.Write(answer)
		}
	}
}

func containerError(w http.ResponseWriter, code int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"code": typ, "message": msg})
}

// IMDS fakes the EC2 instance metadata service (IMDSv2) as the SDK's
// instance role provider uses it: PUT /latest/api/token with
// X-Aws-Ec2-Metadata-Token-Ttl-Seconds gets a session token, that TTL
// echoed back; a GET bearing that token in X-Aws-Ec2-Metadata-Token gets
// the role's name at /latest/meta-data/iam/security-credentials/ and the
// credentials it was made with, as JSON, at that path and the name. A
// request without the token gets 401, another path 404, another method
// 405. It listens in plain http on loopback
// (AWS_EC2_METADATA_SERVICE_ENDPOINT).
type IMDS struct {
	*httptest.Server
	flood

	creds aws.Credentials
}

// imdsToken is the session token the IMDS fake hands out.
const imdsToken = "imds-session-token-of-the-fake"

// imdsRole is the name of the instance's role.
const imdsRole = "till"

// NewIMDS starts a fake whose instance role has creds.
func NewIMDS(t testing.TB, creds aws.Credentials) *IMDS {
	t.Helper()
	m := &IMDS{creds: creds}
	m.Server = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.Close)
	return m
}

func (m *IMDS) serve(w http.ResponseWriter, r *http.Request) {
	const credsPath = "/latest/meta-data/iam/security-credentials/"
	if r.URL.Path == "/latest/api/token" {
		ttl := r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds")
		if r.Method != http.MethodPut || ttl == "" {
			http.Error(w, "want PUT with X-Aws-Ec2-Metadata-Token-Ttl-Seconds", http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", ttl)
		_, _ = io.WriteString(w, imdsToken)
		return
	}
	switch {
	case r.Method != http.MethodGet:
		http.Error(w, "want GET", http.StatusMethodNotAllowed)
	case r.Header.Get("X-Aws-Ec2-Metadata-Token") != imdsToken:
		http.Error(w, "no or a wrong session token", http.StatusUnauthorized)
	case r.URL.Path == credsPath || r.URL.Path == strings.TrimSuffix(credsPath, "/"):
		_, _ = io.WriteString(w, imdsRole)
	case r.URL.Path == credsPath+imdsRole:
		w.Header().Set("Content-Type", "text/plain")
		answer, _ := json.Marshal(map[string]string{
			"Code":            "Success",
			"Type":            "AWS-HMAC",
			"AccessKeyId":     m.creds.AccessKeyID,
			"SecretAccessKey": m.creds.SecretAccessKey,
			"Token":           m.creds.SessionToken,
			"LastUpdated":     time.Now().UTC().Format(time.RFC3339),
			"Expiration":      time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
		})
		if !m.write(w, string(answer), m.creds.AccessKeyID) {
			_, _ = w.Write(answer)
		}
	default:
		http.Error(w, "not found", http.StatusNotFound)
	}
}

// FloodJSON stands in for the REST JSON services of the credential chain
// that have no fake here (SSO, SSO OIDC, Signin): every request gets a
// 200 of SSO GetRoleCredentials' shape (which the others read as an
// answer without their fields), its access key id as long as Flood
// makes the answer.
type FloodJSON struct {
	*httptest.Server
	flood
}

// NewFloodJSON starts the endpoint, flooding n bytes.
func NewFloodJSON(t testing.TB, n int64) *FloodJSON {
	t.Helper()
	f := &FloodJSON{}
	f.Flood(n)
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		answer := `{"roleCredentials": {"accessKeyId": "x", "secretAccessKey": "x", "sessionToken": "x", "expiration": 4102444800000}}`
		if !f.write(w, answer, "x") {
			_, _ = io.WriteString(w, answer)
		}
	}))
	t.Cleanup(f.Close)
	return f
}

// flood is a fake's flood mode: its answer with credentials in it has
// one of them padded until the answer is as long as asked, as from an
// endpoint that answers without end (a hostile listener, a proxy gone
// wrong): a client that reads the answer whole reads all of it.
type flood struct {
	size    atomic.Int64
	written atomic.Int64
}

// Flood makes the fake's answers with credentials in them n bytes long;
// 0 makes them as before.
func (f *flood) Flood(n int64) { f.size.Store(n) }

// Flooded returns how many bytes of flooded answers the fake wrote: all
// of them unless the client hung up first.
func (f *flood) Flooded() int64 { return f.written.Load() }

// write writes answer with its first occurrence of pad padded to make it
// as long as Flood asked, until the client hangs up, and reports whether
// the fake floods: if not, it writes nothing.
func (f *flood) write(w io.Writer, answer, pad string) bool {
	n := f.size.Load()
	if n == 0 {
		return false
	}
	i := strings.Index(answer, pad)
	if i < 0 {
		panic("fake: the answer does not hold what is to be padded")
	}
	head, tail := answer[:i], answer[i:]
	// smithy-go closes a request's body once the answer's headers come;
	// net/http, when not done with it yet, is then told io.EOF
	// (safeWriteToReadCloser.WriteTo) and drops the connection, which
	// ends the client's read before any cap of its own is reached. A
	// moment's wait lets the request go out whole first.
	time.Sleep(50 * time.Millisecond)
	count := func(n int, err error) bool {
		f.written.Add(int64(n))
		return err == nil
	}
	if !count(io.WriteString(w, head)) {
		return true
	}
	chunk := []byte(strings.Repeat("A", 32<<10))
	for left := n - int64(len(head)+len(tail)); left > 0; left -= int64(len(chunk)) {
		if !count(w.Write(chunk[:min(left, int64(len(chunk)))])) {
			return true
		}
	}
	count(io.WriteString(w, tail))
	return true
}
