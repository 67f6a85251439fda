package proxy

import (
	"github.com/tillgw/till/usage"

	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
	"github.com/tillgw/till/vault/source"
)

// Snapshot is one immutable, compiled view of the config and the vault.
// A request reads the snapshot current when it arrived and only that one; a
// reload compiles a new snapshot and swaps it in whole.
type Snapshot struct {
	byPrefix map[string]*route
	// byHost maps an upstream's "host:port" to its routes, longest
	// upstream path first, for forward mode.
	byHost    map[string][]*route
	routes    []*route
	clients   clientSet
	onExpired string
	forward   config.Forward
	browser   browserGuard
	// secrets are the vault's secrets by name, for the metrics of their
	// age and expiry; maxAge is vault.max_age.
	secrets []secretTimes
	maxAge  time.Duration
	// budgets are the config's budgets, in order; prices the model price
	// table.
	budgets []*budgetRule
	prices  *usage.Prices
}

// secretTimes is when one secret's version was made and when it expires:
// the earlier of its expiry and vault.max_age after its update (zero for
// neither).
type secretTimes struct {
	name    string
	version time.Time
	expires time.Time
}

// route is a compiled route: everything a request needs, computed once.
type route struct {
	name     string
	prefix   string
	upstream *url.URL
	timeout  time.Duration
	maxBody  int64

	methods []string
	paths   []config.Glob
	models  []string // model globs; empty: any
	// usage is how the upstream's answers report token usage;
	// streamsReportUsage, that its streams always do, unasked.
	usage              usage.Format
	streamsReportUsage bool
	// signs is set for a route that signs with AWS SigV4: its bodies are
	// held, up to max_body, to be hashed. bedrock is set when it signs
	// for Bedrock, whose runtime names the model in the path (modelPath).
	signs   bool
	bedrock bool
	// mintsGitHub is set for a route that mints GitHub App installation
	// tokens: the path that would revoke one is refused
	// (revokesInstallationToken).
	mintsGitHub bool
	// formMethods is set for a route that reads a POST's form or JSON
	// body for a _method field (checkFormMethod): such bodies are held, up
	// to max_body.
	formMethods bool
	// tokenBudgeted is set for a metered route that a token or dollar
	// budget covers (for some client): a body it cannot read could ask
	// for a stream that reports no usage, so it is read, up to max_body
	// when larger than maxHeld, or refused.
	tokenBudgeted bool
	clients       []string // allowed client names; empty: any
	rate          config.Rate
	burst         int
	// limitKey names the route's token buckets. A change of rate or
	// burst keeps them (what callers took counts on at the new rate): a
	// reload that tightens the rate must not hand each one a full burst.
	limitKey string
	// keyHeaders are where an app's SDK puts its own key (a till
	// token): the header the route's key goes in, then Authorization and
	// the others its strip list names, since a provider's SDKs may send it
	// in any of them (Anthropic's send Authorization: Bearer, the key goes
	// in X-Api-Key).
	// Known from the config, whether the key is minted, pooled or missing.
	keyHeaders []string

	// credentials are the client headers removed before injection, in
	// canonical form, and queryCredentials the query parameters;
	// addHeaders are set when the app did not send them.
	credentials      []string
	queryCredentials []string
	addHeaders       [][2]string

	// The key and how it is attached, shared by the routes that attach
	// one key the same way. For a route whose secret is in a source, it
	// holds only the names of what is attached, and sourced gets the key.
	*injection
	sourced *sourced
	// pool, when set, holds the route's keys used in turn; injection is
	// then its first member's, for the names.
	pool *pool
}

