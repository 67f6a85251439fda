package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/tillgw/till/proxy"
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
	if token == "" || !strings.Contains(out, "added it to the clients: list of till.yaml; a running till accepts its token at its next reload (it watches the file)") || strings.Contains(out, "token_sha256") {
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
	// An empty list keeps its header for scripts, and says how to start one.
	out, errOut, code = c.run("", "client", "list")
	if code != 0 || strings.TrimSpace(out) != "NAME  TOKEN_SHA256  CIDRS  ROUTES" || !strings.Contains(errOut, "till: hint: till.yaml names no clients: till client add NAME") {
		t.Errorf("client list with no clients: exit %d, stdout %q, stderr %q", code, out, errOut)
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

// TestClientRotate: rotate replaces the digest of a client that routes and
// budgets name (which rm refuses and add cannot replace), keeps its cidrs,
// and prints the token whose digest it wrote; a client with cert: true gets
// a certificate bound to the new token, over the old files.
func TestClientRotate(t *testing.T) {
	c := newCLI(t)
	if _, errOut, code := c.run("", "client", "rotate", "web"); code != 1 || !strings.Contains(errOut, "no config file") {
		t.Errorf("rotate without a config: exit %d: %s", code, errOut)
	}
	c.must("", "init")
	c.must(key+"\n", "secret", "set", "openai")
	out := c.must("", "client", "add", "web", "--cidr", "10.0.0.0/8", "--write")
	tokenRE := regexp.MustCompile(`\btill_[0-9A-Za-z]{40}\b`)
	oldToken := tokenRE.FindString(out)
	b, _ := os.ReadFile("till.yaml")
	named := strings.Replace(string(b), "routes: []", "routes: [{name: openai, preset: openai, clients: [web]}]", 1)
	os.WriteFile("till.yaml", []byte(named), 0o644)

	if _, errOut, code := c.run("", "client", "rotate", "nobody"); code != 1 || !strings.Contains(errOut, `no client "nobody"`) {
		t.Errorf("rotate of an unknown client: exit %d: %s", code, errOut)
	}
	if _, errOut, code := c.run("", "client", "rotate", "till_0123456789abcdefghijklmnopqrstuvwxyzABCD"); code != 2 || strings.Contains(errOut, "till_0123") {
		t.Errorf("rotate of a token pasted as the name: exit %d: %s", code, errOut)
	}
	out = c.must("", "client", "rotate", "web")
	newToken := tokenRE.FindString(out)
	if newToken == "" || newToken == oldToken || strings.Contains(out, "token_sha256") {
		t.Fatalf("client rotate output:\n%s", out)
	}
	newSum, oldSum := sha256.Sum256([]byte(newToken)), sha256.Sum256([]byte(oldToken))
	b, _ = os.ReadFile("till.yaml")
	cfg := string(b)
	if !strings.Contains(cfg, "  - name: web\n    token_sha256: "+hex.EncodeToString(newSum[:])+"\n    cidrs: [10.0.0.0/8]\n") ||
		strings.Contains(cfg, hex.EncodeToString(oldSum[:])) || !strings.Contains(cfg, "clients: [web]") || !strings.Contains(cfg, "# max_age: 90d") {
		t.Errorf("the config after rotate:\n%s", cfg)
	}
	if _, errOut, code := c.run("", "check"); code != 0 {
		t.Errorf("check after rotate: %s", errOut)
	}
}

// TestClientRotateCert: a certificate client's rotation replaces NAME.crt
// and NAME.key with ones bound to the new token, and leaves no staged
// file; client add --cert refuses to overwrite them.
func TestClientRotateCert(t *testing.T) {
	c := newCLI(t)
	c.must("", "init")
	c.must("", "ca", "init")
	b, _ := os.ReadFile("till.yaml")
	os.WriteFile("till.yaml", append(b, "tls: {names: [till.internal]}\n"...), 0o644)
	c.must("", "client", "add", "web", "--cert", "--write")
	oldCert, _ := os.ReadFile("web.crt")
	c.must("", "client", "add", "api", "--cert")
	os.Rename("api.crt", "web2.crt")
	if _, errOut, code := c.run("", "client", "add", "web2", "--cert", "--write"); code != 1 || !strings.Contains(errOut, "web2.crt already exists") {
		t.Errorf("client add over an existing web2.crt: exit %d: %s", code, errOut)
	}
	if b, _ := os.ReadFile("till.yaml"); strings.Contains(string(b), "web2") {
		t.Error("a client add refused for its files was written to the config")
	}

	out, errOut, code := c.run("", "client", "rotate", "web")
	if code != 0 {
		t.Fatalf("client rotate: exit %d: %s", code, errOut)
	}
	token := regexp.MustCompile(`\btill_[0-9A-Za-z]{40}\b`).FindString(out)
	sum := sha256.Sum256([]byte(token))
	certPEM, _ := os.ReadFile("web.crt")
	if bytes.Equal(certPEM, oldCert) {
		t.Fatal("rotate left the old web.crt")
	}
	block, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != proxy.CertURI("web", hex.EncodeToString(sum[:])) {
		t.Errorf("the rotated certificate's URIs %v are not bound to the new token", cert.URIs)
	}
	if _, err := tls.LoadX509KeyPair("web.crt", "web.key"); err != nil {
		t.Errorf("the rotated certificate and key: %v", err)
	}
	if st, _ := os.Stat("web.key"); st.Mode().Perm() != 0o600 {
		t.Errorf("web.key mode %v", st.Mode().Perm())
	}
	entries, _ := os.ReadDir(".")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".web") || strings.HasPrefix(e.Name(), ".api") {
			t.Errorf("a staged file was left: %s", e.Name())
		}
	}

	// rm deletes the client's own certificate and key, and nothing that
	// merely shares their names.
	os.WriteFile("api.crt", oldCert, 0o644) // web's revoked one
	os.WriteFile("api.key", []byte("keep"), 0o600)
	c.must("", "client", "add", "api", "--write")
	for _, name := range []string{"web", "api"} {
		if _, errOut, code := c.run("", "client", "rm", name); code != 0 {
			t.Fatalf("client rm %s: %s", name, errOut)
		}
	}
	for f, want := range map[string]bool{"web.crt": false, "web.key": false, "api.crt": true, "api.key": true} {
		if _, err := os.Stat(f); (err == nil) != want {
			t.Errorf("after client rm: %s exists %v, want %v", f, err == nil, want)
		}
	}
}

