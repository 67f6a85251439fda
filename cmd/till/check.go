package main

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"github.com/tillgw/till/audit"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/internal/unixsock"
	"github.com/tillgw/till/proxy"
	"github.com/tillgw/till/reload"
)

// expiringWithin is how early check warns about a key that will expire.
const expiringWithin = 14 * 24 * time.Hour

func runCheck(args []string, e *env) error {
	var cfgPath string
	fs := newFlags("check", e.stderr, &cfgPath)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, "till check [-c FILE]"); err != nil {
		return err
	}
	cfg, secrets, err := loadAll(cfgPath, e)
	if err != nil {
		return err
	}
	var problems []error
	if err := cfg.CheckOpenRoutes(cfg.Listen); err != nil {
		problems = append(problems, err)
	}
	if _, err := interceptionLeaves(cfg, secrets); err != nil {
		problems = append(problems, err)
	}
	if _, err := listenerTLS(cfg, secrets, 0); err != nil {
		problems = append(problems, err)
	}
	if err := checkAudit(cfg); err != nil {
		problems = append(problems, err)
	}
	if err := checkAdminSocket(cfg); err != nil {
		problems = append(problems, err)
	}
	now := time.Now()
	for i, r := range proxy.NewSnapshot(cfg, secrets).Routes() {
		keys, members := r.Pool, cfg.Routes[i].Keys()
		if cfg.Routes[i].Pool == nil {
			keys = []proxy.KeyInfo{{Secret: r.Secret, Expires: r.Expires, Problem: r.Problem, Missing: r.Missing, Short: r.Short}}
		}
		for j, k := range keys {
			if members[j].Ref != nil {
				continue // fetched below
			}
			if k.Short {
				fmt.Fprintf(e.stderr, "till: warning: route %q: secret %q is %s\n", r.Name, k.Secret, reload.ShortKeyWarning)
			}
			switch {
			case k.Missing:
				problems = append(problems, withHint(fmt.Errorf("route %q: %s", r.Name, k.Problem), reload.SecretSetCommand(cfgPath, k.Secret, cfg.Routes[i].Inject.SecretForm())))
			case k.Problem != "":
				problems = append(problems, fmt.Errorf("route %q: %s", r.Name, k.Problem))
			case !k.Expires.IsZero() && !now.Before(k.Expires):
				problems = append(problems, withHint(fmt.Errorf("route %q: secret %q expired at %s", r.Name, k.Secret, k.Expires.UTC().Format(time.RFC3339)),
					"rotate it with "+reload.SecretSetCommand(cfgPath, k.Secret, cfg.Routes[i].Inject.SecretForm())))
			case !k.Expires.IsZero() && k.Expires.Sub(now) < expiringWithin:
				fmt.Fprintf(e.stderr, "till: warning: route %q: secret %q expires at %s\n", r.Name, k.Secret, k.Expires.UTC().Format(time.RFC3339))
			}
		}
	}
	for _, w := range slices.Concat(cfg.UnmeteredBudgets(), cfg.DodgeableBudgets(), cfg.ShadowedForwardRoutes(), proxy.UnpricedModels(cfg)) {
		fmt.Fprintf(e.stderr, "till: warning: %s\n", w)
	}
	refs, err := fetchRefs(cfg)
	if err != nil {
		problems = append(problems, err)
	}
	problems = append(problems, sourcedProblems(cfg, refs)...)
	for _, st := range refs {
		if st.Err == nil && proxy.TooShortToScrub(st.Secret) {
			fmt.Fprintf(e.stderr, "till: warning: secret %q (source %q) is %s\n", st.Ref, st.Source, reload.ShortKeyWarning)
		}
		exp := st.Secret.ExpiresAt(cfg.Vault.MaxAge)
		switch {
		case st.Err != nil:
			problems = append(problems, fmt.Errorf("secret %q (source %q) cannot be fetched: %w", st.Ref, st.Source, st.Err))
		case !exp.IsZero() && !now.Before(exp):
			problems = append(problems, fmt.Errorf("secret %q (source %q) expired at %s; rotate it in the source", st.Ref, st.Source, exp.UTC().Format(time.RFC3339)))
		case !exp.IsZero() && exp.Sub(now) < expiringWithin:
			fmt.Fprintf(e.stderr, "till: warning: secret %q expires at %s\n", st.Ref, exp.UTC().Format(time.RFC3339))
		}
	}
	if len(problems) > 0 {
		return errors.Join(problems...)
	}
	keys := len(secrets) // the keys stored, not till's own (its CA, its audit signing key)
	for _, own := range []string{config.CASecret, config.AuditKeySecret} {
		if _, ok := secrets[own]; ok {
			keys--
		}
	}
	fmt.Fprintf(e.stdout, "ok: %s: %d route(s), %d secret(s) in %s",
		configName(cfg), len(cfg.Routes), keys, displayPath(cfg.Vault.Path))
	if len(refs) > 0 {
		fmt.Fprintf(e.stdout, ", %d fetched from sources", len(refs))
	}
	fmt.Fprintln(e.stdout)
	if len(cfg.Routes) == 0 {
		what := configName(cfg) + " has no routes: add one (routes: [{name: openai, preset: openai}])"
		if cfg.File == "" {
			what = "no till.yaml, and no preset's secret in the vault: till init writes a config, till secret set openai stores a key"
		}
		fmt.Fprintf(e.stderr, "till: warning: nothing to serve yet: %s\n", what)
	}
	return nil
}

// checkAdminSocket refuses an admin socket in a folder others may write
// to, which serve refuses. A folder not there yet passes: a service
// manager may create it (systemd's RuntimeDirectory) just before serve.
func checkAdminSocket(cfg *config.Config) error {
	sock := cfg.Admin.Socket()
	if sock == "" {
		return nil
	}
	if err := unixsock.CheckFolder(sock); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return withHint(fmt.Errorf("admin.listen %q: %w", cfg.Admin.Listen, err), socketFolderHint)
	}
	return nil
}

// checkAudit refuses the audit file serve could not open (a symbolic
// link, a folder, another kind of file), as serve would at start,
// without creating or changing it.
func checkAudit(cfg *config.Config) error {
	if err := audit.Check(cfg.Audit.File); err != nil {
		return withHint(err, auditHint(err))
	}
	return nil
}
