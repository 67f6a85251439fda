package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http/httpproxy"
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
	other := rootPEM(t)
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

// TestEnvBundleDropsOtherTillCAs: a bundle holds till's CA of its own
// config, never one that $SSL_CERT_FILE brought from an earlier till env
// of another config, whose key this installation does not hold; the other
// roots of that file stay.
func TestEnvBundleDropsOtherTillCAs(t *testing.T) {
	c := newCLI(t)
	root := rootPEM(t)
	prev := filepath.Join(t.TempDir(), "till-ca-bundle.pem")
	os.WriteFile(prev, append(append([]byte{}, root...), caPEMOf(t, "other")...), 0o644)
	os.WriteFile("till.yaml", []byte("version: 1\nforward: {enabled: true}\n"), 0o644)
	if _, errOut, code := c.run("", "ca", "init"); code != 0 {
		t.Fatalf("ca init: %s", errOut)
	}
	caPEM, _ := os.ReadFile("till-ca.pem")
	c.env["SSL_CERT_FILE"] = prev
	if _, errOut, code := c.run("", "env"); code != 0 {
		t.Fatalf("env: exit %d: %s", code, errOut)
	}
	if got, _ := os.ReadFile("till-ca-bundle.pem"); !bytes.Equal(got, append(root, caPEM...)) {
		t.Errorf("the bundle holds %d certificates, want 2: the other root, then this config's CA, not the other config's", countCerts(got))
	}
}

// caPEMOf makes a CA of till's in another folder, PEM.
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

// rootPEM makes a self-signed root that is not till's, PEM: a system or
// corporate root.
func rootPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Example Root CA", Organization: []string{"Example"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
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

// forwardHome makes a folder of that name in a new CLI's folder, with a
// forward-mode config and till's CA in it, and makes it the working one.
func forwardHome(t *testing.T, name string) (*cli, string) {
	c := newCLI(t)
	home := filepath.Join(c.dir, name)
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(home)
	os.WriteFile("till.yaml", []byte("version: 1\nforward: {enabled: true}\n"), 0o644)
	if _, errOut, code := c.run("", "ca", "init"); code != 0 {
		t.Fatalf("ca init: %s", errOut)
	}
	c.env["SSL_CERT_FILE"] = "/nonexistent"
	return c, home
}

// TestEnvShellQuotingDollarInHome: the till home (config) folder's name
// is a filesystem value; the CA bundle path printed for
// eval "$(till env)" stays one literal value whatever the folder is
// called: ${TILL_TOKEN} and $(...) in it are text, never run.
func TestEnvShellQuotingDollarInHome(t *testing.T) {
	c, home := forwardHome(t, "proj ${TILL_TOKEN} $(touch PWNED)")
	out, errOut, code := c.run("", "env")
	if code != 0 {
		t.Fatalf("env: exit %d: %s", code, errOut)
	}
	sh := exec.Command("sh", "-c", out+"\nprintf %s \"$SSL_CERT_FILE\"")
	sh.Dir = c.dir
	sh.Env = []string{"PATH=" + os.Getenv("PATH"), "TILL_TOKEN=till_tok"}
	got, err := sh.CombinedOutput()
	if _, serr := os.Stat(filepath.Join(c.dir, "PWNED")); serr == nil {
		t.Errorf("eval \"$(till env)\" ran a command from the till home folder's name; till env printed:\n%s", out)
	}
	if want := filepath.Join(home, "till-ca-bundle.pem"); err != nil || string(got) != want {
		t.Errorf("SSL_CERT_FILE after eval = %q (err %v), want the bundle path %q", got, err, want)
	}
}

// TestEnvShellQuotingListenZone: listen accepts an IPv6 zone of any
// characters (netip.ParseAddr); with --client the proxy URL's text around
// the token is quoted as text, so the zone's $(...) never runs.
func TestEnvShellQuotingListenZone(t *testing.T) {
	c := newCLI(t)
	os.WriteFile("till.yaml", []byte("version: 1\nlisten: \"[fe80::1%$(touch PWNED)]:8080\"\nforward: {enabled: true}\n"+
		"clients:\n  - name: web\n    token_sha256: "+strings.Repeat("ab", 32)+"\n"), 0o644)
	if _, errOut, code := c.run("", "ca", "init"); code != 0 {
		t.Fatalf("ca init: %s", errOut)
	}
	c.env["SSL_CERT_FILE"] = "/nonexistent"
	c.env["TILL_TOKEN"] = "till_tok"
	out, errOut, code := c.run("", "env", "--client", "web")
	if code != 0 {
		t.Fatalf("env: exit %d: %s", code, errOut)
	}
	sh := exec.Command("sh", "-c", out)
	sh.Dir = c.dir
	sh.Env = []string{"PATH=" + os.Getenv("PATH"), "TILL_TOKEN=till_tok"}
	sh.CombinedOutput()
	if _, err := os.Stat(filepath.Join(c.dir, "PWNED")); err == nil {
		t.Errorf("eval \"$(till env --client web)\" ran a command from listen; till env printed:\n%s", out)
	}
}

