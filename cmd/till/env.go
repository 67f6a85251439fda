package main

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tillgw/till/config"
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
		return withHint(errors.New("forward proxy mode is off"), "set forward.enabled: true in the config")
	}
	if client != "" && !slices.ContainsFunc(cfg.Clients, func(c config.Client) bool { return c.Name == client }) {
		return withHint(usageError{fmt.Sprintf("--client %s: no client of that name in the config", client)},
			"till client list shows the names; till client add "+client+" makes one")
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
	proxyURL := proxyURL(cfg, client, "${TILL_TOKEN}")
	noProxy := "localhost,127.0.0.1,::1"
	vars := [][2]string{
		{"HTTP_PROXY", proxyURL}, {"HTTPS_PROXY", proxyURL},
		{"http_proxy", proxyURL}, {"https_proxy", proxyURL},
		{"NO_PROXY", noProxy}, {"no_proxy", noProxy},
		{"SSL_CERT_FILE", bundle}, {"REQUESTS_CA_BUNDLE", bundle}, {"CURL_CA_BUNDLE", bundle},
		// Node ignores the proxy variables unless told (fetch from 24.0,
		// http and https from 24.5; both from 22.21), and trusts extra
		// CAs from a file of its own.
		{"NODE_USE_ENV_PROXY", "1"}, {"NODE_EXTRA_CA_CERTS", cfg.Forward.CACert},
	}
	for _, kv := range vars {
		if format == "shell" {
			fmt.Fprintf(e.stdout, "export %s=%s\n", kv[0], shellQuote(kv[1]))
		} else {
			fmt.Fprintf(e.stdout, "%s=%s\n", kv[0], dotenvQuote(kv[1]))
		}
	}
	return nil
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

// writeBundle writes the system roots plus till's CA beside the CA
// certificate, for clients that take one bundle (curl, Python, Go). Each
// certificate is written once: after eval "$(till env)", SSL_CERT_FILE
// names this very bundle, and the next run must not add the CA again.
func writeBundle(caCert string, caPEM []byte, e *env) (string, error) {
	path := strings.TrimSuffix(caCert, filepath.Ext(caCert)) + "-bundle.pem"
	var roots []byte
	files := systemRootFiles
	if f := e.getenv("SSL_CERT_FILE"); f != "" {
		files = []string{f}
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
	for _, data := range [][]byte{roots, caPEM} {
		for {
			var b *pem.Block
			if b, data = pem.Decode(data); b == nil {
				break
			}
			if b.Type != "CERTIFICATE" || seen[string(b.Bytes)] {
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

func shellQuote(s string) string {
	if strings.Contains(s, "${TILL_TOKEN}") {
		// Double quotes, so the shell fills in the token.
		return `"` + s + `"`
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func dotenvQuote(s string) string {
	if strings.ContainsAny(s, " #\"'$") {
		return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"`
	}
	return s
}
