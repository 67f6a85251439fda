package proxy

import (
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/tillgw/till/config"
)

// TestUpstreamFailureHint: the log line of an upstream till could not
// reach says how to mend the usual causes. A new user behind a
// TLS-inspecting proxy, or testing against a local TLS server, saw only
// "x509: certificate signed by unknown authority" and the app a 502, with
// nothing saying that till reads SSL_CERT_FILE and SSL_CERT_DIR (it has no
// switch to skip verification); a host that does not resolve said nothing
// of till dialling upstreams itself, never through HTTP(S)_PROXY.
func TestUpstreamFailureHint(t *testing.T) {
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	up.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake till ends
	up.StartTLS()
	defer up.Close()
	yaml := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: \"" + up.URL + "\"}\n"
	cfg, err := config.Parse("till.yaml", []byte(yaml), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	// The system roots, which do not hold httptest's CA.
	gw := New(NewSnapshot(cfg, secrets(time.Now())), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.New(&logs)})
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/openai/v1/models", nil))
	if s := logs.String(); w.Code != http.StatusBadGateway || !strings.Contains(s, "upstream request failed") {
		t.Fatalf("got %d, log %s; the test needs the upstream's failure logged", w.Code, s)
	}
	if s := logs.String(); !strings.Contains(s, `"hint":"`) || !strings.Contains(s, "SSL_CERT_FILE") {
		t.Errorf("the log of an untrusted upstream certificate has no hint naming SSL_CERT_FILE:\n%s", s)
	}

	tests := []struct {
		name string
		err  error
		want string
	}{
		{"unknown CA", &net.OpError{Op: "remote error", Err: x509.UnknownAuthorityError{}}, "SSL_CERT_FILE"},
		{"other name", x509.HostnameError{Host: "api.example.com", Certificate: &x509.Certificate{}}, "does not name"},
		{"expired", x509.CertificateInvalidError{Reason: x509.Expired}, "clock"},
		{"no such host", &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "api.example.com", IsNotFound: true}}, "HTTP(S)_PROXY"},
		{"refused", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := upstreamHint(tt.err)
			if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
				t.Errorf("got %q, want a hint with %q", got, tt.want)
			}
		})
	}
}