// injection is how a route attaches its key, rendered once per snapshot.
type injection struct {
	secretName string
	// sigV4, when set, signs each request with AWS SigV4 instead.
	sigV4 *sigV4
	// minter, when set, mints the token to attach (OAuth2); the
	// injection of one token points to it in minted.
	minter *minter
	minted *minted
	// cred is how the key is used, for the record: credStatic when "".
	cred string
	// problem is why the key cannot be attached (missing secret or field);
	// "" when it can. missing says the secret is not in the vault.
	problem string
	missing bool
	// short says the key is a single value shorter than MinEchoLength,
	// whose echo is not looked for.
	short   bool
	fp      string
	expires time.Time // zero: never
	// times is the key's secret without its value: when its version was
	// made and its own expiry, from which another vault.max_age gives
	// another expiry (see under).
	times vault.Secret
	// A header and its value, or an escaped "name=value" query parameter.
	injectHeader string
	injectValue  string
	injectQuery  string
	injectPair   string
	// echoForms are the key's values in the forms an upstream could echo
	// (plain, URL-escaped, base64, hex, as injected), to remove any
	// response header that holds one.
	echoForms []string
}

// RouteInfo describes a compiled route for logs and `till check`.
type RouteInfo struct {
	Name        string    // as in the config
	Prefix      string    // the path prefix the route serves, in reverse mode
	Upstream    string    // the upstream's base URL
	Secret      string    // the name of the secret it attaches
	Fingerprint string    // "" when the secret is missing, or in a source and not fetched yet
	Expires     time.Time // earliest of the secret's expiry and max_age; zero when none or not fetched yet
	Problem     string    // why the route cannot attach its key; "" when ready
	Missing     bool      // the problem is that its secret is not in the vault
	Short       bool      // its key (or one of its pool's) is shorter than MinEchoLength: an echo of it is not removed
	// Pool holds each key of a route with a key pool, in config order
	// (the first is also the route's Secret); nil otherwise.
	Pool []KeyInfo
}

// KeyInfo describes one key of a route's key pool.
type KeyInfo struct {
	Secret      string    // the name of the secret, or its ref
	Fingerprint string    // "" when the secret is missing, or in a source and not fetched yet
	Expires     time.Time // earliest of the secret's expiry and max_age; zero when none or not fetched yet
	Problem     string    // why this key cannot be attached; "" when ready
	Missing     bool      // the problem is that its secret is not in the vault
	Short       bool      // the key is shorter than MinEchoLength: an echo of it is not removed
}

// NewSnapshot compiles cfg and the vault's secrets. Routes whose secret is
// missing or lacks a field the inject format needs are kept and answer 503
// secret_missing, so one missing key does not take the others down.
func NewSnapshot(cfg *config.Config, secrets map[string]vault.Secret) *Snapshot {
	return NewSnapshotWithKeys(cfg, secrets, nil)
}

// NewSnapshotWithKeys is NewSnapshot for a gateway that fetches the keys
// of routes whose secret is a ref (SOURCE:PATH) from keys at request time.
// Without keys such routes answer 503 secret_missing.
func NewSnapshotWithKeys(cfg *config.Config, secrets map[string]vault.Secret, keys Keys) *Snapshot {
	s := &Snapshot{
		byPrefix:  make(map[string]*route, len(cfg.Routes)),
		byHost:    make(map[string][]*route),
		onExpired: cfg.Vault.OnExpired,
		forward:   cfg.Forward,
		clients:   newClientSet(cfg.Clients),
		browser:   newBrowserGuard(cfg),
	}
	shared := newInterner()
	for i := range cfg.Routes {
		r := compileRoute(&cfg.Routes[i], secrets, cfg.Vault.MaxAge, shared, keys)
		s.routes = append(s.routes, r)
		s.byPrefix[r.prefix] = r
		k := hostKey(r.upstream.Scheme, r.upstream.Host)
		s.byHost[k] = append(s.byHost[k], r)
	}
	for _, rs := range s.byHost {
		slices.SortStableFunc(rs, func(a, b *route) int { return len(b.upstream.Path) - len(a.upstream.Path) })
	}
	s.secrets, s.maxAge = vaultTimes(secrets, cfg.Vault.MaxAge), cfg.Vault.MaxAge
	s.budgets = compileBudgets(cfg.Budgets)
	for _, r := range s.routes {
		r.tokenBudgeted = r.usage != usage.None && slices.ContainsFunc(cfg.Budgets, func(b config.Budget) bool {
			return (b.Tokens > 0 || b.USD > 0) && (b.Routes == nil || slices.Contains(b.Routes, r.name))
		})
	}
	s.prices = loadPrices(cfg)
	return s
}

