package config

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// keyTree is a mapping the decoder reads: its keys, and the mappings
// under some of them (a list of mappings is named KEY[]).
type keyTree struct {
	keys  []string
	under map[string]keyTree
}

// configKeys is every mapping of till.yaml, as the decoder's key lists
// say. TestConfigKeyListsInTree keeps it whole.
func configKeys() keyTree {
	leaf := func(keys []string) keyTree { return keyTree{keys: keys} }
	return keyTree{keys: rootKeys, under: map[string]keyTree{
		"tls":     {keys: tlsKeys, under: map[string]keyTree{"acme": leaf(acmeKeys)}},
		"admin":   leaf(adminKeys),
		"vault":   leaf(vaultKeys),
		"audit":   leaf(auditKeys),
		"forward": leaf(forwardKeys),
		"limits":  leaf(limitsKeys),
		"log":     leaf(logKeys),
		"clients": leaf(clientKeys),
		"prices":  leaf(pricesKeys),
		"budgets": leaf(budgetKeys),
		"sources": {keys: sourceKeys, under: map[string]keyTree{
			"auth": {keys: vaultAuthKeys, under: map[string]keyTree{
				"approle":    leaf(appRoleKeys),
				"kubernetes": leaf(kubernetesAuthKeys),
			}},
		}},
		"routes": {keys: routeKeys, under: map[string]keyTree{
			"allow": leaf(allowKeys),
			"pool":  leaf(poolKeys),
			"inject": {keys: injectKeys, under: map[string]keyTree{
				"basic":      leaf(basicKeys),
				"aws_sigv4":  leaf(sigV4Keys),
				"oauth2":     leaf(oauth2Keys),
				"github_app": leaf(githubAppKeys),
				"google":     leaf(googleKeys),
			}},
		}},
	}}
}

// lists are the keys that hold a list of mappings.
var lists = []string{"clients", "routes", "budgets", "sources"}

// paths lists every key of t as the reference names it
// (routes[].allow.paths), and says which are leaves: those that hold no
// mapping the decoder reads key by key.
func (t keyTree) paths(prefix string, leaves map[string]bool) {
	for _, k := range t.keys {
		p := prefix + k
		sub, ok := t.under[k]
		leaves[p] = !ok
		if ok {
			if prefix == "" && slices.Contains(lists, k) {
				p += "[]"
			}
			sub.paths(p+".", leaves)
		}
	}
}

// referenceKeys reads the configuration table of docs/reference.md: each
// row's keys, as its first column names them ("`tls.acme.email`, `.ca`"
// is tls.acme.email and tls.acme.ca), and the text of the row.
func referenceKeys(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../docs/reference.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(b), "## Configuration keys\n")
	if !ok {
		t.Fatal("docs/reference.md has no section Configuration keys")
	}
	table, _, _ = strings.Cut(table, "\n\n\n")
	rows := map[string]string{}
	name := regexp.MustCompile("`([^`]+)`")
	for line := range strings.SplitSeq(table, "\n") {
		cells := strings.Split(line, " | ")
		if !strings.HasPrefix(line, "| `") || len(cells) < 3 {
			continue
		}
		last := ""
		for _, m := range name.FindAllStringSubmatch(cells[0], -1) {
			key := m[1]
			if strings.HasPrefix(key, ".") {
				key = last[:strings.LastIndex(last, ".")] + key
			}
			rows[key] = line
			last = key
		}
	}
	if len(rows) < 40 {
		t.Fatalf("found %d keys in the reference's table: is its layout changed?", len(rows))
	}
	return rows
}

// TestReferenceNamesEveryKey: every key till.yaml takes is in
// docs/reference.md's table of configuration keys, in a row of its own or
// named in the row of the mapping or list that holds it (sources[]'s
// fields, inject's kinds), so that a key added to the decoder cannot go
// undocumented; and every key the table names is one the decoder reads.
func TestReferenceNamesEveryKey(t *testing.T) {
	rows := referenceKeys(t)
	keys := map[string]bool{}
	configKeys().paths("", keys)
	known := map[string]bool{}
	for p, leaf := range keys {
		known[strings.ReplaceAll(p, "[]", "")] = true
		if _, ok := rows[p]; ok || !leaf {
			continue
		}
		documented := false
		leafName := p[strings.LastIndex(p, ".")+1:]
		word := regexp.MustCompile(`(^|[^a-z_])` + leafName + `([^a-z_]|$)`)
		for parent := p; strings.Contains(parent, ".") && !documented; {
			parent = parent[:strings.LastIndex(parent, ".")]
			row, ok := rows[parent]
			documented = ok && word.MatchString(row)
		}
		if !documented {
			t.Errorf("docs/reference.md: the table of configuration keys does not name %s", p)
		}
	}
	for key := range rows {
		if !known[strings.ReplaceAll(key, "[]", "")] {
			t.Errorf("docs/reference.md: the table of configuration keys names %s, which till.yaml does not take", key)
		}
	}
}

// TestConfigKeyListsInTree: configKeys holds every key list decode.go
// declares, so that TestReferenceNamesEveryKey reads them all.
func TestConfigKeyListsInTree(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "decode.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	declared := 0
	in := map[*string]bool{}
	var walk func(keyTree)
	walk = func(k keyTree) {
		in[&k.keys[0]] = true
		for _, sub := range k.under {
			walk(sub)
		}
	}
	walk(configKeys())
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.VAR {
			continue
		}
		for _, s := range g.Specs {
			for _, n := range s.(*ast.ValueSpec).Names {
				if strings.HasSuffix(n.Name, "Keys") {
					declared++
				}
			}
		}
	}
	if declared == 0 || declared != len(in) {
		t.Errorf("decode.go declares %d key lists, configKeys holds %d: add the new one to configKeys", declared, len(in))
	}
}

// TestReadmePresetTable: README.md's table of presets gives each preset's
// upstream and the path an app's base URL ends in, as the catalog has
// them, and lists every preset that needs nothing more (a region, an
// app's ids).
func TestReadmePresetTable(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| ([a-z0-9-]+) \\| `([^`]+)` \\| `([^`]+)` \\|$")
	seen := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		p, ok := LookupPreset(m[1])
		if !ok {
			t.Errorf("README.md: preset table names %q, which is no preset", m[1])
			continue
		}
		seen[p.Name] = true
		if m[2] != p.Upstream {
			t.Errorf("README.md: preset %s: upstream %s, the catalog's is %s", p.Name, m[2], p.Upstream)
		}
		if want := "/" + p.Name + p.BaseURLPath; m[3] != want {
			t.Errorf("README.md: preset %s: base URL path %s, the catalog's is %s", p.Name, m[3], want)
		}
	}
	for _, p := range Presets() {
		if !seen[p.Name] && !p.NeedsRegion() && !p.NeedsApp() {
			t.Errorf("README.md: preset table lacks %s", p.Name)
		}
	}
}
