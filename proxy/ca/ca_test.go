package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

func newTestCA(t testing.TB) *CA {
	t.Helper()
	c, err := New("testhost", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLoadRoundTrip(t *testing.T) {
	c := newTestCA(t)
	stored, err := c.StoredKey()
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(stored, "\r\n") {
		t.Error("the stored key has line breaks: the vault refuses control characters")
	}
	got, err := Load(c.CertPEM(), stored)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Certificate().Equal(c.Certificate()) {
		t.Error("loaded a different certificate")
	}
	if cn := c.Certificate().Subject.CommonName; !strings.Contains(cn, "till") || !strings.Contains(cn, "testhost") {
		t.Errorf("CA name: got %q, want till and the machine", cn)
	}

	other := newTestCA(t)
	otherKey, _ := other.StoredKey()
	for name, tc := range map[string]struct {
		cert []byte
		key  string
	}{
		"key of another CA": {c.CertPEM(), otherKey},
		"not base64":        {c.CertPEM(), "%%%"},
		"not a key":         {c.CertPEM(), "aGVsbG8="},
		"not a certificate": {[]byte("hello"), stored},
	} {
		_, err := Load(tc.cert, tc.key)
		switch {
		case err == nil:
			t.Errorf("%s: loaded", name)
		case strings.Contains(err.Error(), stored):
			t.Errorf("%s: the error holds the key", name)
		case errors.Is(err, ErrKeyMismatch) != (name == "key of another CA"):
			t.Errorf("%s: got %v, want ErrKeyMismatch only for another CA's key", name, err)
		}
	}
}

func TestMintVerifies(t *testing.T) {
	c := newTestCA(t)
	pool := x509.NewCertPool()
	pool.AddCert(c.Certificate())
	for _, host := range []string{"api.openai.com", "127.0.0.1", "API.Example.COM."} {
		leaf, err := c.Mint(host, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(strings.ToLower(host), ".")
		if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool}); err != nil {
			t.Errorf("%s: %v", host, err)
		}
		if d := leaf.Leaf.NotAfter.Sub(leaf.Leaf.NotBefore); d > 25*time.Hour {
			t.Errorf("%s: valid for %v, want about 24h", host, d)
		}
		if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "evil.example", Roots: pool}); err == nil {
			t.Errorf("%s: the leaf verifies for another name", host)
		}
	}
}

// TestMintOnlyHostNames: the CA signs no wildcard leaf, nor one for a
// name DNS could not carry, whatever host it is asked for.
func TestMintOnlyHostNames(t *testing.T) {
	c := newTestCA(t)
	for _, host := range []string{"*.example.com", "*", "a.*.example.com", "a,b.example.com", "a..b", ".example.com", "a b", strings.Repeat("a", 64) + ".example", strings.Repeat("a.", 127) + "ab"} {
		if leaf, err := c.Mint(host, time.Now()); err == nil {
			t.Errorf("%q: minted a leaf for %v %v", host, leaf.Leaf.DNSNames, leaf.Leaf.IPAddresses)
		}
	}
	for _, host := range []string{"my_service", "x-1.example.com", "::1", strings.Repeat("a", 63) + ".example"} {
		if _, err := c.Mint(host, time.Now()); err != nil {
			t.Errorf("%q: %v", host, err)
		}
	}
}

// TestEachCertificateOnePurpose: what the CA signs serves one purpose.
// Interception and listener leaves are refused as client certificates
// (the listener verifies those against this CA); a client certificate,
// whose key its app holds, is no server certificate for any name (its
// common name is the client's, which may look like a host) and cannot
// sign; the CA signs no CA below it.
func TestEachCertificateOnePurpose(t *testing.T) {
	c := newTestCA(t)
	roots := x509.NewCertPool()
	roots.AddCert(c.Certificate())
	now := time.Now()
	parse := func(p []byte) *x509.Certificate {
		b, _ := pem.Decode(p)
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	intercept, err := c.Mint("api.openai.com", now)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"till.lan"}}, key)
	csr, _ := x509.ParseCertificateRequest(der)
	listenerPEM, err := c.SignServer(csr, now)
	if err != nil {
		t.Fatal(err)
	}
	uri, _ := url.Parse("urn:till:client:api.openai.com:0123456789abcdef")
	clientPEM, clientKey, err := c.SignClient("api.openai.com", uri, now)
	if err != nil {
		t.Fatal(err)
	}
	client := parse(clientPEM)
	clientAuth := x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := client.Verify(clientAuth); err != nil {
		t.Errorf("the client certificate as a client certificate: %v", err)
	}
	for name, cert := range map[string]*x509.Certificate{"interception leaf": intercept.Leaf, "listener leaf": parse(listenerPEM)} {
		if _, err := cert.Verify(clientAuth); err == nil {
			t.Errorf("the %s verified as a client certificate", name)
		}
	}
	if _, err := client.Verify(x509.VerifyOptions{Roots: roots, DNSName: "api.openai.com"}); err == nil {
		t.Error("the client certificate verified as a server certificate")
	}
	if client.IsCA || client.KeyUsage&x509.KeyUsageCertSign != 0 {
		t.Error("the client certificate can sign certificates")
	}
	b, _ := pem.Decode(clientKey)
	ck, _ := x509.ParsePKCS8PrivateKey(b.Bytes)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"evil.example"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	der, err = x509.CreateCertificate(rand.Reader, tmpl, client, &key.PublicKey, ck)
	if err != nil {
		t.Fatal(err)
	}
	below, _ := x509.ParseCertificate(der)
	inter := x509.NewCertPool()
	inter.AddCert(client)
	if _, err := below.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: "evil.example"}); err == nil {
		t.Error("a certificate signed with a client's key verified")
	}
	ca := c.Certificate()
	if !ca.IsCA || ca.MaxPathLen != 0 || !ca.MaxPathLenZero || ca.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("the CA: IsCA %v, path length %d (zero %v), key usage %b; want a CA of path length 0 that only signs", ca.IsCA, ca.MaxPathLen, ca.MaxPathLenZero, ca.KeyUsage)
	}
}

