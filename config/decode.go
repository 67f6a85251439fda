package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/tillgw/till/internal/regfile"
	"github.com/tillgw/till/internal/unixsock"
)

// The keys each mapping accepts. They drive unknown-field errors, their
// "did you mean" suggestions, and the test that StarterConfig mentions them.
var (
	rootKeys      = []string{"version", "listen", "shutdown_grace", "tls", "admin", "vault", "audit", "forward", "limits", "log", "clients", "routes", "browser_origins", "server_names", "sources", "budgets", "prices"}
	tlsKeys       = []string{"names", "acme"}
	acmeKeys      = []string{"email", "ca"}
	adminKeys     = []string{"listen", "token_sha256"}
	vaultKeys     = []string{"path", "key_file", "max_age", "on_expired"}
	auditKeys     = []string{"file", "fsync", "max_size", "max_files", "sign"}
	forwardKeys   = []string{"enabled", "intercept", "unknown_hosts", "allow_cidrs", "ca_cert", "cert_cache"}
	limitsKeys    = []string{"redis", "on_redis_error"}
	logKeys       = []string{"level", "format"}
	clientKeys    = []string{"name", "token_sha256", "cidrs", "cert"}
	routeKeys     = []string{"name", "preset", "prefix", "upstream", "secret", "inject", "headers", "allow", "clients", "rate", "burst", "strip", "strip_query", "timeout", "max_body", "allow_plaintext", "usage", "pool", "region"}
	injectKeys    = []string{"header", "format", "query", "basic", "aws_sigv4", "oauth2", "github_app", "google"}
	googleKeys    = []string{"scopes"}
	githubAppKeys = []string{"app_id", "installation_id"}
	sigV4Keys     = []string{"service", "region"}
	oauth2Keys    = []string{"token_url", "scopes", "audience", "auth_style"}
	basicKeys     = []string{"username", "password"}
	allowKeys     = []string{"methods", "paths", "models"}
	budgetKeys    = []string{"name", "clients", "routes", "per", "window", "requests", "tokens", "usd", "on_exceeded"}
	pricesKeys    = []string{"file"}
	poolKeys      = []string{"strategy", "cooldown"}
	sourceKeys    = []string{"name", "type", "ttl", "failure_ttl", "dir", "command", "timeout",
		"address", "ca_file", "namespace", "auth", "auth_mount", "region", "endpoint"}
	vaultAuthKeys      = []string{"token_file", "approle", "kubernetes"}
	appRoleKeys        = []string{"role_id_file", "secret_id_file"}
	kubernetesAuthKeys = []string{"role", "jwt_file"}
)

// Load reads the config file at path (at most MaxSize bytes) and parses it,
// resolving relative paths in it against the file's folder. The file must
// be a regular one (or a link to one).
func Load(path string) (*Config, error) {
	data, err := regfile.Read(path, MaxSize)
	var special *regfile.NotRegularError
	if errors.As(err, &special) {
		return nil, newError(path, 0, "", "is not a regular file but %s: till reads its config again at each reload (hint: give the path of a file)", special.Kind)
	}
	var big *regfile.TooLargeError
	if errors.As(err, &big) {
		return nil, tooLarge(path)
	}
	if err != nil {
		return nil, err
	}
	return Parse(path, data, filepath.Dir(path))
}

