package config

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// seedLines returns the lines of a testdata file.
func seedLines(f *testing.F, name string) []string {
	f.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		f.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

// seedConfigs adds every testdata/*.yaml file to the fuzz corpus.
func seedConfigs(f *testing.F) {
	f.Helper()
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add(StarterConfig())
}

func FuzzParse(f *testing.F) {
	seedConfigs(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("till.yaml", data, "/etc/till")
		if (c == nil) == (err == nil) {
			t.Fatalf("got config %v and error %v: want exactly one", c != nil, err)
		}
		if err != nil {
			if n := strings.Count(err.Error(), "\n") + 1; n > maxErrors+1 {
				t.Fatalf("%d problems shown, want at most %d and a count", n, maxErrors)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "till.yaml") {
					t.Fatalf("error line %q does not start with the file name", line)
				}
			}
			if looksLikeKey(err.Error()) {
				t.Fatalf("the error shows a value that looks like a key: %v", err)
			}
			return
		}
		if hasTagOrAlias(data) {
			t.Fatalf("a config with a yaml tag, alias or merge key loaded")
		}
		for _, s := range routeTexts(c) {
			if looksLikeKey(s) && !strings.Contains(s, "/") || hasProviderKey(s) {
				t.Fatalf("a value that looks like a key accepted: %q", s)
			}
		}
		for _, r := range c.Routes {
			if r.Upstream == nil || r.Name == "" || r.Prefix == "" || r.Secret == "" {
				t.Fatalf("route %+v is incomplete", r)
			}
			if r.Upstream.Scheme != "https" && !r.AllowPlaintext && !isLoopbackHost(r.Upstream.Hostname()) {
				t.Fatalf("route %q: plaintext upstream accepted", r.Name)
			}
			for k, v := range r.Headers {
				if looksLikeKey(k) || looksLikeKey(v) {
					t.Fatalf("route %q: a header that looks like a key accepted", r.Name)
				}
			}
			if r.Inject.Format.hasLiteralKey() || r.Inject.Basic != nil && (r.Inject.Basic.Username.hasLiteralKey() || r.Inject.Basic.Password.hasLiteralKey()) {
				t.Fatalf("route %q: an inject template with a literal key accepted", r.Name)
			}
			if r.AnyClient && r.Clients != nil {
				t.Fatalf("route %q: clients: any with a client list", r.Name)
			}
		}
	})
}

func FuzzTemplate(f *testing.F) {
	for _, s := range seedLines(f, "templates.txt") {
		f.Add(s)
	}
	f.Add("a\r\nb")
	f.Fuzz(func(t *testing.T, s string) {
		tmpl, err := ParseTemplate(s)
		if err != nil {
			return
		}
		out, err := tmpl.Render(func(field string) (string, bool) { return "V", true })
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		if strings.ContainsAny(out, "\r\n\x00") {
			t.Fatalf("rendered %q holds a control character", out)
		}
		if len(tmpl.Fields()) == 0 && out != s {
			t.Fatalf("template without placeholders rendered %q from %q", out, s)
		}
	})
}

func FuzzGlob(f *testing.F) {
	for _, g := range seedLines(f, "globs.txt") {
		for _, p := range []string{"/", "/v1/models/gpt", "/v1/../admin", "/a/b", "/v1/chat/completions"} {
			f.Add(g, p)
		}
	}
	f.Fuzz(func(t *testing.T, pattern, path string) {
		g, err := ParseGlob(pattern)
		if err != nil {
			return
		}
		if !g.Match(path) {
			return
		}
		for _, seg := range strings.Split(path, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("%q matched %q, which has a dot segment", pattern, path)
			}
		}
		if !strings.HasPrefix(path, "/") {
			t.Fatalf("%q matched %q, which is not absolute", pattern, path)
		}
	})
}

// hasTagOrAlias reports whether data, read by yaml.v3, has a node with a
// tag written on it, an alias or a merge key: YAML that may mean one
// thing to a reader of the file and another to till.
func hasTagOrAlias(data []byte) bool {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil {
		return false
	}
	found := false
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.AliasNode || n.Style&yaml.TaggedStyle != 0 || n.ShortTag() == "!!merge" {
			found = true
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&doc)
	return found
}

// routeTexts are the route values that till logs or shows.
func routeTexts(c *Config) []string {
	var out []string
	for _, r := range c.Routes {
		out = append(out, r.Name, r.Prefix, r.Upstream.String(), r.Secret, r.Inject.Header, r.Inject.Query)
		out = append(out, r.Strip...)
		out = append(out, r.StripQuery...)
		out = append(out, r.Allow.Methods...)
		for _, g := range r.Allow.Paths {
			out = append(out, g.String())
		}
		out = append(out, r.Allow.Models...)
	}
	return out
}