// vaultTimes lists, sorted by name, the version time and expiry of each
// secret of the vault; till's own keys (its CA, its audit signing key)
// are not provider keys, and no expiry policy applies to them.
func vaultTimes(secrets map[string]vault.Secret, maxAge time.Duration) []secretTimes {
	var out []secretTimes
	for name, sec := range secrets {
		if config.OwnKey(name) {
			continue
		}
		out = append(out, timesOf(name, sec, maxAge))
	}
	slices.SortFunc(out, func(a, b secretTimes) int { return strings.Compare(a.name, b.name) })
	return out
}

// timesOf is sec's secretTimes under name.
func timesOf(name string, sec vault.Secret, maxAge time.Duration) secretTimes {
	version := sec.Updated
	if version.IsZero() {
		version = sec.Created
	}
	return secretTimes{name: name, version: version, expires: sec.ExpiresAt(maxAge)}
}

// hostKey is the lower-case "host:port" of an authority, with the scheme's
// default port when it has none, written one way only: a port without
// leading zeros, an IP address in its canonical form (an IPv4-mapped IPv6
// one as IPv4). Two spellings of a route's host must not tell apart a
// request that gets the route's policy and one tunnelled untouched.
func hostKey(scheme, authority string) string {
	host, port, err := net.SplitHostPort(authority)
	if err != nil {
		host, port = authority, ""
		if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
			host = host[1 : len(host)-1] // an IPv6 literal without a port
		}
	}
	if port == "" {
		// No port, or an empty one ("host:", which RFC 3986, section
		// 3.2.3, makes the same URI and dialers take as the default).
		port = "443"
		if scheme == "http" {
			port = "80"
		}
	}
	if n, err := strconv.ParseUint(port, 10, 16); err == nil {
		port = strconv.FormatUint(n, 10)
	}
	return net.JoinHostPort(canonicalHost(host), strings.ToLower(port))
}

// canonicalHost writes a host one way: lower case, without a trailing
// dot, an IP address in its canonical form (IPv4-mapped IPv6 as IPv4).
func canonicalHost(host string) string {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap().String()
	}
	return host
}

// matchHost finds the route for a request to the upstream at key whose
// upstream path is the longest whole-segment prefix of p.
func (s *Snapshot) matchHost(key, p string) *route {
	for _, r := range s.byHost[key] {
		up := r.upstream.Path
		if strings.HasPrefix(p, up) && (len(p) == len(up) || p[len(up)] == '/' || up == "") {
			return r
		}
	}
	return nil
}