// TestClientAddWriteForNamedClient: a config whose route names a client
// not defined yet is what client add --write fixes, not a reason to
// refuse it.
func TestClientAddWriteForNamedClient(t *testing.T) {
	c := newCLI(t)
	c.must(key+"\n", "secret", "set", "openai")
	os.WriteFile("till.yaml", []byte("version: 1\nroutes: [{name: openai, preset: openai, clients: [web]}]\n"), 0o644)
	if _, errOut, code := c.run("", "check"); code != 1 || !strings.Contains(errOut, `unknown client "web"`) {
		t.Fatalf("check before: exit %d: %s", code, errOut)
	}
	if _, errOut, code := c.run("", "client", "add", "web", "--write"); code != 0 {
		t.Fatalf("client add --write of the client a route names: exit %d: %s", code, errOut)
	}
	if _, errOut, code := c.run("", "check"); code != 0 {
		t.Errorf("check after: exit %d: %s", code, errOut)
	}
	if _, errOut, code := c.run("", "client", "add", "web", "--write"); code != 1 || !strings.Contains(errOut, "till client rotate web") {
		t.Errorf("client add --write of an existing client: exit %d: %s", code, errOut)
	}
}

// TestClientAddWithoutConfig: client add with no config file says that
// one is needed first. It said "add to the clients: list of till.yaml",
// of which there was none: a user who wrote a till.yaml holding only
// those lines got a config till refuses (no version), and the built-in
// defaults, which serve without one, take no clients.
func TestClientAddWithoutConfig(t *testing.T) {
	c := newCLI(t)
	out := c.must("", "client", "add", "web")
	if !strings.Contains(out, "there is no config file yet: till init writes one; then add to its clients: list:") ||
		strings.Contains(out, "list of till.yaml") {
		t.Errorf("client add without a config file:\n%s", out)
	}
	c.must("", "init")
	if out := c.must("", "client", "add", "web"); !strings.Contains(out, "add to the clients: list of till.yaml:") {
		t.Errorf("client add with a config file:\n%s", out)
	}
}

// TestClientAddProxyNeedsForward: client add printed "the app sends it
// ... as the proxy password: HTTPS_PROXY=..." whatever the config said; a
// user following it with forward.enabled off got 400 "till is not
// configured as a forward proxy". The proxy line now says it needs
// forward mode when that is off.
func TestClientAddProxyNeedsForward(t *testing.T) {
	c := newCLI(t)
	const off = "as a proxy password once forward.enabled is true:\n  HTTPS_PROXY="
	os.WriteFile("till.yaml", []byte("version: 1\n"), 0o644)
	if out, _, _ := c.run("", "client", "add", "web"); !strings.Contains(out, off) {
		t.Errorf("forward mode off: the proxy line does not say it needs it:\n%s", out)
	}
	os.WriteFile("till.yaml", []byte("version: 1\nforward: {enabled: true}\n"), 0o644)
	if out, _, _ := c.run("", "client", "add", "web"); strings.Contains(out, "forward.enabled") || !strings.Contains(out, "or as the proxy password:\n  HTTPS_PROXY=") {
		t.Errorf("forward mode on:\n%s", out)
	}
}
