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
	Limits struct {
		Redis string `yaml:"redis"`
	} `yaml:"limits"`
	Routes []tillRoute `yaml:"routes"`
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
// "vault.path") replaced by the value given, and every other byte as it
// was: till's messages about the result then point at the ConfigMap's own
// lines. Each path must exist and hold a plain or quoted scalar without
// escapes.
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

// mapValue returns the value of key in the mapping n, or nil.
func mapValue(n *yaml.Node, key string) *yaml.Node {
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
