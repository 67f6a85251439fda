package k8s

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// tillConfig is the part of till.yaml the wiring checks read. It is
// decoded leniently: till check, run on the same text, is the strict judge.
type tillConfig struct {
	Listen        string `yaml:"listen"`
	ShutdownGrace string `yaml:"shutdown_grace"`
	Admin         struct {
		Listen      string `yaml:"listen"`
		TokenSHA256 string `yaml:"token_sha256"`
	} `yaml:"admin"`
	Vault struct {
		Path    string `yaml:"path"`
		KeyFile string `yaml:"key_file"`
	} `yaml:"vault"`
	Audit struct {
		File     string `yaml:"file"`
		MaxSize  string `yaml:"max_size"`
		MaxFiles int    `yaml:"max_files"`
	} `yaml:"audit"`
	Limits struct {
		Redis string `yaml:"redis"`
	} `yaml:"limits"`
	Sources []tillSource `yaml:"sources"`
	Routes  []tillRoute  `yaml:"routes"`
}

// tillSource is one entry of sources: where keys are fetched from instead
// of the vault (config/source.go).
type tillSource struct {
	Name      string `yaml:"name"`
	Type      string `yaml:"type"`
	Address   string `yaml:"address"`
	CAFile    string `yaml:"ca_file"`
	AuthMount string `yaml:"auth_mount"`
	Dir       string `yaml:"dir"`
	Auth      struct {
		TokenFile string `yaml:"token_file"`
		AppRole   *struct {
			RoleIDFile   string `yaml:"role_id_file"`
			SecretIDFile string `yaml:"secret_id_file"`
		} `yaml:"approle"`
		Kubernetes *struct {
			Role    string `yaml:"role"`
			JWTFile string `yaml:"jwt_file"`
		} `yaml:"kubernetes"`
	} `yaml:"auth"`
}

// defaultJWTFile is where a vault source's Kubernetes login reads the
// token when jwt_file is not set: the token Kubernetes mounts into every
// container unless automountServiceAccountToken is false.
const defaultJWTFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// jwtFileSetting names jwt_file in messages.
const jwtFileSetting = "auth.kubernetes.jwt_file"

// authMount is where the source's auth method is mounted in Vault.
func (s tillSource) authMount() string {
	switch {
	case s.AuthMount != "":
		return s.AuthMount
	case s.Auth.Kubernetes != nil:
		return "kubernetes"
	case s.Auth.AppRole != nil:
		return "approle"
	}
	return ""
}

// sourceFile is a file (or, for a files source, a folder) that a source
// reads in the container.
type sourceFile struct {
	setting string // as the config names it: ca_file, auth.kubernetes.jwt_file...
	path    string
	dir     bool
}

// files lists what the source reads from the container's file system.
func (s tillSource) files() []sourceFile {
	var out []sourceFile
	add := func(setting, p string, dir bool) {
		if p != "" {
			out = append(out, sourceFile{setting, p, dir})
		}
	}
	add("dir", s.Dir, true)
	add("ca_file", s.CAFile, false)
	add("auth.token_file", s.Auth.TokenFile, false)
	if a := s.Auth.AppRole; a != nil {
		add("auth.approle.role_id_file", a.RoleIDFile, false)
		add("auth.approle.secret_id_file", a.SecretIDFile, false)
	}
	if k := s.Auth.Kubernetes; k != nil {
		add(jwtFileSetting, k.JWTFile, false)
	}
	return out
}

// tillRef is a route's secret that names a source: SOURCE:PATH[#FIELD].
type tillRef struct {
	ref, source, path, field string
}

// refs lists, once each, the source refs the config's routes use.
func (c *tillConfig) refs() []tillRef {
	var out []tillRef
	for _, r := range c.Routes {
		for _, s := range r.secrets() {
			src, rest, ok := strings.Cut(s, ":")
			if !ok || slices.ContainsFunc(out, func(x tillRef) bool { return x.ref == s }) {
				continue
			}
			path, field, _ := strings.Cut(rest, "#")
			out = append(out, tillRef{ref: s, source: src, path: path, field: field})
		}
	}
	return out
}

// tillRoute is one route of till.yaml.
type tillRoute struct {
	Name    string `yaml:"name"`
	Preset  string `yaml:"preset"`
	Prefix  string `yaml:"prefix"`
	Secret  any    `yaml:"secret"` // a name, or a list of them (a pool)
	Clients any    `yaml:"clients"`
}

// till's defaults for what the config leaves out.
const (
	defaultListen        = "127.0.0.1:8080"
	defaultShutdownGrace = "30s"
)

func parseTillConfig(data []byte) (*tillConfig, error) {
	var c tillConfig
	if err := yaml.Unmarshal(data, &c); err != nil {
		return nil, err
	}
	if c.Listen == "" {
		c.Listen = defaultListen
	}
	if c.ShutdownGrace == "" {
		c.ShutdownGrace = defaultShutdownGrace
	}
	for i := range c.Sources {
		if k := c.Sources[i].Auth.Kubernetes; k != nil && k.JWTFile == "" {
			k.JWTFile = defaultJWTFile
		}
	}
	return &c, nil
}

