package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/audit"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy"
	"github.com/tillgw/till/reload"
	"github.com/tillgw/till/vault"
)

// runTest dry-runs a request through the config: which route, which client,
// which secret would be injected, or why it would be refused. Exit code 0
// when allowed, 1 when refused, so policies can be tested in CI.
func runTest(args []string, e *env) error {
	var cfgPath, client, from, model string
	var asJSON, mint bool
	flags := newFlags("test", e.stderr, &cfgPath)
	flags.StringVar(&model, "model", "", "the `model` the request's body names, for the route's model rules")
	flags.StringVar(&client, "client", "", "client `name` making the request (default: none)")
	flags.StringVar(&from, "from", "127.0.0.1", "source `address` of the request, for client CIDRs")
	flags.BoolVar(&asJSON, "json", false, "print the verdict as JSON")
	flags.BoolVar(&mint, "mint", false, "obtain a token from the route's token endpoint (oauth2, github_app, google) for an allowed request, to check it works; the token is not shown, and the ask, a use of the key, is recorded in the audit trail first; while a running till holds the audit file, that till mints, asked through its admin listener")
	pos, err := parseInterleaved(flags, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 2, synopsis("test")); err != nil {
		return err
	}
	if client != "" {
		if err := clientNameArg(client, "--client"); err != nil {
			return err
		}
	}
	method := pos[0]
	if m := strings.ToUpper(method); m != method && strings.Trim(m, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") == "" {
		// HTTP methods are case-sensitive: till refuses a live "get"
		// on a route that allows GET.
		return usageError{fmt.Sprintf("METHOD is case-sensitive: write %s", m)}
	}
	if strings.Trim(method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
		return usageError{"METHOD must be an HTTP method such as GET or POST"}
	}
	source, err := netip.ParseAddr(from)
	if err != nil {
		return usageError{"--from must be an IP address such as 10.0.0.5 or fd00::5"}
	}
	cfg, secrets, err := loadAll(cfgPath, e)
	if err != nil {
		return err
	}
	if client != "" {
		if err := knownClient(cfg, client); err != nil {
			return err
		}
	}
	target := pos[1]
	if p, ok := ownListenerPath(target, cfg); ok {
		target = p
	}
	keys, err := commandCache(cfg)
	if err != nil {
		return err
	}
	snap := proxy.NewSnapshotWithKeys(cfg, secrets, keys)
	v := snap.Explain(method, target, client, netip.AddrPortFrom(source, 0).String(), model, time.Now())
	if mint && v.Route != "" && v.Allowed {
		// Only for a request the policy lets by, as serve mints.
		ask := proxy.TestRequest{Method: method, Target: target, Client: client, From: from, Model: model}
		mintOnce(cfgPath, cfg, secrets, e, snap, ask, &v)
	}
	if asJSON {
		out := testJSON{Verdict: v}
		if config.IsSecretRef(v.Secret) {
			out.Cached = servedCache(cfgPath, e, v.Route)
		}
		if err := writeJSON(e.stdout, out); err != nil {
			return err
		}
	} else {
		printVerdict(e, method, v)
		if v.Code == proxy.CodeRouteNotFound {
			fmt.Fprintf(e.stdout, "  %-9s %s\n", "hint:", prefixesHint(snap))
		}
		if v.Code == proxy.CodeClientUnauthenticated && client == "" {
			fmt.Fprintf(e.stdout, "  %-9s %s\n", "hint:", clientHint(cfg, v.Route))
		}
		if v.Code == proxy.CodeSecretMissing && notInVault(snap, v.Route, v.Secret) {
			fmt.Fprintf(e.stdout, "  %-9s %s\n", "hint:", reload.SecretSetCommand(cfgPath, v.Secret, secretForm(cfg, v.Route)))
		}
		if config.IsSecretRef(v.Secret) {
			fmt.Fprintf(e.stdout, "  %-9s %s\n", "cached:", servedCache(cfgPath, e, v.Route))
		}
	}
	if !v.Allowed {
		return errRefused
	}
	return nil
}

