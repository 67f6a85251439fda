// Package ca is till's own certificate authority: created once per
// installation by `till ca init`, it signs the leaf certificates that TLS
// interception presents to apps. Its private key lives in the vault.
package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// ErrKeyMismatch is Load's error for a key that belongs to another CA.
var ErrKeyMismatch = errors.New("the CA key in the vault does not match the CA certificate")

// Validity periods.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 24 * time.Hour
	// backdate covers clients whose clock runs a little behind.
	backdate = 5 * time.Minute
)

// CA signs leaf certificates. It has no String method: nothing prints its key.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey
}

// New creates an ECDSA P-256 CA whose name says till and the machine, so a
// user who finds it in a trust store knows where it came from.
func New(machine string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return issue(key, machine, now)
}

// Reissue makes a new certificate for the CA key stored in the vault (see
// StoredKey), for a certificate file that was lost. Apps that trust the
// lost certificate keep trusting what the CA signs when machine is the
// name it had: the key and the name are what a chain is checked against.
func Reissue(storedKey, machine string, now time.Time) (*CA, error) {
	key, err := parseStoredKey(storedKey)
	if err != nil {
		return nil, err
	}
	return issue(key, machine, now)
}

// namePrefix starts the common name of every CA that New and Reissue make.
const namePrefix = "till interception CA ("

// IsTillCA reports whether c is named as New and Reissue name a CA: one
// of till's, of this installation or another.
func IsTillCA(c *x509.Certificate) bool {
	return c.IsCA && strings.HasPrefix(c.Subject.CommonName, namePrefix) && slices.Equal(c.Subject.Organization, []string{"till"})
}

func issue(key *ecdsa.PrivateKey, machine string, now time.Time) (*CA, error) {
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: namePrefix + machine + ")", Organization: []string{"till"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}, nil
}

// ParseCert parses a PEM CA certificate.
func ParseCert(certPEM []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("the CA certificate is not a PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse the CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("the CA certificate is not a CA")
	}
	return cert, nil
}

// Load rebuilds a CA from its certificate (PEM) and its key as stored in
// the vault, and checks that they belong together.
func Load(certPEM []byte, storedKey string) (*CA, error) {
	cert, err := ParseCert(certPEM)
	if err != nil {
		return nil, err
	}
	key, err := parseStoredKey(storedKey)
	if err != nil {
		return nil, err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, ErrKeyMismatch
	}
	return &CA{cert: cert, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), key: key}, nil
}

// parseStoredKey parses the CA key as the vault keeps it.
func parseStoredKey(storedKey string) (*ecdsa.PrivateKey, error) {
	der, err := base64.StdEncoding.DecodeString(storedKey)
	if err != nil {
		return nil, errors.New("the CA key in the vault is not base64")
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, errors.New("the CA key in the vault is not a PKCS #8 key")
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("the CA key in the vault is not an ECDSA key")
	}
	return key, nil
}

// CertPEM is the CA certificate, for apps to trust.
func (c *CA) CertPEM() []byte { return c.certPEM }

// Certificate is the parsed CA certificate.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// StoredKey is the CA's private key in the form the vault keeps it (base64
// PKCS #8, one line). Only `till ca init` calls it, to store the key.
func (c *CA) StoredKey() (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(c.key)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(der), nil
}

// Mint signs a fresh ECDSA P-256 leaf certificate for host (a DNS name or
// an IP address), valid for 24 hours.
func (c *CA) Mint(host string, now time.Time) (*tls.Certificate, error) {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "" {
		return nil, errors.New("no host to mint a certificate for")
	}
	if err := leafName(host); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: host, Organization: []string{"till"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// leafName refuses a name no leaf may carry: one that is neither an IP
// address nor a DNS name of letters, digits, '-' and '_', in labels of
// 1 to 63 bytes and 253 in all. A '*' would make the leaf a wildcard,
// good for every name under it.
func leafName(host string) error {
	if net.ParseIP(host) != nil {
		return nil
	}
	bad := len(host) > 253
	for label := range strings.SplitSeq(host, ".") {
		bad = bad || len(label) == 0 || len(label) > 63 || strings.ContainsFunc(label, func(c rune) bool {
			return !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_')
		})
	}
	if bad {
		return errors.New("no certificate for a name that is not a DNS name or an IP address")
	}
	return nil
}

func randomSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)) // crypto/rand does not fail
	return n.Add(n, big.NewInt(1))
}

// serverValidity is how long a certificate for till's own listener lives;
// certmagic renews it well before.
const serverValidity = 7 * 24 * time.Hour

// clientValidity is how long a client certificate lives.
const clientValidity = 365 * 24 * time.Hour

// SignServer signs a server certificate for the names in csr (till's own
// listener, through certmagic), valid for 7 days.
func (c *CA) SignServer(csr *x509.CertificateRequest, now time.Time) ([]byte, error) {
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{Organization: []string{"till"}},
		DNSNames:     csr.DNSNames,
		IPAddresses:  csr.IPAddresses,
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(serverValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if len(csr.DNSNames) > 0 {
		tmpl.Subject.CommonName = csr.DNSNames[0]
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, csr.PublicKey, c.key)
	if err != nil {
		return nil, err
	}
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), c.certPEM...), nil
}

// SignClient creates a key and a client certificate whose common name is
// the client's name and which carries uri (binding it to the client's
// token), valid for a year. It returns both in PEM.
func (c *CA) SignClient(name string, uri *url.URL, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"till client"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(clientValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{uri},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}
