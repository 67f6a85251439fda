package main

import (
	"bytes"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEnvBundleOnce: after eval "$(till env)", SSL_CERT_FILE names the
// bundle itself; the next till env must not add till's CA to it again,
// nor any certificate twice.
func TestEnvBundleOnce(t *testing.T) {
	c := newCLI(t)
	os.WriteFile("till.yaml", []byte("version: 1\nforward: {enabled: true}\n"), 0o644)
	if _, errOut, code := c.run("", "ca", "init"); code != 0 {
		t.Fatalf("ca init: %s", errOut)
	}
	caPEM, _ := os.ReadFile("till-ca.pem")
	// System roots with a certificate twice, as some bundles have.
	roots := filepath.Join(t.TempDir(), "roots.pem")
	other := caPEMOf(t, "other")
	os.WriteFile(roots, append(append([]byte("# a comment\n"), other...), other...), 0o644)
	c.env["SSL_CERT_FILE"] = roots
	out, errOut, code := c.run("", "env")
	if code != 0 {
		t.Fatalf("env: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"export NODE_USE_ENV_PROXY='1'\n", "export NODE_EXTRA_CA_CERTS='" + filepath.Join(c.dir, "till-ca.pem") + "'\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("till env lacks %q:\n%s", want, out)
		}
	}
	first, _ := os.ReadFile("till-ca-bundle.pem")
	if n := countCerts(first); n != 2 || !bytes.HasSuffix(first, caPEM) {
		t.Errorf("the bundle holds %d certificates, want 2 (the root, then till's CA)", n)
	}
	c.env["SSL_CERT_FILE"] = filepath.Join(c.dir, "till-ca-bundle.pem")
	for range 3 {
		if _, errOut, code := c.run("", "env"); code != 0 {
			t.Fatalf("env: exit %d: %s", code, errOut)
		}
	}
	if again, _ := os.ReadFile("till-ca-bundle.pem"); !bytes.Equal(again, first) {
		t.Errorf("the bundle changed over runs: %d certificates, %d bytes, was %d", countCerts(again), len(again), len(first))
	}
}

// caPEMOf makes a self-signed certificate, PEM: a CA of till's in another
// folder.
func caPEMOf(t *testing.T, dir string) []byte {
	t.Helper()
	c := &cli{t: t, dir: filepath.Join(t.TempDir(), dir), env: map[string]string{}}
	wd, _ := os.Getwd()
	os.MkdirAll(c.dir, 0o755)
	os.Chdir(c.dir)
	defer os.Chdir(wd)
	if _, errOut, code := c.run("", "ca", "init"); code != 0 {
		t.Fatalf("ca init: %s", errOut)
	}
	b, _ := os.ReadFile(filepath.Join(c.dir, "till-ca.pem"))
	return b
}

func countCerts(b []byte) int {
	n := 0
	for {
		var block *pem.Block
		if block, b = pem.Decode(b); block == nil {
			return n
		}
		n++
	}
}
