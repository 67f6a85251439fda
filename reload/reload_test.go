package reload

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy"
	"github.com/tillgw/till/vault"
)

const testKey = "sk-reload-test-0123456789abcdef"

// fakeGateway records the snapshots swapped into it.
type fakeGateway struct {
	mu      sync.Mutex
	snaps   []*proxy.Snapshot
	swapped chan struct{}
}

func (g *fakeGateway) Swap(s *proxy.Snapshot) {
	g.mu.Lock()
	g.snaps = append(g.snaps, s)
	g.mu.Unlock()
	if g.swapped != nil {
		g.swapped <- struct{}{}
	}
}

// fakeMetrics records each Reload(ok).
type fakeMetrics struct {
	mu      sync.Mutex
	reloads []bool
}

func (m *fakeMetrics) Reload(ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reloads = append(m.reloads, ok)
}

func parse(t *testing.T, dir, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse(filepath.Join(dir, "till.yaml"), []byte(yaml), dir)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

const goodYAML = "version: 1\nroutes:\n  - name: openai\n    preset: openai\n"

// TestReload checks that a failed reload keeps the old snapshot serving and
// counts as failed, and that a good one swaps in a new snapshot, counts as
// ok and names the settings that wait for a restart.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	secrets := map[string]vault.Secret{"openai": vault.NewSecret("openai", testKey, time.Now())}
	served := parse(t, dir, goodYAML)
	var load func() (*config.Config, map[string]vault.Secret, error)
	gw, metrics, logs := &fakeGateway{}, &fakeMetrics{}, &bytes.Buffer{}
	r := New(served, nil, Options{
		Load:    func() (*config.Config, map[string]vault.Secret, error) { return load() },
		Gateway: gw,
		Metrics: metrics,
		Log:     zerolog.New(logs),
		Base:    "http://127.0.0.1:8080",
	})

	bad := errors.New("till.yaml:6: routes[0].timeout: must be a duration")
	load = func() (*config.Config, map[string]vault.Secret, error) { return nil, nil, bad }
	if err := r.Reload(); !errors.Is(err, bad) {
		t.Fatalf("got %v, want %v", err, bad)
	}
	if len(gw.snaps) != 0 {
		t.Errorf("a failed reload swapped in %d snapshot(s), want none", len(gw.snaps))
	}
	if r.cfg != served {
		t.Error("a failed reload replaced the config being served")
	}
	if !strings.Contains(logs.String(), "reload failed: still serving the previous config") || !strings.Contains(logs.String(), "routes[0].timeout") {
		t.Errorf("the failed reload is not logged with its reason:\n%s", logs)
	}

	next := parse(t, dir, "version: 1\nlisten: 127.0.0.1:0\n"+goodYAML[len("version: 1\n"):]+"  - name: second\n    preset: openai\n    secret: openai\n")
	load = func() (*config.Config, map[string]vault.Secret, error) { return next, secrets, nil }
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if len(gw.snaps) != 1 || len(gw.snaps[0].Routes()) != 2 {
		t.Fatalf("got %d snapshot(s) swapped in, want 1 with 2 routes", len(gw.snaps))
	}
	if r.cfg != next {
		t.Error("the reloaded config is not the one served")
	}
	if got, want := metrics.reloads, []bool{false, true}; !slices.Equal(got, want) {
		t.Errorf("got reloads %v, want %v", got, want)
	}
	out := logs.String()
	for _, want := range []string{
		`"settings":["listen"]`, "changes to listen take effect at the next restart",
		`"message":"reloaded"`, `"route":"second"`, `"base_url":"http://127.0.0.1:8080/second/v1"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the log lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, testKey) {
		t.Error("the log holds the key")
	}
	if got := r.RestartNeeded(); !slices.Equal(got, []string{"listen"}) {
		t.Errorf("RestartNeeded: got %v, want [listen]", got)
	}
	// A later reload that leaves listen changed still waits for the
	// restart: it is measured against the config till started with.
	logs.Reset()
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := r.RestartNeeded(); !slices.Equal(got, []string{"listen"}) || !strings.Contains(logs.String(), "changes to listen take effect at the next restart") {
		t.Errorf("a second reload: RestartNeeded %v, log:\n%s", got, logs)
	}
	load = func() (*config.Config, map[string]vault.Secret, error) { return parse(t, dir, goodYAML), secrets, nil }
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := r.RestartNeeded(); got != nil {
		t.Errorf("back to the started config: RestartNeeded %v, want none", got)
	}
}

// TestReloadApplies checks that Apply sees each config swapped in, before
// the reload is logged, and never one that failed.
func TestReloadApplies(t *testing.T) {
	dir := t.TempDir()
	served := parse(t, dir, goodYAML)
	var applied []string
	logs := &bytes.Buffer{}
	var load func() (*config.Config, map[string]vault.Secret, error)
	r := New(served, nil, Options{
		Load:    func() (*config.Config, map[string]vault.Secret, error) { return load() },
		Gateway: &fakeGateway{},
		Metrics: &fakeMetrics{},
		Log:     zerolog.New(logs),
		Apply: func(c *config.Config) {
			if strings.Contains(logs.String(), `"message":"reloaded"`) {
				t.Error("Apply ran after the reload was logged")
			}
			applied = append(applied, c.Log.Level)
		},
	})
	load = func() (*config.Config, map[string]vault.Secret, error) { return nil, nil, errors.New("bad config") }
	if err := r.Reload(); err == nil {
		t.Fatal("a reload whose load failed reported no error")
	}
	load = func() (*config.Config, map[string]vault.Secret, error) {
		return parse(t, dir, goodYAML+"log: {level: warn}\n"), nil, nil
	}
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"warn"}; !slices.Equal(applied, want) {
		t.Errorf("got %q applied, want %q", applied, want)
	}
}

// TestPollerSettles checks the settle rule: a change is reloaded once it has
// held still for one check, once per burst of writes.
func TestPollerSettles(t *testing.T) {
	dir := t.TempDir()
	cfgFile, vaultFile := filepath.Join(dir, "till.yaml"), filepath.Join(dir, "till.vault")
	if err := os.WriteFile(cfgFile, []byte(goodYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Hour)
	write := func(path, data string, at time.Duration) {
		t.Helper()
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		// An explicit time: two writes within the file system's clock
		// granularity would otherwise look the same.
		if err := os.Chtimes(path, t0.Add(at), t0.Add(at)); err != nil {
			t.Fatal(err)
		}
	}
	p := newPoller(cfgFile, vaultFile) // the vault does not exist yet
	steps := []struct {
		name   string
		change func()
		want   bool
	}{
		{"nothing changed", nil, false},
		{"vault created", func() { write(vaultFile, "v1", time.Second) }, false},
		{"held still", nil, true},
		{"reloaded once", nil, false},
		{"config written", func() { write(cfgFile, goodYAML+"# a\n", 2*time.Second) }, false},
		{"written again", func() { write(cfgFile, goodYAML+"# b\n", 3*time.Second) }, false},
		{"same size, new time", func() { write(cfgFile, goodYAML+"# c\n", 4*time.Second) }, false},
		{"burst over", nil, true},
		{"quiet", nil, false},
		{"mode changed", func() { os.Chmod(vaultFile, 0o644) }, false},
		{"mode held", nil, true},
		{"replaced by rename", func() {
			write(vaultFile+".tmp", "v1", time.Second)
			os.Chmod(vaultFile+".tmp", 0o644)
			if err := os.Rename(vaultFile+".tmp", vaultFile); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"rename held", nil, true},
		{"vault removed", func() { os.Remove(vaultFile) }, false},
		{"removal held", nil, true},
	}
	for _, s := range steps {
		if s.change != nil {
			s.change()
		}
		if got := p.settled(); got != s.want {
			t.Fatalf("%s: got settled %v, want %v", s.name, got, s.want)
		}
	}
}

// TestWatch checks that Watch reloads after a change to the config file,
// and stops when asked.
func TestWatch(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "till.yaml")
	if err := os.WriteFile(cfgFile, []byte(goodYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	served := parse(t, dir, goodYAML)
	gw := &fakeGateway{swapped: make(chan struct{}, 1)}
	r := New(served, nil, Options{
		Load:    func() (*config.Config, map[string]vault.Secret, error) { return served, nil, nil },
		Gateway: gw,
		Metrics: &fakeMetrics{},
		Log:     zerolog.Nop(),
	})
	stop := r.watch(time.Millisecond)
	defer stop()
	if err := os.WriteFile(cfgFile, []byte(goodYAML+"# edited\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gw.swapped:
	case <-time.After(10 * time.Second):
		t.Fatal("no reload 10s after the config changed")
	}
}

// TestRouteLogHintKeepsTheConfig: serve's route line hints at the command
// that stores each missing secret, a pool's included, in the vault of the
// config served (-c): without it, the command fills another vault.
func TestRouteLogHintKeepsTheConfig(t *testing.T) {
	cfg, err := config.Parse("/etc/till/till.yaml", []byte("version: 1\nroutes:\n  - {name: openai, preset: openai}\n  - {name: pool, preset: openai, prefix: /p, secret: [a, b]}\n"), "/etc/till")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	LogRoutes(zerolog.New(&buf), cfg, proxy.NewSnapshot(cfg, nil), "http://127.0.0.1:8080")
	for _, want := range []string{`"hint":"till secret set openai -c /etc/till/till.yaml"`, `"hint":"till secret set a -c /etc/till/till.yaml; till secret set b -c /etc/till/till.yaml"`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("route log lacks %s:\n%s", want, buf.String())
		}
	}
}

// TestRouteLogWarnsOfShortKey: serve's route line warns, at start and at
// each reload, of a key (a pool's too) too short for its echo to be
// removed, and not of one long enough.
func TestRouteLogWarnsOfShortKey(t *testing.T) {
	cfg, err := config.Parse("/etc/till/till.yaml", []byte("version: 1\nroutes:\n  - {name: openai, preset: openai}\n  - {name: pool, preset: openai, prefix: /p, secret: [a, b]}\n  - {name: long, preset: openai, prefix: /l, secret: c}\n"), "/etc/till")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	secrets := map[string]vault.Secret{"openai": vault.NewSecret("openai", "x", now), "a": vault.NewSecret("a", "sk-long-enough-0123", now),
		"b": vault.NewSecret("b", "short", now), "c": vault.NewSecret("c", "sk-long-enough-0123", now)}
	var buf bytes.Buffer
	LogRoutes(zerolog.New(&buf), cfg, proxy.NewSnapshot(cfg, secrets), "http://127.0.0.1:8080")
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		short := !strings.Contains(line, `"route":"long"`)
		if got := strings.Contains(line, `"level":"warn"`) && strings.Contains(line, ShortKeyWarning); got != short {
			t.Errorf("route line warns of a short key: %v, want %v:\n%s", got, short, line)
		}
	}
}

// TestNoRoutesHint: with no routes, the warning says what would add one:
// a route in the config served, or, on built-in defaults, a preset's key
// in the vault or a config.
func TestNoRoutesHint(t *testing.T) {
	for _, tt := range []struct{ file, want, not string }{
		{"/etc/till/till.yaml", "add one to the config", "till init"},
		{"", "till init", "add one to the config"},
	} {
		cfg := config.Default("/tmp", "", nil)
		if tt.file != "" {
			var err error
			if cfg, err = config.Parse(tt.file, []byte("version: 1\nroutes: []\n"), "/etc/till"); err != nil {
				t.Fatal(err)
			}
		}
		var buf bytes.Buffer
		LogRoutes(zerolog.New(&buf), cfg, proxy.NewSnapshot(cfg, nil), "http://127.0.0.1:8080")
		if !strings.Contains(buf.String(), tt.want) || strings.Contains(buf.String(), tt.not) {
			t.Errorf("config %q: the no-routes warning does not say %q (or says %q):\n%s", tt.file, tt.want, tt.not, buf.String())
		}
	}
}

// TestRotationDoesNotWaitForSources: a reload whose config is refused
// still serves the vault as it is now with the config served ("a rotation
// does not wait for the config to be fixed": Options.Vault, README,
// docs/reference.md). That holds when the new config is refused while it
// is loaded (bad YAML), and must hold too when it is refused because its
// sources: cannot be set up (Options.Keys fails: a Vault source with an
// unreadable ca_file, say). The operator who replaced a leaked key with
// till secret set, in the same edit, must not see the leaked key go on
// being sent until the config is fixed; the file watcher will not even
// try again until one of the files changes.
func TestRotationDoesNotWaitForSources(t *testing.T) {
	dir := t.TempDir()
	served := parse(t, dir, goodYAML)
	leaked := map[string]vault.Secret{"openai": vault.NewSecret("openai", testKey, time.Now())}
	rotated := map[string]vault.Secret{"openai": vault.NewSecret("openai", testKey+"-new", time.Now().Add(time.Second))}
	next := parse(t, dir, goodYAML+"  - name: second\n    preset: openai\n    secret: openai\n")
	gw, metrics := &fakeGateway{}, &fakeMetrics{}
	badSources := errors.New(`sources: "corp" (line 3): read ca_file: no such file`)
	r := New(served, leaked, Options{
		Load:    func() (*config.Config, map[string]vault.Secret, error) { return next, rotated, nil },
		Gateway: gw,
		Metrics: metrics,
		Log:     zerolog.New(&bytes.Buffer{}),
		Keys: func(c *config.Config) (proxy.Keys, error) {
			if c == next {
				return nil, badSources
			}
			return nil, nil
		},
		Vault: func(*config.Config) (map[string]vault.Secret, error) { return rotated, nil },
	})
	if err := r.Reload(); !errors.Is(err, badSources) {
		t.Fatalf("reload: %v, want %v", err, badSources)
	}
	if len(gw.snaps) == 0 {
		t.Fatal("the reload was refused for its sources and the rotated vault was not served: the leaked key is still sent")
	}
	last := gw.snaps[len(gw.snaps)-1]
	for _, rt := range last.Routes() {
		if rt.Fingerprint != rotated["openai"].Fingerprint() {
			t.Errorf("route %s serves key %s, want the rotated %s", rt.Name, rt.Fingerprint, rotated["openai"].Fingerprint())
		}
	}
}

// TestRolledBackVaultRefused: a reload that finds the vault file served
// holding a secret as it was before its last rotation (an older copy put
// back: a backup restored, a deploy tool's stale copy) is refused, also
// when only the vault is served after a refused config, and the rotated
// key stays in use: the older one may be the leaked key rotated away. A
// newer rotation, and another vault named by the config, still reload.
func TestRolledBackVaultRefused(t *testing.T) {
	dir := t.TempDir()
	served := parse(t, dir, goodYAML)
	t0 := time.Now()
	leaked := map[string]vault.Secret{"openai": vault.NewSecret("openai", testKey, t0)}
	rotated := map[string]vault.Secret{"openai": vault.NewSecret("openai", testKey+"-new", t0.Add(time.Second))}
	again := map[string]vault.Secret{"openai": vault.NewSecret("openai", testKey+"-again", t0.Add(2*time.Second))}
	other := parse(t, dir, goodYAML+"vault: {path: other.vault}\n")
	badConfig := errors.New("till.yaml:3: bad")
	var load func() (*config.Config, map[string]vault.Secret, error)
	var inVault map[string]vault.Secret
	gw, logs := &fakeGateway{}, &bytes.Buffer{}
	r := New(served, rotated, Options{
		Load:    func() (*config.Config, map[string]vault.Secret, error) { return load() },
		Gateway: gw,
		Metrics: &fakeMetrics{},
		Log:     zerolog.New(logs),
		Vault:   func(*config.Config) (map[string]vault.Secret, error) { return inVault, nil },
	})
	servedKey := func() string {
		t.Helper()
		if len(gw.snaps) == 0 {
			return rotated["openai"].Fingerprint()
		}
		return gw.snaps[len(gw.snaps)-1].Routes()[0].Fingerprint
	}

	load = func() (*config.Config, map[string]vault.Secret, error) { return served, leaked, nil }
	if err := r.Reload(); err == nil || !strings.Contains(err.Error(), "before its last rotation") {
		t.Errorf("reload of the vault as it was before the rotation: got %v, want it refused", err)
	}
	if got := servedKey(); got != rotated["openai"].Fingerprint() {
		t.Errorf("after the older vault was put back, the key served is %s, want the rotated %s", got, rotated["openai"].Fingerprint())
	}
	if strings.Contains(logs.String(), testKey) {
		t.Error("the log holds the key")
	}

	load = func() (*config.Config, map[string]vault.Secret, error) { return nil, nil, badConfig }
	inVault = leaked
	_ = r.Reload()
	if got := servedKey(); got != rotated["openai"].Fingerprint() {
		t.Errorf("after a refused config with the older vault, the key served is %s, want the rotated %s", got, rotated["openai"].Fingerprint())
	}

	load = func() (*config.Config, map[string]vault.Secret, error) { return served, again, nil }
	if err := r.Reload(); err != nil || servedKey() != again["openai"].Fingerprint() {
		t.Errorf("a later rotation: got %v, serving %s, want it served", err, servedKey())
	}
	load = func() (*config.Config, map[string]vault.Secret, error) { return other, leaked, nil }
	if err := r.Reload(); err != nil || servedKey() != leaked["openai"].Fingerprint() {
		t.Errorf("another vault named by the config: got %v, serving %s, want it served", err, servedKey())
	}
}
