package config

import (
	"errors"
	"net"
	"net/netip"
	"net/textproto"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/redis/go-redis/v9"
	"github.com/tillgw/till/vault"
)

// errorString is a constant error whose text becomes an Error's message.
type errorString string

func (e errorString) Error() string { return string(e) }

// crossCheck runs the checks that need more than one field: unique names
// and prefixes, and route clients that exist.
func (d *decoder) crossCheck(c *Config, clients []*yaml.Node, routes []routeNodes) {
	clientLine := make(map[string]int)
	tokenOwner := make(map[string]Client)
	for i, cl := range c.Clients {
		if cl.Name == "" {
			continue
		}
		if first, dup := clientLine[cl.Name]; dup {
			d.errorf(clients[i], "clients["+strconv.Itoa(i)+"].name", "duplicate client name %q (first at line %d)", cl.Name, first)
			continue
		}
		clientLine[cl.Name] = cl.Line
		// One token, one client: the proxy names a token's caller by its
		// digest, so a digest two clients share (a pasted line) would give
		// one client's app the other's routes and addresses.
		if first, dup := tokenOwner[cl.TokenSHA256]; dup && cl.TokenSHA256 != "" {
			d.errorf(clients[i], "clients["+strconv.Itoa(i)+"].token_sha256", "is client %q's token_sha256 too (line %d): that token would name only one of them (hint: \"till client rotate %s\" gives it a token of its own)", first.Name, first.Line, cl.Name)
		} else {
			tokenOwner[cl.TokenSHA256] = cl
		}
		if cl.Cert && len(c.TLS.Names) == 0 {
			d.errorf(clients[i], "clients["+strconv.Itoa(i)+"].cert", "client certificates need a TLS listener (hint: set tls.names)")
		}
	}

	nameLine := make(map[string]int)
	dupName := make([]bool, len(c.Routes))
	for i, r := range c.Routes {
		if r.Name == "" {
			continue
		}
		if first, dup := nameLine[r.Name]; dup {
			d.errorf(routes[i].name, join(routes[i].path, "name"), "duplicate route name %q (first at line %d)", r.Name, first)
			dupName[i] = true
			continue
		}
		nameLine[r.Name] = r.Line
	}

	type owner struct {
		name string
		line int
	}
	prefixOwner := make(map[string]owner)
	for i, r := range c.Routes {
		if r.Prefix == "" || dupName[i] {
			continue
		}
		if first, dup := prefixOwner[r.Prefix]; dup {
			d.errorf(routes[i].prefix, join(routes[i].path, "prefix"), "duplicate prefix %q (first used by route %q at line %d)", r.Prefix, first.name, first.line)
			continue
		}
		prefixOwner[r.Prefix] = owner{r.Name, r.Line}
	}

	names := make([]string, 0, len(clientLine))
	for _, cl := range c.Clients {
		names = append(names, cl.Name)
	}
	for i, r := range c.Routes {
		for j, name := range r.Clients {
			if _, ok := clientLine[name]; ok {
				continue
			}
			d.unknownClient(routes[i].clients[j], join(routes[i].path, "clients")+"["+strconv.Itoa(j)+"]", name, names)
		}
	}
}

// checkAdminToken refuses an admin token that is a client's token too:
// the app holding it could read /metrics and /admin/* and reload till.
func (d *decoder) checkAdminToken(c *Config, admin *yaml.Node) {
	if c.Admin.TokenSHA256 == "" {
		return
	}
	for _, cl := range c.Clients {
		if cl.TokenSHA256 == c.Admin.TokenSHA256 {
			d.errorf(valueOf(admin, "token_sha256"), "admin.token_sha256", "is client %q's token_sha256 too (line %d): that client's app could use the admin endpoints (hint: hash a random token of its own for the admin listener)", cl.Name, cl.Line)
			return
		}
	}
}

// unknownClient reports a client name that names no client, echoing it
// only when it looks like a name (a stray token must not be printed).
func (d *decoder) unknownClient(n *yaml.Node, p, name string, names []string) {
	switch {
	case name == "any":
		d.errorf(n, p, `unknown client "any" (hint: "clients: any", without brackets, accepts any client)`)
	case !plausibleKey(name):
		d.errorf(n, p, "unknown client (hint: define it under clients)")
	case d.suggest(name, names) != "":
		d.errorf(n, p, "unknown client %q (did you mean %q?)", name, d.suggest(name, names))
	default:
		d.errorf(n, p, "unknown client %q (hint: define it under clients, or run \"till client add %s\")", name, name)
	}
}

var (
	nameRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	queryNameRE = regexp.MustCompile(`^[A-Za-z0-9._~-]+$`)
	hexRE       = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
)

// ValidName checks route and client names, which appear in URLs, logs and
// metrics labels. The CLI checks a NAME argument with it before printing it
// back.
func ValidName(s string) error {
	if len(s) > 64 || !nameRE.MatchString(s) {
		return errorString("must be lowercase letters, digits, '_' and '-', starting with a letter or digit, at most 64 characters")
	}
	return nil
}