// Parse decodes and validates a config. name is used in error messages
// (normally the file's path); dir is the folder that relative paths in the
// config are resolved against (made absolute). All problems are reported
// at once, joined with errors.Join, each an *Error.
func Parse(name string, data []byte, dir string) (*Config, error) {
	if len(data) > MaxSize {
		return nil, tooLarge(name)
	}
	d := &decoder{file: name, dir: absDir(dir)}
	root, err := d.parseYAML(data)
	if err != nil {
		return nil, err
	}
	c := d.config(root)
	d.tags(root)
	d.literalKeys(root)
	if len(d.errs) > 0 {
		slices.SortStableFunc(d.errs, func(a, b *Error) int { return a.Line - b.Line })
		errs := make([]error, len(d.errs), len(d.errs)+1)
		for i, e := range d.errs {
			errs[i] = e
		}
		if d.unshown > 0 {
			errs = append(errs, newError(name, 0, "", "%d more problems not shown (hint: fix those above, then run till check again)", d.unshown))
		}
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// tooLarge is the error for a config of more than MaxSize bytes.
func tooLarge(name string) error {
	return newError(name, 0, "", "config is larger than 1 MiB: is it the right file?")
}

// maxErrors caps the problems one Parse reports. A file with more is
// most likely not a till config at all (another tool's YAML, a list
// pasted at the wrong level), and the first ones say so; the rest would
// cost time and memory at every reload (each unknown name is compared
// with every known one for a suggestion) and flood the log.
const maxErrors = 50

// absDir makes dir absolute so that the paths in a Config do not depend on
// the working directory of whoever uses it later.
func absDir(dir string) string {
	if dir == "" {
		dir = "."
	}
	if abs, err := filepath.Abs(dir); err == nil {
		return abs
	}
	return filepath.Clean(dir)
}

var yamlLineError = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseYAML parses exactly one YAML document into a node tree.
func (d *decoder) parseYAML(data []byte) (root *yaml.Node, err error) {
	defer func() {
		// yaml.v3 has panicked on hostile input before; bad input must
		// get an error, never take the process down.
		if r := recover(); r != nil {
			root, err = nil, newError(d.file, 0, "", "invalid yaml")
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, d.empty()
		}
		if line, what := badText(data); line > 0 {
			// yaml.v3 names such a byte without its line.
			return nil, newError(d.file, line, "", "holds %s (hint: save the file as UTF-8 text, without control characters)", what)
		}
		return nil, d.yamlError(data, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, newError(d.file, extra.Line, "", "more than one yaml document (hint: remove the \"---\" separator)")
	} else if !errors.Is(err, io.EOF) {
		return nil, d.yamlError(data, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return nil, d.empty()
	}
	return doc.Content[0], nil
}

// badText returns the line of the first character of data that YAML does
// not allow, and what it is: a byte that is not UTF-8 (Latin-1 text, a
// binary file), or a control character such as NUL; 0 when there is none,
// or when data is UTF-16 (with its byte order mark), which yaml.v3 reads
// too.
func badText(data []byte) (int, string) {
	if bytes.HasPrefix(data, []byte{0xff, 0xfe}) || bytes.HasPrefix(data, []byte{0xfe, 0xff}) {
		return 0, ""
	}
	line := 1
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			return line, "a byte that is not UTF-8"
		case !yamlChar(r):
			return line, fmt.Sprintf("a control character (%U)", r)
		case r == '\n', r == '\r' && !bytes.HasPrefix(data[i+1:], []byte("\n")):
			line++
		}
		i += n
	}
	return 0, ""
}

// yamlChar reports whether YAML allows r in a file (YAML 1.2, 5.1).
func yamlChar(r rune) bool {
	return r == '\t' || r == '\n' || r == '\r' || r >= 0x20 && r <= 0x7e || r == 0x85 ||
		r >= 0xa0 && r <= 0xd7ff || r >= 0xe000 && r <= 0xfffd || r >= 0x10000 && r <= 0x10ffff
}

func (d *decoder) empty() error {
	return newError(d.file, 0, "", `empty config (hint: run "till init")`)
}

// yamlError turns a yaml.v3 syntax error in data into an *Error with the
// line. Syntax errors describe the problem, not the text, so no value
// leaks.
func (d *decoder) yamlError(data []byte, err error) error {
	msg := err.Error()
	if m := yamlLineError.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return newError(d.file, problemLine(data, line, m[2]), "", "invalid yaml: %s", m[2])
	}
	return newError(d.file, 0, "", "invalid yaml: %s", strings.TrimPrefix(msg, "yaml: "))
}

// problemLine is the line of data where yaml.v3 met the syntax error msg
// that it reported at line reported. Its parser reports the line before
// the one that opens the enclosing block (a 0-based mark): "routes:" for
// a key indented wrong in the third route. The problem is on the first
// line whose prefix of data (that line included) fails with the same
// message; the prefixes before it parse, or fail otherwise (cut inside a
// flow or a quoted scalar). A binary search from reported finds it in a
// few parses of at most MaxSize bytes.
func problemLine(data []byte, reported int, msg string) int {
	var ends []int // ends[k-1]: the end of line k, its newline included
	for i, c := range data {
		if c == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(ends) == 0 || ends[len(ends)-1] != len(data) {
		ends = append(ends, len(data))
	}
	lo, hi := max(reported, 1), len(ends)
	if lo > hi || yamlProblem(data[:ends[hi-1]]) != msg {
		return reported
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		if yamlProblem(data[:ends[mid-1]]) == msg {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// yamlProblem is the message, without its line, of the syntax error in
// the first two YAML documents of data (as parseYAML reads them), or ""
// when they parse.
func yamlProblem(data []byte) (msg string) {
	defer func() {
		if recover() != nil {
			msg = "panic"
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for range 2 {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				return ""
			}
			if m := yamlLineError.FindStringSubmatch(err.Error()); m != nil {
				return m[2]
			}
			return strings.TrimPrefix(err.Error(), "yaml: ")
		}
	}
	return ""
}

// walkTree calls fn for n and each node under it, with its path as
// messages write it (routes[0].allow.paths[1]); a mapping key that does
// not look like a field name adds nothing to the paths under it. When fn
// returns false, what is under that node is skipped.
func walkTree(n *yaml.Node, path string, fn func(n *yaml.Node, path string) bool) {
	if !fn(n, path) {
		return
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := path
			if plausibleKey(k.Value) {
				p = join(path, k.Value)
			}
			walkTree(k, path, fn)
			walkTree(v, p, fn)
		}
	case yaml.SequenceNode:
		for i, v := range n.Content {
			walkTree(v, path+"["+strconv.Itoa(i)+"]", fn)
		}
	}
}

// tags refuses every node with a yaml tag written on it (!!null, !!binary,
// !!str, !custom). till reads each value by its place in the file, not by
// a tag, so a tag could only make the file say one thing to its readers
// and another to till: "rate: !!null 10/s" reads as no rate at all, and
// "secret: !!binary b3BlbmFp" as the name b3BlbmFp, not openai.
func (d *decoder) tags(root *yaml.Node) {
	walkTree(root, "", func(n *yaml.Node, path string) bool {
		if n.Style&yaml.TaggedStyle != 0 {
			d.errorf(n, path, "has a yaml tag (!!null, !!binary, …), which till does not read (hint: remove the tag; quote the value to make it text)")
		}
		return true
	})
}

// decoder walks the node tree, collecting every error.
type decoder struct {
	file string
	dir  string
	errs []*Error
	// unshown counts the problems found past maxErrors.
	unshown int
	// presets is set while the built-in presets are read: their upstream
	// and SigV4 region may hold the placeholder {region}.
	presets bool
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	if d.full() {
		d.unshown++
		return
	}
	line := 0
	if n != nil {
		line = n.Line
	}
	e := newError(d.file, line, path, format, args...)
	e.Message = hideKeys(e.Message)
	d.errs = append(d.errs, e)
}

// full reports whether maxErrors problems are recorded: those found
// from then on are only counted, and need no message.
func (d *decoder) full() bool { return len(d.errs) >= maxErrors }

// suggest is the package's suggest, skipped once no more problems are
// shown: its cost grows with the number of known names.
func (d *decoder) suggest(s string, known []string) string {
	if d.full() {
		return ""
	}
	return suggest(s, known)
}

// check records err, if any, as the message for the field at n.
func (d *decoder) check(n *yaml.Node, path string, err error) bool {
	if err != nil {
		d.errorf(n, path, "%s", err.Error())
		return false
	}
	return true
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// valueOf returns the value of key in the mapping n, or nil.
func valueOf(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Kind == yaml.ScalarNode && k.Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// emptyList reports whether key in the mapping n is a list with nothing
// in it: [], or null (~, null, or a key with nothing after it, as when
// every entry is commented out), which fields reads as absent. For a list
// that restricts (allow rules, a route's or a client's allowed callers,
// a budget's scope) absent means "any", so a list written empty must be
// refused rather than read as no rule. It returns the value's node.
func emptyList(n *yaml.Node, key string) *yaml.Node {
	v := valueOf(n, key)
	if v != nil && (isNull(v) || v.Kind == yaml.SequenceNode && len(v.Content) == 0) {
		return v
	}
	return nil
}

// adder returns a function that appends a string to *list unless the
// list holds it already. It keeps a set beside the list, so that a long
// list in the file (a config is up to 1 MiB) costs a lookup per entry,
// not a scan of the entries before it.
func adder(list *[]string) func(string) {
	seen := make(map[string]bool, len(*list))
	for _, s := range *list {
		seen[s] = true
	}
	return func(s string) {
		if !seen[s] {
			seen[s] = true
			*list = append(*list, s)
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// fields checks that n is a mapping whose keys are all known and unique,
// and returns the non-null values by key. A null value (a key with nothing
// after it) counts as absent.
func (d *decoder) fields(n *yaml.Node, path string, known []string) map[string]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "must be a mapping (hint: expected %s)", strings.Join(known, ", "))
		return nil
	}
	m := make(map[string]*yaml.Node, len(n.Content)/2)
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!merge" {
			d.errorf(k, path, "keys must be plain names (yaml merge keys and aliases are not supported)")
			continue
		}
		name := k.Value
		if !plausibleKey(name) {
			// Do not echo it: a stray line here may be a pasted secret.
			d.errorf(k, path, "unknown field (name not shown; expected %s)", strings.Join(known, ", "))
			continue
		}
		p := join(path, name)
		if !slices.Contains(known, name) {
			if s := d.suggest(name, known); s != "" {
				d.errorf(k, p, "unknown field (did you mean %q?)", s)
			} else {
				d.errorf(k, p, "unknown field (expected %s)", strings.Join(known, ", "))
			}
			continue
		}
		if first, dup := seen[name]; dup {
			d.errorf(k, p, "duplicate field (first at line %d)", first)
			continue
		}
		seen[name] = k.Line
		if v.Kind == yaml.AliasNode {
			d.errorf(v, p, "yaml aliases are not supported (hint: repeat the value)")
			continue
		}
		if isNull(v) {
			continue
		}
		m[name] = v
	}
	return m
}

// plausibleKey reports whether a key looks like a field name, and so may be
// shown in a message.
func plausibleKey(s string) bool {
	if s == "" || len(s) > 40 || looksLikeKey(s) {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// list calls each for every element of the sequence n.
func (d *decoder) list(n *yaml.Node, path string, each func(v *yaml.Node, path string)) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "must be a list (hint: [a, b] or one \"- item\" per line)")
		return
	}
	for i, v := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		if v.Kind == yaml.AliasNode {
			d.errorf(v, p, "yaml aliases are not supported (hint: repeat the value)")
			continue
		}
		each(v, p)
	}
}

func (d *decoder) str(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "must be a single value, not a list or mapping")
		return "", false
	}
	if isNull(n) {
		return "", true
	}
	return n.Value, true
}

