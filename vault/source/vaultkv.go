package source

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/tillgw/till/internal/regfile"
	"github.com/tillgw/till/internal/termtext"
)

// VaultKVOptions configure a [VaultKV].
type VaultKVOptions struct {
	// Address is the server's URL, such as https://vault.internal:8200.
	Address string
	// CAFile, when set, is the PEM file of the CA the server's certificate
	// must chain to; otherwise the system roots are used.
	CAFile string
	// Namespace is sent as X-Vault-Namespace when set.
	Namespace string
	// TokenFile, when set, holds the token; it is read again at every
	// fetch, so an agent may rewrite it. Otherwise Login gets one.
	TokenFile string
	// Login logs in and returns a token (AppRole, Kubernetes); used when
	// TokenFile is empty.
	Login Login
}

// Login is an auth method: it returns the request body for the method's
// login path, read afresh from its files at each login.
type Login struct {
	// Path is the login path, such as auth/approle/login.
	Path string
	// Body reads the credentials the login path takes.
	Body func() (map[string]any, error)
	// Credentials names the fields of Body that are credentials (not a
	// role's name): an answer that quotes one is not quoted in turn.
	Credentials []string
}

// AppRoleLogin logs in at auth/MOUNT/login with a role id and a secret id
// read from files.
func AppRoleLogin(mount, roleIDFile, secretIDFile string) Login {
	return Login{Path: "auth/" + mount + "/login", Body: func() (map[string]any, error) {
		role, err := readCredential(roleIDFile, "role id")
		if err != nil {
			return nil, err
		}
		secret, err := readCredential(secretIDFile, "secret id")
		if err != nil {
			return nil, err
		}
		return map[string]any{"role_id": role, "secret_id": secret}, nil
	}, Credentials: []string{"role_id", "secret_id"}}
}

// KubernetesLogin logs in at auth/MOUNT/login with the pod's
// service-account token, read at each login (projected tokens rotate).
func KubernetesLogin(mount, role, jwtFile string) Login {
	return Login{Path: "auth/" + mount + "/login", Body: func() (map[string]any, error) {
		jwt, err := readCredential(jwtFile, "service-account token")
		if err != nil {
			return nil, err
		}
		return map[string]any{"role": role, "jwt": jwt}, nil
	}, Credentials: []string{"jwt"}}
}

// VaultKV reads KV version 2 entries from HashiCorp Vault or OpenBao
// through the official client. A ref's path is MOUNT/PATH, MOUNT being
// the longest mount path is under (it may hold slashes). A token it
// logged in for is renewed once half its lease has passed, and replaced
// by a new login when renewal fails, when it has expired, or when the
// server refuses it and no longer knows it.
type VaultKV struct {
	hc   *http.Client // shared by every call: connections, TLS settings
	opts VaultKVOptions
	now  func() time.Time

	mounts sync.Map // ref path → the KV mount Vault says it is under

	mu      sync.Mutex // guards the token and its lease
	token   string
	issued  time.Time
	expires time.Time // zero: no expiry
	renew   bool
}

var _ Source = (*VaultKV)(nil)

