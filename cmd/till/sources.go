package main

import (
	"fmt"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy"
	"github.com/tillgw/till/vault/source"
)

// sourceKeys is the one cache of keys fetched from sources that a running
// till keeps across reloads.
type sourceKeys struct {
	cache *source.Cache
	log   zerolog.Logger
}

// newSourceKeys builds the cache for cfg's sources.
func newSourceKeys(cfg *config.Config, log zerolog.Logger, metrics *proxy.Metrics) *sourceKeys {
	k := &sourceKeys{log: log}
	k.cache = source.NewCache(sourceSpecs(cfg, log), source.Options{Log: log, OnFetch: metrics.SecretFetch})
	return k
}

// forConfig points the cache at cfg's sources (a reload) and returns it.
func (k *sourceKeys) forConfig(cfg *config.Config) proxy.Keys {
	k.cache.SetSources(sourceSpecs(cfg, k.log))
	return k.cache
}

// sourceSpecs turns the config's sources into the cache's.
func sourceSpecs(cfg *config.Config, log zerolog.Logger) map[string]source.Spec {
	specs := make(map[string]source.Spec, len(cfg.Sources))
	for _, s := range cfg.Sources {
		spec := source.Spec{TTL: s.TTL, FailureTTL: s.FailureTTL, ID: fmt.Sprintf("%s\x00%s\x00%q\x00%s", s.Type, s.Dir, s.Command, s.Timeout)}
		switch s.Type {
		case "files":
			spec.Source = source.Files{Dir: s.Dir}
		case "exec":
			spec.Source = source.Exec{Name: s.Name, Command: s.Command, Timeout: s.Timeout, Log: log}
		default:
			continue // config refuses the types not built
		}
		specs[s.Name] = spec
	}
	return specs
}