// mintOnce asks the token endpoint of v's route for a token, as serve
// would for v's request (ask), and says in v how that went. The ask
// sends the long-lived secret, a key use: its use record goes to the
// config's audit trail first, or the endpoint is not asked
// (audit_unavailable), as serve does. The trail has one writer at a
// time: while a running till holds its file, the ask is that till's to
// make (mintByServe), through its admin listener; without one, it is not
// made.
func mintOnce(cfgPath string, cfg *config.Config, secrets map[string]vault.Secret, e *env, snap *proxy.Snapshot, ask proxy.TestRequest, v *proxy.Verdict) {
	logger := zerolog.New(e.stderr).With().Timestamp().Logger()
	sink, err := mintAudit(cfg, secrets, e, logger)
	if errors.Is(err, audit.ErrHeld) && cfg.Admin.Listen != "" {
		mintByServe(cfgPath, e, ask, v)
		return
	}
	if err != nil {
		v.Allowed, v.Code = false, proxy.CodeAuditUnavailable
		v.Reason = "the token endpoint was not asked: its use of the key could not be recorded: " + err.Error()
		if errors.Is(err, audit.ErrHeld) {
			v.Reason += "; the running till's own asks are recorded there: " +
				setIn(cfg, "admin: {listen: 127.0.0.1:9090}", " and restart that till, and till test --mint asks it for the token through its admin listener (or stop it to ask from here)")
		}
		return
	}
	m, err := snap.Mint(context.Background(), proxy.NewAudit(sink), *v)
	if cerr := sink.Close(); err == nil && cerr != nil {
		logger.Error().Err(cerr).Msg("closing the audit file")
	}
	v.ApplyMint(m, err)
}

// mintTestTimeout bounds till test's wait for a running till's answer to
// POST /admin/test, longer than what that till waits for: its key from a
// source (up to a minute), then its token endpoint (up to 30 s).
const mintTestTimeout = 2 * time.Minute

// mintByServe asks the running till that holds the audit file to try
// ask, through its admin listener (POST /admin/test, with
// $TILL_ADMIN_TOKEN when the listener wants one), and puts its verdict in
// v: the token endpoint is asked by that till, through the route's own
// minter (its token cache), and its use record is in that till's trail.
// The verdict is shown as printable text only: what answers at the
// address may not be till.
func mintByServe(cfgPath string, e *env, ask proxy.TestRequest, v *proxy.Verdict) {
	ctx, cancel := answerWithin(context.Background(), mintTestTimeout)
	defer cancel()
	var got proxy.Verdict
	t, err := adminURL(ctx, cfgPath, e, withoutURLFlag)
	if err == nil {
		err = callAdmin(ctx, t.at("/admin/test"), e.getenv("TILL_ADMIN_TOKEN"), ask, &got)
	}
	if err != nil {
		v.Allowed, v.Code = false, proxy.CodeAuditUnavailable
		v.Reason = "the token endpoint was not asked: a running till holds the audit file, and its admin listener did not take the ask: " + err.Error()
		var h hintError
		if errors.As(err, &h) {
			v.Reason += " (" + h.hint + ")"
		}
		return
	}
	for _, f := range []*string{&got.Mode, &got.Route, &got.Client, &got.Secret, &got.Fingerprint, &got.Upstream,
		&got.Code, &got.Reason, &got.Warning, &got.Rate, &got.Credential} {
		*f = printable(*f, 1000)
	}
	*v = got
}

// mintAudit opens the trail that records till test's ask: the config's
// audit file, or, when the trail is stdout (serve's own output, which
// this process does not write), stderr, since till test's stdout is its
// verdict (with --json, one JSON value).
func mintAudit(cfg *config.Config, secrets map[string]vault.Secret, e *env, logger zerolog.Logger) (*audit.Sink, error) {
	if cfg.Audit.File == "-" {
		return audit.New(e.stderr, audit.Options{}), nil
	}
	return openAudit(cfg, secrets, e, logger)
}

// testJSON is what till test --json prints: the verdict and, for a key
// from a source, whether the running till's cache holds it, as the text
// form's "cached:" line says.
type testJSON struct {
	proxy.Verdict
	Cached string `json:"cached,omitempty"`
}

// servedCacheTimeout bounds how long till test waits for the running
// till's answer on its cache.
const servedCacheTimeout = 3 * time.Second

// servedCache says whether the running till's source cache holds the key
// of the named route, as its admin listener's /admin/routes tells: till
// test fetches a ref itself, in a process of its own, so only the
// running till knows what it serves from its cache.
func servedCache(cfgPath string, e *env, route string) string {
	ctx, cancel := answerWithin(context.Background(), servedCacheTimeout)
	defer cancel()
	t, err := adminURL(ctx, cfgPath, e, withoutURLFlag)
	if err != nil {
		return "unknown: " + err.Error()
	}
	var routes []struct {
		Name    string
		Cached  *bool
		Fetched *time.Time
	}
	if err := askAdmin(ctx, t.at("/admin/routes"), e.getenv("TILL_ADMIN_TOKEN"), &routes); err != nil {
		return "unknown: " + err.Error()
	}
	for _, r := range routes {
		switch {
		case r.Name != route || r.Cached == nil:
		case *r.Cached && r.Fetched != nil:
			return "yes, by the running till, fetched " + r.Fetched.UTC().Format(time.RFC3339)
		default:
			return "no: the running till has not fetched it yet"
		}
	}
	return "unknown: the running till does not say (the route is not in its config yet, or its key is a pool's)"
}

// maxHintPrefixes bounds the prefixes prefixesHint names.
const maxHintPrefixes = 10

