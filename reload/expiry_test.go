package reload

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy"
	"github.com/tillgw/till/vault"
	"github.com/tillgw/till/vault/source"
)

// lockedBuffer is a bytes.Buffer the watcher's goroutine may write while
// the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// warnings returns the expiry warnings in the log, as route → status.
func warnings(t *testing.T, log string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(log) {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, ev)
	}
	return out
}

const expiryYAML = `version: 1
routes:
  - {name: fresh, preset: openai, secret: fresh}
  - {name: soon, preset: openai, secret: soon}
  - {name: gone, preset: openai, secret: gone}
  - {name: forever, preset: openai, secret: forever}
  - {name: missing, preset: openai, secret: missing}
`

func expirySecrets(now time.Time) map[string]vault.Secret {
	mk := func(name string, expires time.Time) vault.Secret {
		s := vault.NewSecret(name, testKey+"-"+name, now.Add(-time.Hour))
		s.Expires = expires
		return s
	}
	return map[string]vault.Secret{
		"fresh":   mk("fresh", now.Add(30*24*time.Hour)),
		"soon":    mk("soon", now.Add(3*24*time.Hour)),
		"gone":    mk("gone", now.Add(-time.Minute)),
		"forever": mk("forever", time.Time{}),
	}
}

// TestWarnExpiry checks which routes are warned about, with which fields,
// and that no value is logged.
func TestWarnExpiry(t *testing.T) {
	now := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	secrets := expirySecrets(now)
	snap := proxy.NewSnapshot(parse(t, t.TempDir(), expiryYAML), secrets)
	var logs bytes.Buffer
	if n := WarnExpiry(zerolog.New(&logs), snap, now); n != 2 {
		t.Errorf("got %d warnings, want 2", n)
	}
	evs := warnings(t, logs.String())
	if len(evs) != 2 {
		t.Fatalf("got %d log lines, want 2:\n%s", len(evs), logs.String())
	}
	want := []struct{ route, status, expires string }{
		{"soon", "expiring", "2027-03-04T12:00:00Z"},
		{"gone", "expired", "2027-03-01T11:59:00Z"},
	}
	for i, w := range want {
		ev := evs[i]
		if ev["level"] != "warn" || ev["route"] != w.route || ev["secret"] != w.route || ev["status"] != w.status ||
			ev["expires"] != w.expires || ev["key_fp"] != secrets[w.route].Fingerprint() {
			t.Errorf("warning %d: got %v, want route %s, status %s, expires %s and its fingerprint", i, ev, w.route, w.status, w.expires)
		}
	}
	if strings.Contains(logs.String(), testKey) {
		t.Error("the log holds a key")
	}
}

// TestWatchExpiry checks that the watcher warns at once, again at every
// tick with the clock and the snapshot of that moment, and not after it
// is stopped.
func TestWatchExpiry(t *testing.T) {
	start := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	var snap atomic.Pointer[proxy.Snapshot]
	snap.Store(proxy.NewSnapshot(parse(t, t.TempDir(), expiryYAML), expirySecrets(start)))
	var days atomic.Int64 // since start
	now := func() time.Time { return start.Add(time.Duration(days.Load()) * 24 * time.Hour) }
	logs := &lockedBuffer{}

	// At once: an interval no tick can beat, so the count is exact.
	first := &lockedBuffer{}
	once := NewExpiryWatch(zerolog.New(first), snap.Load, time.Hour, now)
	once.Start()
	once.Stop()
	if got := strings.Count(first.String(), "\n"); got != 2 {
		t.Fatalf("at start: got %d warnings, want 2:\n%s", got, first)
	}
	watch := NewExpiryWatch(zerolog.New(logs), snap.Load, time.Millisecond, now)
	watch.Start()
	defer watch.Stop()

	// A reload (routes renamed, so that each line says which snapshot it
	// came from) in which "gone" was rotated, and 16 days on: "fresh"
	// enters its last fortnight.
	rotated := expirySecrets(start)
	rotated["gone"] = vault.NewSecret("gone", testKey+"-gone2", start)
	renamed := strings.NewReplacer("name: fresh", "name: fresh2", "name: soon", "name: soon2", "name: gone", "name: gone2").Replace(expiryYAML)
	snap.Store(proxy.NewSnapshot(parse(t, t.TempDir(), renamed), rotated))
	days.Store(16)
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), `"route":"fresh2"`); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no tick warned with the new snapshot and clock:\n%s", logs)
		}
	}
	watch.Stop()
	for _, ev := range warnings(t, logs.String()) {
		if ev["route"] == "gone2" {
			t.Errorf("the rotated key is warned about: %v", ev)
		}
	}
	n := len(logs.String())
	time.Sleep(20 * time.Millisecond)
	if len(logs.String()) != n {
		t.Error("the watcher logged after it was stopped")
	}
	if strings.Contains(logs.String(), testKey) {
		t.Error("the log holds a key")
	}
}