func compileRoute(cr *config.Route, secrets map[string]vault.Secret, maxAge time.Duration, shared *interner, keys Keys) *route {
	r := &route{
		name:     cr.Name,
		prefix:   cr.Prefix,
		upstream: shared.url(cr.Upstream),
		timeout:  cr.Timeout,
		maxBody:  cr.MaxBody,
		methods:  cr.Allow.Methods,
		paths:    cr.Allow.Paths,
		clients:  cr.Clients,
		rate:     cr.Rate,
		burst:    cr.Burst,
		models:   cr.Allow.Models,
		usage:    usage.Format(cr.Usage),
		signs:    cr.Inject.AWSSigV4 != nil,
		bedrock:  cr.SignsForBedrock(),

		mintsGitHub: cr.Inject.GitHubApp != nil,

		formMethods: checksFormMethod(cr.Preset, cr.Allow.Methods),

		streamsReportUsage: cr.StreamsReportUsage,
	}
	if r.usage == "" {
		r.usage = usage.None
	}
	if r.burst < 1 {
		r.burst = r.rate.Count
	}
	r.limitKey = r.name + "\x00"
	r.keyHeaders = shared.names(keyHeaders(cr))
	creds := []string{"Authorization", "Proxy-Authorization", "X-Till-Token"}
	if cr.Inject.AWSSigV4 != nil {
		creds = append(creds, sigV4Headers...)
	}
	if cr.Inject.Header != "" {
		creds = append(creds, cr.Inject.Header)
	}
	for _, h := range cr.Strip {
		creds = append(creds, http.CanonicalHeaderKey(h))
	}
	r.credentials = shared.names(dedupe(creds))
	r.queryCredentials = cr.StripQuery
	for k, v := range cr.Headers {
		r.addHeaders = append(r.addHeaders, [2]string{http.CanonicalHeaderKey(k), v})
	}
	if cr.Pool != nil {
		compilePool(r, cr, secrets, maxAge, shared, keys)
		return r
	}
	if cr.Ref != nil {
		compileSourced(r, cr, maxAge, keys, shared)
		return r
	}
	r.injection = shared.injection(compileInjection(cr, secrets, maxAge))
	return r
}

// credOf is how a route with inj uses its key, for records: "" (static)
// or the mechanism that signs or mints with it.
func credOf(inj config.Inject) string {
	switch {
	case inj.AWSSigV4 != nil:
		return credSigV4
	case inj.OAuth2 != nil:
		return credOAuth2
	case inj.GitHubApp != nil:
		return credGitHubApp
	case inj.Google != nil:
		return credGoogle
	}
	return ""
}

// keyHeaders are the headers an app's SDK may put its key in on the
// route cr, in canonical form: the one the key goes in (keyHeader), then
// Authorization and those of the route's strip list, which are removed
// before injection as it is.
func keyHeaders(cr *config.Route) []string {
	var hs []string
	if h := keyHeader(cr.Inject); h != "" {
		hs = append(hs, http.CanonicalHeaderKey(h))
	}
	hs = append(hs, "Authorization")
	for _, h := range cr.Strip {
		hs = append(hs, http.CanonicalHeaderKey(h))
	}
	return dedupe(hs)
}

// keyHeader is the header a route that attaches its key as inj says puts
// it in: Authorization for Basic credentials, signatures and minted
// tokens; "" for a query parameter.
func keyHeader(inj config.Inject) string {
	switch {
	case inj.Query != "":
		return ""
	case inj.Header != "":
		return inj.Header
	}
	return "Authorization"
}

// compileInjection renders how cr attaches its key; the echo forms are
// left to the interner.
func compileInjection(cr *config.Route, secrets map[string]vault.Secret, maxAge time.Duration) (in injection, values []string) {
	in.secretName, in.cred = cr.Secret, credOf(cr.Inject)
	sec, ok := secrets[cr.Secret]
	if cr.Secret == config.CASecret || cr.Secret == config.AuditKeySecret {
		ok = false // till's own keys are never a route's (config refuses them too)
	}
	if !ok {
		in.problem, in.missing = "secret "+`"`+cr.Secret+`"`+" is not in the vault", true
		return in, nil
	}
	in.fp = sec.Fingerprint()
	in.short = TooShortToScrub(sec)
	in.expires = sec.ExpiresAt(maxAge)
	in.times = vault.Secret{Created: sec.Created, Updated: sec.Updated, Expires: sec.Expires}
	if in.problem = wholeDocument(cr.Secret, sec); in.problem != "" {
		return in, nil
	}
	lookup := func(field string) (string, bool) {
		if field == "" {
			return sec.Value()
		}
		return sec.Field(field)
	}
	if values, problem, ok := compileCredential(&in, cr, sec); ok {
		if problem != "" {
			in.problem = "secret " + `"` + cr.Secret + `"` + ": " + problem
		}
		return in, values
	}
	var err error
	switch inj := cr.Inject; {
	case inj.Basic != nil:
		var user, pass string
		if user, err = inj.Basic.Username.Render(lookup); err == nil {
			pass, err = inj.Basic.Password.Render(lookup)
		}
		in.injectHeader = "Authorization"
		in.injectValue = "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	case inj.Query != "":
		v, ok := sec.Value()
		if !ok {
			err = errors.New("a query parameter takes a single-value secret, not fields")
		}
		in.injectQuery = inj.Query
		in.injectPair = url.QueryEscape(inj.Query) + "=" + url.QueryEscape(v)
	default:
		in.injectHeader = inj.Header
		in.injectValue, err = inj.Format.Render(lookup)
	}
	if err == nil && strings.ContainsAny(in.injectValue+in.injectPair, "\r\n") {
		err = errors.New("the value spans lines (a PEM or JSON key), which a header or query cannot carry")
	}
	if err != nil {
		// The template error names the missing field, never a value.
		in.problem = "secret " + `"` + cr.Secret + `"` + " does not fit the route's inject format: " + err.Error()
		in.injectValue, in.injectPair = "", ""
		return in, nil
	}
	return in, append(sec.Values(), in.injectValue, strings.TrimPrefix(in.injectValue, "Basic "))
}

