// Package reload keeps a running gateway's snapshot in step with its config
// and vault files. A reload builds and validates a whole new snapshot and
// swaps it in, or keeps the old one serving and logs why; it runs on demand
// (SIGHUP, POST /admin/reload) or when either file changes on disk.
package reload

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy"
	"github.com/tillgw/till/vault"
)

// Gateway is what a reload swaps the new snapshot into (*proxy.Gateway).
type Gateway interface {
	// Swap makes the snapshot the one new requests use.
	Swap(*proxy.Snapshot)
}

// Metrics counts reloads (*proxy.Metrics).
type Metrics interface {
	// Reload counts one reload, and whether it succeeded.
	Reload(ok bool)
}

// Options configure a Reloader.
type Options struct {
	// Load reads the config and the vault's secrets afresh, as at start.
	Load func() (*config.Config, map[string]vault.Secret, error)
	// Gateway receives each new snapshot.
	Gateway Gateway
	// Metrics counts reloads, swapped in or failed.
	Metrics Metrics
	// Log is the operational log.
	Log zerolog.Logger
	// Base is the URL apps reach the gateway at (scheme://host:port), for
	// the base URL logged with each route.
	Base string
	// Apply, when set, applies the settings of a config swapped in that
	// live outside the snapshot (the log's level and format; sources the
	// snapshot before needed no more). It runs once the new snapshot
	// serves, before the reload is logged, so that the line obeys them.
	Apply func(*config.Config)
	// Keys, when set, gives the keys of routes whose secret is a source
	// ref; it is called with each new config before its snapshot is built
	// (to follow changes to sources:); its error fails the reload.
	Keys func(*config.Config) (proxy.Keys, error)
	// Vault, when set, reads the vault the config given names. A reload
	// whose config is refused serves the vault as it is now with the
	// config served: a rotation (a leaked key replaced) does not wait for
	// the config to be fixed.
	Vault func(*config.Config) (map[string]vault.Secret, error)
	// Seen, when set, is the state of the files before they were read
	// for the config and secrets given to New: Watch starts from it. A
	// file it lacks starts as unknown, and is reloaded once if it exists.
	// Without it, Watch starts from the files' state at New.
	Seen *Seen
}

// Reloader rebuilds the snapshot from the config and vault files. Reloads
// run one at a time; a failed one keeps the old snapshot serving.
type Reloader struct {
	opts Options

	mu      sync.Mutex
	cfg     *config.Config          // the config being served
	secrets map[string]vault.Secret // the vault's secrets served
	started *config.Config          // the config till started with: listeners, audit sink, ...
	// poll holds the watched files' state since they were read (Seen),
	// or since New: an edit made while till was still starting is a
	// change Watch sees.
	poll *poller
}

// New returns a Reloader for a gateway that serves cfg and the vault's
// secrets, loaded just now.
func New(cfg *config.Config, secrets map[string]vault.Secret, opts Options) *Reloader {
	poll := newPoller(watchedFiles(cfg)...)
	if opts.Seen != nil {
		poll = (&poller{files: opts.Seen.files, last: opts.Seen.states}).follow(watchedFiles(cfg))
	}
	return &Reloader{opts: opts, cfg: cfg, secrets: secrets, started: cfg, poll: poll}
}

// RestartNeeded names the settings of the config served that differ from
// those till started with, which wait for a restart.
func (r *Reloader) RestartNeeded() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return config.RestartNeeded(r.started, r.cfg)
}

// Reload loads the config and vault and swaps a snapshot built from them
// into the gateway. On error the gateway keeps its snapshot, the error is
// logged and returned. Settings that only a restart applies are named in a
// warning; the rest take effect at once.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cfg, secrets, err := r.opts.Load()
	if err != nil {
		r.opts.Metrics.Reload(false)
		r.opts.Log.Error().Err(err).Msg("reload failed: still serving the previous config")
		r.vaultOnly()
		return err
	}
	if err := r.rolledBack(cfg, secrets); err != nil {
		r.opts.Metrics.Reload(false)
		r.opts.Log.Error().Err(err).Msg("reload failed: still serving the previous config")
		return err
	}
	if changed := config.RestartNeeded(r.started, cfg); len(changed) > 0 {
		r.opts.Log.Warn().Strs("settings", changed).
			Msg("changes to " + strings.Join(changed, ", ") + " take effect at the next restart")
	}
	snap, err := r.serve(cfg, secrets)
	if err != nil {
		// Its sources could not be set up (a Vault source's ca_file).
		r.opts.Metrics.Reload(false)
		r.opts.Log.Error().Err(err).Msg("reload failed: still serving the previous config")
		r.vaultOnly()
		return err
	}
	r.opts.Metrics.Reload(true)
	r.opts.Log.Info().Int("routes", len(cfg.Routes)).Msg("reloaded")
	LogRoutes(r.opts.Log, cfg, snap, r.opts.Base)
	// As at start: a key set again with a short --expires, or a
	// max_age cut, is told of now, not at the next daily warning.
	WarnExpiry(r.opts.Log, snap, time.Now())
	return nil
}

// serve swaps in a snapshot of cfg and secrets.
func (r *Reloader) serve(cfg *config.Config, secrets map[string]vault.Secret) (*proxy.Snapshot, error) {
	var keys proxy.Keys
	if r.opts.Keys != nil {
		var err error
		if keys, err = r.opts.Keys(cfg); err != nil {
			return nil, err
		}
	}
	snap := proxy.NewSnapshotWithKeys(cfg, secrets, keys)
	r.opts.Gateway.Swap(snap)
	r.cfg, r.secrets = cfg, secrets
	if r.opts.Apply != nil {
		r.opts.Apply(cfg)
	}
	return snap, nil
}

