package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/internal/atomicfile"
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
// goes to forward.ca_cert (0644), its private key into the vault. When the
// vault holds the key already and the certificate file is gone, it writes
// a new certificate for that key.
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
	certPath := cfg.Forward.CACert
	if _, err := os.Lstat(certPath); err == nil && !cutShort(certPath) {
		return caExists(cfg, e, certPath)
	}
	made := missing(cfg.Vault.Path)
	v, err := openVault(cfg, e, true)
	if err != nil {
		return err
	}
	secrets, err := v.Load()
	if err != nil {
		return err
	}
	now := time.Now()
	if held, ok := secrets[config.CASecret]; ok {
		// The certificate was lost, the key was not: a new certificate
		// for it keeps what apps trust working.
		stored, _ := held.Value()
		authority, err := ca.Reissue(stored, machine, now)
		if err != nil {
			return err
		}
		if err := writeCACert(certPath, authority.CertPEM()); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "the vault holds the CA key %q: wrote a new certificate for it to %s\n", config.CASecret, displayPath(certPath))
		fmt.Fprintf(e.stdout, "apps that trust the lost certificate keep working if it was named %q too\n", authority.Certificate().Subject.CommonName)
		return nil
	}
	authority, err := ca.New(machine, now)
	if err != nil {
		return err
	}
	stored, err := authority.StoredKey()
	if err != nil {
		return err
	}
	// The key is stored first: a till ca init cut short after it finds
	// the key and writes its certificate (above), where a certificate
	// left without its key would stop every later one.
	err = v.Update(func(m map[string]vault.Secret) error {
		if _, ok := m[config.CASecret]; ok {
			return fmt.Errorf("another till ca init stored a CA key (%q) meanwhile", config.CASecret)
		}
		m[config.CASecret] = vault.NewSecret(config.CASecret, stored, now)
		return nil
	})
	if err != nil {
		return err
	}
	if err := writeCACert(certPath, authority.CertPEM()); err != nil {
		return err
	}
	if made {
		reportNewVault(e, cfg)
	}
	fmt.Fprintf(e.stdout, "created the interception CA %q\n", authority.Certificate().Subject.CommonName)
	fmt.Fprintf(e.stdout, "certificate: %s (give it to apps: till env prints the variables)\n", displayPath(certPath))
	fmt.Fprintf(e.stdout, "private key: in the vault as %q\n", config.CASecret)
	return nil
}

// caExists is ca init's refusal when forward.ca_cert exists: the CA is
// there already, or its certificate outlived its key (a vault replaced
// or restored without it), which serve and check refuse, and which a new
// key under the same certificate cannot mend.
func caExists(cfg *config.Config, e *env, certPath string) error {
	if secrets, err := readSecrets(cfg, e); err == nil {
		if _, ok := secrets[config.CASecret]; !ok {
			return withHint(fmt.Errorf("%s exists, but the vault holds no CA key (%q) for it", displayPath(certPath), config.CASecret),
				lostCAKeyHint(certPath))
		}
	}
	return withHint(fmt.Errorf("%s already exists: this installation has its CA", displayPath(certPath)),
		"till ca export prints it; apps that trust it would break if it changed")
}

// lostCAKeyHint says what to do when the vault lacks the key of the CA
// certificate at certPath.
func lostCAKeyHint(certPath string) string {
	return "restore the vault that holds it; or, for a new CA, move " + displayPath(certPath) +
		" away, run till ca init, and give apps the new certificate (till env)"
}

// writeCACert writes a new CA certificate file (mode 0644), on disk
// before ca init says it is done, refusing to replace one unless it is
// cut short.
func writeCACert(path string, certPEM []byte) error {
	if cutShort(path) {
		os.Remove(path)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return withHint(fmt.Errorf("%s already exists: this installation has its CA", displayPath(path)),
			"till ca export prints it; apps that trust it would break if it changed")
	}
	if err != nil {
		return err
	}
	_, werr := f.Write(certPEM)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(path)
		return werr
	}
	atomicfile.SyncDir(filepath.Dir(path))
	return nil
}

// cutShort reports whether the CA certificate file at path is a regular
// file of no bytes: all that a ca init killed, or a power loss, leaves of
// a certificate not yet on disk. No app trusts it; ca init writes the
// certificate there again.
func cutShort(path string) bool {
	st, err := os.Lstat(path)
	return err == nil && st.Mode().IsRegular() && st.Size() == 0
}

// certError adds to err, about the CA certificate at path, how to mend
// a certificate cut short.
func certError(path string, err error) error {
	if cutShort(path) {
		return withHint(err, "it is empty, as a till ca init cut short leaves it: till ca init writes it again")
	}
	return err
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

// readCACert reads the CA certificate file as serve does (readCAFile),
// and checks it.
func readCACert(path string) ([]byte, error) {
	b, err := readCAFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, withHint(fmt.Errorf("no CA certificate at %s", displayPath(path)), "create one with: till ca init")
	}
	if err != nil {
		return nil, err
	}
	if _, err := ca.ParseCert(b); err != nil {
		return nil, certError(path, fmt.Errorf("%s: %w", displayPath(path), err))
	}
	return b, nil
}
