package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"slices"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

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
	// Storage is the folder where certmagic keeps the ACME account and
	// the certificates and keys an ACME CA issued. Certificates from till's
	// CA are kept in memory (memStorage): nothing is written.
	Storage string
	// ChallengePort is where the TLS-ALPN-01 challenge is answered: the
	// listener's own port, served by the returned config.
	ChallengePort int
	// Log receives certmagic's log: issuance, renewal and ACME errors
	// (see NewZapLogger). Nil discards it.
	Log *zap.Logger
	// HTTP1First has the listener choose HTTP/1.1 over HTTP/2 for a
	// client that offers both (ALPN): set when it is a forward proxy.
	// Go's Transport offers a proxy the protocols it offers hosts (h2
	// too, with ForceAttemptHTTP2, as http.DefaultTransport has it), then
	// writes its CONNECT in HTTP/1.1 whichever was chosen: over HTTP/2
	// that reads as a broken preface, and the connection is closed. A
	// client that offers h2 alone still gets it.
	HTTP1First bool
}

// alpnChallengeFailed is the message of certmagic's entry for a client
// hello that offers only acme-tls/1 with a name no challenge is pending
// for (handshake.go: GetCertificateWithContext).
const alpnChallengeFailed = "tls-alpn challenge"

// probeCore logs certmagic's alpnChallengeFailed entries at debug, as
// failed handshakes are (reference.md): any client that reaches the
// listener can send such a hello, no token asked, and certmagic logs each
// at error, so anyone could fill the operator's error log and alerts at
// handshake rate. No real failure is hidden: a challenge the ACME CA could
// not complete is logged at error by the obtain or renewal that asked for
// it, and a challenge certmagic answers is logged at info.
type probeCore struct{ zapcore.Core }

// quietProbes returns log with probeCore over its core.
func quietProbes(log *zap.Logger) *zap.Logger {
	return log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return probeCore{c} }))
}

func (c probeCore) With(fields []zapcore.Field) zapcore.Core { return probeCore{c.Core.With(fields)} }

func (c probeCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if e.Message == alpnChallengeFailed && e.Level > zapcore.DebugLevel {
		e.Level = zapcore.DebugLevel
	}
	return c.Core.Check(e, ce)
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
	log = quietProbes(log)
	var cfg *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return cfg, nil },
		Logger:           log,
	})
	var storage certmagic.Storage = newMemStorage()
	if l.ACME != nil {
		// An ACME CA limits how often it issues: what it issued must
		// outlive a restart.
		storage = &certmagic.FileStorage{Path: l.Storage}
	}
	cfg = certmagic.New(cache, certmagic.Config{
		Storage: storage,
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
	protos := []string{"h2", "http/1.1"}
	if l.HTTP1First {
		protos = []string{"http/1.1", "h2"} // the server's order decides
	}
	tc.NextProtos = append(protos, tc.NextProtos...)
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
