package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy"
	"github.com/tillgw/till/vault/source"
)

// TestReloadRenamedSource: while a reload that renames a source builds
// its snapshot, the snapshot still serving reads its refs with the
// source's old name; once the new one serves (commit), only the new name
// is read.
func TestReloadRenamedSource(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "key"), []byte("sk-files-0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgWith := func(name string) *config.Config {
		y := "version: 1\nsources:\n  - {name: " + name + ", type: files, dir: " + dir + "}\nroutes:\n  - {name: api, upstream: https://api.example.com, secret: \"" + name + ":key\", inject: {header: X-Api-Key}}\n"
		cfg, err := config.Parse(filepath.Join(dir, "till.yaml"), []byte(y), dir)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	k, err := newSourceKeys(cfgWith("one"), zerolog.Nop(), proxy.NewMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	get := func(ref string) error {
		_, err := k.cache.GetAs(context.Background(), ref, source.FormValue)
		return err
	}
	if _, err := k.forConfig(cfgWith("two")); err != nil {
		t.Fatal(err)
	}
	if err := get("one:key"); err != nil {
		t.Errorf("during the reload, the serving snapshot's ref: %v", err)
	}
	if err := get("two:key"); err != nil {
		t.Errorf("during the reload, the new snapshot's ref: %v", err)
	}
	k.commit()
	if err := get("one:key"); !errors.Is(err, source.ErrUnavailable) {
		t.Errorf("after the reload, the old name's ref: %v, want it unavailable", err)
	}
	if err := get("two:key"); err != nil {
		t.Errorf("after the reload: %v", err)
	}
}
