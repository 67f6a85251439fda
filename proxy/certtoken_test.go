package proxy

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/tillgw/till/config"
)

// TestKnownTokenBesideStaleCertificateIsRecorded: DESIGN.md says "A route
// without clients: needs no token; a known token is still recorded as the
// client", and a client outside its cidrs gets 403 client_forbidden. A
// client certificate that no longer counts (its client is cert: false, or
// it was rotated away) presented beside a valid token must not make till
// forget that token: the request would be recorded, rated and budgeted as
// anonymous, and escape the client's cidrs.
func TestKnownTokenBesideStaleCertificateIsRecorded(t *testing.T) {
	tok := TokenPrefix + strings.Repeat("a", TokenLength)
	sum := sha256.Sum256([]byte(tok))
	digest := hex.EncodeToString(sum[:])
	cfg, err := config.Parse("till.yaml", []byte(`version: 1
tls: {names: [till.test]}
clients:
  - name: plain
    token_sha256: `+digest+`
    cidrs: [10.0.0.0/8]
routes: []
`), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := NewSnapshot(cfg, nil)
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("X-Till-Token", tok)
	u, _ := url.Parse(CertURI("plain", digest)) // issued while plain had cert: true
	c := &x509.Certificate{Subject: pkix.Name{CommonName: "plain"}, URIs: []*url.URL{u}}
	r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c}}}
	id := s.clients.identify(r, "", certID{}, nil)
	if id.name() != "plain" {
		t.Errorf("the known token of plain beside a stale certificate: recorded as %q, want plain", id.name())
	}
	if _, ok := id.admit("127.0.0.1:1", nil); ok {
		t.Errorf("plain's token from outside its cidrs, beside a stale certificate: admitted on an open route, want 403 client_forbidden")
	}
}