// ValidClientName checks a client's name: a name, and not one of the two
// words that mean no client in particular: "anonymous" (how the audit and
// budgets name callers without a token) and "any" (routes' clients: any).
func ValidClientName(s string) error {
	if s == "anonymous" || s == "any" {
		return errorString(strconv.Quote(s) + ` is reserved: "anonymous" names callers without a token, "any" a route open to everyone`)
	}
	return ValidName(s)
}

// CASecret is the vault entry that holds till's CA private key, written
// by till ca init: no route may inject it, and the CLI's secret commands
// leave it alone.
const CASecret = "till-ca"

// AuditKeySecret is the vault entry that holds the key that signs audit
// checkpoints (audit.sign), created by till serve: no route may inject
// it.
const AuditKeySecret = "till-audit"

// OwnKey reports whether a vault entry is one of till's own keys (CA,
// audit signing): no provider's, so no max_age applies to it.
func OwnKey(name string) bool { return name == CASecret || name == AuditKeySecret }

// validSecretName checks a route's secret: a name the vault accepts, and
// not the CA's key.
func validSecretName(s string) error {
	if s == CASecret {
		return errorString(strconv.Quote(CASecret) + " holds till's CA key and can never be injected")
	}
	if s == AuditKeySecret {
		return errorString(strconv.Quote(AuditKeySecret) + " holds till's audit signing key and can never be injected")
	}
	return vault.ValidName(s)
}

func validQueryName(s string) error {
	if !queryNameRE.MatchString(s) {
		return errorString("must be a query parameter name of letters, digits and ._~-")
	}
	return nil
}

func validSHA256(s string) error {
	if !hexRE.MatchString(s) {
		return errorString(`must be 64 hex digits (the SHA-256 of the token; "till client add" prints it)`)
	}
	return nil
}

// validPrefix checks a route prefix: "/a/b", segments of unreserved URL
// characters, so that what the app sends and what till matches agree.
func validPrefix(s string) error {
	if !strings.HasPrefix(s, "/") || s == "/" || strings.HasSuffix(s, "/") {
		return errorString(`must start with "/" and name at least one segment, without a trailing "/" (e.g. /openai)`)
	}
	for seg := range strings.SplitSeq(s[1:], "/") {
		switch {
		case seg == "":
			return errorString(`must not have empty segments ("//")`)
		case seg == "." || seg == "..":
			return errorString(`must not have "." or ".." segments`)
		case !queryNameRE.MatchString(seg):
			return errorString("segments may use only letters, digits and ._~-")
		}
	}
	return nil
}

// isTchar reports whether c is a token character (RFC 9110, section 5.6.2).
func isTchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTchar(s[i]) {
			return false
		}
	}
	return true
}

func validHeaderName(s string) error {
	if !validToken(s) {
		return errorString("must be a header name (letters, digits and !#$%&'*+-.^_`|~)")
	}
	return nil
}

// settableHeader refuses headers that till itself must control: framing,
// hop-by-hop and its own client credentials.
func settableHeader(s string) error {
	switch textproto.CanonicalMIMEHeaderKey(s) {
	case "Host", "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive",
		"Te", "Trailer", "Upgrade", "Proxy-Connection", "Proxy-Authorization", "X-Till-Token":
		return errorString("must not be a hop-by-hop, framing or till header")
	}
	return nil
}

func validMethod(s string) error {
	if !validToken(s) {
		return errorString("must be an HTTP method such as GET or POST")
	}
	return nil
}

// isControl reports ASCII control characters (including tab).
func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// isHeaderValueControl reports characters a header value must not hold;
// tab is allowed (RFC 9110, section 5.5).
func isHeaderValueControl(r rune) bool { return r != '\t' && isControl(r) }

// validPort checks a listener's port (0 to 65535; 0 picks a free one)
// or, when optional, a URL's (1 to 65535, or none).
func validPort(p string, optional bool) error {
	if p == "" && optional {
		return nil
	}
	n, err := strconv.Atoi(p)
	switch {
	case optional && (err != nil || n < 1 || n > 65535):
		return errorString("must have a port number from 1 to 65535")
	case err != nil || n < 0 || n > 65535:
		return errorString("must have a port number from 0 to 65535")
	}
	return nil
}

// CheckListen checks a listen address given elsewhere than in the
// config (serve's --listen) as the config's listen is checked, a value
// that looks like a key refused too (the config refuses one anywhere):
// its host would be looked up in DNS. The error does not quote s, which
// may be a key pasted in the wrong place.
func CheckListen(s string) error {
	if looksLikeKey(s) {
		return errors.New("it looks like a key, not an address: give HOST:PORT, such as 127.0.0.1:8080")
	}
	return validListen(s)
}

