package test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestDockerIgnoreDocumentedSecretFiles: the secret files till's own docs
// have the reader write or read in the working folder, which for the
// Kubernetes examples is the repository root the image is built from
// (admin.token, chat.token, aws.json, a GitHub App's private key, a Google
// service account's key), stay out of the build context, as .dockerignore
// promises nothing secret enters it.
func TestDockerIgnoreDocumentedSecretFiles(t *testing.T) {
	ignored := dockerIgnore(t)
	docs := map[string]string{}
	for _, f := range []string{"../README.md", "../docs/reference.md", "../examples/kubernetes/README.md"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs[f] = string(b)
	}
	found := map[string]string{} // file name -> doc that writes or reads it
	redirect := regexp.MustCompile(`>\s*([A-Za-z0-9_.-]+\.token)\b`)
	for _, m := range redirect.FindAllStringSubmatch(docs["../examples/kubernetes/README.md"], -1) {
		found[m[1]] = "examples/kubernetes/README.md"
	}
	secretFile := regexp.MustCompile(`till secret set [^\n]*?(?:--file|<)\s+([A-Za-z0-9_.-]+)`)
	for f, text := range docs {
		for _, m := range secretFile.FindAllStringSubmatch(text, -1) {
			if m[1] == "FILE" || m[1] == "F" || strings.HasPrefix(m[1], "$") {
				continue
			}
			found[m[1]] = strings.TrimPrefix(f, "../")
		}
	}
	for _, want := range []string{"admin.token", "chat.token", "aws.json", "my-app.private-key.pem", "service-account.json"} {
		if _, ok := found[want]; !ok {
			t.Errorf("the docs no longer name %s: the test's extraction is off", want)
		}
	}
	names := make([]string, 0, len(found))
	for n := range found {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if !ignored(n) {
			t.Errorf("%s (a secret file %s has the reader write or read in the working folder) enters the image's build context and the build stage's COPY . .", n, found[n])
		}
	}
}

// TestComposeAppCannotReachProviders: the sidecar exists so that the app
// never talks to a provider itself: in examples/sidecar-compose every
// service but till is only on internal networks, and till alone joins one
// with egress.
func TestComposeAppCannotReachProviders(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "examples", "sidecar-compose", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Image       string   `yaml:"image"`
			Build       any      `yaml:"build"`
			Networks    []string `yaml:"networks"`
			NetworkMode string   `yaml:"network_mode"`
		} `yaml:"services"`
		Networks map[string]*struct {
			Internal bool `yaml:"internal"`
		} `yaml:"networks"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for name, svc := range compose.Services {
		if svc.Build != nil {
			continue // till itself
		}
		checked++
		if svc.NetworkMode != "" {
			t.Errorf("service %s: network_mode %q", name, svc.NetworkMode)
		}
		nets := svc.Networks
		if len(nets) == 0 {
			nets = []string{"default"}
		}
		for _, n := range nets {
			if cfg := compose.Networks[n]; cfg == nil || !cfg.Internal {
				t.Errorf("service %s (the app) is on network %q, which is not internal: it reaches the providers directly, around till", name, n)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no app service found")
	}
}

// TestComposeAuditOnVolume: the sidecar's audit trail goes to the data
// folder, not stdout, where `docker compose logs` would mix it with till's
// own log, Docker's log driver rotate or drop it with the container, and
// each restart of till start a new chain (seq 1, prev "").
func TestComposeAuditOnVolume(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "examples", "sidecar-compose", "config", "till.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Audit struct {
			File string `yaml:"file"`
		} `yaml:"audit"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if f := cfg.Audit.File; f == "" || f == "-" {
		t.Errorf("examples/sidecar-compose/config/till.yaml: audit.file %q (stdout): the trail cannot be verified across restarts nor kept; write it under /var/lib/till", f)
	} else if !strings.HasPrefix(f, "/var/lib/till/") {
		t.Errorf("examples/sidecar-compose/config/till.yaml: audit.file %q is not on the writable data volume", f)
	}
}

// TestReadmeDockerRunStopsGracefully: README.md's docker run gives till
// longer than the shutdown_grace (30s) of the config it mounts, docker's
// default 10 s would cut requests in flight, and runs it as the compose
// example does: no capabilities, no-new-privileges. It mounts folders,
// never a file: a file edited by renaming a new one over it (till client
// add --write) would never show in the container.
func TestReadmeDockerRunStopsGracefully(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i := strings.Index(text, "docker run ")
	if i < 0 {
		t.Fatal("README.md has no docker run")
	}
	end := strings.Index(text[i:], "\n```")
	cmd := strings.ReplaceAll(text[i:i+end], "\\\n", " ")
	for _, want := range []string{"--stop-timeout", "--cap-drop", "no-new-privileges"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("README.md: %q lacks %s", strings.Join(strings.Fields(cmd), " "), want)
		}
	}
	if strings.Contains(cmd, ".yaml:") {
		t.Errorf("README.md: %q mounts a single file", strings.Join(strings.Fields(cmd), " "))
	}
}

// TestComposeMountsFolders: every bind mount of the compose example is a
// folder: an edit of the config (till client add --write) or of the vault
// renames a new file over the old one, which a single-file bind mount
// never shows the running till, so a rotated client token would go on
// working.
func TestComposeMountsFolders(t *testing.T) {
	dir := filepath.Join("..", "examples", "sidecar-compose")
	b, err := os.ReadFile(filepath.Join(dir, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Volumes []string `yaml:"volumes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatal(err)
	}
	mounts := 0
	for name, svc := range compose.Services {
		for _, v := range svc.Volumes {
			mounts++
			src, _, _ := strings.Cut(v, ":")
			if filepath.Ext(src) != "" {
				t.Errorf("service %s mounts %s, a file: mount its folder", name, v)
			}
			if fi, err := os.Stat(filepath.Join(dir, src)); err == nil && !fi.IsDir() {
				t.Errorf("service %s mounts %s, a file: mount its folder", name, v)
			}
		}
	}
	if mounts == 0 {
		t.Fatal("no volumes found")
	}
}