func TestLeavesMintOncePerHost(t *testing.T) {
	l, err := NewLeaves(newTestCA(t), 16)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := l.Get("api.openai.com"); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := l.Mints(); got != 1 {
		t.Errorf("mints: got %d, want 1", got)
	}
}

func TestLeavesBoundedAndRenewed(t *testing.T) {
	l, err := NewLeaves(newTestCA(t), 2)
	if err != nil {
		t.Fatal(err)
	}
	hosts := []string{"a.example", "b.example", "c.example"}
	for round := 0; round < 2; round++ {
		for _, h := range hosts {
			c, err := l.Get(h)
			if err != nil {
				t.Fatal(err)
			}
			if c.Leaf.DNSNames[0] != h {
				t.Errorf("got a leaf for %v, want %s", c.Leaf.DNSNames, h)
			}
		}
	}
	if got := l.Mints(); got != 6 {
		t.Errorf("mints with a cache of 2 cycling 3 hosts: got %d, want 6", got)
	}
	if got := l.cache.Len(); got != 2 {
		t.Errorf("cache size: got %d, want 2", got)
	}

	before := l.Mints()
	first, _ := l.Get("c.example")
	l.now = func() time.Time { return time.Now().Add(23*time.Hour + 30*time.Minute) }
	renewed, _ := l.Get("c.example")
	if l.Mints() != before+1 || renewed == first {
		t.Error("a leaf within an hour of expiry was not renewed")
	}
}

// TestLeavesFollowClockSteppedBack: a leaf minted while the clock ran
// ahead (a machine that booted with a wrong clock, then synced) is not
// valid yet once the clock steps back: the cache must mint a new one,
// not serve it to every app until the clock catches up with it (up to
// the 23 hours it is kept).
func TestLeavesFollowClockSteppedBack(t *testing.T) {
	l, err := NewLeaves(newTestCA(t), 2)
	if err != nil {
		t.Fatal(err)
	}
	synced := time.Now()
	l.now = func() time.Time { return synced.Add(2 * time.Hour) }
	if _, err := l.Get("api.openai.com"); err != nil {
		t.Fatal(err)
	}
	l.now = func() time.Time { return synced }
	c, err := l.Get("api.openai.com")
	if err != nil {
		t.Fatal(err)
	}
	if synced.Before(c.Leaf.NotBefore) {
		t.Errorf("after the clock stepped back 2h: got a leaf valid from %v, not yet valid at %v", c.Leaf.NotBefore, synced)
	}
}

func BenchmarkMint(b *testing.B) {
	c := newTestCA(b)
	for b.Loop() {
		if _, err := c.Mint("api.openai.com", time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

// TestReissue: a new certificate for the stored key, under the same
// machine name, lets apps that trust the lost one verify what it signs;
// under another name it does not.
func TestReissue(t *testing.T) {
	lost := newTestCA(t)
	stored, err := lost.StoredKey()
	if err != nil {
		t.Fatal(err)
	}
	trusted := x509.NewCertPool()
	trusted.AddCert(lost.Certificate())
	verify := func(c *CA) error {
		leaf, err := c.Mint("api.openai.com", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		_, err = leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "api.openai.com", Roots: trusted})
		return err
	}
	again, err := Reissue(stored, "testhost", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if again.Certificate().Equal(lost.Certificate()) || !again.Certificate().PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(lost.Certificate().PublicKey) {
		t.Error("the reissued certificate is not a new one for the same key")
	}
	if err := verify(again); err != nil {
		t.Errorf("a leaf of the reissued CA does not verify against the lost certificate: %v", err)
	}
	renamed, err := Reissue(stored, "otherhost", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if verify(renamed) == nil {
		t.Error("a leaf of a CA under another name verified against the lost certificate")
	}
	if _, err := Reissue("not base64!", "testhost", time.Now()); err == nil {
		t.Error("Reissue took a key that is not base64")
	}
}

func TestIsTillCA(t *testing.T) {
	c := newTestCA(t)
	if !IsTillCA(c.Certificate()) {
		t.Error("a CA New made is not till's")
	}
	leaf, err := c.Mint("api.openai.com", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if IsTillCA(leaf.Leaf) {
		t.Error("a leaf is taken for till's CA")
	}
	other := *c.Certificate()
	other.Subject.Organization = []string{"Example"}
	if IsTillCA(&other) {
		t.Error("a CA of another organization is taken for till's")
	}
}