// nonEmpty is str for fields where "" is never valid.
func (d *decoder) nonEmpty(n *yaml.Node, path string) (string, bool) {
	s, ok := d.str(n, path)
	if ok && s == "" {
		d.errorf(n, path, "must not be empty")
		return "", false
	}
	return s, ok
}

func (d *decoder) boolean(n *yaml.Node, path string) bool {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
		if b, err := strconv.ParseBool(n.Value); err == nil {
			return b
		}
	}
	d.errorf(n, path, "must be true or false")
	return false
}

func (d *decoder) integer(n *yaml.Node, path string) (int64, bool) {
	if n.Kind == yaml.ScalarNode && (n.ShortTag() == "!!int" || n.ShortTag() == "!!float") && d.leadingZero(n, path) {
		return 0, false
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
		if v, err := strconv.ParseInt(n.Value, 0, 64); err == nil {
			return v, true
		}
	}
	d.errorf(n, path, "must be a whole number")
	return 0, false
}

// leadingZero refuses, and reports, a whole number written with a leading
// zero (0100): yaml.v3 reads it as octal (64), as YAML 1.1 did, where YAML
// 1.2 and most readers of the file would read 100. Neither reading can be
// trusted to be the author's, so neither is taken.
func (d *decoder) leadingZero(n *yaml.Node, path string) bool {
	s := strings.TrimLeft(n.Value, "+-")
	if len(s) < 2 || s[0] != '0' || strings.Trim(s, "0123456789_") != "" {
		return false
	}
	digits := strings.TrimLeft(s, "0_")
	if digits == "" {
		digits = "0"
	}
	d.errorf(n, path, "has a leading zero, which yaml may read as octal: 0100 is 64 (hint: write %s%s, in decimal without the leading zero)", strings.TrimSuffix(n.Value, s), digits)
	return true
}

