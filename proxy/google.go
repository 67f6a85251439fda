package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// compileGoogle reads a service-account key from sec (a --json secret of
// the key file's fields) and returns the minter of its access tokens:
// Google's JWT flow, a signed assertion exchanged at the key's token_uri.
func compileGoogle(cfg *config.Google, sec vault.Secret) (*minter, []string, string) {
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
	if err := config.CheckTokenURL(conf.TokenURL); err != nil {
		return nil, nil, "google: the key's token_uri " + err.Error()
	}
	fetch := func(ctx context.Context, client *http.Client) (*oauth2.Token, error) {
		return conf.TokenSource(context.WithValue(ctx, oauth2.HTTPClient, client)).Token()
	}
	endpoint, err := url.Parse(conf.TokenURL)
	if err != nil {
		return nil, nil, "google: the key's token_uri is not a URL"
	}
	k := "google\x00" + conf.Email + "\x00" + conf.TokenURL + "\x00" + strings.Join(cfg.Scopes, " ")
	return &minter{fetch: fetch, endpoint: endpoint, key: k, now: time.Now}, []string{fields["private_key"]}, ""
}