// vaultOnly serves the vault as it is now with the config served, after
// a reload whose config was refused, when the vault changed.
func (r *Reloader) vaultOnly() {
	if r.opts.Vault == nil {
		return
	}
	secrets, err := r.opts.Vault(r.cfg)
	if err != nil || sameSecrets(r.secrets, secrets) {
		return
	}
	if err := r.rolledBack(r.cfg, secrets); err != nil {
		r.opts.Log.Error().Err(err).Msg("the vault's keys as they are now do not serve either")
		return
	}
	if _, err := r.serve(r.cfg, secrets); err != nil {
		return
	}
	r.opts.Log.Warn().Msg("the vault's keys as they are now (rotations, removals) serve with the previous config")
}

// rolledBack refuses secrets read from the vault file served that hold a
// secret in an older version than the one served: a value other than the
// served one, last updated before it. Only a copy of the vault from before
// the rotation does that (a backup restored, a deploy tool's stale copy),
// and serving it would bring back the key the rotation took away, perhaps
// a leaked one.
func (r *Reloader) rolledBack(cfg *config.Config, secrets map[string]vault.Secret) error {
	if cfg.Vault.Path != r.cfg.Vault.Path {
		return nil // another vault: its times say nothing of this one's
	}
	for _, name := range slices.Sorted(maps.Keys(secrets)) {
		old, ok := r.secrets[name]
		if s := secrets[name]; ok && s.Fingerprint() != old.Fingerprint() && s.Updated.Before(old.Updated) {
			return fmt.Errorf("the vault %s holds secret %q as it was before its last rotation (updated %s, the one served %s): an older copy of the vault replaced it; "+
				"the newer key stays in use: rotate the secret again (till secret set %s), or restart till to serve that copy",
				cfg.Vault.Path, name, s.Updated.UTC().Format(time.RFC3339), old.Updated.UTC().Format(time.RFC3339), name)
		}
	}
	return nil
}

// sameSecrets reports whether a and b hold the same secrets: names,
// values (by fingerprint) and times.
func sameSecrets(a, b map[string]vault.Secret) bool {
	return maps.EqualFunc(a, b, func(x, y vault.Secret) bool {
		return x.Fingerprint() == y.Fingerprint() && x.Updated.Equal(y.Updated) && x.Expires.Equal(y.Expires)
	})
}

// LogRoutes says which routes of snap (built from cfg) are live and at
// which base URL an app reaches each one.
func LogRoutes(log zerolog.Logger, cfg *config.Config, snap *proxy.Snapshot, base string) {
	infos := snap.Routes()
	switch {
	case len(infos) > 0:
	case cfg.File != "":
		log.Warn().Str("config", cfg.File).Msg(`no routes: add one to the config (routes: [{name: openai, preset: openai}])`)
	default:
		log.Warn().Msg(`no routes: store a key with "printf %s \"$KEY\" | till secret set openai", or write a config with "till init"`)
	}
	for i, rt := range infos {
		baseURL := base + rt.Prefix
		if p, ok := config.LookupPreset(cfg.Routes[i].Preset); ok {
			baseURL += p.BaseURLPath
		}
		ev := log.Info()
		switch {
		case rt.Problem != "":
			ev = log.Warn().Str("problem", rt.Problem)
		case rt.Short:
			ev = log.Warn().Str("problem", ShortKeyWarning)
		}
		if hint := setHint(cfg, rt, cfg.Routes[i].Inject.SecretForm()); hint != "" {
			ev = ev.Str("hint", hint)
		}
		ev.Str("route", rt.Name).Str("base_url", baseURL).Str("upstream", rt.Upstream).
			Str("secret", rt.Secret).Str("key_fp", rt.Fingerprint).Msg("route")
	}
}

// ShortKeyWarning says what a key shorter than proxy.MinEchoLength costs.
var ShortKeyWarning = fmt.Sprintf("a key shorter than %d characters: an upstream's response header that echoes it is not removed "+
	"(the key would match unrelated headers); a provider's key is longer", proxy.MinEchoLength)

// setHint is the command that stores each secret of rt missing from the
// vault (its own, its pool's), in the form flag's, in the vault of cfg's
// file: without -c, it would fill the vault of the config in the working
// folder.
func setHint(cfg *config.Config, rt proxy.RouteInfo, form string) string {
	var names []string
	if rt.Missing {
		names = append(names, rt.Secret)
	}
	for _, k := range rt.Pool {
		if k.Missing && !slices.Contains(names, k.Secret) {
			names = append(names, k.Secret)
		}
	}
	var cmds []string
	for _, n := range names {
		cmds = append(cmds, SecretSetCommand(cfg.File, n, form))
	}
	return strings.Join(cmds, "; ")
}

// SecretSetCommand is the command that stores secret name, in the form
// flag's (config.Inject.SecretForm), in the vault of the config file
// (given with -c; "" for the one found by default): without -c, it would
// fill the vault of another config.
func SecretSetCommand(file, name, form string) string {
	cmd := "till secret set " + name
	if form != "" {
		cmd += " " + form
	}
	if file != "" {
		cmd += " -c " + file
	}
	return cmd
}

// The gateway and metrics that till serve wires in.
var (
	_ Gateway = (*proxy.Gateway)(nil)
	_ Metrics = (*proxy.Metrics)(nil)
)