// intBetween reads a whole number from lo to hi; what, when set, says
// what it counts.
func (d *decoder) intBetween(n *yaml.Node, path string, lo, hi int64, what string) (int, bool) {
	v, ok := d.integer(n, path)
	if ok && (v < lo || v > hi) {
		d.errorf(n, path, "must be between %d and %d%s", lo, hi, what)
		return 0, false
	}
	return int(v), ok
}

func (d *decoder) strs(n *yaml.Node, path string) []string {
	var out []string
	d.list(n, path, func(v *yaml.Node, p string) {
		if s, ok := d.nonEmpty(v, p); ok {
			out = append(out, s)
		}
	})
	return out
}

// duration reads a positive duration such as 30s or 90d.
func (d *decoder) duration(n *yaml.Node, path string) (time.Duration, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return 0, false
	}
	v, err := ParseDuration(s)
	if err != nil {
		d.errorf(n, path, "must be a duration such as 30s, 5m, 12h or 90d")
		return 0, false
	}
	if v <= 0 {
		d.errorf(n, path, "must be more than zero")
		return 0, false
	}
	return v, true
}

// enum reads one of the allowed words.
func (d *decoder) enum(n *yaml.Node, path string, allowed ...string) (string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	if !slices.Contains(allowed, s) {
		q := make([]string, len(allowed))
		for i, a := range allowed {
			q[i] = strconv.Quote(a)
		}
		d.errorf(n, path, "must be %s", strings.Join(q, " or "))
		return "", false
	}
	return s, true
}

