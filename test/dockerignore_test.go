package test

import (
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// dockerIgnore reads the repository's .dockerignore the way BuildKit does
// (its own parser and matcher) and reports whether a path of the build
// context, slash-separated from its root, is left out of it.
func dockerIgnore(t *testing.T) func(path string) bool {
	t.Helper()
	f, err := os.Open("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	return func(path string) bool {
		t.Helper()
		ok, err := pm.MatchesOrParentMatches(path)
		if err != nil {
			t.Fatalf(".dockerignore on %s: %v", path, err)
		}
		return ok
	}
}

// TestDockerIgnoreKeepsSecretsOut: no key, vault, lock, CA, bundle, audit
// log or environment file that a checkout could hold, at any depth, enters
// the image's build context, not even its build stage. The files are made
// by the examples' own setup commands, run in a copy of examples/, and
// completed by a list of names till writes elsewhere. The sources the
// build needs stay in.
func TestDockerIgnoreKeepsSecretsOut(t *testing.T) {
	ignored := dockerIgnore(t)

	// The examples' setup, in a copy of the tree.
	root := t.TempDir()
	examples := filepath.Join(root, "examples")
	if err := os.CopyFS(examples, os.DirFS("../examples")); err != nil {
		t.Fatal(err)
	}
	before := map[string]bool{}
	walkFiles(t, root, func(rel string) { before[rel] = true })
	sidecar := filepath.Join(examples, "sidecar-compose")
	steps := []struct {
		dir, stdin string
		args       []string
	}{
		// The sidecar's data folder (examples/sidecar-compose/README.md),
		{sidecar, "", []string{"init", "--dir", "./till-data"}},
		{sidecar, "sk-dockerignore-1", []string{"secret", "set", "openai", "-c", "./till-data/till.yaml"}},
		// and the folder its earlier README had users make.
		{sidecar, "", []string{"init", "--dir", "./till"}},
		{sidecar, "sk-dockerignore-2", []string{"secret", "set", "openai", "-c", "./till/till.yaml"}},
		{filepath.Join(examples, "quickstart"), "sk-dockerignore-3", []string{"secret", "set", "openai", "-c", "till.yaml"}},
		{filepath.Join(examples, "http-proxy"), "", []string{"ca", "init", "-c", "till.yaml"}},
		{filepath.Join(examples, "http-proxy"), "", []string{"env", "-c", "till.yaml", "--format", "dotenv"}},
	}
	for _, s := range steps {
		if s.stdin != "" {
			suiteLeaks.key(s.stdin)
		}
		out, errOut, code := runTill(t, s.dir, s.stdin, nil, s.args...)
		if code != 0 {
			t.Fatalf("till %s: exit %d\n%s%s", strings.Join(s.args, " "), code, out, errOut)
		}
		if s.args[0] == "env" {
			// What users do with it; it holds a client token when --client is given.
			if err := os.WriteFile(filepath.Join(s.dir, ".env"), []byte(out), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	var made []string
	walkFiles(t, root, func(rel string) {
		if !before[rel] {
			made = append(made, rel)
		}
	})
	for _, want := range []string{
		"examples/sidecar-compose/till-data/till.key",
		"examples/sidecar-compose/till-data/till.vault",
		"examples/sidecar-compose/till-data/till.vault.lock",
		"examples/sidecar-compose/till/till.key",
		"examples/quickstart/till.vault",
		"examples/http-proxy/till-ca.pem",
		"examples/http-proxy/till-ca-bundle.pem",
	} {
		if !slices.Contains(made, want) {
			t.Errorf("the setup did not make %s (made %v): the test would prove nothing about it", want, made)
		}
	}
	for _, p := range made {
		// A config holds no secret (token hashes at most); all else does.
		if path.Base(p) != "till.yaml" && !ignored(p) {
			t.Errorf("%s (made by the examples' setup) enters the build context", p)
		}
	}

	// What till writes elsewhere, at the root and deeper.
	for _, p := range []string{
		"till.key", "till.vault", "till.vault.lock", ".till.vault.tmp-123456",
		"deploy/prod/till.key", "a/b/c/d/till.vault", "a/b/.till.vault.tmp-9",
		"web.key", "clients/web.key", "examples/sidecar-compose/till-data",
		"x/till-data/till.yaml", "till-ca.pem", "deploy/till-ca.pem", "till-ca-bundle.pem",
		"x/y/till-ca-bundle.pem", "till-certs/certificates/till.internal/till.internal.key",
		"x/till-certs/acme/account.json",
		"till-audit.log", "audit.log", "audit.log.1", "audit.log.10.gz", "logs/till-audit.log.3",
		"var/log/audit.log", "serve.log", "deep/er/serve.log",
		".env", "app/.env", "prod.env",
		"till.yaml",
	} {
		if !ignored(p) {
			t.Errorf("%s enters the build context", p)
		}
	}

	// The sources the build needs stay in: every Go file, the module
	// files, embedded files, the Dockerfile.
	var sources []string
	walkFiles(t, "..", func(rel string) {
		if strings.HasSuffix(rel, ".go") {
			sources = append(sources, rel)
		}
	})
	if len(sources) < 50 {
		t.Fatalf("found %d Go files from the module root, want many: wrong folder?", len(sources))
	}
	sources = append(sources, "go.mod", "go.sum", "Dockerfile", "cmd/till/main.go", "vault/key.go",
		"audit/file.go", "config/presets.yaml", "config/starter.yaml", "examples/sidecar-compose/config/till.yaml")
	for _, p := range sources {
		if ignored(p) {
			t.Errorf("%s is left out of the build context: the build needs it", p)
		}
	}
}

// TestDockerIgnoreKeepsTempKeysOut: a till killed while it makes a vault
// key (init, the first secret set: .till.key.NNN, linked into place once
// whole) or replaces a client's key (client rotate: .NAME.key.tmp-NNN,
// renamed into place) leaves that private key in a hidden temp file
// beside it. *.key matches the end of a name only, so those files
// entered a build context, where the vault's own temp files did not.
func TestDockerIgnoreKeepsTempKeysOut(t *testing.T) {
	ignored := dockerIgnore(t)
	for _, p := range []string{".till.key.123456", "examples/sidecar-compose/till-data/.till.key.9", "deploy/.prod.key.42", ".web.key.tmp-123456", "clients/.web.key.tmp-7"} {
		if !ignored(p) {
			t.Errorf("%s enters the build context", p)
		}
	}
}

// walkFiles calls fn with the slash-separated path, relative to root, of
// each file below root, leaving out .git and node_modules.
func walkFiles(t *testing.T, root string, fn func(rel string)) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		fn(filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
