package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"unicode/utf8"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

func runInit(args []string, e *env) error {
	var cfgPath, dir string
	flags := newFlags("init", e.stderr, &cfgPath)
	// init writes a config, at -c or in --dir: a $TILL_CONFIG that names
	// the config to read (a container's read-only one) is not where.
	flags.Lookup("c").Usage = "config `file` to write (default DIR/till.yaml; $TILL_CONFIG is not read)"
	flags.StringVar(&dir, "dir", ".", "`folder` to write till.yaml in")
	pos, err := parseInterleaved(flags, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, "till init [-c FILE] [--dir DIR]"); err != nil {
		return err
	}
	path := cfgPath
	if path == "" {
		path = filepath.Join(dir, "till.yaml")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil { // it holds the vault and its key
		return err
	}
	data := config.StarterConfig()
	if keyFile := e.getenv("TILL_KEY_FILE"); keyFile != "" {
		if data, err = withKeyFile(data, keyFile); err != nil {
			return err
		}
	}
	cfg, err := config.Parse(path, data, filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("the starter config does not parse (a bug in till): %w", err)
	}
	// The vault comes first: a config written beside a vault that could
	// not be made (its key's folder missing) would make the next init,
	// once that is mended, refuse to overwrite it.
	if _, err := os.Lstat(path); err == nil {
		return errConfigExists(path)
	}
	if err := config.CheckVaultModes(cfg); err != nil {
		return err
	}
	made, err := initVault(cfg, e)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return errConfigExists(path)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s\n", path)
	if made {
		reportNewVault(e, cfg)
	}
	fmt.Fprintf(e.stdout, "next: printf %%s \"$OPENAI_API_KEY\" | till secret set openai -c %s\n", path)
	fmt.Fprintf(e.stdout, "      then put a route in %s (routes: [{name: openai, preset: openai}]) and run: till check -c %s && till serve -c %s\n", path, path, path)
	return nil
}

// reportNewVault says that cfg's vault was just made and, unless a
// passphrase keys it, where its key file is: the vault cannot be read
// without it, so it wants a backup kept apart from the vault.
func reportNewVault(e *env, cfg *config.Config) {
	fmt.Fprintf(e.stdout, "created %s (encrypted)\n", displayPath(cfg.Vault.Path))
	if e.getenv("TILL_PASSPHRASE") == "" {
		fmt.Fprintf(e.stdout, "its key is %s (mode 0600): leave it there, and back it up apart from the vault\n", displayPath(cfg.Vault.KeyFile))
	}
}

// errConfigExists refuses to write a config over the one at path.
func errConfigExists(path string) error {
	return withHint(fmt.Errorf("%s already exists; not overwriting it", path), "edit it, or pass --dir to write a new one elsewhere")
}

// initVault creates cfg's vault, and its key, when there is none yet,
// and reports whether it did.
func initVault(cfg *config.Config, e *env) (bool, error) {
	if _, err := os.Stat(cfg.Vault.Path); !errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	v, err := openVault(cfg, e, true)
	if err != nil {
		return false, err
	}
	return true, v.Update(func(map[string]vault.Secret) error { return nil })
}

// starterKeyFile is the starter config's vault.key_file setting.
const starterKeyFile = "key_file: till.key"

// withKeyFile makes the starter config data name keyFile ($TILL_KEY_FILE)
// as its vault.key_file: naming till.key, it would win over the variable
// from then on, and the vault made with the variable's key would not open.
func withKeyFile(data []byte, keyFile string) ([]byte, error) {
	abs, err := filepath.Abs(keyFile)
	if err != nil {
		return nil, fmt.Errorf("TILL_KEY_FILE: %w", err)
	}
	if !utf8.ValidString(abs) {
		// A YAML file holds Unicode text only.
		return nil, withHint(errors.New("TILL_KEY_FILE is not UTF-8: a config file cannot name it"), "rename the key file, or unset TILL_KEY_FILE for a key beside the config")
	}
	quoted, _ := json.Marshal(abs) // a JSON string is a YAML one
	if !bytes.Contains(data, []byte(starterKeyFile)) {
		return nil, errors.New("the starter config names no key file (a bug in till)")
	}
	return bytes.Replace(data, []byte(starterKeyFile), append([]byte("key_file: "), quoted...), 1), nil
}
