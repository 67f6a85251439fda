package main

import (
	"errors"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/tillgw/till/audit"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/internal/regfile"
	"github.com/tillgw/till/vault"
)

// hintError carries a hint printed after the error. Packages return plain
// errors; the CLI attaches hints, which may name its commands and
// environment variables.
type hintError struct {
	err  error
	hint string
}

func (e hintError) Error() string { return e.err.Error() }
func (e hintError) Unwrap() error { return e.err }

func withHint(err error, hint string) error { return hintError{err, hint} }

// auditHint is the hint for an audit file that serve or check cannot
// open: the config names the wrong file, unless another till holds it.
func auditHint(err error) string {
	switch {
	case errors.Is(err, audit.ErrHeld):
		return "stop that till first, or give each till its own audit.file"
	case errors.Is(err, audit.ErrSymlink):
		return "check audit.file: give the file the link names"
	case errors.As(err, new(*regfile.NotRegularError)):
		return "give audit.file a regular file; to stream the records to a reader, set audit.file: - and pipe till's stdout to it"
	}
	return "check audit.file in the config"
}

// setIn is a hint to set setting in cfg's file, then what follows; with
// no config file (the built-in defaults), in the one till init writes.
func setIn(cfg *config.Config, setting, then string) string {
	if cfg.File == "" {
		return "till init writes a config: set " + setting + " in it" + then
	}
	return "set " + setting + " in " + displayPath(cfg.File) + then
}

// keySource says where the vault key is set: the config file's
// vault.key_file, or, without a config file, $TILL_KEY_FILE (which a
// config file's key_file, default or not, overrides).
type keySource struct {
	config     string // the config file in use; "" for the built-in defaults
	envIgnored bool   // TILL_KEY_FILE is set but a config file is in use
	vault      string // the vault file
}

// wrap marks err, when not nil, with the key's source for vaultHint.
func (s keySource) wrap(err error) error {
	if err == nil {
		return nil
	}
	return keySourceError{err, s}
}

// keySourceError carries a keySource down to the vault's errors it wraps.
type keySourceError struct {
	err error
	src keySource
}

func (e keySourceError) Error() string { return e.err.Error() }
func (e keySourceError) Unwrap() error { return e.err }

// vaultHint returns the hint for one of the vault's errors (not those it
// wraps), or "". The vault knows nothing of till's commands and
// environment variables; the CLI says which to use: with a config file,
// its vault.key_file, since TILL_KEY_FILE then does not apply.
func vaultHint(err error, src keySource) string {
	if h := vaultFolderHint(err); h != "" {
		return h
	}
	keySetting := "set TILL_KEY_FILE to"
	if src.config != "" {
		keySetting = "point vault.key_file in " + src.config + " at"
	}
	hint := func() string {
		if e, ok := err.(*vault.WrongKeyError); ok {
			switch key := e.KeyFile != ""; {
			case e.VaultPassphrase && key:
				return "set TILL_PASSPHRASE"
			case !e.VaultPassphrase && !key:
				if src.config != "" {
					return "unset TILL_PASSPHRASE, so that till reads the key file that vault.key_file in " + src.config + " names"
				}
				return "unset TILL_PASSPHRASE and set TILL_KEY_FILE to the vault's key file"
			case e.VaultPassphrase:
				return "set TILL_PASSPHRASE to the passphrase this vault was created with"
			}
			if src.config != "" {
				return keySetting + " the key file this vault was created with"
			}
			return "set TILL_KEY_FILE or TILL_PASSPHRASE to the key this vault was created with"
		}
		switch err {
		case vault.ErrNoKey:
			if vault.SealedWithPassphrase(src.vault) {
				return "this vault is sealed with a passphrase: set TILL_PASSPHRASE"
			}
			if _, err := os.Stat(src.vault); src.vault != "" && err == nil {
				// till init would not help: it makes no key for a vault
				// that exists.
				return keySetting + " the key file this vault was created with, or restore it from a backup"
			}
			if src.config != "" {
				return keySetting + " the vault's key file, or set TILL_PASSPHRASE"
			}
			return `run "till init", or set TILL_KEY_FILE or TILL_PASSPHRASE to the vault's key`
		case vault.ErrLocked:
			return "retry when it finishes"
		}
		return ""
	}()
	if src.envIgnored && strings.Contains(hint, "vault.key_file") {
		hint += " (TILL_KEY_FILE applies only without a config file)"
	}
	return hint
}

// vaultFolderHint explains a vault write refused by its folder: till
// writes its lock and each new vault beside the vault, so a vault mounted
// as a single file, on a read-only root, cannot be changed.
func vaultFolderHint(err error) string {
	pe, ok := err.(*fs.PathError)
	if !ok || !errors.Is(pe.Err, syscall.EROFS) && !errors.Is(pe.Err, fs.ErrPermission) {
		return ""
	}
	base := filepath.Base(pe.Path)
	if !strings.HasSuffix(base, ".vault.lock") && !strings.Contains(base, ".vault.tmp-") {
		return ""
	}
	return "till writes a lock and each new vault beside the vault: the folder " + filepath.Dir(pe.Path) +
		" must be writable by this user; in a container, mount that folder (./till-data:/var/lib/till), not single files"
}

// readHint explains a file till may not read (the config, the vault, its
// key): the user it runs as is named, as a container or a service runs
// it as another than the one who made the file.
func readHint(err error) string {
	pe, ok := err.(*fs.PathError)
	if !ok || pe.Op != "open" || !errors.Is(pe.Err, fs.ErrPermission) || vaultFolderHint(err) != "" {
		return ""
	}
	who := "uid " + strconv.Itoa(os.Geteuid())
	if u, err := user.Current(); err == nil && u.Username != "" {
		who += " (" + u.Username + ")"
	}
	return "till runs as " + who + ", which may not read " + pe.Path + ": make it readable by that user (chmod, chown), or run till as a user who may"
}

// hints returns the hints for err, each once: those attached with
// withHint and those for the vault's errors, anywhere in its tree (check
// joins several errors, each may have one).
func hints(err error) []string {
	var out []string
	var walk func(error, keySource)
	walk = func(err error, src keySource) {
		h := vaultHint(err, src)
		if h == "" {
			h = readHint(err)
		}
		switch e := err.(type) {
		case hintError:
			h = e.hint
		case keySourceError:
			src = e.src
		}
		if h != "" && !slices.Contains(out, h) {
			out = append(out, h)
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			if next := u.Unwrap(); next != nil {
				walk(next, src)
			}
		case interface{ Unwrap() []error }:
			for _, next := range u.Unwrap() {
				walk(next, src)
			}
		}
	}
	walk(err, keySource{})
	return out
}