// filePath reads a path, resolved against the config's folder.
func (d *decoder) filePath(n *yaml.Node, path string) (string, bool) {
	s, ok := d.nonEmpty(n, path)
	if !ok {
		return "", false
	}
	if strings.ContainsFunc(s, isControl) {
		d.errorf(n, path, "must not contain control characters")
		return "", false
	}
	return d.resolve(s), true
}

func (d *decoder) resolve(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(d.dir, p)
}

// prefixes reads a list of CIDR prefixes; a bare address means just it.
func (d *decoder) prefixes(n *yaml.Node, path string) []netip.Prefix {
	var out []netip.Prefix
	d.list(n, path, func(v *yaml.Node, p string) {
		s, ok := d.nonEmpty(v, p)
		if !ok {
			return
		}
		pfx, err := ParsePrefix(s)
		if d.check(v, p, err) {
			out = append(out, pfx)
		}
	})
	return out
}

// defaults is the config before the file is applied: everything but
// Version and Routes.
func (d *decoder) defaults() *Config {
	return &Config{
		File:          d.file,
		Listen:        DefaultListen,
		ShutdownGrace: DefaultShutdownGrace,
		Vault: Vault{
			Path:      d.resolve(DefaultVaultFile),
			KeyFile:   d.resolve(DefaultKeyFile),
			OnExpired: "block",
		},
		Audit: Audit{File: "-", Fsync: "interval", MaxFiles: 10},
		Forward: Forward{
			Intercept:    true,
			UnknownHosts: "deny",
			CertCache:    DefaultCertCache,
			CACert:       d.resolve(DefaultCACertFile),
		},
		Limits: Limits{OnRedisError: "allow"},
		Log:    Log{Level: DefaultLogLevel},
	}
}

