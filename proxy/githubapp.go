package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// gitHubJWTLife is how long the app's JWT is valid; GitHub takes at most
// ten minutes.
const gitHubJWTLife = 9 * time.Minute

// gitHubClockSkew is how far back a JWT's iat is set, for a GitHub clock
// behind till's.
const gitHubClockSkew = 60 * time.Second

// compileGitHubApp reads a GitHub App's private key from sec (a --pem
// secret) and returns the minter of the installation's tokens, which it
// asks for at upstream's POST /app/installations/{id}/access_tokens, as
// way says (mintsAs).
func compileGitHubApp(way string, cfg *config.GitHubApp, upstream *url.URL, sec vault.Secret) (*minter, []string, string) {
	pemKey, ok := sec.Value()
	if !ok {
		return nil, nil, "github_app needs the app's private key as the secret (till secret set NAME --pem)"
	}
	key, err := jwt.ParseRSAPrivateKeyFromPEM([]byte(pemKey))
	if err != nil {
		return nil, nil, "github_app: the secret is not an RSA private key in PEM"
	}
	endpointURL := upstream.JoinPath("app", "installations", strconv.FormatInt(cfg.InstallationID, 10), "access_tokens")
	endpoint := endpointURL.String()
	iss := strconv.FormatInt(cfg.AppID, 10)
	fetch := func(ctx context.Context, client *http.Client) (*oauth2.Token, error) {
		now := time.Now()
		signed, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.RegisteredClaims{
			Issuer:    iss,
			IssuedAt:  jwt.NewNumericDate(now.Add(-gitHubClockSkew)),
			ExpiresAt: jwt.NewNumericDate(now.Add(gitHubJWTLife)),
		}).SignedString(key)
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+signed)
		req.Header.Set("Accept", "application/vnd.github+json")
		req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
			// The code, not the reason phrase: that is the endpoint's
			// text, control bytes and all, and till test prints it.
			return nil, fmt.Errorf("POST /app/installations/%d/access_tokens: %d %s", cfg.InstallationID, resp.StatusCode, http.StatusText(resp.StatusCode))
		}
		var out struct {
			Token     string    `json:"token"`
			ExpiresAt time.Time `json:"expires_at"`
		}
		if err := json.Unmarshal(body, &out); err != nil || out.Token == "" {
			return nil, fmt.Errorf("POST /app/installations/%d/access_tokens: no token in the answer", cfg.InstallationID)
		}
		return &oauth2.Token{AccessToken: out.Token, Expiry: out.ExpiresAt}, nil
	}
	return &minter{fetch: fetch, endpoint: endpointURL, key: way, now: time.Now}, []string{pemKey}, ""
}