// compileCredential compiles into in the signing (SigV4) or minting
// (Google, GitHub App, OAuth2) of a route's key sec, and returns the
// values whose echo betrays it, or why sec cannot serve it; ok is false
// for a route that injects the key as it is.
func compileCredential(in *injection, cr *config.Route, sec vault.Secret) (values []string, problem string, ok bool) {
	switch inj := cr.Inject; {
	case inj.AWSSigV4 != nil:
		in.sigV4, values, problem = compileSigV4(inj.AWSSigV4, sec)
	case inj.Google != nil:
		in.minter, values, problem = compileGoogle(mintsAs(cr), inj.Google, sec)
	case inj.GitHubApp != nil:
		in.minter, values, problem = compileGitHubApp(mintsAs(cr), inj.GitHubApp, cr.Upstream, sec)
	case inj.OAuth2 != nil:
		in.minter, values, problem = compileOAuth2(mintsAs(cr), inj.OAuth2, sec)
	default:
		return nil, "", false
	}
	return values, problem, true
}

// wholeDocument says why a route cannot send sec, a vault secret
// named name: its single value is a JSON object or array (which till
// secret set refuses without --json, but a vault written by an earlier
// till may hold), so sent as one key every key in it would reach the
// upstream, as a source's such value is refused at fetch
// (source.NotADocument). A route that reads fields needs them stored
// with --json: a single value serves none. "" when it is one key. Never
// a value.
func wholeDocument(name string, sec vault.Secret) string {
	if v, single := sec.Value(); !single || !source.NotADocument(v) {
		return ""
	}
	return "secret " + strconv.Quote(name) + " is a JSON object or array stored as one key (by a till before secret set refused one): sent whole, every key in it would reach the upstream; store its fields with till secret set " + name + " --json (a route names one with {secret.FIELD}), or set the key alone"
}

// TooShortToScrub reports whether sec is a single value shorter than
// MinEchoLength, whose echo is not looked for (echoForms): check and
// serve warn of such a key, from the vault or fetched from a source.
func TooShortToScrub(sec vault.Secret) bool {
	v, single := sec.Value()
	return single && len(v) < MinEchoLength
}

// lacking names the fields among names that sec does not hold, for a
// problem: absent, or, in a source's document, left out as no usable
// string (vault.ParseSourceFields). Never a value.
func lacking(sec vault.Secret, names ...string) string {
	var out []string
	for _, n := range names {
		if _, ok := sec.Field(n); !ok {
			out = append(out, strconv.Quote(n))
		}
	}
	if len(out) == 1 {
		return "field " + out[0] + " is missing or not a string"
	}
	return "fields " + strings.Join(out, " and ") + " are missing or not strings"
}

