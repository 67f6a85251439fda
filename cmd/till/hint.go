package main

import (
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

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

// vaultHint returns the hint for one of the vault's errors (not those it
// wraps), or "". The vault knows nothing of till's commands and
// environment variables; the CLI says which to use.
func vaultHint(err error) string {
	if e, ok := err.(*vault.WrongKeyError); ok {
		switch key := e.KeyFile != ""; {
		case e.VaultPassphrase && key:
			return "set TILL_PASSPHRASE"
		case !e.VaultPassphrase && !key:
			return "unset TILL_PASSPHRASE and set TILL_KEY_FILE to the vault's key file"
		case e.VaultPassphrase:
			return "set TILL_PASSPHRASE to the passphrase this vault was created with"
		}
		return "set TILL_KEY_FILE or TILL_PASSPHRASE to the key this vault was created with"
	}
	if h := vaultFolderHint(err); h != "" {
		return h
	}
	switch err {
	case vault.ErrNoKey:
		return `run "till init", or set TILL_KEY_FILE or TILL_PASSPHRASE to the vault's key`
	case vault.ErrLocked:
		return "retry when it finishes"
	}
	return ""
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

// hints returns the hints for err, each once: those attached with
// withHint and those for the vault's errors, anywhere in its tree (check
// joins several errors, each may have one).
func hints(err error) []string {
	var out []string
	var walk func(error)
	walk = func(err error) {
		h := vaultHint(err)
		if e, ok := err.(hintError); ok {
			h = e.hint
		}
		if h != "" && !slices.Contains(out, h) {
			out = append(out, h)
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			if next := u.Unwrap(); next != nil {
				walk(next)
			}
		case interface{ Unwrap() []error }:
			for _, next := range u.Unwrap() {
				walk(next)
			}
		}
	}
	walk(err)
	return out
}