// config decodes the whole file.
func (d *decoder) config(root *yaml.Node) *Config {
	c := d.defaults()
	if root.Kind != yaml.MappingNode {
		d.errorf(root, "", "must be a mapping of settings (hint: start with \"version: 1\")")
		return c
	}
	f := d.fields(root, "", rootKeys)

	if v := f["version"]; v == nil {
		d.errorf(root, "version", `required (hint: add "version: 1" at the top)`)
	} else if n, ok := d.integer(v, "version"); ok {
		if n != 1 {
			d.errorf(v, "version", "unsupported version %d (hint: this till reads version 1)", n)
		} else {
			c.Version = 1
		}
	}
	if v := f["listen"]; v != nil {
		if s, ok := d.nonEmpty(v, "listen"); ok && d.check(v, "listen", validListen(s)) {
			c.Listen = s
		}
	}
	if v := f["shutdown_grace"]; v != nil {
		if t, ok := d.duration(v, "shutdown_grace"); ok {
			c.ShutdownGrace = t
		}
	}
	if v := f["tls"]; v != nil {
		c.TLS = d.tls(v, "tls")
	}
	if v := f["admin"]; v != nil {
		c.Admin = d.admin(v, "admin")
		if sameListen(c.Admin.Listen, c.Listen) {
			d.errorf(v, "admin.listen", "is the gateway's listen address too (hint: give the admin listener a port of its own, such as 127.0.0.1:9090)")
		}
	}
	if v := f["vault"]; v != nil {
		d.vault(v, "vault", &c.Vault)
	}
	if v := f["audit"]; v != nil {
		d.audit(v, "audit", &c.Audit)
	}
	if v := f["forward"]; v != nil {
		d.forward(v, "forward", &c.Forward)
	}
	if v := f["limits"]; v != nil {
		d.limits(v, "limits", &c.Limits)
	}
	if v := f["log"]; v != nil {
		d.log(v, "log", &c.Log)
	}
	if v := f["browser_origins"]; v != nil {
		d.list(v, "browser_origins", func(v *yaml.Node, p string) {
			if s, ok := d.nonEmpty(v, p); ok && d.check(v, p, validOrigin(s)) {
				c.BrowserOrigins = append(c.BrowserOrigins, strings.ToLower(s))
			}
		})
	}
	if v := f["server_names"]; v != nil {
		d.list(v, "server_names", func(v *yaml.Node, p string) {
			if s, ok := d.nonEmpty(v, p); ok && d.check(v, p, validServerName(s)) {
				c.ServerNames = append(c.ServerNames, strings.ToLower(strings.TrimSuffix(s, ".")))
			}
		})
	}
	if v := f["sources"]; v != nil {
		c.Sources = d.sources(v, "sources")
	}
	var clients []*yaml.Node
	if v := f["clients"]; v != nil {
		d.list(v, "clients", func(n *yaml.Node, p string) {
			if cl, ok := d.client(n, p); ok {
				c.Clients = append(c.Clients, cl)
				clients = append(clients, n)
			}
		})
	}
	var routes []routeNodes
	if v := f["routes"]; v != nil {
		d.list(v, "routes", func(n *yaml.Node, p string) {
			if r, rn, ok := d.route(n, p); ok {
				c.Routes = append(c.Routes, r)
				routes = append(routes, rn)
			}
		})
	}
	if v := f["budgets"]; v != nil {
		c.Budgets = d.budgets(v, "budgets")
	}
	if v := f["prices"]; v != nil {
		d.prices(v, "prices", &c.Prices)
	}
	d.crossCheck(c, clients, routes)
	d.checkAdminToken(c, f["admin"])
	if v := f["audit"]; v != nil {
		d.checkAuditFile(c, v)
	}
	d.checkRefs(c, routes)
	d.checkBudgets(c, f["budgets"])
	return c
}

func (d *decoder) tls(n *yaml.Node, path string) TLS {
	var t TLS
	f := d.fields(n, path, tlsKeys)
	if v := f["names"]; v != nil {
		d.list(v, join(path, "names"), func(v *yaml.Node, p string) {
			if s, ok := d.nonEmpty(v, p); ok && d.check(v, p, validServerName(s)) {
				// As server_names: a trailing dot is no part of the name
				// a client sends in SNI, nor of a certificate's.
				t.Names = append(t.Names, strings.ToLower(strings.TrimSuffix(s, ".")))
			}
		})
	}
	if v := f["acme"]; v != nil {
		p := join(path, "acme")
		a := &ACME{}
		af := d.fields(v, p, acmeKeys)
		if e := af["email"]; e == nil {
			if af != nil {
				d.errorf(v, join(p, "email"), "required (hint: the ACME account contact)")
			}
		} else if s, ok := d.nonEmpty(e, join(p, "email")); ok {
			if d.check(e, join(p, "email"), validEmail(s)) {
				a.Email = s
			}
		}
		if ca := af["ca"]; ca != nil {
			if s, ok := d.nonEmpty(ca, join(p, "ca")); ok && d.check(ca, join(p, "ca"), validHTTPSURL(s)) {
				a.CA = s
			}
		}
		if f["names"] == nil {
			d.errorf(v, join(path, "names"), "required with acme (hint: the DNS names to get certificates for)")
		}
		t.ACME = a
	}
	return t
}

func (d *decoder) admin(n *yaml.Node, path string) Admin {
	var a Admin
	f := d.fields(n, path, adminKeys)
	if v := f["token_sha256"]; v != nil {
		p := join(path, "token_sha256")
		if s, ok := d.nonEmpty(v, p); ok && d.check(v, p, validSHA256(s)) {
			a.TokenSHA256 = strings.ToLower(s)
		}
	}
	if v := f["listen"]; v != nil {
		p := join(path, "listen")
		if s, ok := d.nonEmpty(v, p); ok && strings.HasPrefix(s, SocketPrefix) {
			a.Listen = d.socketPath(v, p, s)
		} else if ok && d.check(v, p, validListen(s)) {
			a.Listen = s
			if !isLoopbackAddr(s) && f["token_sha256"] == nil {
				d.errorf(v, join(path, "token_sha256"), `required when admin.listen is not loopback (hint: the SHA-256 hex of a token kept apart, made with: openssl rand -hex 32 | tr -d '\n' > admin.token && sha256sum < admin.token; the CLI sends it from $TILL_ADMIN_TOKEN)`)
			}
		}
	}
	return a
}

