package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy/ca"
)

// systemRootFiles are where Linux distributions keep their trusted roots,
// as Go's crypto/x509 looks for them.
var systemRootFiles = []string{
	"/etc/ssl/certs/ca-certificates.crt",
	"/etc/pki/tls/certs/ca-bundle.crt",
	"/etc/ssl/ca-bundle.pem",
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
	"/etc/ssl/cert.pem",
}

// runEnv prints the environment an app needs to use till as its proxy, and
// writes the CA bundle those lines point to.
func runEnv(args []string, e *env) error {
	var cfgPath, client, format string
	flags := newFlags("env", e.stderr, &cfgPath)
	flags.StringVar(&client, "client", "", "client `name` whose token goes in the proxy URL (as $TILL_TOKEN)")
	flags.StringVar(&format, "format", "shell", "output `format`: shell or dotenv")
	pos, err := parseInterleaved(flags, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, "till env [--client NAME] [--format shell|dotenv]"); err != nil {
		return err
	}
	if format != "shell" && format != "dotenv" {
		return usageError{"--format: want shell or dotenv"}
	}
	if client != "" {
		if err := clientNameArg(client, "--client"); err != nil {
			return err
		}
	}
	cfg, err := configFor(cfgPath, e)
	if err != nil {
		return err
	}
	if !cfg.Forward.Enabled {
		return withHint(errors.New("forward proxy mode is off"), setIn(cfg, "forward.enabled: true", " (and run till ca init once, for its CA)"))
	}
	if client != "" {
		if err := knownClient(cfg, client); err != nil {
			return err
		}
	}
	caPEM, err := readCACert(cfg.Forward.CACert)
	if err != nil {
		return err
	}
	bundle, err := writeBundle(cfg.Forward.CACert, caPEM, e)
	if err != nil {
		return err
	}

	// The token is not stored anywhere till can read it: the app
	// supplies it as TILL_TOKEN.
	if client != "" && e.getenv("TILL_TOKEN") == "" {
		fmt.Fprintf(e.stderr, "till: warning: TILL_TOKEN is not set here; the proxy URL reads %s's token from it where these lines are used: export TILL_TOKEN first, or till answers 407\n", client)
	}
	// The proxy URL is the only value with the token in it: its parts
	// around the token are quoted as text, as every other value is, so
	// that nothing of a folder's name or the config is read as code.
	proxy := envValue(proxyURL(cfg, client, tokenMark))
	noProxy := envValue(strings.Join(ownHosts(cfg), ","))
	vars := []struct {
		name  string
		value envValue
	}{
		{"HTTP_PROXY", proxy}, {"HTTPS_PROXY", proxy},
		{"http_proxy", proxy}, {"https_proxy", proxy},
		{"NO_PROXY", noProxy}, {"no_proxy", noProxy},
		{"SSL_CERT_FILE", envValue(bundle)}, {"REQUESTS_CA_BUNDLE", envValue(bundle)}, {"CURL_CA_BUNDLE", envValue(bundle)},
		// Node ignores the proxy variables unless told (fetch from 24.0,
		// http and https from 24.5; both from 22.21), and trusts extra
		// CAs from a file of its own.
		{"NODE_USE_ENV_PROXY", "1"}, {"NODE_EXTRA_CA_CERTS", envValue(cfg.Forward.CACert)},
	}
	var out strings.Builder
	for _, v := range vars {
		if format == "shell" {
			fmt.Fprintf(&out, "export %s=%s\n", v.name, v.value.shell())
			continue
		}
		q, err := v.value.dotenv()
		if err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		fmt.Fprintf(&out, "%s=%s\n", v.name, q)
	}
	_, err = io.WriteString(e.stdout, out.String())
	return err
}

// tokenMark stands for the client's token in an envValue: a NUL, which no
// path or address that till prints holds.
const tokenMark = "\x00"

// envValue is a value till env prints; tokenMark in it stands for
// ${TILL_TOKEN}, which the shell or the .env loader fills in.
type envValue string

// shell quotes v for a POSIX shell: in double quotes, the token as
// ${TILL_TOKEN}, when its text holds nothing a shell reads there; else
// its text in single quotes, the token as "${TILL_TOKEN}".
func (v envValue) shell() string {
	text := strings.ReplaceAll(string(v), tokenMark, "")
	if strings.Contains(string(v), tokenMark) && !strings.ContainsAny(text, "$\"\\`!") {
		return `"` + strings.ReplaceAll(string(v), tokenMark, "${TILL_TOKEN}") + `"`
	}
	parts := strings.Split(string(v), tokenMark)
	for i, p := range parts {
		parts[i] = "'" + strings.ReplaceAll(p, "'", `'\''`) + "'"
	}
	return strings.Join(parts, `"${TILL_TOKEN}"`)
}