// TestWarnAsAKeyExpires: a key in use that expires while till serves is
// told of at that moment, once, by name and fingerprint with the routes
// that use it (its requests begin to get secret_expired), not at the next
// daily warning; the watch then waits for the next key, and a reload
// (Changed) has it look again: a rotated key's new expiry is waited for.
func TestWarnAsAKeyExpires(t *testing.T) {
	start := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	var clock atomic.Pointer[time.Time]
	clock.Store(&start)
	now := func() time.Time { return *clock.Load() }
	yaml := expiryYAML + "  - {name: soon-too, preset: openai, secret: soon}\n"
	var snap atomic.Pointer[proxy.Snapshot]
	snap.Store(proxy.NewSnapshot(parse(t, t.TempDir(), yaml), expirySecrets(start)))
	logs := &lockedBuffer{}
	watch := NewExpiryWatch(zerolog.New(logs), snap.Load, time.Hour, now)
	waits, fire := make(chan time.Duration), make(chan time.Time)
	watch.after = func(d time.Duration) <-chan time.Time {
		waits <- d
		return fire
	}
	watch.Start()
	defer watch.Stop()
	if d := <-waits; d != 3*24*time.Hour {
		t.Fatalf("the watch waits %s, want 72h (the key soon)", d)
	}
	at := len(logs.String()) // the warnings at start
	// The timer fires; the key soon has expired.
	later := start.Add(3*24*time.Hour + time.Second)
	clock.Store(&later)
	fire <- later
	if d := <-waits; d != 27*24*time.Hour-time.Second {
		t.Errorf("after soon expired the watch waits %s, want the key fresh's 27 days less a second", d)
	}
	evs := warnings(t, logs.String()[at:])
	if len(evs) != 1 {
		t.Fatalf("got %d lines as soon expired, want 1:\n%s", len(evs), logs.String()[at:])
	}
	ev := evs[0]
	if ev["level"] != "warn" || ev["secret"] != "soon" || ev["status"] != "expired" || ev["expires"] != "2027-03-04T12:00:00Z" ||
		ev["key_fp"] != expirySecrets(start)["soon"].Fingerprint() || fmt.Sprint(ev["routes"]) != "[soon soon-too]" && fmt.Sprint(ev["routes"]) != "[soon-too soon]" {
		t.Errorf("got %v, want the key soon expired, for routes soon and soon-too", ev)
	}
	// A reload in which fresh was rotated with a later expiry.
	at = len(logs.String())
	rotated := expirySecrets(start)
	fresh := vault.NewSecret("fresh", testKey+"-fresh2", later)
	fresh.Expires = start.Add(40 * 24 * time.Hour)
	rotated["fresh"] = fresh
	snap.Store(proxy.NewSnapshot(parse(t, t.TempDir(), yaml), rotated))
	watch.Changed()
	if d := <-waits; d != 37*24*time.Hour-time.Second {
		t.Errorf("after a reload the watch waits %s, want the rotated key's 37 days less a second", d)
	}
	if got := logs.String()[at:]; got != "" {
		t.Errorf("a reload had the watch log %s; the keys expired were told of already", got)
	}
	if strings.Contains(logs.String(), testKey) {
		t.Error("the log holds a key")
	}
}