// socketPath reads admin.listen's unix:PATH, PATH relative to the config
// file, into unix:ABSOLUTE-PATH; "" when it is no usable socket path.
func (d *decoder) socketPath(n *yaml.Node, path, s string) string {
	file := strings.TrimPrefix(s, SocketPrefix)
	if file == "" || strings.HasSuffix(file, "/") || strings.ContainsFunc(file, isControl) {
		d.errorf(n, path, "unix:PATH must name a socket file (e.g. unix:/run/till/admin.sock)")
		return ""
	}
	file = d.resolve(file)
	if l := unixsock.BindLen(file); l > unixsock.MaxPath {
		d.errorf(n, path, "the socket's path is %d bytes long once made absolute and bound in a private folder beside it, more than a socket's may be (%d) (hint: a shorter path, such as unix:/run/till/admin.sock)", l, unixsock.MaxPath)
		return ""
	}
	return SocketPrefix + file
}

func (d *decoder) vault(n *yaml.Node, path string, vt *Vault) {
	f := d.fields(n, path, vaultKeys)
	if v := f["path"]; v != nil {
		if p, ok := d.filePath(v, join(path, "path")); ok {
			vt.Path, vt.PathSet = p, true
		}
	}
	if v := f["key_file"]; v != nil {
		if p, ok := d.filePath(v, join(path, "key_file")); ok {
			vt.KeyFile = p
		}
	}
	if v := f["max_age"]; v != nil {
		if t, ok := d.duration(v, join(path, "max_age")); ok {
			vt.MaxAge = t
		}
	}
	if v := f["on_expired"]; v != nil {
		if s, ok := d.enum(v, join(path, "on_expired"), "block", "warn"); ok {
			vt.OnExpired = s
		}
	}
}

func (d *decoder) forward(n *yaml.Node, path string, fw *Forward) {
	f := d.fields(n, path, forwardKeys)
	if v := f["enabled"]; v != nil {
		fw.Enabled = d.boolean(v, join(path, "enabled"))
	}
	if v := f["intercept"]; v != nil {
		fw.Intercept = d.boolean(v, join(path, "intercept"))
	}
	if v := f["unknown_hosts"]; v != nil {
		if s, ok := d.enum(v, join(path, "unknown_hosts"), "deny", "tunnel"); ok {
			fw.UnknownHosts = s
		}
	}
	if v := f["allow_cidrs"]; v != nil {
		fw.AllowCIDRs = d.prefixes(v, join(path, "allow_cidrs"))
	}
	if v := f["ca_cert"]; v != nil {
		if p, ok := d.filePath(v, join(path, "ca_cert")); ok {
			fw.CACert = p
		}
	}
	if v := f["cert_cache"]; v != nil {
		if n, ok := d.intBetween(v, join(path, "cert_cache"), 1, 1_000_000, ""); ok {
			fw.CertCache = n
		}
	}
}

func (d *decoder) limits(n *yaml.Node, path string, l *Limits) {
	f := d.fields(n, path, limitsKeys)
	if v := f["redis"]; v != nil {
		p := join(path, "redis")
		if s, ok := d.nonEmpty(v, p); ok && d.check(v, p, validRedisURL(s)) {
			l.Redis = s
		}
	}
	if v := f["on_redis_error"]; v != nil {
		if s, ok := d.enum(v, join(path, "on_redis_error"), "allow", "deny"); ok {
			l.OnRedisError = s
		}
	}
}

// LogLevels and LogFormats are the values log.level and log.format (and
// the --log-level and --log-format flags) take.
var (
	LogLevels  = []string{"debug", "info", "warn", "error"}
	LogFormats = []string{"json", "console"}
)

func (d *decoder) log(n *yaml.Node, path string, l *Log) {
	f := d.fields(n, path, logKeys)
	if v := f["level"]; v != nil {
		if s, ok := d.enum(v, join(path, "level"), LogLevels...); ok {
			l.Level = s
		}
	}
	if v := f["format"]; v != nil {
		if s, ok := d.enum(v, join(path, "format"), LogFormats...); ok {
			l.Format = s
		}
	}
}