// TestEnvDotenvNewlineInHome: a newline in the till home folder's name,
// which no .env file can carry, is an error naming the variable, not a
// line of the folder name's choosing (here HTTPS_PROXY).
func TestEnvDotenvNewlineInHome(t *testing.T) {
	c, _ := forwardHome(t, "x\nHTTPS_PROXY=evil.example:8080\nZ=")
	out, errOut, code := c.run("", "env", "--format", "dotenv")
	if code != 1 || !strings.Contains(errOut, "SSL_CERT_FILE:") || !strings.Contains(errOut, "line break") {
		t.Errorf("env --format dotenv with a line break in the folder's name: exit %d: %s", code, errOut)
	}
	for _, line := range strings.Split(out, "\n") {
		if line == "HTTPS_PROXY=evil.example:8080" {
			t.Errorf("till env --format dotenv: a line from the folder name sets HTTPS_PROXY:\n%s", out)
		}
	}
}

// TestEnvNoProxyHoldsTillsOwnAddresses: an app given till env's lines
// that also calls till by its base URL reaches till directly, whatever
// address till listens on: a base-URL call sent to till as a proxy is
// refused (403 host_not_allowed). Checked as Go reads the variables
// (net/http's ProxyFromEnvironment is httpproxy); curl, Python and Node
// read a host in NO_PROXY alike.
func TestEnvNoProxyHoldsTillsOwnAddresses(t *testing.T) {
	hostname, _ := os.Hostname()
	tests := []struct {
		name   string
		config string
		direct []string // base URLs an app may use to reach till
	}{
		{"loopback", "listen: 127.0.0.1:8080\n", []string{"http://127.0.0.1:8080/openai/v1", "http://localhost:8080/openai/v1"}},
		{"LAN address", "listen: 192.0.2.10:8080\n", []string{"http://192.0.2.10:8080/openai/v1"}},
		{"IPv6 address", "listen: \"[2001:db8::10]:8080\"\n", []string{"http://[2001:db8::10]:8080/openai/v1"}},
		{"host name", "listen: till.lan:8080\n", []string{"http://till.lan:8080/openai/v1"}},
		{"server_names", "listen: 127.0.0.1:8080\nserver_names: [till.internal]\n", []string{"http://till.internal:8080/openai/v1"}},
		{"tls.names", "listen: 127.0.0.1:8443\ntls: {names: [till.internal]}\n", []string{"https://till.internal:8443/openai/v1"}},
		{"every address", "listen: 0.0.0.0:8080\n", append([]string{"http://127.0.0.1:8080/openai/v1", "http://" + hostname + ":8080/openai/v1"}, ownAddrURLs(t)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCLI(t)
			os.WriteFile("till.yaml", []byte("version: 1\n"+tt.config+"forward: {enabled: true}\nroutes: [{name: openai, preset: openai, clients: any}]\n"), 0o644)
			if _, errOut, code := c.run("", "ca", "init"); code != 0 {
				t.Fatalf("ca init: %s", errOut)
			}
			c.env["SSL_CERT_FILE"] = "/nonexistent"
			out, errOut, code := c.run("", "env", "--format", "dotenv")
			if code != 0 {
				t.Fatalf("env: exit %d: %s", code, errOut)
			}
			vars := map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				k, v, _ := strings.Cut(line, "=")
				vars[k] = strings.Trim(v, `'"`)
			}
			proxyFor := (&httpproxy.Config{HTTPProxy: vars["HTTP_PROXY"], HTTPSProxy: vars["HTTPS_PROXY"], NoProxy: vars["NO_PROXY"]}).ProxyFunc()
			for _, base := range tt.direct {
				u, err := url.Parse(base)
				if err != nil {
					t.Fatal(err)
				}
				if p, err := proxyFor(u); err != nil || p != nil {
					t.Errorf("%s goes through the proxy %v (err %v); NO_PROXY=%s", base, p, err, vars["NO_PROXY"])
				}
			}
			if p, _ := proxyFor(&url.URL{Scheme: "https", Host: "api.openai.com"}); p == nil {
				t.Errorf("a route's host is not proxied; NO_PROXY=%s", vars["NO_PROXY"])
			}
		})
	}
}

// ownAddrURLs are base URLs of till on port 8080 at each of this host's
// addresses off loopback, which a till listening on 0.0.0.0 answers at.
func ownAddrURLs(t *testing.T) []string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var urls []string
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			urls = append(urls, "http://"+net.JoinHostPort(n.IP.String(), "8080")+"/openai/v1")
		}
	}
	return urls
}

// TestEnvForwardOffHint: till env with forward mode off says where to
// turn it on: the config file it read, or, with none (the built-in
// defaults serve no forward mode), the one till init writes. It said "in
// the config" where there was none, and never that the CA comes next.
func TestEnvForwardOffHint(t *testing.T) {
	c := newCLI(t)
	if _, errOut, code := c.run("", "env"); code != 1 || !strings.Contains(errOut, "till: hint: till init writes a config: set forward.enabled: true in it (and run till ca init once, for its CA)") {
		t.Errorf("env without a config: exit %d: %s", code, errOut)
	}
	os.WriteFile("till.yaml", []byte("version: 1\n"), 0o644)
	if _, errOut, code := c.run("", "env"); code != 1 || !strings.Contains(errOut, "till: hint: set forward.enabled: true in till.yaml (and run till ca init once, for its CA)") {
		t.Errorf("env with forward mode off: exit %d: %s", code, errOut)
	}
}
