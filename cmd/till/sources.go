package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy"
	"github.com/tillgw/till/reload"
	"github.com/tillgw/till/vault"
	"github.com/tillgw/till/vault/source"
)

// sourceKeys is the one cache of keys fetched from sources that a running
// till keeps across reloads.
type sourceKeys struct {
	cache *source.Cache
	log   zerolog.Logger

	mu    sync.Mutex
	specs map[string]source.Spec // by source name, as last applied
	// next is what forConfig built for a reload, which commit applies
	// once its snapshot serves.
	next map[string]source.Spec
}

// newSourceKeys builds the cache for cfg's sources.
func newSourceKeys(cfg *config.Config, log zerolog.Logger, metrics *proxy.Metrics) (*sourceKeys, error) {
	k := &sourceKeys{log: log}
	specs, err := k.build(cfg)
	if err != nil {
		return nil, err
	}
	k.specs = specs
	k.cache = source.NewCache(specs, source.Options{Log: log, OnFetch: metrics.SecretFetch, Problem: shortKeyProblem})
	metrics.WatchSources(k.cache.Statuses)
	return k, nil
}

// shortKeyProblem is the problem of a key fetched from a source that is
// too short for its echo to be removed, as serve's route line says of
// one in the vault.
func shortKeyProblem(sec vault.Secret) string {
	if proxy.TooShortToScrub(sec) {
		return reload.ShortKeyWarning
	}
	return ""
}

// forConfig readies the cache for cfg's sources (a reload) and returns
// it: until commit, it serves the sources of the config before as well,
// for the requests of the snapshot still serving (a renamed source would
// fail them); a source of the same name takes its new settings at once.
func (k *sourceKeys) forConfig(cfg *config.Config) (proxy.Keys, error) {
	specs, err := k.build(cfg)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	both := maps.Clone(k.specs)
	maps.Copy(both, specs)
	k.next = specs
	k.mu.Unlock()
	k.cache.SetSources(both)
	return k.cache, nil
}

// commit drops the sources only the config before a reload had, once the
// new snapshot serves.
func (k *sourceKeys) commit() {
	k.mu.Lock()
	specs := k.next
	if specs != nil {
		k.specs, k.next = specs, nil
	}
	k.mu.Unlock()
	if specs != nil {
		k.cache.SetSources(specs)
	}
}

// build turns the config's sources into the cache's, keeping the clients
// of sources whose settings did not change (a Vault login survives a
// reload).
func (k *sourceKeys) build(cfg *config.Config) (map[string]source.Spec, error) {
	k.mu.Lock()
	old := k.specs
	k.mu.Unlock()
	specs := make(map[string]source.Spec, len(cfg.Sources))
	for _, s := range cfg.Sources {
		spec := source.Spec{TTL: s.TTL, FailureTTL: s.FailureTTL, ID: sourceID(s)}
		if prev, ok := old[s.Name]; ok && prev.ID == spec.ID {
			spec.Source = prev.Source
		} else {
			src, err := newSource(s, k.log)
			if err != nil {
				return nil, fmt.Errorf("sources: %q (line %d): %w", s.Name, s.Line, err)
			}
			spec.Source = src
		}
		specs[s.Name] = spec
	}
	return specs, nil
}

// sourceID identifies what a source fetches with: every setting but its
// timings and line.
func sourceID(s config.Source) string {
	s.TTL, s.FailureTTL, s.Line = 0, 0, 0
	b, _ := json.Marshal(s) // plain strings, slices and pointers to structs of strings
	return string(b)
}

// newSource makes the fetcher of one configured source.
func newSource(s config.Source, log zerolog.Logger) (source.Source, error) {
	switch s.Type {
	case "vault":
		opts := source.VaultKVOptions{Address: s.Address, CAFile: s.CAFile, Namespace: s.Namespace, TokenFile: s.Auth.TokenFile}
		mount := s.AuthMount
		if mount == "" {
			mount = s.Auth.Method()
		}
		switch {
		case s.Auth.AppRole != nil:
			opts.Login = source.AppRoleLogin(mount, s.Auth.AppRole.RoleIDFile, s.Auth.AppRole.SecretIDFile)
		case s.Auth.Kubernetes != nil:
			opts.Login = source.KubernetesLogin(mount, s.Auth.Kubernetes.Role, s.Auth.Kubernetes.JWTFile)
		}
		return source.NewVaultKV(opts)
	case "aws_secretsmanager":
		return &source.SecretsManager{Region: s.Region, Endpoint: s.Endpoint}, nil
	case "files":
		return source.Files{Dir: s.Dir}, nil
	case "exec":
		return source.Exec{Name: s.Name, Command: s.Command, Timeout: s.Timeout, Log: log, Hides: config.TextHoldsKey, Env: helperEnv(os.Environ())}, nil
	}
	return nil, fmt.Errorf("unknown source type %q", s.Type)
}

