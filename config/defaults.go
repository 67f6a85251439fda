package config

import (
	"maps"
	"path/filepath"
	"slices"
)

// Default is the built-in config used when there is no config file: listen
// 127.0.0.1:8080, no admin listener, audit to stdout, the vault till.vault
// and its key till.key in dir (keyFile, e.g. $TILL_KEY_FILE, overrides the
// key when non-empty), and one route per preset whose secret exists
// (has(preset.Secret) is true), at prefix "/<preset name>", sorted by name.
// A nil has gives no routes.
func Default(dir, keyFile string, has func(secret string) bool) *Config {
	d := &decoder{dir: absDir(dir)}
	c := d.defaults()
	c.Version = 1
	if keyFile != "" {
		if abs, err := filepath.Abs(keyFile); err == nil {
			keyFile = abs
		}
		c.Vault.KeyFile = filepath.Clean(keyFile)
	}
	if has == nil {
		return c
	}
	for _, p := range catalog() {
		// A preset that needs a region (bedrock, vertex) or an app
		// (github-app) needs a config.
		if has(p.Secret) && !p.NeedsRegion() && !p.NeedsApp() {
			c.Routes = append(c.Routes, routeFromPreset(p))
		}
	}
	return c
}

// routeFromPreset is the route a preset gives on its own.
func routeFromPreset(p Preset) Route {
	u, _ := parseUpstream(p.Upstream, false)
	r := Route{
		Name:       p.Name,
		Preset:     p.Name,
		Prefix:     "/" + p.Name,
		Upstream:   u,
		Secret:     p.Secret,
		Inject:     p.Inject,
		Headers:    maps.Clone(p.Headers),
		Strip:      slices.Clone(p.Strip),
		StripQuery: slices.Clone(p.StripQuery),
		Timeout:    DefaultTimeout,
		Usage:      p.Usage,

		StreamsReportUsage: p.StreamsReportUsage,
	}
	return r
}
