package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/reload"
	"github.com/tillgw/till/vault"
)

// configPath picks the config file: the -c flag, then $TILL_CONFIG, then
// ./till.yaml when it exists. "" means the built-in defaults.
func configPath(flagValue string, e *env) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if p := e.getenv("TILL_CONFIG"); p != "" {
		return p, nil
	}
	switch _, err := os.Stat("till.yaml"); {
	case err == nil:
		return "till.yaml", nil
	case errors.Is(err, fs.ErrNotExist):
		return "", nil
	default:
		return "", fmt.Errorf("till.yaml: %w", err)
	}
}

// configFor loads the config a command acts on (-c, TILL_CONFIG or
// ./till.yaml), or the built-in defaults without one: the vault is then
// ./till.vault.
func configFor(flagPath string, e *env) (*config.Config, error) {
	path, err := configPath(flagPath, e)
	if err != nil {
		return nil, err
	}
	return loadConfig(path, e, nil)
}

// loadConfig reads the config file, or builds the built-in defaults (whose
// routes depend on which secrets the vault holds, hence the has function).
func loadConfig(path string, e *env, has func(string) bool) (*config.Config, error) {
	if path != "" {
		if fi, err := os.Stat(path); err == nil && fi.IsDir() {
			return nil, folderAsConfig(path)
		}
		cfg, err := config.Load(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, withHint(fmt.Errorf("no config file at %s", path), "the path comes from -c, $TILL_CONFIG or, for a running till, the file it started with; `till init` writes a commented example")
		}
		var bad *config.Error
		if errors.As(err, &bad) {
			return nil, withHint(err, "fix the lines above; `till init` writes a commented example")
		}
		if err != nil {
			return nil, err // unreadable: see readHint
		}
		warnings, err := config.CheckFileModes(path, cfg)
		if err != nil {
			return nil, err
		}
		for _, w := range warnings {
			e.warnf("%s", w)
		}
		return cfg, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	if has == nil {
		has = func(string) bool { return false }
	}
	cfg := config.Default(dir, e.getenv("TILL_KEY_FILE"), has)
	if err := config.CheckVaultModes(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// folderAsConfig is the error for a config path that names a folder,
// such as the one till init --dir wrote its till.yaml in.
func folderAsConfig(dir string) error {
	err := fmt.Errorf("%s is a folder, not a config file", dir)
	inside := filepath.Join(dir, "till.yaml")
	if _, statErr := os.Stat(inside); statErr == nil {
		return withHint(err, "name the file: -c "+inside)
	}
	return withHint(err, "-c and $TILL_CONFIG name the config file itself; `till init --dir "+dir+"` writes one there")
}

// openVault opens the config's vault with the key from the environment
// (TILL_PASSPHRASE) or the key file. With create, a missing key file is
// made, but only for a vault that does not exist yet: a new key could never
// open an existing vault.
func openVault(cfg *config.Config, e *env, create bool) (*cliVault, error) {
	if _, err := os.Stat(cfg.Vault.Path); err == nil {
		create = false
	}
	if create {
		if err := folderExists(cfg, "vault", cfg.Vault.Path); err != nil {
			return nil, err
		}
		if e.getenv("TILL_PASSPHRASE") == "" {
			if err := folderExists(cfg, "key", cfg.Vault.KeyFile); err != nil {
				return nil, err
			}
		}
	}
	src := keySource{config: cfg.File, envIgnored: cfg.File != "" && e.getenv("TILL_KEY_FILE") != "", vault: cfg.Vault.Path}
	key, err := vaultKey(e, cfg.Vault.KeyFile, create)
	if err != nil {
		return nil, src.wrap(err)
	}
	v := &cliVault{File: vault.Open(cfg.Vault.Path, key), src: src}
	if e.getenv("TILL_PASSPHRASE") == "" {
		if st, err := os.Stat(cfg.Vault.KeyFile); err == nil && st.Mode().Perm()&0o077 != 0 {
			v.exposed = fmt.Sprintf("the vault key %s is readable by other users (mode %v)", displayPath(cfg.Vault.KeyFile), st.Mode().Perm())
			e.warnf("%s: chmod 600 %s", v.exposed, displayPath(cfg.Vault.KeyFile))
		}
	}
	return v, nil
}

// folderExists checks, before till creates the vault or its key, that the
// folder the config names for it exists. till makes files, never their
// folder: a missing one is most often a path that exists somewhere else,
// such as a sidecar's container path (/var/lib/till) given to till on the
// host, and creating it would put the vault where nothing reads it.
func folderExists(cfg *config.Config, what, path string) error {
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	if err == nil && st.IsDir() {
		return nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("the %s folder %s: %w", what, displayPath(dir), err)
	}
	setting := "vault.path"
	if what == "key" {
		setting = "vault.key_file"
	}
	err = fmt.Errorf("the %s folder %s does not exist; not creating a %s there", what, displayPath(dir), what)
	if filepath.IsAbs(dir) {
		err = withHint(err, "a container's path exists only inside it: run till there (docker compose exec till till ...), or on the host with a config that names the host's folder")
	}
	return withHint(err, "create the folder first, or fix "+setting+" in "+displayPath(configName(cfg)))
}

// cliVault is the vault whose errors carry where its key is set, so that
// the hint for a wrong or missing key names the setting in use.
type cliVault struct {
	*vault.File
	src keySource
	// exposed says why the key may be known to others, "" when not:
	// nothing new is stored under such a key.
	exposed string
}

// Load is vault.File's Load.
func (v *cliVault) Load() (map[string]vault.Secret, error) {
	m, err := v.File.Load()
	return m, v.src.wrap(err)
}

// Update is vault.File's Update.
func (v *cliVault) Update(fn func(map[string]vault.Secret) error) error {
	if v.exposed != "" {
		// Another user may have made it (a key left in a shared
		// folder): whoever reads it reads every secret stored under it.
		return withHint(fmt.Errorf("%s: not storing secrets under a key others can read", v.exposed),
			"chmod 600 the key file; if you did not make it, move it away and let till make a new one")
	}
	return v.src.wrap(v.File.Update(fn))
}

// Remove is vault.File's Remove.
func (v *cliVault) Remove(name string) error { return v.src.wrap(v.File.Remove(name)) }

// vaultKey chooses the vault key: $TILL_PASSPHRASE, when set and not
// empty, wins; otherwise the key file, created when absent if create is set.
func vaultKey(e *env, keyFile string, create bool) (*vault.Key, error) {
	if p := e.getenv("TILL_PASSPHRASE"); p != "" {
		return vault.PassphraseKey(p)
	}
	return vault.LoadKeyFile(keyFile, create)
}

// readSecrets loads the vault's secrets. A vault that does not exist yet is
// empty and needs no key, unless the config names it (vault.path): then
// its absence is a mistake (a typo, a volume not mounted) that an empty
// vault would hide.
func readSecrets(cfg *config.Config, e *env) (map[string]vault.Secret, error) {
	st, err := os.Stat(cfg.Vault.Path)
	if errors.Is(err, fs.ErrNotExist) {
		if dir := filepath.Dir(cfg.Vault.Path); cfg.Vault.PathSet && missing(dir) {
			// A path of another machine's, or of a container's volume.
			return nil, withHint(fmt.Errorf("the vault folder %s does not exist (vault.path in %s)", displayPath(dir), cfg.File),
				"till makes the vault, not its folder: create it (mode 0700), or fix vault.path (a container's paths exist only inside it)")
		}
		if cfg.Vault.PathSet {
			return nil, withHint(fmt.Errorf("the vault file %s does not exist (vault.path in %s)", displayPath(cfg.Vault.Path), cfg.File),
				"till secret set NAME creates it; if the vault is elsewhere, fix vault.path in "+cfg.File)
		}
		return map[string]vault.Secret{}, nil
	}
	if err == nil && st.IsDir() {
		return nil, withHint(fmt.Errorf("the vault %s is a folder", displayPath(cfg.Vault.Path)), "vault.path names the vault file")
	}
	v, err := openVault(cfg, e, false)
	if err != nil {
		return nil, err
	}
	return v.Load()
}

// loadAll reads the config, its price table and the vault's secrets, as
// serve and check use them.
func loadAll(flagPath string, e *env) (*config.Config, map[string]vault.Secret, error) {
	return loadAllSeen(flagPath, e, nil)
}

// loadAllSeen is loadAll that records in seen the state of each file a
// reload reads before it reads it (see reload.Seen).
func loadAllSeen(flagPath string, e *env, seen *reload.Seen) (*config.Config, map[string]vault.Secret, error) {
	path, err := configPath(flagPath, e)
	if err != nil {
		return nil, nil, err
	}
	seen.See(path)
	cfg, err := loadConfig(path, e, nil)
	if err != nil {
		return nil, nil, err
	}
	seen.SeeFilesOf(cfg)
	secrets, err := readSecrets(cfg, e)
	if err != nil {
		return nil, nil, err
	}
	if path == "" {
		cfg, err = loadConfig("", e, func(name string) bool { _, ok := secrets[name]; return ok })
	}
	if err == nil {
		cfg, err = cfg.WithPrices()
	}
	return cfg, secrets, err
}

// displayPath shortens p relative to the working folder for messages.
func displayPath(p string) string {
	// In a container the working folder is often /: every path would lose
	// its leading slash and read as relative.
	if wd, err := os.Getwd(); err == nil && wd != "/" {
		if rel, err := filepath.Rel(wd, p); err == nil && !filepath.IsAbs(rel) && rel != "" && rel[0] != '.' {
			return rel
		}
	}
	return p
}

// missing reports whether nothing is at path.
func missing(path string) bool {
	_, err := os.Stat(path)
	return errors.Is(err, fs.ErrNotExist)
}