// validListen checks host:port; an empty host means every interface.
func validListen(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errorString("must be host:port (e.g. 127.0.0.1:8080)")
	}
	if err := validPort(port, false); err != nil {
		return errorString("must be host:port with a port from 0 to 65535 (e.g. 127.0.0.1:8080)")
	}
	if host != "" && validServerName(host) != nil {
		return errorString("must be host:port with an IP address or host name (e.g. 127.0.0.1:8080)")
	}
	return nil
}

// sameListen reports whether two listen addresses would bind the same
// socket. Port 0 asks the kernel for a free port, a different one each
// time, so two such addresses never clash.
func sameListen(a, b string) bool {
	_, port, err := net.SplitHostPort(a)
	return a != "" && a == b && err == nil && port != "0"
}

// isLoopbackAddr reports whether a validated host:port only listens on
// loopback.
func isLoopbackAddr(s string) bool {
	host, _, err := net.SplitHostPort(s)
	return err == nil && isLoopbackHost(host)
}

// isLoopbackHost reports whether host is "localhost" or in 127.0.0.0/8 or ::1.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// validServerName accepts an IP address or a DNS name.
func validServerName(s string) error {
	if _, err := netip.ParseAddr(s); err == nil {
		return nil
	}
	const msg = errorString("must be a DNS name or IP address")
	if len(s) > 253 {
		return msg
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return msg
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return msg
			}
		}
	}
	return nil
}

func validEmail(s string) error {
	local, domain, ok := strings.Cut(s, "@")
	if !ok || local == "" || validServerName(domain) != nil || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return errorString("must be an email address")
	}
	return nil
}

// validOrigin checks a web origin as browsers send it in Origin: a scheme,
// a host and an optional port, nothing else.
func validOrigin(s string) error {
	const msg = errorString(`must be a web origin such as "https://app.example.com" or "http://localhost:3000" (scheme, host and port only)`)
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.User != nil ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || strings.HasSuffix(s, "?") || strings.HasSuffix(s, "#") {
		return msg
	}
	if validServerName(u.Hostname()) != nil || validPort(u.Port(), true) != nil {
		return msg
	}
	return nil
}

func validHTTPSURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		return errorString("must be an https URL without user or password")
	}
	return nil
}

// validRedisURL checks a redis:// or rediss:// URL without echoing it: it
// may hold a password.
func validRedisURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Hostname() == "" {
		return errorString("must be a redis:// or rediss:// URL (e.g. redis://127.0.0.1:6379/0)")
	}
	if err := validPort(u.Port(), true); err != nil {
		return err
	}
	// go-redis reads skip_verify as InsecureSkipVerify: whoever sits
	// between till and Redis would get its password and could answer
	// every budget and rate "not spent". There is no skip-verify switch.
	if u.Query().Has("skip_verify") {
		return errorString("skip_verify: Redis's certificate is always verified (hint: add its CA to the system's trust store, or point SSL_CERT_FILE at it)")
	}
	// till sets these itself (a decision waits 250 ms at most, then
	// limits.on_redis_error decides): one in the URL would be ignored.
	for _, k := range redisOwnOptions {
		if u.Query().Has(k) {
			return errorString("?" + k + ": till sets Redis's timeouts and retries itself (250 ms a decision, then limits.on_redis_error decides): remove it")
		}
	}
	// What serve's client takes, so that a config check cannot pass a
	// URL serve refuses; its error is not quoted (it may echo the URL).
	if _, err := redis.ParseURL(s); err != nil {
		return errorString("is not a URL the Redis client takes: check the database number (/0) and the options after ?")
	}
	return nil
}

// redisOwnOptions are the go-redis URL options that till's Redis client
// sets itself.
var redisOwnOptions = []string{"dial_timeout", "read_timeout", "write_timeout", "pool_timeout", "max_retries", "context_timeout_enabled"}

// ParsePrefix parses a CIDR prefix; a bare address is a prefix of one.
// An IPv4-mapped IPv6 prefix (::ffff:10.0.0.0/104) is taken as the IPv4
// prefix it maps (10.0.0.0/8): till sees IPv4 peers as IPv4, so the
// mapped form would never match.
func ParsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil || a.Zone() != "" {
			return netip.Prefix{}, errorString("must be a CIDR prefix such as 10.0.0.0/8 or an IP address")
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, errorString("is an IPv4-mapped range wider than ::ffff:0.0.0.0/96: write the IPv4 and IPv6 ranges apart")
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// suggest returns the known word closest to s, if it is close enough to be
// a likely typo, else "".
func suggest(s string, known []string) string {
	best, bestDist := "", 0
	for _, k := range known {
		dist := editDistance(strings.ToLower(s), k)
		if best == "" || dist < bestDist {
			best, bestDist = k, dist
		}
	}
	limit := 2
	if len(s) <= 4 {
		limit = 1
	}
	if best == "" || bestDist > limit {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