// dotenv quotes v for an .env file, whose loaders (python-dotenv, Node's
// dotenv, Docker Compose) agree on little: double quotes around a value
// with the token, for them to fill it in, and single quotes around other
// text that needs quoting. A value that no form carries unchanged to
// every loader is an error, not a line that could mean something else.
func (v envValue) dotenv() (string, error) {
	text := strings.ReplaceAll(string(v), tokenMark, "")
	unsafe := fmt.Errorf("%q holds a character an .env loader reads as quoting, a variable or a line break (use --format shell)", text)
	switch {
	case strings.ContainsAny(text, "\n\r"):
		return "", unsafe
	case strings.Contains(string(v), tokenMark):
		if strings.ContainsAny(text, "$\"\\`'") {
			return "", unsafe
		}
		return `"` + strings.ReplaceAll(string(v), tokenMark, "${TILL_TOKEN}") + `"`, nil
	case !strings.ContainsAny(text, " #\"'$\\`"):
		return text, nil
	case !strings.Contains(text, "'"):
		return "'" + text + "'", nil
	}
	return "", unsafe
}

// isTillCA reports whether der is a CA certificate of till's.
func isTillCA(der []byte) bool {
	c, err := x509.ParseCertificate(der)
	return err == nil && ca.IsTillCA(c)
}

// clientAddr turns a listen address into one a client can dial.
func clientAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// ownHosts are the hosts an app may reach till itself at, for NO_PROXY:
// a base-URL call sent to till as a proxy is refused (till is no route's
// upstream), so it must go to till directly. They are loopback, the
// listen host (each address of this machine's, and its name, when till
// listens on every one), tls.names and server_names. Hosts, not
// host:port: curl reads no port in NO_PROXY. An upstream on one of them
// is reached directly too, as one on loopback always was.
func ownHosts(cfg *config.Config) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	host, _, err := net.SplitHostPort(cfg.Listen)
	switch ip := net.ParseIP(host); {
	case err != nil:
	case host == "" || ip != nil && ip.IsUnspecified():
		hosts = append(hosts, machineHosts()...)
	default:
		hosts = append(hosts, host)
	}
	hosts = append(append(hosts, cfg.TLS.Names...), cfg.ServerNames...)
	seen := map[string]bool{}
	return slices.DeleteFunc(hosts, func(h string) bool {
		h = strings.ToLower(h)
		dup := seen[h]
		seen[h] = true
		return dup
	})
}

// machineHosts are this machine's name and its addresses off loopback
// (but link-local ones, which a URL names only with a zone): what a till
// that listens on every address answers at.
func machineHosts() []string {
	var hosts []string
	if name, err := os.Hostname(); err == nil && name != "" && !strings.ContainsFunc(name, notHostChar) {
		hosts = append(hosts, name)
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			hosts = append(hosts, n.IP.String())
		}
	}
	return hosts
}

// notHostChar reports a character no DNS name holds (a machine's name
// may hold any).
func notHostChar(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.')
}

// writeBundle writes the system roots plus till's CA beside the CA
// certificate, for clients that take one bundle (curl, Python, Go). Each
// certificate is written once: after eval "$(till env)", SSL_CERT_FILE
// names this very bundle, and the next run must not add the CA again.
// Nor does a bundle keep a CA of till's that $SSL_CERT_FILE holds: that
// file is most often the bundle of an earlier till env, of another config
// or of a CA since replaced, and its CA is not this one.
func writeBundle(caCert string, caPEM []byte, e *env) (string, error) {
	path := strings.TrimSuffix(caCert, filepath.Ext(caCert)) + "-bundle.pem"
	var roots []byte
	files := systemRootFiles
	fromEnv := e.getenv("SSL_CERT_FILE")
	if fromEnv != "" {
		files = []string{fromEnv}
	}
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			roots = b
			break
		}
	}
	if roots == nil {
		fmt.Fprintln(e.stderr, "till: warning: no system CA bundle found: the bundle holds till's CA alone")
	}
	var buf bytes.Buffer
	seen := map[string]bool{}
	for i, data := range [][]byte{roots, caPEM} {
		earlier := i == 0 && fromEnv != "" // the roots of an earlier till env, most often
		for {
			var b *pem.Block
			if b, data = pem.Decode(data); b == nil {
				break
			}
			if b.Type != "CERTIFICATE" || seen[string(b.Bytes)] || earlier && isTillCA(b.Bytes) {
				continue
			}
			seen[string(b.Bytes)] = true
			if err := pem.Encode(&buf, b); err != nil {
				return "", err
			}
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".till-bundle-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	return path, os.Rename(tmp.Name(), path)
}