// TestWarnExpiryPool: every key of a pool is watched, not only its first.
func TestWarnExpiryPool(t *testing.T) {
	now := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	yaml := "version: 1\nroutes:\n  - {name: pooled, preset: openai, secret: [fresh, gone, forever]}\n"
	var logs bytes.Buffer
	if n := WarnExpiry(zerolog.New(&logs), proxy.NewSnapshot(parse(t, t.TempDir(), yaml), expirySecrets(now)), now); n != 1 {
		t.Errorf("got %d warnings, want 1", n)
	}
	evs := warnings(t, logs.String())
	if len(evs) != 1 || evs[0]["route"] != "pooled" || evs[0]["secret"] != "gone" || evs[0]["status"] != "expired" {
		t.Errorf("warnings %v, want one for the pool's expired key gone", evs)
	}
}

// metaSource is a source whose every value is testKey, expiring at
// expires as a Vault entry's custom_metadata.expires says.
type metaSource struct{ expires time.Time }

func (m metaSource) Fetch(context.Context, string) ([]byte, source.Meta, error) {
	return []byte(testKey), source.Meta{Expires: m.expires}, nil
}

// TestWarnExpirySourcedKeys: the keys a running till fetched from a
// source are warned about too, by the expiry their source records, a
// route's own and a pool's; one not fetched yet is not (nothing is known
// of it).
func TestWarnExpirySourcedKeys(t *testing.T) {
	now := time.Now()
	yaml := `version: 1
sources:
  - {name: corp, type: files, dir: keys}
routes:
  - {name: own, preset: openai, secret: "corp:own"}
  - {name: pooled, preset: openai, secret: [fresh, "corp:member"]}
  - {name: unfetched, preset: openai, secret: "corp:later"}
`
	cache := source.NewCache(map[string]source.Spec{"corp": {Source: metaSource{now.Add(3 * 24 * time.Hour)}, TTL: time.Hour}}, source.Options{Log: zerolog.Nop()})
	for _, ref := range []string{"corp:own", "corp:member"} {
		if _, err := cache.Get(context.Background(), ref); err != nil {
			t.Fatal(err)
		}
	}
	snap := proxy.NewSnapshotWithKeys(parse(t, t.TempDir(), yaml), expirySecrets(now), cache)
	var logs bytes.Buffer
	WarnExpiry(zerolog.New(&logs), snap, now)
	evs := warnings(t, logs.String())
	want := map[string]string{"own": "corp:own", "pooled": "corp:member"}
	for _, ev := range evs {
		if want[ev["route"].(string)] == ev["secret"] && ev["status"] == "expiring" && strings.HasPrefix(ev["key_fp"].(string), "sha256:") {
			delete(want, ev["route"].(string))
		}
	}
	if len(want) > 0 || len(evs) != 2 {
		t.Errorf("warnings %v; want one each for corp:own and corp:member, expiring in 3 days", evs)
	}
}

// TestReloadWarnsOfExpiry: a reload that serves a key expired or about to
// expire says so at once, as serve does at start, not at the next daily
// warning: a key set again with a short --expires would otherwise refuse
// every request (503 secret_expired) without a line in the log.
func TestReloadWarnsOfExpiry(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	logs := &lockedBuffer{}
	load := func() (*config.Config, map[string]vault.Secret, error) {
		return parse(t, dir, expiryYAML), expirySecrets(now), nil
	}
	r := New(parse(t, dir, expiryYAML), nil, Options{Load: load, Gateway: &fakeGateway{}, Metrics: &fakeMetrics{}, Log: zerolog.New(logs)})
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	got := map[any]any{}
	for _, ev := range warnings(t, logs.String()) {
		if ev["status"] != nil {
			got[ev["route"]] = ev["status"]
		}
	}
	if want := map[any]any{"soon": "expiring", "gone": "expired"}; !maps.Equal(got, want) {
		t.Errorf("the reload warned of %v, want %v:\n%s", got, want, logs)
	}
}

// movingSource is a source whose value and expiry the test sets.
type movingSource struct {
	mu      sync.Mutex
	value   string
	expires time.Time
}

