package test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// pki stands in for the public web PKI in forward-mode tests: the fake
// providers' certificates chain to it, and till trusts it through
// SSL_CERT_FILE.
type pki struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	caFile string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test public root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &pki{cert: cert, key: key, caFile: filepath.Join(t.TempDir(), "public-roots.pem")}
	if err := os.WriteFile(p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *pki) issue(t *testing.T, names ...string) tls.Certificate {
	t.Helper()
	return issueCert(t, p, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), names...)
}

// newNamedUpstream starts a recording TLS upstream on 127.0.0.1 whose
// certificate, from p, names the given hosts.
func newNamedUpstream(t *testing.T, p *pki, h http.Handler, names ...string) *upstream {
	t.Helper()
	u := &upstream{caFile: p.caFile}
	srv := httptest.NewUnstartedServer(u.recorder(h))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{p.issue(t, names...)}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	u.Server = srv
	return u
}

// port is the upstream's port.
func (u *upstream) port() string {
	_, port, _ := net.SplitHostPort(u.Listener.Addr().String())
	return port
}

// hostsWrapper returns a command prefix that runs till in a private mount
// namespace whose /etc/hosts maps names to 127.0.0.1, so till can reach
// fake providers by the names apps use, while the apps (which only talk to
// the proxy) never resolve them. It needs root; outside CI the test skips
// without it.
func hostsWrapper(t *testing.T, names ...string) []string {
	t.Helper()
	base, _ := os.ReadFile("/etc/hosts")
	return hostsFileWrapper(t, string(base)+"\n127.0.0.1 "+strings.Join(names, " ")+"\n")
}

// hostsFileWrapper is hostsWrapper with the whole of the /etc/hosts till
// sees.
func hostsFileWrapper(t *testing.T, content string) []string {
	t.Helper()
	if err := exec.Command("unshare", "-m", "true").Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("unshare -m: %v (forward-mode tests need a mount namespace)", err)
		}
		t.Skipf("unshare -m: %v (run as root to enable forward-mode tests)", err)
	}
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"unshare", "-m", "sh", "-c", `mount --bind "$0" /etc/hosts && exec "$@"`, hosts}
}

// freeAddr returns a loopback address with a port that was free a moment
// ago. Another process may take it before the caller's child binds it: use
// it only for a child that cannot bind port 0 and say which port it got,
// and start the child again on another port when its bind fails.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startListening runs the child that cmd makes to listen on n ports found
// free a moment ago (freeAddr), and waits until ready says, from the
// child's output or by asking them, that it serves those addresses. When
// another process took a port meanwhile, the child exits printing inUse,
// and startListening tries new ports. It returns the addresses and a
// function that stops the child, which also stops when the test ends.
func startListening(t *testing.T, n int, inUse string, cmd func(addrs []string) *exec.Cmd, ready func(out string, addrs []string) bool) (addrs []string, stop func()) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		addrs = nil
		for range n {
			addrs = append(addrs, freeAddr(t))
		}
		c := cmd(addrs)
		var out syncBuffer
		c.Stdout, c.Stderr = &out, &out
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { c.Wait(); close(exited) }()
		stop = sync.OnceFunc(func() { c.Process.Kill(); <-exited })
		t.Cleanup(stop)
		up := false
		waitFor(t, 15*time.Second, c.Path+" to serve or exit", func() bool {
			select {
			case <-exited:
				return true
			default:
			}
			up = ready(out.String(), addrs)
			return up
		})
		switch {
		case up:
			return addrs, stop
		case attempt < 5 && strings.Contains(out.String(), inUse):
			t.Logf("%s: a port of %v was taken: trying others", c.Path, addrs)
		default:
			t.Fatalf("%s did not start:\n%s", c.Path, out.String())
		}
	}
}
