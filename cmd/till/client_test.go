package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestClientAddListen: the proxy URL client add prints is the config's
// listener, as a client dials it.
func TestClientAddListen(t *testing.T) {
	c := newCLI(t)
	if out, _, _ := c.run("", "client", "add", "web"); !strings.Contains(out, "HTTPS_PROXY=http://web:$TILL_TOKEN@127.0.0.1:8080\n") {
		t.Errorf("no config:\n%s", out)
	}
	os.WriteFile("till.yaml", []byte("version: 1\nlisten: 0.0.0.0:9443\n"), 0o644)
	if out, _, _ := c.run("", "client", "add", "web"); !strings.Contains(out, "HTTPS_PROXY=http://web:$TILL_TOKEN@127.0.0.1:9443\n") {
		t.Errorf("listen 0.0.0.0:9443:\n%s", out)
	}
	os.WriteFile("till.yaml", []byte("version: 1\nlisten: 10.1.2.3:8000\n"), 0o644)
	if out, _, _ := c.run("", "client", "add", "web"); !strings.Contains(out, "HTTPS_PROXY=http://web:$TILL_TOKEN@10.1.2.3:8000\n") {
		t.Errorf("listen 10.1.2.3:8000:\n%s", out)
	}
}

// TestClientAddWrite: --write adds the client to the config as client rm
// removes one, comments kept, and the token printed is the one whose
// digest it wrote.
func TestClientAddWrite(t *testing.T) {
	c := newCLI(t)
	if _, errOut, code := c.run("", "client", "add", "web", "--write"); code != 1 || !strings.Contains(errOut, "no config file") {
		t.Errorf("--write without a config: exit %d: %s", code, errOut)
	}
	if _, errOut, code := c.run("", "init"); code != 0 {
		t.Fatalf("init: %s", errOut)
	}
	out, errOut, code := c.run("", "client", "add", "web", "--cidr", "10.0.0.0/8", "--write")
	if code != 0 {
		t.Fatalf("client add --write: exit %d: %s", code, errOut)
	}
	token := regexp.MustCompile(`\btill_[0-9A-Za-z]{40}\b`).FindString(out)
	if token == "" || !strings.Contains(out, "added it to the clients: list of till.yaml") || strings.Contains(out, "token_sha256") {
		t.Errorf("client add --write output:\n%s", out)
	}
	sum := sha256.Sum256([]byte(token))
	b, _ := os.ReadFile("till.yaml")
	cfg := string(b)
	for _, want := range []string{
		"clients:\n  - name: web\n    token_sha256: " + hex.EncodeToString(sum[:]) + "\n    cidrs: [10.0.0.0/8]\nroutes:",
		"# till.yaml: till's config.", "# clients:", "# max_age: 90d",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("the config lacks %q:\n%s", want, cfg)
		}
	}
	if strings.Contains(cfg, token) {
		t.Error("the token was written to the config")
	}
	if _, errOut, code := c.run("", "check"); code != 0 {
		t.Errorf("check after --write: exit %d: %s", code, errOut)
	}
	if _, errOut, code := c.run("", "client", "add", "batch", "--write"); code != 0 {
		t.Fatalf("second client add --write: exit %d: %s", code, errOut)
	}
	out, _, _ = c.run("", "client", "list")
	if !strings.Contains(out, "web") || !strings.Contains(out, "batch") {
		t.Errorf("client list after --write:\n%s", out)
	}
	if _, errOut, code := c.run("", "client", "add", "web", "--write"); code != 1 || !strings.Contains(errOut, "already") {
		t.Errorf("client add --write of an existing name: exit %d: %s", code, errOut)
	}
	for _, name := range []string{"web", "batch"} {
		if _, errOut, code := c.run("", "client", "rm", name); code != 0 {
			t.Errorf("client rm %s: exit %d: %s", name, code, errOut)
		}
	}
	if b, _ := os.ReadFile("till.yaml"); strings.Contains(string(b), "\nclients:") {
		t.Errorf("the clients: list outlived its clients:\n%s", b)
	}
}

// TestClientAddReservedNames: "anonymous" and "any" mean no client in
// particular, in the audit, budgets and routes' clients: no client takes
// them.
func TestClientAddReservedNames(t *testing.T) {
	c := newCLI(t)
	for _, name := range []string{"anonymous", "any"} {
		out, stderr, code := c.run("", "client", "add", name)
		if code != 2 || !strings.Contains(stderr, "is reserved") || strings.Contains(out, "till_") {
			t.Errorf("client add %s: exit %d, stdout %q, stderr %q", name, code, out, stderr)
		}
	}
}
