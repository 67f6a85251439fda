package proxy

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// Every credential an ask sends to a token endpoint is among the forms
// its error is scrubbed of: a client secret (form or Basic), a signed
// assertion or client assertion and its signature on its own, a refresh
// token, a GitHub App's JWT in Authorization.
func TestSentCredentials(t *testing.T) {
	const jwt = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiIxMiJ9.c2lnbmF0dXJlLW9mLXRoZS1hc3NlcnRpb24tMDEyMzQ1Njc4OQ"
	sig := jwt[strings.LastIndexByte(jwt, '.')+1:]
	form := func(v url.Values) *http.Request {
		r, _ := http.NewRequest(http.MethodPost, "https://login.example/token", strings.NewReader(v.Encode()))
		return r
	}
	basic := form(url.Values{"grant_type": {"client_credentials"}})
	basic.SetBasicAuth("app", url.QueryEscape("cs+0123456789/abcdef"))
	bearer, _ := http.NewRequest(http.MethodPost, "https://api.github.example/app/installations/2/access_tokens", nil)
	bearer.Header.Set("Authorization", "Bearer "+jwt)
	tests := []struct {
		name string
		req  *http.Request
		want []string
	}{
		{"client secret in the form", form(url.Values{"client_id": {"app"}, "client_secret": {"cs-0123456789abcdef"}}), []string{"cs-0123456789abcdef"}},
		{"client secret in Basic", basic, []string{"cs+0123456789/abcdef", url.QueryEscape("cs+0123456789/abcdef")}},
		{"assertion", form(url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {jwt}}), []string{jwt, sig}},
		{"client assertion", form(url.Values{"client_assertion": {jwt}}), []string{jwt, sig}},
		{"refresh token", form(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"rt-0123456789abcdef"}}), []string{"rt-0123456789abcdef"}},
		{"app JWT", bearer, []string{jwt, sig}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &sentCredentials{}
			s.record(tt.req)
			forms := s.forms()
			for _, w := range tt.want {
				if !echoes([]string{"error: " + w + " refused"}, forms) {
					t.Errorf("a text quoting %q is not found by the forms", w)
				}
			}
			if echoes([]string{"client_credentials urn:ietf:params:oauth:grant-type:jwt-bearer app"}, forms) {
				t.Error("a form holds what is not a credential (grant_type, client_id)")
			}
		})
	}
}