// FuzzClientEdits: adding a client to any config that parses gives one
// with that client and nothing else changed that Parse sees; removing it
// again gives back what was there. Removing or rotating the last client
// there was changes that client only.
func FuzzClientEdits(f *testing.F) {
	seedConfigs(f)
	f.Add([]byte("version: 1\nclients:\n    -   {name: a, token_sha256: " + testHash + "}   # a\n\nroutes: []\n"))
	f.Add([]byte("version: 1\nclients: # none yet\nroutes: []\n"))
	f.Add([]byte("version: 1\nclients:\n    - {name: a, token_sha256: " + testHash + "} # " + strings.Repeat("\u2028", 5) +
		"\n    - {name: b, token_sha256: " + testHash + "}\nroutes:\n  - name: r\n    preset: openai\n    clients:\n    - a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		before, err := Parse("till.yaml", data, "/etc/till")
		if err != nil || slices.ContainsFunc(before.Clients, func(c Client) bool { return c.Name == "fuzzed" }) {
			return
		}
		if len(before.Clients) > 0 {
			lastClientEdits(t, data, before)
		}
		added, err := AddClient("till.yaml", data, Client{Name: "fuzzed", TokenSHA256: testHash, CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
		if err != nil {
			return // refused, never written
		}
		after, err := Parse("till.yaml", added, "/etc/till")
		if err != nil {
			t.Fatalf("an added client left a config that does not parse: %v\n%s", err, added)
		}
		if n := len(after.Clients); n != len(before.Clients)+1 || after.Clients[n-1].Name != "fuzzed" || len(after.Clients[n-1].CIDRs) != 1 {
			t.Fatalf("clients after adding one: %+v\n%s", after.Clients, added)
		}
		if clientless(after) != clientless(before) {
			t.Fatalf("adding a client changed the rest of the config:\n%s", added)
		}
		removed, err := RemoveClient("till.yaml", added, "fuzzed")
		if err != nil {
			t.Fatalf("removing the client added: %v\n%s", err, added)
		}
		again, err := Parse("till.yaml", removed, "/etc/till")
		if err != nil || len(again.Clients) != len(before.Clients) || clientless(again) != clientless(before) {
			t.Fatalf("removing the client added did not give the config back (%v):\n%s", err, removed)
		}
	})
}

// lastClientEdits checks that removing or rotating the last client of
// data, parsed as before, changes that client only.
func lastClientEdits(t *testing.T, data []byte, before *Config) {
	t.Helper()
	n := len(before.Clients) - 1
	last := before.Clients[n].Name
	out, err := RemoveClient("till.yaml", data, last)
	if err != nil && len(before.ClientRoutes(last)) == 0 && len(before.ClientBudgets(last)) == 0 {
		t.Fatalf("removing client %q, named nowhere: %v\n%q", last, err, data)
	}
	if err == nil {
		after, err := Parse("till.yaml", out, "/etc/till")
		if err != nil || len(after.Clients) != len(before.Clients)-1 || clientless(after) != clientless(before) ||
			!slices.EqualFunc(after.Clients, before.Clients[:n], sameClient) {
			t.Fatalf("removing client %q changed more than that client (%v):\n%q", last, err, out)
		}
	}
	digest := strings.Repeat("cd", 32)
	if out, err := SetClientToken("till.yaml", data, last, digest); err == nil {
		after, err := Parse("till.yaml", out, "/etc/till")
		if err != nil || len(after.Clients) != len(before.Clients) || clientless(after) != clientless(before) ||
			after.Clients[n].TokenSHA256 != digest || !slices.EqualFunc(after.Clients[:n], before.Clients[:n], sameClient) {
			t.Fatalf("rotating client %q changed more than its digest (%v):\n%q", last, err, out)
		}
	}
}

// sameClient reports whether a and b, but for their lines, are alike.
func sameClient(a, b Client) bool {
	return a.Name == b.Name && a.TokenSHA256 == b.TokenSHA256 && slices.Equal(a.CIDRs, b.CIDRs) && a.Cert == b.Cert
}

// clientless renders what Parse read of c, but for its clients and the
// line numbers that edits move.
func clientless(c *Config) string {
	d := *c
	d.Clients = nil
	s, err := json.Marshal(d)
	if err != nil {
		panic(err)
	}
	return lineNumbers.ReplaceAllString(string(s), `"Line":0`)
}

var lineNumbers = regexp.MustCompile(`"Line":\d+`)