// interner shares, within one snapshot, what routes have in common: the
// upstream URL, the credential header names, and the key with its
// injection and echo forms. 10,000 routes to one key hold one copy of each
// (read-only), not 10,000, and the garbage collector marks that much less
// at every cycle. Its maps hold key values while a snapshot is compiled,
// in memory only, and go with it.
type interner struct {
	urls       map[string]*url.URL
	headers    map[string][]string
	injections map[string]*injection
	sources    map[string]*sourced
}

func newInterner() *interner {
	return &interner{
		urls:       map[string]*url.URL{},
		headers:    map[string][]string{},
		injections: map[string]*injection{},
		sources:    map[string]*sourced{},
	}
}

func (i *interner) url(u *url.URL) *url.URL {
	k := u.String()
	if shared, ok := i.urls[k]; ok {
		return shared
	}
	i.urls[k] = u
	return u
}

func (i *interner) names(n []string) []string {
	k := strings.Join(n, "\x00")
	if shared, ok := i.headers[k]; ok {
		return shared
	}
	i.headers[k] = n
	return n
}

// injection returns the shared copy of in, with the echo forms of values.
func (i *interner) injection(in injection, values []string) *injection {
	k := strings.Join([]string{in.secretName, in.problem, in.fp, in.expires.Format(time.RFC3339Nano),
		in.injectHeader, in.injectValue, in.injectQuery, in.injectPair}, "\x00")
	if in.sigV4 != nil {
		k += "\x00sigv4\x00" + in.sigV4.service + "\x00" + in.sigV4.region
	}
	if in.minter != nil {
		k += "\x00" + in.minter.key
	}
	if shared, ok := i.injections[k]; ok {
		return shared
	}
	in.echoForms = echoForms(values)
	i.injections[k] = &in
	if in.minter != nil {
		in.minter.base = &in
	}
	return &in
}

// sourced returns the shared fetching of s's ref for a route that mints
// as s's does: one minter for the routes whose tokens are alike, as for a
// vault key; s itself for a route that sends its key as it is.
func (i *interner) sourced(s *sourced) *sourced {
	way := mintsAs(s.cr)
	if way == "" {
		return s
	}
	k := strconv.Quote(s.ref) + strconv.Itoa(int(s.form)) + way
	if shared, ok := i.sources[k]; ok {
		return shared
	}
	i.sources[k] = s
	return s
}

func dedupe(names []string) []string {
	out := names[:0]
	seen := make(map[string]bool, len(names))
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// Routes describes the compiled routes in config order.
func (s *Snapshot) Routes() []RouteInfo {
	out := make([]RouteInfo, 0, len(s.routes))
	for _, r := range s.routes {
		info := RouteInfo{
			Name:        r.name,
			Prefix:      r.prefix,
			Upstream:    r.upstream.String(),
			Secret:      r.secretName,
			Fingerprint: r.fp,
			Expires:     r.expires,
			Problem:     r.problem,
			Missing:     r.missing,
			Short:       r.short,
		}
		if r.sourced != nil {
			info.Fingerprint, info.Expires = r.sourced.held()
		}
		if r.pool != nil {
			for _, m := range r.pool.members {
				k := KeyInfo{Secret: m.secretName, Fingerprint: m.fp, Expires: m.expires, Problem: m.problem, Missing: m.missing, Short: m.short}
				info.Short = info.Short || m.short
				if m.sourced != nil {
					k.Fingerprint, k.Expires = m.sourced.held()
				}
				info.Pool = append(info.Pool, k)
			}
		}
		out = append(out, info)
	}
	return out
}

// match finds the route with the longest prefix that is p or a whole-segment
// ancestor of p, and returns it with the rest of the path. It does not
// allocate, so its cost does not grow with the number of routes.
func (s *Snapshot) match(p string) (*route, string) {
	for q := p; ; {
		if r, ok := s.byPrefix[q]; ok {
			return r, p[len(q):]
		}
		i := strings.LastIndexByte(q, '/')
		if i <= 0 {
			return nil, ""
		}
		q = q[:i]
	}
}