// commandCache is a cache of cfg's sources for a command that fetches
// refs once (check, secret list, test) rather than serving.
func commandCache(cfg *config.Config) (*source.Cache, error) {
	// An exec helper's stderr is logged: nowhere, here; fetch errors
	// reach the command's output instead.
	k := &sourceKeys{log: zerolog.Nop()}
	specs, err := k.build(cfg)
	if err != nil {
		return nil, err
	}
	return source.NewCache(specs, source.Options{Log: zerolog.Nop()}), nil
}

// refCheckTimeout bounds how long check and secret list wait for all the
// refs they fetch.
const refCheckTimeout = 90 * time.Second

// fetched is what fetchRefs learned of one ref read in one form.
type fetched struct {
	source.Status
	form source.Form
}

// fetchRefs fetches, once each, the refs cfg's routes use (for till check
// and till secret list), every member of a key pool included, in the order
// routes name them. A route's Ref is only its pool's first member.
func fetchRefs(cfg *config.Config) ([]fetched, error) {
	cache, err := commandCache(cfg)
	if err != nil {
		return nil, err
	}
	type use struct {
		ref  string
		form source.Form
	}
	var uses []use
	for _, r := range cfg.Routes {
		for _, m := range r.Keys() {
			if m.Ref == nil {
				continue
			}
			if u := (use{m.Secret, proxy.SecretForm(&r)}); !slices.Contains(uses, u) {
				uses = append(uses, u)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), refCheckTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, u := range uses {
		wg.Go(func() { _, _ = cache.GetAs(ctx, u.ref, u.form) })
	}
	wg.Wait()
	out := make([]fetched, 0, len(uses))
	for _, u := range uses {
		out = append(out, fetched{cache.StatusOf(u.ref, u.form), u.form})
	}
	return out, nil
}

// sourcedProblems reports, for each route of cfg, the refs of refs (as
// fetchRefs fetched them) that it cannot attach as they are, as serve
// would refuse them: a field the route needs that the source's document
// lacks or holds as no string, for instance.
func sourcedProblems(cfg *config.Config, refs []fetched) []error {
	var problems []error
	for _, r := range cfg.Routes {
		form := proxy.SecretForm(&r)
		for _, m := range r.Keys() {
			i := slices.IndexFunc(refs, func(f fetched) bool { return f.Ref == m.Secret && f.form == form })
			if m.Ref == nil || i < 0 || refs[i].Err != nil {
				continue // a vault secret, or one that cannot be fetched: said elsewhere
			}
			if p := proxy.SourcedProblem(&r, m.Secret, refs[i].Secret); p != "" {
				problems = append(problems, fmt.Errorf("route %q: %s", r.Name, p))
			}
		}
	}
	return problems
}

// withheldFromHelpers are the variables of till's environment that hold
// its own secrets: the vault passphrase, the admin token, and a client
// token (TILL_TOKEN, which `till env` puts in the proxy URLs of a shell
// till may then be started from). A credential helper never sees them.
var withheldFromHelpers = []string{"TILL_PASSPHRASE", "TILL_ADMIN_TOKEN", "TILL_TOKEN"}

// minWithheld is the shortest secret of withheldFromHelpers looked for in
// other variables: a shorter one would match them by chance.
const minWithheld = 8

// helperEnv is environ (as os.Environ gives it) for a credential helper:
// what it needs (PATH, HOME, its own settings) without till's secrets,
// nor any variable that holds one (HTTPS_PROXY=http://web:TOKEN@…).
func helperEnv(environ []string) []string {
	var secrets []string
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if slices.Contains(withheldFromHelpers, name) && len(value) >= minWithheld {
			secrets = append(secrets, value)
		}
	}
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if slices.Contains(withheldFromHelpers, name) || slices.ContainsFunc(secrets, func(s string) bool { return strings.Contains(value, s) }) {
			continue
		}
		out = append(out, kv)
	}
	return out
}