// grace is shutdown_grace as a duration; till also takes days ("1d"),
// which no pod waits for.
func (c *tillConfig) grace() (time.Duration, error) {
	if d, ok := strings.CutSuffix(c.ShutdownGrace, "d"); ok {
		n, err := strconv.Atoi(d)
		return time.Duration(n) * 24 * time.Hour, err
	}
	return time.ParseDuration(c.ShutdownGrace)
}

// name is the route's name: its own, else its preset's.
func (r tillRoute) name() string {
	if r.Name != "" {
		return r.Name
	}
	return r.Preset
}

// prefix is the path prefix apps use: its own, else "/" + its name.
func (r tillRoute) prefix() string {
	if r.Prefix != "" {
		return r.Prefix
	}
	return "/" + r.name()
}

// secrets are the vault entries the route injects; a route without
// secret: uses the one named like the route.
func (r tillRoute) secrets() []string {
	switch s := r.Secret.(type) {
	case string:
		return []string{s}
	case []any:
		var out []string
		for _, v := range s {
			if name, ok := v.(string); ok {
				out = append(out, name)
			}
		}
		return out
	}
	return []string{r.name()}
}

// hasClients reports whether the route names the clients it serves.
func (r tillRoute) hasClients() bool {
	switch c := r.Clients.(type) {
	case []any:
		return len(c) > 0
	case string:
		return c != ""
	}
	return false
}

// vaultSecrets lists, once each, the vault entries the config's routes use.
func (c *tillConfig) vaultSecrets() []string {
	var out []string
	for _, r := range c.Routes {
		for _, s := range r.secrets() {
			if !strings.Contains(s, ":") && !slices.Contains(out, s) { // SOURCE:PATH refs are not in the vault
				out = append(out, s)
			}
		}
	}
	return out
}

// routeFor returns the route an app's base URL path goes to, by prefix.
func (c *tillConfig) routeFor(path string) (tillRoute, bool) {
	for _, r := range c.Routes {
		if p := r.prefix(); path == p || strings.HasPrefix(path, p+"/") {
			return r, true
		}
	}
	return tillRoute{}, false
}

// isLoopback reports whether host:port listens on loopback only.
func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// port returns the port of host:port.
func port(hostport string) (int32, error) {
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(p, 10, 32)
	return int32(n), err
}

// setScalars returns data with the scalar at each dotted path (such as
// "vault.path", or "sources.0.address" where a number indexes a list)
// replaced by the value given, and every other byte as it was: till's
// messages about the result then point at the ConfigMap's own lines. Each
// path must exist and hold a plain or quoted scalar without escapes.
func setScalars(data []byte, values map[string]string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) != 1 {
		return nil, fmt.Errorf("want one yaml document")
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	lineStart := make([]int, len(lines))
	for i := 1; i < len(lines); i++ {
		lineStart[i] = lineStart[i-1] + len(lines[i-1])
	}
	type edit struct {
		at, end int
		with    string
	}
	var edits []edit
	for path, value := range values {
		n := doc.Content[0]
		for key := range strings.SplitSeq(path, ".") {
			n = mapValue(n, key)
			if n == nil {
				return nil, fmt.Errorf("%s: not in the config", path)
			}
		}
		if n.Kind != yaml.ScalarNode || n.Line < 1 || n.Line > len(lines) {
			return nil, fmt.Errorf("%s: not a scalar", path)
		}
		line := lines[n.Line-1]
		col := 0 // yaml.v3 counts columns in characters
		for range n.Column - 1 {
			_, size := utf8.DecodeRune(line[col:])
			col += size
		}
		token := n.Value
		switch n.Style {
		case 0:
		case yaml.DoubleQuotedStyle:
			token = `"` + token + `"`
		case yaml.SingleQuotedStyle:
			token = `'` + token + `'`
		default:
			return nil, fmt.Errorf("%s: a block scalar cannot be replaced", path)
		}
		if !bytes.HasPrefix(line[col:], []byte(token)) {
			return nil, fmt.Errorf("%s: the value is not written as plainly as it reads", path)
		}
		at := lineStart[n.Line-1] + col
		edits = append(edits, edit{at, at + len(token), strconv.Quote(value)})
	}
	slices.SortFunc(edits, func(a, b edit) int { return b.at - a.at })
	out := slices.Clone(data)
	for _, e := range edits {
		out = slices.Concat(out[:e.at], []byte(e.with), out[e.end:])
	}
	return out, nil
}

// mapValue returns the value of key in the mapping n (or, for a list n,
// its item at the index key), or nil.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n != nil && n.Kind == yaml.SequenceNode {
		i, err := strconv.Atoi(key)
		if err != nil || i < 0 || i >= len(n.Content) {
			return nil
		}
		return n.Content[i]
	}
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}
