package proxy

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
	"github.com/tillgw/till/vault/source"
)

// fakeKeys stands for the source cache: each ref's current value, and
// whether it is stale or unavailable.
type fakeKeys struct {
	mu      sync.Mutex
	values  map[string]string
	stale   bool
	failing bool
	gets    int
}

func (f *fakeKeys) set(ref, v string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.values[ref] = v
}

func (f *fakeKeys) GetAs(_ context.Context, ref string, form source.Form) (source.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets++
	if f.failing {
		return source.Result{}, fmt.Errorf("fake source down: %w", source.ErrUnavailable)
	}
	if form == source.FormFields {
		fields, err := vault.ParseFields([]byte(f.values[ref]))
		if err != nil {
			return source.Result{}, err
		}
		return source.Result{Secret: vault.NewFieldSecret(ref, fields, time.Now()), Stale: f.stale}, nil
	}
	return source.Result{Secret: vault.NewSecret(ref, f.values[ref], time.Now()), Stale: f.stale}, nil
}

// TestSourcedRoutes drives routes whose keys come from a source: the
// value sent follows a rotation (header and query injection), the use
// and request records carry the fingerprint of the value sent, echoes of
// the current value are removed, a source that fails gives 503
// secret_unavailable without touching the upstream, and a stale value is
// recorded as such. A request refused by policy never fetches.
func TestSourcedRoutes(t *testing.T) {
	var mu sync.Mutex
	var got []string // what the upstream received: header or query key
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if q := r.URL.Query().Get("key"); q != "" {
			k = q
		}
		mu.Lock()
		got = append(got, k)
		mu.Unlock()
		w.Header().Set("X-Echo", "seen "+k)
	}))
	defer up.Close()
	yaml := strings.ReplaceAll(`version: 1
sources:
  - {name: mounted, type: files, dir: keys}
routes:
  - {name: openai, preset: openai, upstream: "{{UP}}", secret: "mounted:openai", allow: {methods: [GET]}}
  - {name: q, prefix: /q, upstream: "{{UP}}", secret: "mounted:q", inject: {query: key}}
`, "{{UP}}", up.URL)
	cfg, err := config.Parse("till.yaml", []byte(yaml), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	keys := &fakeKeys{values: map[string]string{"mounted:openai": "sk-source-one-0123456789", "mounted:q": "AIzaSourceQuery0123456789"}}
	buf := &lockedBuffer{}
	gw := New(NewSnapshotWithKeys(cfg, nil, keys), Options{Audit: testAudit(buf), Log: zerolog.Nop()})
	serve := func(method, path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest(method, path, nil))
		return w
	}
	fp := func(v string) string { return vault.NewSecret("x", v, time.Now()).Fingerprint() }

	for _, v := range []string{"sk-source-one-0123456789", "sk-source-two-9876543210"} {
		keys.set("mounted:openai", v)
		w := serve("GET", "/openai/v1/models")
		if w.Code != 200 || strings.Contains(w.Header().Get("X-Echo"), v) {
			t.Errorf("with %s: status %d, echo %q", v[:13], w.Code, w.Header().Get("X-Echo"))
		}
		recs, uses := buf.records(t), buf.uses(t)
		last, use := recs[len(recs)-1], uses[len(uses)-1]
		if last["key_fp"] != fp(v) || use["key_fp"] != fp(v) || last["secret"] != "mounted:openai" {
			t.Errorf("with %s: records name key %v (use %v), secret %v; want %s", v[:13], last["key_fp"], use["key_fp"], last["secret"], fp(v))
		}
	}
	if w := serve("GET", "/q/x?key=dummy"); w.Code != 200 {
		t.Errorf("query route: status %d", w.Code)
	}
	mu.Lock()
	want := []string{"sk-source-one-0123456789", "sk-source-two-9876543210", "AIzaSourceQuery0123456789"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("the upstream received %q, want %q", got, want)
	}
	mu.Unlock()

	keys.mu.Lock()
	before := keys.gets
	keys.mu.Unlock()
	if w := serve("DELETE", "/openai/v1/models"); w.Code != 403 {
		t.Errorf("a method the route refuses: %d", w.Code)
	}
	keys.mu.Lock()
	if keys.gets != before {
		t.Errorf("a refused request fetched the key")
	}
	keys.stale = true
	keys.mu.Unlock()
	if w := serve("GET", "/openai/v1/models"); w.Code != 200 {
		t.Errorf("stale: status %d", w.Code)
	}
	if recs := buf.records(t); recs[len(recs)-1]["reason"] != "secret_stale" || recs[len(recs)-1]["outcome"] != "forwarded" {
		t.Errorf("stale: record %v", recs[len(recs)-1])
	}

	keys.mu.Lock()
	keys.failing = true
	keys.mu.Unlock()
	mu.Lock()
	hits := len(got)
	mu.Unlock()
	w := serve("GET", "/openai/v1/models")
	if w.Code != 503 || w.Header().Get("X-Till-Error") != CodeSecretUnavailable {
		t.Errorf("source down: %d %q, want 503 secret_unavailable", w.Code, w.Header().Get("X-Till-Error"))
	}
	mu.Lock()
	if len(got) != hits {
		t.Errorf("the upstream was reached while the source was down")
	}
	mu.Unlock()
	if recs := buf.records(t); recs[len(recs)-1]["reason"] != CodeSecretUnavailable || recs[len(recs)-1]["key_fp"] != "" {
		t.Errorf("source down: record %v", recs[len(recs)-1])
	}
}

