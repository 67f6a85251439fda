package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy/ca"
	"github.com/tillgw/till/vault"
)

func runCA(args []string, e *env) error {
	if len(args) == 0 {
		return usageError{"usage: till ca init|export [-c FILE]"}
	}
	switch args[0] {
	case "init":
		return runCAInit(args[1:], e)
	case "export":
		return runCAExport(args[1:], e)
	}
	// The command is not echoed: it could be a key pasted in the wrong place.
	return unknownSubcommand("ca", args[0])
}

// runCAInit creates this installation's interception CA: its certificate
// goes to forward.ca_cert (0644), its private key into the vault.
func runCAInit(args []string, e *env) error {
	var cfgPath string
	flags := newFlags("ca init", e.stderr, &cfgPath)
	pos, err := parseInterleaved(flags, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, "till ca init [-c FILE]"); err != nil {
		return err
	}
	cfg, err := configFor(cfgPath, e)
	if err != nil {
		return err
	}
	machine, _ := os.Hostname()
	if machine == "" {
		machine = "unknown host"
	}
	now := time.Now()
	authority, err := ca.New(machine, now)
	if err != nil {
		return err
	}
	stored, err := authority.StoredKey()
	if err != nil {
		return err
	}
	certPath := cfg.Forward.CACert
	f, err := os.OpenFile(certPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return withHint(fmt.Errorf("%s already exists: this installation has its CA", displayPath(certPath)),
			"till ca export prints it; apps that trust it would break if it changed")
	}
	if err != nil {
		return err
	}
	_, werr := f.Write(authority.CertPEM())
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(certPath)
		return werr
	}
	v, err := openVault(cfg, e, true)
	if err == nil {
		err = v.Update(func(m map[string]vault.Secret) error {
			if _, ok := m[config.CASecret]; ok {
				return fmt.Errorf("the vault already holds a CA key (%q) for another certificate", config.CASecret)
			}
			m[config.CASecret] = vault.NewSecret(config.CASecret, stored, now)
			return nil
		})
	}
	if err != nil {
		os.Remove(certPath)
		return err
	}
	fmt.Fprintf(e.stdout, "created the interception CA %q\n", authority.Certificate().Subject.CommonName)
	fmt.Fprintf(e.stdout, "certificate: %s (give it to apps: till env prints the variables)\n", displayPath(certPath))
	fmt.Fprintf(e.stdout, "private key: in the vault as %q\n", config.CASecret)
	return nil
}

func runCAExport(args []string, e *env) error {
	var cfgPath string
	fs := newFlags("ca export", e.stderr, &cfgPath)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, "till ca export [-c FILE]"); err != nil {
		return err
	}
	cfg, err := configFor(cfgPath, e)
	if err != nil {
		return err
	}
	pem, err := readCACert(cfg.Forward.CACert)
	if err != nil {
		return err
	}
	_, err = e.stdout.Write(pem)
	return err
}

// readCACert reads and checks the CA certificate file.
func readCACert(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, withHint(fmt.Errorf("no CA certificate at %s", displayPath(path)), "create one with: till ca init")
	}
	if err != nil {
		return nil, err
	}
	if _, err := ca.ParseCert(b); err != nil {
		return nil, fmt.Errorf("%s: %w", displayPath(path), err)
	}
	return b, nil
}