// NewVaultKV returns a source reading from the server at opts.Address.
// Its token and namespace come from opts only, never from VAULT_*
// variables.
func NewVaultKV(opts VaultKVOptions) (*VaultKV, error) {
	v := &VaultKV{hc: &http.Client{
		Transport: http.DefaultTransport.(*http.Transport).Clone(),
		// Redirects are answers, never followed: one would carry the
		// Vault token (X-Vault-Token, which Go keeps across hosts)
		// elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, opts: opts, now: time.Now}
	tls := &api.TLSConfig{}
	if opts.CAFile != "" {
		// Read here, not by the client, which would read a named pipe
		// or a device (a reload waiting on it) without end.
		pem, err := regfile.Read(opts.CAFile, maxCAFile)
		if err != nil {
			return nil, fmt.Errorf("vault source ca_file: %w", err)
		}
		tls.CACertBytes = pem
	}
	if err := v.config().ConfigureTLS(tls); err != nil { // on the shared transport
		return nil, fmt.Errorf("vault source ca_file %s: %w (want PEM certificates)", opts.CAFile, err)
	}
	v.hc.Transport = cappedTransport{v.hc.Transport}
	if _, err := api.NewClient(v.config()); err != nil {
		return nil, fmt.Errorf("vault source: %w", err)
	}
	return v, nil
}

// config is the settings of one call's client: no retries (the cache
// retries; a request should not wait out backoffs) and no redirects
// followed, not even the official client's one (a config per call, as
// its Clone forgets DisableRedirects).
func (v *VaultKV) config() *api.Config {
	cfg := &api.Config{Address: v.opts.Address, HttpClient: v.hc, Timeout: fetchTimeout, DisableRedirects: true}
	cfg.MaxRetries = 0
	return cfg
}

// Fetch reads MOUNT/PATH's current version: its fields as a JSON object,
// its created_time and its custom_metadata.expires.
func (v *VaultKV) Fetch(ctx context.Context, path string) ([]byte, Meta, error) {
	if mount, entry, ok := strings.Cut(path, "/"); !ok || mount == "" || entry == "" {
		return nil, Meta{}, fmt.Errorf("path %q must be MOUNT/PATH, such as secret/openai", path)
	}
	token, err := v.currentToken(ctx)
	if err != nil {
		return nil, Meta{}, err
	}
	kv, err := v.read(ctx, token, path)
	if isForbidden(err) && v.opts.TokenFile == "" && !v.known(ctx, token) {
		// The token was revoked or expired early: log in again, once.
		v.drop(token)
		if token, err = v.currentToken(ctx); err != nil {
			return nil, Meta{}, err
		}
		kv, err = v.read(ctx, token, path)
	}
	if err != nil {
		return nil, Meta{}, err
	}
	raw, err := json.Marshal(kv.Data)
	if err != nil {
		return nil, Meta{}, fmt.Errorf("%s: %w", path, err)
	}
	meta := Meta{Fields: true, Version: kv.created}
	if e, ok := kv.Metadata.CustomMetadata["expires"]; ok {
		s, _ := e.(string)
		if meta.Expires, err = parseExpires(s); err != nil {
			return nil, Meta{}, fmt.Errorf("%s: custom_metadata.expires %q must be an RFC 3339 time or a date such as 2027-01-31", path, s)
		}
	}
	return raw, meta, nil
}

// kvVersion is the current version of a KV version 2 entry, as Vault
// answers a read of MOUNT/data/PATH.
type kvVersion struct {
	Data     map[string]any `json:"data"` // nil when deleted or destroyed
	Metadata *struct {
		CreatedTime    string         `json:"created_time"`
		DeletionTime   string         `json:"deletion_time"`
		Destroyed      bool           `json:"destroyed"`
		CustomMetadata map[string]any `json:"custom_metadata"`
	} `json:"metadata"`
	created time.Time
}

// read reads the current version of the entry at path (MOUNT/PATH) with
// token. The official client's KVv2.Get takes any answer without a
// secret for "not found" (an empty 200 or 204, a 404 of a load balancer
// in front of Vault) and any null data for "deleted", either of which
// would revoke the value: Vault's answer is read here, by kvAnswer's
// rules.
func (v *VaultKV) read(ctx context.Context, token, path string) (*kvVersion, error) {
	c, err := v.clientWith(token)
	if err != nil {
		return nil, err
	}
	mount, entry, err := v.mountOf(ctx, c, path)
	if err != nil {
		return nil, err
	}
	res, err := c.Logical().ReadRawWithContext(ctx, mount+"/data/"+entry)
	if res != nil {
		defer res.Body.Close()
	}
	if res == nil || err != nil && res.StatusCode != http.StatusNotFound {
		return nil, fmt.Errorf("read %s: %w", path, vaultError(err, token))
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return kvAnswer(path, res.StatusCode, body)
}

// kvAnswer reads Vault's answer to a KV version 2 read (code, body). Only
// Vault's own words take the value for revoked (ErrGone): a 404 whose
// body is its errors document alone (no such entry, or no mount there),
// or a version whose metadata says it is deleted or destroyed. Any other
// answer (no body, a proxy's page, JSON of another shape) is the server
// failing, as in an outage; its body is not quoted, as a proxy's page may
// show the request, token and all.
func kvAnswer(path string, code int, body []byte) (*kvVersion, error) {
	notVaults := func(what string) error {
		return fmt.Errorf("read %s: the server answered %d %s with %s, not Vault's answer to a read (is a load balancer or proxy in front of Vault failing?)",
			path, code, http.StatusText(code), what)
	}
	if len(body) == 0 {
		return nil, notVaults("no body")
	}
	var doc map[string]json.RawMessage
	if json.Unmarshal(body, &doc) != nil || doc == nil {
		return nil, notVaults("a body that is not a JSON object")
	}
	var errs []string
	if code == http.StatusNotFound && len(doc) == 1 && json.Unmarshal(doc["errors"], &errs) == nil && errs != nil {
		return nil, gone("%s: no such secret", path)
	}
	var kv kvVersion
	dec := json.NewDecoder(bytes.NewReader(doc["data"]))
	dec.UseNumber()
	if dec.Decode(&kv) != nil || kv.Metadata == nil {
		return nil, notVaults("JSON that is not a KV version 2 entry")
	}
	deleted := kv.Metadata.DeletionTime != "" || kv.Metadata.Destroyed
	switch {
	case kv.Data == nil && deleted && (code == http.StatusNotFound || code == http.StatusOK):
		return nil, gone("%s: the current version is deleted or destroyed", path)
	case kv.Data == nil || code != http.StatusOK:
		return nil, notVaults("JSON that is not a KV version 2 entry")
	}
	var err error
	if kv.created, err = time.Parse(time.RFC3339Nano, kv.Metadata.CreatedTime); err != nil {
		return nil, fmt.Errorf("read %s: created_time %q is not an RFC 3339 time", path, termtext.Escape(kv.Metadata.CreatedTime, 64))
	}
	return &kv, nil
}

// mountOf splits path into the KV mount it is under and the entry's path
// in that mount. A mount may hold slashes (team/kv): Vault is asked which
// one path is under, as the vault CLI asks (sys/internal/ui/mounts, which
// answers a token that may read there), once per path. When it cannot
// say (an older server, a policy, an outage), the first segment is the
// mount, and it is asked again at the next fetch. A mount that is not KV
// version 2 is refused.
func (v *VaultKV) mountOf(ctx context.Context, c *api.Client, path string) (mount, entry string, err error) {
	if m, ok := v.mounts.Load(path); ok {
		return m.(string), path[len(m.(string))+1:], nil
	}
	first, rest, _ := strings.Cut(path, "/")
	info, err := c.Logical().ReadWithContext(ctx, "sys/internal/ui/mounts/"+path)
	if err != nil || info == nil {
		return first, rest, nil
	}
	named, _ := info.Data["path"].(string)
	mount = strings.TrimSuffix(named, "/")
	entry, under := strings.CutPrefix(path, mount+"/")
	if mount == "" || !under || entry == "" {
		return first, rest, nil
	}
	kind, _ := info.Data["type"].(string)
	options, _ := info.Data["options"].(map[string]any)
	if version, _ := options["version"].(string); kind != "kv" || version != "2" {
		return "", "", fmt.Errorf("%s is a %s mount (options.version %q): till reads KV version 2 only",
			termtext.Escape(mount, 64), termtext.Escape(kind, 32), termtext.Escape(version, 8))
	}
	v.mounts.Store(path, mount)
	return mount, entry, nil
}

// known reports whether Vault still knows token: a 403 to a token it
// knows is its policy refusing the path (a mistyped ref, a policy that
// lacks it), which a new login would not change. Logging in at each such
// fetch would leave Vault a live token each time, and use up a secret id
// issued for a few uses. Every token may look itself up (Vault's default
// policy); one that may not counts as unknown.
func (v *VaultKV) known(ctx context.Context, token string) bool {
	c, err := v.clientWith(token)
	if err != nil {
		return false
	}
	_, err = c.Auth().Token().LookupSelfWithContext(ctx)
	return err == nil
}

// clientWith returns a client for one call that sends token (none when
// empty) and the configured namespace, whatever the environment says. It
// shares the source's connections.
func (v *VaultKV) clientWith(token string) (*api.Client, error) {
	c, err := api.NewClient(v.config())
	if err != nil {
		return nil, err
	}
	c.ClearToken()
	if token != "" {
		c.SetToken(token)
	}
	c.ClearNamespace()
	if v.opts.Namespace != "" {
		c.SetNamespace(v.opts.Namespace)
	}
	return c, nil
}

// renewAfter is the share of a token's lease after which it is renewed.
const renewAfter = 0.5

// expiryMargin is how long before a token's lease ends it is no longer
// used: a request would not finish in time.
const expiryMargin = 10 * time.Second

// currentToken returns the token to send: the token file's content, or
// the logged-in token, renewed or replaced as its lease requires.
func (v *VaultKV) currentToken(ctx context.Context) (string, error) {
	if v.opts.TokenFile != "" {
		return readCredential(v.opts.TokenFile, "token")
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	if v.token != "" && (v.expires.IsZero() || now.Before(v.expires.Add(-expiryMargin))) {
		half := v.issued.Add(time.Duration(float64(v.expires.Sub(v.issued)) * renewAfter))
		if v.expires.IsZero() || !v.renew || now.Before(half) {
			return v.token, nil
		}
		if err := v.renewSelf(ctx); err == nil {
			return v.token, nil
		}
		// Renewal failed (max TTL reached, token revoked): log in again.
	}
	if err := v.login(ctx); err != nil {
		return "", err
	}
	return v.token, nil
}

// drop forgets token if it is still the current one.
func (v *VaultKV) drop(token string) {
	v.mu.Lock()
	if v.token == token {
		v.token = ""
	}
	v.mu.Unlock()
}

// login runs the auth method and keeps the token it returns. v.mu is held.
func (v *VaultKV) login(ctx context.Context) error {
	v.token = ""
	if v.opts.Login.Body == nil {
		return errors.New("vault source has no auth method")
	}
	body, err := v.opts.Login.Body()
	if err != nil {
		return err
	}
	c, err := v.clientWith("")
	if err != nil {
		return err
	}
	s, err := c.Logical().WriteWithContext(ctx, v.opts.Login.Path, body)
	if err != nil {
		var sent []string
		for _, name := range v.opts.Login.Credentials {
			if cred, ok := body[name].(string); ok {
				sent = append(sent, cred)
			}
		}
		return fmt.Errorf("log in at %s: %w", v.opts.Login.Path, vaultError(err, sent...))
	}
	return v.keep(s, "log in at "+v.opts.Login.Path)
}

// renewSelf renews the current token. v.mu is held.
func (v *VaultKV) renewSelf(ctx context.Context) error {
	c, err := v.clientWith(v.token)
	if err != nil {
		return err
	}
	s, err := c.Auth().Token().RenewSelfWithContext(ctx, 0)
	if err != nil {
		return fmt.Errorf("renew the token: %w", vaultError(err, v.token))
	}
	return v.keep(s, "renew the token")
}

// keep stores the token of a login or renewal answer. v.mu is held.
func (v *VaultKV) keep(s *api.Secret, what string) error {
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return fmt.Errorf("%s: the answer holds no token", what)
	}
	v.token = s.Auth.ClientToken
	v.issued = v.now()
	v.renew = s.Auth.Renewable
	v.expires = time.Time{}
	if s.Auth.LeaseDuration > 0 {
		v.expires = v.issued.Add(time.Duration(s.Auth.LeaseDuration) * time.Second)
	}
	return nil
}

// isForbidden reports a 403: Vault's answer to a missing, expired or
// revoked token.
func isForbidden(err error) bool {
	var se *statusError
	return errors.As(err, &se) && se.code == http.StatusForbidden
}

// vaultError shortens the client's multi-line error to one line: the
// status and Vault's messages, which hold no values. An answer that is
// not Vault's (an error page of a proxy in front of it, which may show
// the request, token and all) is named by its status only, as is one
// whose messages quote sent, the credentials the call sent (something at
// Vault's address that echoes the request it refused).
func vaultError(err error, sent ...string) error {
	var re *api.ResponseError
	if !errors.As(err, &re) {
		return err
	}
	msg := ""
	if !re.RawError {
		// Vault's words (or those of whatever answered at its address)
		// reach a terminal: one line, escaped and cut.
		msg = termtext.Escape(strings.Join(strings.Fields(strings.Join(re.Errors, "; ")), " "), maxMessage)
	}
	switch {
	case QuotesCredential(msg, sent):
		msg = http.StatusText(re.StatusCode) + " (the answer's words are not shown: they quote the credential sent)"
	case msg == "":
		msg = http.StatusText(re.StatusCode)
	}
	return &statusError{code: re.StatusCode, msg: msg}
}

// maxMessage caps the messages of Vault's that an error quotes.
const maxMessage = 256

// cappedTransport reads no answer larger than a value may be, with room
// for its metadata: what the server, or one in its place, sends is read
// into memory. A redirect is an error: the official client takes one
// with no body (an HA standby's 307 to the active node) for an entry not
// found, which would revoke the value as if it were deleted.
type cappedTransport struct{ rt http.RoundTripper }

func (c cappedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := c.rt.RoundTrip(r)
	if err == nil && res.StatusCode >= 300 && res.StatusCode < 400 {
		res.Body.Close()
		return nil, fmt.Errorf("the server answered %d %s, and till follows no redirect (a standby that does not forward redirects to the active node: give address the active node, or a load balancer that reaches it)",
			res.StatusCode, http.StatusText(res.StatusCode))
	}
	return capBody(res, err)
}

// capBody caps the body of res, an answer without err, at maxAnswer.
func capBody(res *http.Response, err error) (*http.Response, error) {
	if err == nil {
		res.Body = &cappedBody{ReadCloser: res.Body, left: maxAnswer}
	}
	return res, err
}

// maxAnswer is the most of an answer cappedTransport reads.
const maxAnswer = 2 * maxRaw

// errAnswerTooLarge is the error of a read past maxAnswer.
var errAnswerTooLarge = fmt.Errorf("the answer is larger than %d bytes", maxAnswer)

// cappedBody fails a read that would take it past left bytes.
type cappedBody struct {
	io.ReadCloser
	left int64
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.ReadCloser.Read(p)
	if b.left -= int64(n); b.left < 0 {
		return 0, errAnswerTooLarge
	}
	return n, err
}

// statusError is a server's refusal, in one line. It keeps nothing else
// of the client's error, which holds the answer whole (and, when it
// quotes the request, the credential sent): no caller can print it.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string { return fmt.Sprintf("%d %s", e.code, e.msg) }

// readCredential reads a small credential file (a token, an id, a JWT),
// trimming surrounding whitespace. Errors name the file, never its content.
func readCredential(path, what string) (string, error) {
	b, err := regfile.Read(path, maxCredentialFile)
	if err != nil {
		return "", fmt.Errorf("read the %s file: %w", what, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("the %s file %s is empty", what, path)
	}
	if len(s) > 16<<10 || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", fmt.Errorf("the %s file %s does not hold a single line", what, path)
	}
	return s, nil
}

// The most read of a credential file and of a ca_file (regfile.Read:
// regular files only, as a named pipe's open waits for a writer and
// /dev/zero never ends).
const (
	maxCredentialFile = 64 << 10
	maxCAFile         = 1 << 20
)

// parseExpires reads an expiry as Vault custom metadata holds it: an RFC
// 3339 time, or a date, which means the start of that day, UTC (as
// `till secret set --expires` does).
func parseExpires(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Parse(time.DateOnly, s)
}