// docSource is a source of fixed documents, by path.
type docSource map[string]string

func (d docSource) Fetch(_ context.Context, path string) ([]byte, source.Meta, error) {
	return []byte(d[path]), source.Meta{Fields: true}, nil
}

// TestSourcedFieldsBesideMetadata: a Vault-style entry with fields a
// route does not read (an "Owner", a "rotated_at" number) mints as the
// credential alone would; one whose needed field is not a string is
// refused with 503 secret_unavailable, and the log names the field,
// never a value.
func TestSourcedFieldsBesideMetadata(t *testing.T) {
	c := &tokenCounter{}
	up := httptest.NewServer(c)
	defer up.Close()
	docs := docSource{
		"ok":  `{"client_id":"app","client_secret":"secret-app-0123456789","Owner":"team-a","rotated_at":1700000000}`,
		"bad": `{"client_id":"app","client_secret":987654321987,"Owner":"team-a"}`,
	}
	keys := source.NewCache(map[string]source.Spec{"corp": {Source: docs, TTL: time.Minute}}, source.Options{Log: zerolog.Nop()})
	y := "version: 1\nsources:\n  - {name: corp, type: files, dir: keys}\nroutes:\n" +
		"  - {name: ok, upstream: " + up.URL + ", secret: \"corp:ok\", inject: {oauth2: {token_url: " + up.URL + "/token}}}\n" +
		"  - {name: bad, upstream: " + up.URL + ", secret: \"corp:bad\", inject: {oauth2: {token_url: " + up.URL + "/token}}}\n"
	cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	gw := New(NewSnapshotWithKeys(cfg, nil, keys), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.New(logs)})
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/ok/x", nil))
	if w.Code != http.StatusOK || c.count() != 1 {
		t.Errorf("entry with metadata: %d with %d tokens minted, want 200 and 1", w.Code, c.count())
	}
	w = httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/bad/x", nil))
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("X-Till-Error") != CodeSecretUnavailable {
		t.Errorf("needed field not a string: got %d %s, want 503 %s", w.Code, w.Header().Get("X-Till-Error"), CodeSecretUnavailable)
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	log := logs.b.String()
	if !strings.Contains(log, `field \"client_secret\" is missing or not a string`) {
		t.Error("the log does not name the field that is not a string")
	}
	if strings.Contains(log, "987654321987") || strings.Contains(log, "secret-app-0123456789") {
		t.Error("the log holds a value")
	}
}

// statusKeys is fakeKeys that also tells, as the source cache does,
// when it fetched each ref (zero: not yet).
type statusKeys struct {
	*fakeKeys
	fetched map[string]time.Time
}

func (k statusKeys) StatusOf(ref string, _ source.Form) source.Status {
	return source.Status{Ref: ref, Fetched: k.fetched[ref]}
}

// TestAdminRoutesTellCached: /admin/routes says of a route whose key
// comes from a source whether the cache holds its value and since when
// (till test asks it), and says nothing of it for a vault key.
func TestAdminRoutesTellCached(t *testing.T) {
	y := "version: 1\nsources:\n  - {name: corp, type: files, dir: keys}\nroutes:\n" +
		"  - {name: a, preset: openai, prefix: /a, secret: 'corp:a'}\n  - {name: b, preset: openai, prefix: /b, secret: 'corp:b'}\n" +
		"  - {name: v, preset: openai, prefix: /v, secret: openai}\n"
	cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	keys := statusKeys{&fakeKeys{values: map[string]string{}}, map[string]time.Time{"corp:a": at}}
	routes := adminRoutes(NewSnapshotWithKeys(cfg, secrets(time.Now()), keys))
	if a := routes[0]; a.Cached == nil || !*a.Cached || a.Fetched == nil || !a.Fetched.Equal(at) {
		t.Errorf("route a, fetched at %v: cached %v, fetched %v", at, a.Cached, a.Fetched)
	}
	if b := routes[1]; b.Cached == nil || *b.Cached || b.Fetched != nil {
		t.Errorf("route b, not fetched: cached %v, fetched %v", b.Cached, b.Fetched)
	}
	if v := routes[2]; v.Cached != nil || v.Fetched != nil {
		t.Errorf("vault route v: cached %v, fetched %v; want neither", v.Cached, v.Fetched)
	}
}