func (m *movingSource) set(value string, expires time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.value, m.expires = value, expires
}

func (m *movingSource) Fetch(context.Context, string) ([]byte, source.Meta, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return []byte(m.value), source.Meta{Expires: m.expires}, nil
}

// TestWarnAsASourcedKeyExpires: the watch, told of a source's news as
// serve tells it (OnChange), waits for the expiry a source moved with the
// value unchanged (it kept waiting for the old one, and the key expired
// without a line), and tells of a value that arrives expired already (no
// reload's warning does).
func TestWarnAsASourcedKeyExpires(t *testing.T) {
	start := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	var clock atomic.Pointer[time.Time]
	clock.Store(&start)
	now := func() time.Time { return *clock.Load() }
	setClock := func(t time.Time) { clock.Store(&t) }
	src := &movingSource{value: testKey, expires: start.Add(time.Hour)}
	cache := source.NewCache(map[string]source.Spec{"corp": {Source: src, TTL: time.Minute}}, source.Options{Log: zerolog.Nop(), Now: now})
	yaml := "version: 1\nsources:\n  - {name: corp, type: files, dir: keys}\nroutes:\n  - {name: own, preset: openai, secret: \"corp:own\"}\n"
	snap := proxy.NewSnapshotWithKeys(parse(t, t.TempDir(), yaml), nil, cache)
	logs := &lockedBuffer{}
	watch := NewExpiryWatch(zerolog.New(logs), func() *proxy.Snapshot { return snap }, time.Hour, now)
	waits, fire, stopped := make(chan time.Duration), make(chan time.Time), make(chan struct{})
	watch.after = func(d time.Duration) <-chan time.Time {
		select {
		case waits <- d:
		case <-stopped:
		}
		return fire
	}
	// wait waits for the watch to wait want: it may look more than once
	// at one change (told of it before its first look).
	wait := func(want time.Duration, what string) {
		t.Helper()
		for timeout := time.After(5 * time.Second); ; {
			select {
			case d := <-waits:
				if d == want {
					return
				}
			case <-timeout:
				t.Fatalf("the watch does not wait %s %s", want, what)
			}
		}
	}
	cache.OnChange(watch.Fetched)
	fetch := func() {
		t.Helper()
		if _, err := cache.Get(context.Background(), "corp:own"); err != nil {
			t.Fatal(err)
		}
	}
	watch.Start()
	defer watch.Stop()
	defer close(stopped)
	fetch()
	wait(time.Hour, "once the key is fetched")
	// The source moves the expiry earlier, the value unchanged.
	src.set(testKey, start.Add(30*time.Minute))
	setClock(start.Add(2 * time.Minute)) // past the ttl
	fetch()
	wait(28*time.Minute, "once the source moved the expiry")
	// grown waits for a line logged past at.
	grown := func(at int) {
		for deadline := time.Now().Add(5 * time.Second); len(logs.String()) == at && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
	}
	at := len(logs.String())
	setClock(start.Add(30*time.Minute + time.Second))
	for fired := false; !fired; {
		select {
		case fire <- now():
			fired = true
		case <-waits: // a second look at the source's change
		}
	}
	grown(at)
	evs := warnings(t, logs.String()[at:])
	if len(evs) != 1 || evs[0]["secret"] != "corp:own" || evs[0]["status"] != "expired" || evs[0]["expires"] != "2027-03-01T12:30:00Z" {
		t.Fatalf("got %v as the key expired, want one line for corp:own", evs)
	}
	// A new value, expired already.
	at = len(logs.String())
	src.set(testKey+"-2", start.Add(10*time.Minute))
	setClock(start.Add(40 * time.Minute))
	fetch()
	grown(at)
	evs = warnings(t, logs.String()[at:])
	if len(evs) != 1 || evs[0]["secret"] != "corp:own" || evs[0]["status"] != "expired" || evs[0]["expires"] != "2027-03-01T12:10:00Z" {
		t.Errorf("got %v for a value fetched expired, want one line for corp:own", evs)
	}
	if strings.Contains(logs.String(), testKey) {
		t.Error("the log holds a key")
	}
}
