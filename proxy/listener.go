package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"slices"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy/ca"
)

// ListenerTLS configures TLS for till's own listener (shared-gateway
// mode), with certificates managed by certmagic: issued by till's CA for
// internal names, or by an ACME CA.
type ListenerTLS struct {
	// Names are the names the certificates are for (tls.names).
	Names []string
	// ACME, when set, gets the certificates from an ACME CA; otherwise
	// Authority signs them.
	ACME *config.ACME
	// Authority is till's CA: it signs internal certificates, and client
	// certificates are verified against it. May be nil with ACME and no
	// client certificates.
	Authority *ca.CA
	// Storage is the folder where certmagic keeps certificates and keys.
	Storage string
	// ChallengePort is where the TLS-ALPN-01 challenge is answered: the
	// listener's own port, served by the returned config.
	ChallengePort int
	// Log receives certmagic's log: issuance, renewal and ACME errors
	// (see NewZapLogger). Nil discards it.
	Log *zap.Logger
}

// caIssuer lets certmagic obtain certificates from till's CA.
type caIssuer struct{ ca *ca.CA }

func (i caIssuer) Issue(_ context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	pem, err := i.ca.SignServer(csr, time.Now())
	if err != nil {
		return nil, err
	}
	return &certmagic.IssuedCertificate{Certificate: pem}, nil
}

func (i caIssuer) IssuerKey() string {
	return "till-ca-" + i.ca.Certificate().SerialNumber.Text(16)
}

// Config returns the TLS config for the listener and a function that
// obtains (or loads) the certificates, which blocks until they are ready;
// call it once the listener serves the config, so that an ACME CA's
// TLS-ALPN-01 challenge can be answered.
func (l ListenerTLS) Config() (*tls.Config, func(context.Context) error) {
	log := l.Log
	if log == nil {
		log = zap.NewNop()
	}
	var cfg *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return cfg, nil },
		Logger:           log,
	})
	cfg = certmagic.New(cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: l.Storage},
		Logger:  log,
	})
	if l.ACME != nil {
		cfg.Issuers = []certmagic.Issuer{certmagic.NewACMEIssuer(cfg, certmagic.ACMEIssuer{
			CA:                   l.ACME.CA,
			Email:                l.ACME.Email,
			Agreed:               true,
			DisableHTTPChallenge: true,
			AltTLSALPNPort:       l.ChallengePort,
			Logger:               log,
		})}
	} else {
		cfg.Issuers = []certmagic.Issuer{caIssuer{l.Authority}}
	}
	tc := cfg.TLSConfig()
	tc.MinVersion = tls.VersionTLS12
	tc.NextProtos = append([]string{"h2", "http/1.1"}, tc.NextProtos...)
	if l.ACME == nil {
		// No ACME CA asks a challenge of till's own certificates: a
		// client offering acme-tls/1 is a probe, which certmagic would
		// log as an error each time.
		tc.NextProtos = slices.DeleteFunc(tc.NextProtos, func(p string) bool { return p == "acme-tls/1" })
	}
	if l.Authority != nil {
		// Client certificates are optional at the handshake; a client
		// whose config says cert: true is refused without one.
		tc.ClientAuth = tls.VerifyClientCertIfGiven
		tc.ClientCAs = x509.NewCertPool()
		tc.ClientCAs.AddCert(l.Authority.Certificate())
	}
	return tc, func(ctx context.Context) error { return cfg.ManageSync(ctx, l.Names) }
}
