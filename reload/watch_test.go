package reload

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// TestWatchFollowsNewVaultPath: after a reload that names another vault
// file, edits of that vault (the one served) reload too.
func TestWatchFollowsNewVaultPath(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "till.yaml")
	yamlA := goodYAML + "vault: {path: a.vault}\n"
	yamlB := goodYAML + "vault: {path: b.vault}\n"
	for _, f := range []string{"a.vault", "b.vault"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("v1"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(cfgFile, []byte(yamlA), 0o644); err != nil {
		t.Fatal(err)
	}
	load := fileLoader(cfgFile, dir)
	r, gw, _ := newLoaded(t, load)
	stop := r.watch(5 * time.Millisecond)
	defer stop()

	// 1. The config now names b.vault: reloaded.
	if err := os.WriteFile(cfgFile, []byte(yamlB), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gw.swapped:
	case <-time.After(5 * time.Second):
		t.Fatal("no reload after the config changed")
	}
	r.mu.Lock() // Reload sets cfg under mu, after Swap
	got := r.cfg.Vault.Path
	r.mu.Unlock()
	if filepath.Base(got) != "b.vault" {
		t.Fatalf("serving vault %s", got)
	}
	// 2. The vault being served changes (a secret rotated), written
	// again until a reload follows: one written before the watch moved
	// to it would be its starting state.
	for i := 0; ; i++ {
		if err := os.WriteFile(filepath.Join(dir, "b.vault"), []byte("v2"+strings.Repeat("x", i)), 0o600); err != nil {
			t.Fatal(err)
		}
		select {
		case <-gw.swapped:
			return
		case <-time.After(50 * time.Millisecond):
		}
		if i == 100 {
			t.Fatal("no reload after the served vault (b.vault, named by the reloaded config) changed")
		}
	}
}

// TestWatchSeesEditBeforeWatch: an edit made after the config was loaded
// and before Watch began (serve may wait minutes for ACME between them)
// is reloaded.
func TestWatchSeesEditBeforeWatch(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "till.yaml")
	if err := os.WriteFile(cfgFile, []byte(goodYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	load := fileLoader(cfgFile, dir)
	r, gw, _ := newLoaded(t, load) // serve: loadAll
	// Between loadAll and rl.Watch(): the operator edits the config.
	if err := os.WriteFile(cfgFile, []byte(goodYAML+"log: {level: warn}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stop := r.watch(5 * time.Millisecond)
	defer stop()
	select {
	case <-gw.swapped:
	case <-time.After(2 * time.Second):
		t.Fatal("the config edited after it was loaded, before Watch started, is never reloaded")
	}
}

// TestWatchSeesEditWhileLoading: an edit of the config that lands after
// it was read and before New (while serve decrypts the vault) is
// reloaded, when the files were seen before they were read.
func TestWatchSeesEditWhileLoading(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "till.yaml")
	if err := os.WriteFile(cfgFile, []byte(goodYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	load := fileLoader(cfgFile, dir)
	seen := &Seen{}
	seen.See(cfgFile)
	served, _, err := load()
	if err != nil {
		t.Fatal(err)
	}
	seen.SeeFilesOf(served)
	// The vault decrypts: the operator edits the config.
	if err := os.WriteFile(cfgFile, []byte(goodYAML+"log: {level: warn}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	gw := &fakeGateway{swapped: make(chan struct{}, 4)}
	r := New(served, nil, Options{Load: load, Gateway: gw, Metrics: &fakeMetrics{}, Log: zerolog.Nop(), Seen: seen})
	stop := r.watch(5 * time.Millisecond)
	defer stop()
	select {
	case <-gw.swapped:
	case <-time.After(2 * time.Second):
		t.Fatal("the config edited while it was loaded is never reloaded")
	}
}

// fileLoader loads the config file cfgFile, with no secrets.
func fileLoader(cfgFile, dir string) func() (*config.Config, map[string]vault.Secret, error) {
	return func() (*config.Config, map[string]vault.Secret, error) {
		b, err := os.ReadFile(cfgFile)
		if err != nil {
			return nil, nil, err
		}
		c, err := config.Parse(cfgFile, b, dir)
		return c, nil, err
	}
}

// TestWatchSeesEditDuringVaultMove: an edit of the config that lands
// while a reload runs (here, one that moves the vault to another file)
// is reloaded too, as it is during any other reload: the watch moving to
// the new vault file does not take the config as it is after the reload
// for its starting state.
func TestWatchSeesEditDuringVaultMove(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "till.yaml")
	yamlA := goodYAML + "vault: {path: a.vault}\n"
	yamlB := goodYAML + "vault: {path: b.vault}\n"
	edited := yamlB + "log: {level: warn}\n"
	for _, f := range []string{"a.vault", "b.vault"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("v1"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(cfgFile, []byte(yamlA), 0o644); err != nil {
		t.Fatal(err)
	}
	files := fileLoader(cfgFile, dir)
	var once sync.Once
	load := func() (*config.Config, map[string]vault.Secret, error) {
		c, secrets, err := files()
		if err == nil && filepath.Base(c.Vault.Path) == "b.vault" {
			// The operator's next edit, while till reads the vault.
			once.Do(func() {
				if err := os.WriteFile(cfgFile, []byte(edited), 0o644); err != nil {
					t.Error(err)
				}
			})
		}
		return c, secrets, err
	}
	r, gw, _ := newLoaded(t, load)
	stop := r.watch(5 * time.Millisecond)
	defer stop()
	if err := os.WriteFile(cfgFile, []byte(yamlB), 0o644); err != nil {
		t.Fatal(err)
	}
	for deadline := time.After(5 * time.Second); ; {
		select {
		case <-gw.swapped:
		case <-deadline:
			t.Fatal("the config edited while the reload that moved the vault ran is never reloaded")
		}
		r.mu.Lock()
		level := r.cfg.Log.Level
		r.mu.Unlock()
		if level == "warn" {
			return
		}
	}
}

// TestWatchSeesVaultEditDuringVaultMove: an edit of the vault file a
// reload moves to, landing after that reload read it (a secret rotated
// while the reload ran), is reloaded: the watch's first state of the new
// vault is not taken after the reload, when the edit is already in it.
func TestWatchSeesVaultEditDuringVaultMove(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "till.yaml")
	yamlA := goodYAML + "vault: {path: a.vault}\n"
	yamlB := goodYAML + "vault: {path: b.vault}\n"
	for _, f := range []string{"a.vault", "b.vault"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("v1"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(cfgFile, []byte(yamlA), 0o644); err != nil {
		t.Fatal(err)
	}
	files := fileLoader(cfgFile, dir)
	var (
		mu   sync.Mutex
		read string // what the last load read of b.vault
		once sync.Once
	)
	load := func() (*config.Config, map[string]vault.Secret, error) {
		c, secrets, err := files()
		if err != nil || filepath.Base(c.Vault.Path) != "b.vault" {
			return c, secrets, err
		}
		b, err := os.ReadFile(c.Vault.Path)
		if err != nil {
			return nil, nil, err
		}
		mu.Lock()
		read = string(b)
		mu.Unlock()
		// The operator's rotation, just after till read the vault.
		once.Do(func() {
			if err := os.WriteFile(c.Vault.Path, []byte("v2, rotated"), 0o600); err != nil {
				t.Error(err)
			}
		})
		return c, secrets, nil
	}
	r, gw, _ := newLoaded(t, load)
	stop := r.watch(5 * time.Millisecond)
	defer stop()
	if err := os.WriteFile(cfgFile, []byte(yamlB), 0o644); err != nil {
		t.Fatal(err)
	}
	for deadline := time.After(2 * time.Second); ; {
		select {
		case <-gw.swapped:
		case <-deadline:
			t.Fatal("the vault edited while the reload that moved to it ran is never reloaded: the rotated key is not served")
		}
		mu.Lock()
		got := read
		mu.Unlock()
		if got == "v2, rotated" {
			return
		}
	}
}

// TestWatchSeesPriceFileEdit: an edit of a file a reload reads besides
// the config and vault (here the price table) reloads, as one of the
// config does: documented as read at each reload, it was read only at a
// SIGHUP or an edit of the config.
func TestWatchSeesPriceFileEdit(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "till.yaml")
	prices := filepath.Join(dir, "prices.yaml")
	if err := os.WriteFile(prices, []byte("models: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgFile, []byte(goodYAML+"prices: {file: prices.yaml}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	load := fileLoader(cfgFile, dir)
	r, gw, served := newLoaded(t, load)
	if served.Prices.File != prices {
		t.Fatalf("prices.file %q, want %q", served.Prices.File, prices)
	}
	stop := r.watch(5 * time.Millisecond)
	defer stop()
	if err := os.WriteFile(prices, []byte("models:\n  m: {input: 1, output: 2}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gw.swapped:
	case <-time.After(5 * time.Second):
		t.Fatal("no reload after the price file changed")
	}
}

// newLoaded loads the config as serve does (loadAll) and returns a
// Reloader serving it, unwatched yet, whose gateway tells of each swap.
func newLoaded(t *testing.T, load func() (*config.Config, map[string]vault.Secret, error)) (*Reloader, *fakeGateway, *config.Config) {
	t.Helper()
	served, _, err := load()
	if err != nil {
		t.Fatal(err)
	}
	gw := &fakeGateway{swapped: make(chan struct{}, 4)}
	return New(served, nil, Options{Load: load, Gateway: gw, Metrics: &fakeMetrics{}, Log: zerolog.Nop()}), gw, served
}
