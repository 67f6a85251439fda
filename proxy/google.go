package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// compileGoogle reads a service-account key from sec (a --json secret of
// the key file's fields) and returns the minter of its access tokens:
// Google's JWT flow, a signed assertion exchanged at the key's token_uri,
// for the scopes way names (mintsAs).
func compileGoogle(way string, cfg *config.Google, sec vault.Secret) (*minter, []string, string) {
	names := sec.FieldNames()
	if len(names) == 0 {
		return nil, nil, "google needs a service-account key as a --json secret (till secret set NAME --json < key.json)"
	}
	fields := make(map[string]string, len(names))
	for _, n := range names {
		fields[n], _ = sec.Field(n)
	}
	raw, _ := json.Marshal(fields) // strings only
	conf, err := google.JWTConfigFromJSON(raw, cfg.Scopes...)
	if err != nil {
		return nil, nil, "google: the secret is not a service-account key (type, client_email, private_key, token_uri)"
	}
	// x/oauth2 reads the key only when it signs, at each mint: a key that
	// cannot sign would fail every request, as if the endpoint had.
	if conf.Email == "" {
		return nil, nil, "google: the key has no client_email (the service account's address)"
	}
	if _, err := jwt.ParseRSAPrivateKeyFromPEM(conf.PrivateKey); err != nil {
		return nil, nil, "google: the key's private_key is not an RSA private key in PEM (were its line breaks escaped twice?)"
	}
	if err := config.CheckTokenURL(conf.TokenURL); err != nil {
		return nil, nil, "google: the key's token_uri " + err.Error()
	}
	fetch := func(ctx context.Context, client *http.Client) (*oauth2.Token, error) {
		tok, err := conf.TokenSource(context.WithValue(ctx, oauth2.HTTPClient, client)).Token()
		return tok, withErrorCode(err)
	}
	endpoint, err := url.Parse(conf.TokenURL)
	if err != nil {
		return nil, nil, "google: the key's token_uri is not a URL"
	}
	// The key file names the account and its token endpoint.
	k := way + strconv.Quote(conf.Email) + strconv.Quote(conf.TokenURL)
	return &minter{fetch: fetch, endpoint: endpoint, key: k, now: time.Now}, []string{fields["private_key"]}, ""
}

// withErrorCode fills in the RFC 6749 error code and description of a
// token endpoint's refusal from its JSON answer. x/oauth2 reads them for
// its own flows but not for the JWT flow's, and they say why Google
// refused (invalid_grant: a clock minutes off, a key deleted); the log
// keeps them only as scrub allows.
func withErrorCode(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.ErrorCode == "" {
		var answer struct {
			Code        string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(re.Body, &answer) == nil {
			re.ErrorCode, re.ErrorDescription = answer.Code, answer.Description
		}
	}
	return err
}