// prefixesHint names the path prefixes the routes of snap serve, for a
// path that matched none: most often a base URL without its route's
// prefix (/v1/models for /openai/v1/models).
func prefixesHint(snap *proxy.Snapshot) string {
	routes := snap.Routes()
	if len(routes) == 0 {
		return "there are no routes: till check says what to add"
	}
	var prefixes []string
	for _, r := range routes[:min(len(routes), maxHintPrefixes)] {
		prefixes = append(prefixes, r.Prefix)
	}
	more := ""
	if len(routes) > maxHintPrefixes {
		more = fmt.Sprintf(" and %d more", len(routes)-maxHintPrefixes)
	}
	return "a path starts with its route's prefix: " + strings.Join(prefixes, ", ") + more
}

// clientHint is the hint for a dry run refused for want of a token,
// which till test never sends: give --client, one of the clients the
// route takes when one matched.
func clientHint(cfg *config.Config, route string) string {
	h := "till test sends no token: give --client NAME to test as a client"
	for _, r := range cfg.Routes {
		if r.Name == route && len(r.Clients) > 0 {
			return h + " (route " + r.Name + " takes " + strings.Join(r.Clients, ", ") + ")"
		}
	}
	return h
}

// notInVault reports whether the key secret of the named route is one
// that is not in the vault.
func notInVault(snap *proxy.Snapshot, route, secret string) bool {
	for _, r := range snap.Routes() {
		if r.Name != route {
			continue
		}
		if r.Secret == secret && r.Missing {
			return true
		}
		return slices.ContainsFunc(r.Pool, func(k proxy.KeyInfo) bool { return k.Secret == secret && k.Missing })
	}
	return false
}

// errRefused makes till test exit 1 without another message.
var errRefused = errors.New("")

func printVerdict(e *env, method string, v proxy.Verdict) {
	verdict := "allowed"
	if !v.Allowed {
		verdict = "refused: " + v.Code
	}
	fmt.Fprintf(e.stdout, "%s\n", verdict)
	var rows [][2]string
	row := func(k, val string) {
		if val != "" {
			rows = append(rows, [2]string{k + ":", val})
		}
	}
	row("mode", v.Mode)
	row("route", v.Route)
	row("client", v.Client)
	if v.Secret != "" {
		fp := v.Fingerprint
		if fp == "" {
			fp = "missing"
		}
		row("secret", v.Secret+" ("+fp+")")
	}
	if v.Upstream != "" {
		row("upstream", method+" "+v.Upstream)
	}
	row("rate", v.Rate)
	if v.Credential != "" && v.Credential != "static" {
		row("credential", v.Credential)
	}
	row("reason", v.Reason)
	row("warning", v.Warning)
	width := len("upstream:") // the rows line up, wider when a longer one shows
	for _, r := range rows {
		width = max(width, len(r[0]))
	}
	for _, r := range rows {
		fmt.Fprintf(e.stdout, "  %-*s %s\n", width, r[0], r[1])
	}
}

// ownListenerPath returns the path (and query) of a URL on till's own
// listener, such as the base URLs the serve log prints
// (http://127.0.0.1:8080/openai/v1), which an app sends to till as a
// base-URL request, not through it as a proxy.
func ownListenerPath(target string, cfg *config.Config) (string, bool) {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", false
	}
	lhost, lport, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return "", false
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	if port != lport || !sameHost(u.Hostname(), lhost, cfg) {
		return "", false
	}
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	if u.RawQuery != "" {
		p += "?" + u.RawQuery
	}
	return p, true
}

// sameHost reports whether host, from a URL, reaches the listener on
// listenHost: the same name or address; localhost for a loopback
// address and the other way round; any loopback host for a listener on
// all addresses; or one of the names till serves (tls.names,
// server_names).
func sameHost(host, listenHost string, cfg *config.Config) bool {
	host, listenHost = strings.ToLower(host), strings.ToLower(listenHost)
	if host == listenHost || slices.Contains(cfg.TLS.Names, host) || slices.Contains(cfg.ServerNames, host) {
		return true
	}
	isLocalhost := func(h string) bool { return h == "localhost" || strings.HasSuffix(h, ".localhost") }
	ip, _ := netip.ParseAddr(host)
	lip, _ := netip.ParseAddr(listenHost)
	switch {
	case listenHost == "" || lip.IsUnspecified():
		return isLocalhost(host) || ip.IsLoopback()
	case isLocalhost(listenHost):
		return isLocalhost(host) || ip.IsLoopback()
	case lip.IsLoopback():
		return isLocalhost(host)
	}
	return false
}

// secretForm is the till secret set flag for the secret of the route
// named route (config.Inject.SecretForm).
func secretForm(cfg *config.Config, route string) string {
	for _, r := range cfg.Routes {
		if r.Name == route {
			return r.Inject.SecretForm()
		}
	}
	return ""
}
