// Package config reads till.yaml: strict decoding (unknown keys are errors,
// with their line), defaults, validation and the catalog of provider presets.
//
// The package is pure: bytes in, an immutable *Config out. Every problem in a
// file is collected and reported at once, each as
//
//	till.yaml:14: routes[2].upstream: must be an https URL (plain http only for loopback, or set allow_plaintext: true)
//
// Messages name the field, never a value that could be a secret (header
// values, inject formats, URLs that may carry a password).
package config

import (
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Config is a decoded and validated till.yaml. Treat it as immutable: a
// running gateway shares it between goroutines, and a reload builds a new one.
type Config struct {
	// File is the path the config was read from; "" for built-in defaults.
	File string
	// Version is the schema version; only 1 exists.
	Version int
	// Listen is the gateway listener's host:port (default 127.0.0.1:8080).
	Listen string
	// ShutdownGrace is how long in-flight requests may run after SIGTERM
	// (default 30s).
	ShutdownGrace time.Duration
	// TLS, when it names certificates, serves the listener over TLS.
	TLS TLS
	// Admin is the optional admin listener (health, metrics, reload).
	Admin Admin
	// Vault locates the encrypted secret store and sets its expiry policy.
	Vault Vault
	// Audit says where the audit records go.
	Audit Audit
	// Forward configures forward-proxy (HTTP_PROXY) mode.
	Forward Forward
	// Limits configures shared rate limiting.
	Limits Limits
	// Log configures the operational log (stderr), never the audit
	// records.
	Log Log
	// Clients are the known callers, identified by their token.
	Clients []Client
	// Sources are where routes' secrets that are refs (SOURCE:PATH) are
	// fetched from.
	Sources []Source
	// Routes map requests to upstreams and the secret injected into them.
	Routes []Route
	// Budgets cap what requests may spend per client, route or in all.
	Budgets []Budget
	// Prices says where the model price table comes from.
	Prices Prices
	// BrowserOrigins are the web origins ("https://app.example.com") whose
	// pages may use till from a browser. Requests that a browser marks as
	// cross-site, or whose Origin is not till's own, are refused unless
	// their Origin is listed here.
	BrowserOrigins []string
	// ServerNames are the host names, besides IP literals, localhost,
	// *.localhost and tls.names, that a request's Host may carry on a
	// loopback listener. Any other name on a loopback listener is refused:
	// it is what a DNS-rebinding web page sends.
	ServerNames []string
}

// TLS serves the gateway listener over TLS. It is parsed and validated here;
// obtaining certificates is the server's job.
type TLS struct {
	// Names are the DNS names (or IPs) to serve certificates for; empty
	// means plain HTTP.
	Names []string
	// ACME, when set, gets certificates from an ACME CA instead of till's
	// own CA.
	ACME *ACME
}

// ACME names the ACME account and directory to obtain certificates from.
type ACME struct {
	// Email is the ACME account contact; required.
	Email string
	// CA is the ACME directory URL; "" means the certificate manager's
	// default (Let's Encrypt).
	CA string
}

// Admin is the admin listener: /healthz, /readyz, /metrics, /admin/routes and
// POST /admin/reload.
type Admin struct {
	// Listen is host:port, or unix:PATH (PATH made absolute) for a Unix
	// socket only till's user can use; "" disables the admin listener.
	Listen string
	// TokenSHA256 is the lowercase hex SHA-256 of the admin bearer token.
	// It is required when Listen is not a loopback address or a socket,
	// so that an admin listener reachable from the network is never open.
	TokenSHA256 string
}

// SocketPrefix starts an admin.listen that names a Unix socket.
const SocketPrefix = "unix:"

// Socket is the path of the admin listener's Unix socket, or "" when it
// listens on TCP (or not at all).
func (a Admin) Socket() string {
	if path, ok := strings.CutPrefix(a.Listen, SocketPrefix); ok {
		return path
	}
	return ""
}

// Vault locates the encrypted secret store.
type Vault struct {
	// Path is the vault file, absolute (relative paths in the file are
	// resolved against the config file's folder). Default till.vault.
	Path string
	// PathSet reports that the config file names Path (vault.path)
	// rather than leaving the default: a vault named there that does not
	// exist is a mistake to report, not an empty vault.
	PathSet bool
	// KeyFile is the vault key file, absolute. Default till.key.
	KeyFile string
	// MaxAge, when non-zero, makes a secret older than this count as
	// expired.
	MaxAge time.Duration
	// OnExpired is "block" (default: refuse requests that need an expired
	// secret) or "warn" (use it and log a warning).
	OnExpired string
}

// Audit says where audit records (JSON lines) are written.
type Audit struct {
	// File is "-" for stdout (the default) or an absolute path.
	File string
	// Fsync is when records are flushed to stable storage: "none",
	// "interval" (the default: once a second) or "always".
	Fsync string
	// MaxSize, when positive, rotates the file before it would grow past
	// it.
	MaxSize int64
	// MaxFiles is how many rotated files are kept (default 10).
	MaxFiles int
	// Sign writes a signed checkpoint record every 1,000 records or 60
	// seconds, with the vault's till-audit key.
	Sign bool
}

// Forward configures forward-proxy mode (HTTP_PROXY / HTTPS_PROXY).
type Forward struct {
	// Enabled accepts absolute-form requests and CONNECT. Default false:
	// forward mode is opt-in.
	Enabled bool
	// Intercept terminates TLS for CONNECT to hosts that have a route, so
	// the key can be injected. Default true.
	Intercept bool
	// UnknownHosts is what happens to CONNECT to a host without a route:
	// "deny" (default) or "tunnel" (passed through untouched, after the
	// address checks).
	UnknownHosts string
	// AllowCIDRs are private ranges that tunnels may reach; none by default.
	AllowCIDRs []netip.Prefix
	// CACert is the interception CA certificate (absolute path, default
	// till-ca.pem); its key lives in the vault.
	CACert string
	// CertCache is how many minted leaf certificates are kept (one per
	// intercepted host); default 1024.
	CertCache int
}

// Limits configures rate limiting shared between instances.
type Limits struct {
	// Redis is a redis:// or rediss:// URL; "" keeps limits in memory.
	// It may hold a password, so it is never printed.
	Redis string
	// OnRedisError is "allow" (default: fail open) or "deny".
	OnRedisError string
}

// Log configures till's operational log. The command-line flags
// --log-level and --log-format win over it. A reload applies it.
type Log struct {
	// Level is the least level logged: "debug", "info" (the default),
	// "warn" or "error".
	Level string
	// Format is "json" (one JSON object a line) or "console" (readable
	// lines); "" (the default) means console when stderr is a terminal,
	// JSON otherwise, so that a log collector gets JSON unasked.
	Format string
}

// Client is a known caller. It proves who it is with a till token; only the
// token's hash is in the config.
type Client struct {
	// Name identifies the client in routes, logs and audit records.
	Name string
	// TokenSHA256 is the lowercase hex SHA-256 of the whole token
	// ("till_" included).
	TokenSHA256 string
	// CIDRs, when set, restrict the source addresses the client may use.
	CIDRs []netip.Prefix
	// Cert requires a client certificate from till's CA as well.
	Cert bool
	// Line is the client's line in the config file (for messages).
	Line int
}

// Route maps requests under Prefix (or to the upstream's host, in forward
// mode) to Upstream, with Secret injected as Inject says.
type Route struct {
	// Name identifies the route: [a-z0-9][a-z0-9_-]*, unique.
	Name string
	// Preset is the catalog entry the route's defaults came from, or "".
	Preset string
	// Prefix is the path prefix in reverse-proxy mode, e.g. "/openai":
	// it starts with "/", has no trailing "/", and its segments use only
	// [A-Za-z0-9._~-] and are not "." or "..". Default "/" + Name. The
	// prefix is removed before forwarding.
	Prefix string
	// Upstream is where requests go: https, or http only for loopback
	// hosts or with AllowPlaintext. It has no userinfo, query or fragment,
	// and its path has no trailing "/".
	Upstream *url.URL
	// Secret is the vault entry to inject, default Name; or, when Ref is
	// set, the ref as written (SOURCE:PATH#FIELD).
	Secret string
	// Ref, when set, says that the secret is fetched from a source.
	Ref *SecretRef
	// Pool, when set, is the route's keys used in turn (secret: [a, b]);
	// Secret and Ref are then its first member's.
	Pool *Pool
	// Inject says how the secret is attached to the request.
	Inject Inject
	// Headers are extra request headers, added when the app did not send
	// them (e.g. Anthropic-Version). Keys are canonical header names.
	// Route headers are merged over the preset's.
	Headers map[string]string
	// Allow restricts methods and paths; empty allows everything.
	Allow Allow
	// Clients, when non-nil, are the only clients allowed; each names an
	// entry of Config.Clients. Nil means any client that can reach the
	// listener: on a listener off loopback only with AnyClient (see
	// CheckOpenRoutes).
	Clients []string
	// AnyClient is set by "clients: any": the route accepts any caller that
	// can reach the listener, and says so. Clients is nil then. A listener
	// off loopback needs it (or Clients) on every route, so that opening a
	// key to the network is a choice written in the config, never a
	// default.
	AnyClient bool
	// Rate limits requests per client; the zero value is unlimited.
	Rate Rate
	// Burst is the number of requests allowed at once; default Rate.Count.
	Burst int
	// Strip are more client credential headers to remove (canonical
	// names), added to the preset's list.
	Strip []string
	// StripQuery are the query parameters that carry a client credential
	// (Gemini's key), removed as Strip's headers are; added to the
	// preset's list.
	StripQuery []string
	// Timeout bounds the wait for the upstream's response headers (a stream
	// may then run longer); default 60s.
	Timeout time.Duration
	// MaxBody caps the request body in bytes; 0 means unlimited.
	MaxBody int64
	// AllowPlaintext permits an http:// upstream on a non-loopback host.
	AllowPlaintext bool
	// Region is the region of a preset whose upstream names one (bedrock,
	// bedrock-agent, vertex).
	Region string
	// Usage is how the route's responses report token usage (one of
	// UsageFormats): the preset's unless set; "none" without a preset.
	Usage string
	// StreamsReportUsage is the preset's: its provider reports usage in
	// every stream, and refuses being asked to.
	StreamsReportUsage bool
	// Line is the route's line in the config file; 0 for built-in defaults.
	Line int
}

// Pool is a route's keys, used in turn, each set aside for a while when
// the upstream refuses it (429, 402, 529, 401, 403) or cannot be reached.
type Pool struct {
	// Members are the keys, in order: 2 to 16 vault names or source refs.
	Members []PoolMember
	// Strategy is PoolRoundRobin or PoolSticky.
	Strategy string
	// Cooldown is how long a refused key is set aside when the upstream
	// gives no Retry-After (10× that after a 401 or 403); default 60s.
	Cooldown time.Duration
}

// Keys returns the keys r attaches: its pool's members, or its one
// secret.
func (r *Route) Keys() []PoolMember {
	if r.Pool != nil {
		return r.Pool.Members
	}
	return []PoolMember{{Secret: r.Secret, Ref: r.Ref}}
}

// SignsForBedrock reports whether r signs with SigV4 for Bedrock
// (service bedrock), whose runtime names the model a request runs in its
// path (/model/{modelId}/invoke): model rules need no usage format there.
func (r *Route) SignsForBedrock() bool {
	return r.Inject.AWSSigV4 != nil && r.Inject.AWSSigV4.Service == "bedrock"
}

// Pool strategies: each request takes the next key; or each client keeps
// to one key (the provider's prompt cache stays warm).
const (
	PoolRoundRobin = "round_robin"
	PoolSticky     = "sticky"
)

// PoolMember is one key of a pool: a vault entry, or a source ref.
type PoolMember struct {
	// Secret is the name or the ref as written.
	Secret string
	// Ref is set for a source ref.
	Ref *SecretRef
}

// Inject says how a secret is attached to a request: exactly one of Header,
// Query or Basic is set.
type Inject struct {
	// Header is the canonical name of the header to set (e.g.
	// "Authorization"); "" when Query or Basic is used.
	Header string
	// Format is the header value, used with Header; default "{secret}".
	Format Template
	// Query is the name of a query parameter that carries the secret.
	Query string
	// Basic sets HTTP Basic authentication (the Authorization header).
	Basic *Basic
	// AWSSigV4 signs each request with AWS Signature Version 4, from a
	// secret with the fields access_key_id, secret_access_key and,
	// optionally, session_token.
	AWSSigV4 *AWSSigV4
	// OAuth2 attaches an access token minted with the OAuth2
	// client-credentials grant from a secret with the fields client_id
	// and client_secret.
	OAuth2 *OAuth2
	// GitHubApp attaches a GitHub App's installation token, minted with
	// a JWT signed by the app's private key (a --pem secret).
	GitHubApp *GitHubApp
	// Google attaches an access token minted from a service-account key
	// (a --json secret of the key's fields).
	Google *Google
}

// SecretForm is the flag of till secret set that stores the secret
// this injection reads: "--pem" for a GitHub App's private key, "--json"
// for one of fields (SigV4, OAuth2, a service-account key,
// {secret.FIELD}), "" for a single value.
func (in Inject) SecretForm() string {
	switch {
	case in.GitHubApp != nil:
		return "--pem"
	case in.AWSSigV4 != nil || in.OAuth2 != nil || in.Google != nil:
		return "--json"
	}
	templates := []Template{in.Format}
	if in.Basic != nil {
		templates = append(templates, in.Basic.Username, in.Basic.Password)
	}
	for _, t := range templates {
		for _, f := range t.Fields() {
			if f != "" {
				return "--json"
			}
		}
	}
	return ""
}

// Google says which scopes a service account's tokens are minted for.
type Google struct {
	// Scopes default to DefaultGoogleScope.
	Scopes []string
}

// DefaultGoogleScope is the scope of Google Cloud APIs (Vertex AI).
const DefaultGoogleScope = "https://www.googleapis.com/auth/cloud-platform"

// GitHubApp names the app and the installation whose tokens are minted.
type GitHubApp struct {
	// AppID is the app's id, the JWT's issuer.
	AppID int64
	// InstallationID is the installation the tokens are for.
	InstallationID int64
}

// OAuth2 is where and how an access token is minted.
type OAuth2 struct {
	// TokenURL is the token endpoint (https, or http for loopback).
	TokenURL string
	// Scopes are asked for.
	Scopes []string
	// Audience, when set, is sent as the audience parameter.
	Audience string
	// AuthStyle is how the client authenticates to the token endpoint:
	// "header" (HTTP Basic), "params" (in the form), or "auto" (tries
	// both, the default).
	AuthStyle string
}

// AWSSigV4 is what a request is signed for.
type AWSSigV4 struct {
	// Service is the signing name, such as bedrock or s3.
	Service string
	// Region is the region, such as us-east-1.
	Region string
}

// DefaultSigV4MaxBody is the max_body of a route that signs with SigV4
// and sets none: the body is held to be hashed. It is the contract's
// 10 MB, as max_body: 10MB reads it.
const DefaultSigV4MaxBody = 10_000_000

// Basic is HTTP Basic authentication built from a secret, e.g. username
// "{secret.sid}" and password "{secret.token}".
type Basic struct {
	// Username is the user-id template.
	Username Template
	// Password is the password template; it may be empty.
	Password Template
}

// Allow restricts what a route forwards. Empty lists allow everything.
type Allow struct {
	// Methods are upper-case HTTP methods; empty allows any.
	Methods []string
	// Paths are globs matched against the path after the prefix; empty
	// allows any.
	Paths []Glob
	// Models are globs ("*" matches any run of characters, "/"
	// included; usage.MatchModel) the request's model must match; empty
	// allows any.
	Models []string
}

// Defaults that the file may override.
const (
	DefaultListen        = "127.0.0.1:8080"
	DefaultShutdownGrace = 30 * time.Second
	DefaultTimeout       = 60 * time.Second
	DefaultVaultFile     = "till.vault"
	DefaultKeyFile       = "till.key"
	DefaultCACertFile    = "till-ca.pem"
	DefaultCertCache     = 1024
	DefaultLogLevel      = "info"
	// MaxSize caps a config file, so a wrong path (a log, a disk image)
	// fails fast instead of being read whole.
	MaxSize = 1 << 20
)
