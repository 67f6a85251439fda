package proxy

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// credentialParams are the parameters of a token request's form that
// carry a credential: RFC 6749's client_secret (section 2.3.1), password
// (4.3.2) and refresh_token (6), RFC 7521's assertion and
// client_assertion (a signed JWT, such as Google's service-account
// assertion), RFC 8693's subject_token and actor_token.
var credentialParams = []string{"client_secret", "password", "refresh_token", "assertion", "client_assertion", "subject_token", "actor_token"}

// maxTokenForm bounds how much of a token request's body is read for its
// credentials: a form of a few parameters, a signed JWT among them.
const maxTokenForm = 64 << 10

// sentCredentials is the transport of one ask of a token endpoint, which
// keeps what each request it sends carries as a credential (the
// Authorization header, the form's credentialParams), as it went. Some of
// it exists only for that ask (a signed assertion, a GitHub App's JWT,
// each good for minutes to an hour), so the route's echo forms cannot
// hold it; the endpoint's error, which may quote it, is scrubbed of it.
type sentCredentials struct {
	http.RoundTripper
	mu   sync.Mutex
	sent []string
}

func (s *sentCredentials) RoundTrip(r *http.Request) (*http.Response, error) {
	s.record(r)
	return s.RoundTripper.RoundTrip(r)
}

// record keeps r's credentials, and the signature of each that is a JWT
// on its own: the part of it that cannot be rebuilt from what is public.
func (s *sentCredentials) record(r *http.Request) {
	var creds []string
	if a := r.Header.Get("Authorization"); a != "" {
		_, cred, _ := strings.Cut(a, " ")
		creds = append(creds, a, cred)
		if _, pass, ok := r.BasicAuth(); ok {
			// RFC 6749 (section 2.3.1) escapes it as a form would.
			creds = append(creds, pass)
			if raw, err := url.QueryUnescape(pass); err == nil {
				creds = append(creds, raw)
			}
		}
	}
	if r.GetBody != nil {
		if body, err := r.GetBody(); err == nil {
			b, _ := io.ReadAll(io.LimitReader(body, maxTokenForm))
			body.Close()
			form, _ := url.ParseQuery(string(b)) // what parses, even of a form cut short
			for _, p := range credentialParams {
				creds = append(creds, form[p]...)
			}
		}
	}
	for _, c := range creds {
		if sig, ok := jwtSignature(c); ok {
			creds = append(creds, sig)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = append(s.sent, creds...)
}

// forms returns the echo forms of what was sent.
func (s *sentCredentials) forms() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return echoForms(s.sent)
}

// jwtSignature returns the signature of v when v is a compact JWS (three
// base64url parts), long enough to be looked for on its own.
func jwtSignature(v string) (string, bool) {
	parts := strings.Split(v, ".")
	if len(parts) != 3 || !strings.HasPrefix(parts[0], "eyJ") || len(parts[2]) < minEchoForm {
		return "", false
	}
	return parts[2], true
}