func (d *decoder) client(n *yaml.Node, path string) (Client, bool) {
	c := Client{Line: n.Line}
	f := d.fields(n, path, clientKeys)
	if f == nil {
		return c, false
	}
	if v := f["name"]; v == nil {
		d.errorf(n, join(path, "name"), "required")
	} else if s, ok := d.nonEmpty(v, join(path, "name")); ok && d.check(v, join(path, "name"), ValidClientName(s)) {
		c.Name = s
	}
	if v := f["token_sha256"]; v == nil {
		d.errorf(n, join(path, "token_sha256"), `required (hint: "till client add NAME" prints it)`)
	} else if s, ok := d.nonEmpty(v, join(path, "token_sha256")); ok && d.check(v, join(path, "token_sha256"), validSHA256(s)) {
		c.TokenSHA256 = strings.ToLower(s)
	}
	if v := emptyList(n, "cidrs"); v != nil {
		// No cidrs means any address: a list written empty (or with
		// every range commented out) must not.
		d.errorf(v, join(path, "cidrs"), "is empty, which would accept the client from any address (hint: remove the key to accept any address, or list ranges such as [10.0.0.0/8])")
	} else if v := f["cidrs"]; v != nil {
		c.CIDRs = d.prefixes(v, join(path, "cidrs"))
	}
	if v := f["cert"]; v != nil {
		c.Cert = d.boolean(v, join(path, "cert"))
	}
	return c, true
}

// checkAuditFile refuses an audit.file that is one of till's own files:
// records appended to the vault, its key or the config would break them
// (and ship the key file as the trail).
func (d *decoder) checkAuditFile(c *Config, audit *yaml.Node) {
	if c.Audit.File == "-" {
		return
	}
	self := d.file
	if !filepath.IsAbs(self) {
		self = filepath.Join(d.dir, filepath.Base(self))
	}
	for _, own := range []struct{ path, what string }{
		{self, "the config file itself"},
		{c.Vault.Path, "vault.path"},
		{c.Vault.KeyFile, "vault.key_file"},
		{c.Forward.CACert, "forward.ca_cert"},
		{c.Prices.File, "prices.file"},
	} {
		if own.path != "" && samePath(c.Audit.File, own.path) {
			at := audit
			for i := 0; i+1 < len(audit.Content); i += 2 {
				if audit.Content[i].Value == "file" {
					at = audit.Content[i+1]
				}
			}
			d.errorf(at, "audit.file",
				"is %s: the records appended to it would break it (hint: audit.file: /var/log/till/audit.jsonl)", own.what)
			return
		}
	}
}

// samePath reports whether a and b name one file: the same path, once
// links are resolved, or the same file on disk.
func samePath(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	if ra, err := filepath.EvalSymlinks(a); err == nil {
		if rb, err := filepath.EvalSymlinks(b); err == nil && ra == rb {
			return true
		}
	}
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

// minAuditSize is the smallest audit.max_size (4KB, as the units count):
// a file must hold records.
const minAuditSize = 4000

// audit decodes the audit mapping into a.
func (d *decoder) audit(v *yaml.Node, path string, a *Audit) {
	f := d.fields(v, path, auditKeys)
	if n := f["file"]; n != nil {
		if s, ok := d.nonEmpty(n, join(path, "file")); ok {
			if s == "-" {
				a.File = "-"
			} else if p, ok := d.filePath(n, join(path, "file")); ok {
				a.File = p
			}
		}
	}
	if n := f["fsync"]; n != nil {
		if s, ok := d.enum(n, join(path, "fsync"), "none", "interval", "always"); ok {
			a.Fsync = s
		}
	}
	if n := f["max_size"]; n != nil {
		p := join(path, "max_size")
		if s, ok := d.str(n, p); ok {
			size, err := ParseSize(s)
			switch {
			case err != nil:
				d.errorf(n, p, "must be a size such as 64KB, 100MB or 1GB")
			case size < minAuditSize:
				d.errorf(n, p, "must be at least 4KB")
			default:
				a.MaxSize = size
			}
		}
	}
	if n := f["max_files"]; n != nil {
		if k, ok := d.intBetween(n, join(path, "max_files"), 1, 1000, " (rotated files kept)"); ok {
			a.MaxFiles = k
		}
	}
	if n := f["sign"]; n != nil {
		a.Sign = d.boolean(n, join(path, "sign"))
	}
	if a.MaxSize > 0 && a.File == "-" {
		d.errorf(v, join(path, "max_size"), "needs audit.file: stdout cannot be rotated")
	}
}
