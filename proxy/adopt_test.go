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

// tokenCounter is a token endpoint (client credentials) that counts the
// tokens it issues, and an API that answers 200 to any of them.
type tokenCounter struct {
	mu     sync.Mutex
	issued int
}

func (c *tokenCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/token" {
		c.mu.Lock()
		c.issued++
		n := c.issued
		c.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"tok-%d-0123456789abcdef","token_type":"Bearer","expires_in":3600}`, n)
		return
	}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer tok-") {
		http.Error(w, "no token", http.StatusUnauthorized)
		return
	}
	w.Write([]byte(`{"ok":true}`))
}

func (c *tokenCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.issued
}

// TestReloadKeepsMintedTokens: a new snapshot with the same credential,
// minted the same way, uses the token minted before it (a reload for
// another route's sake mints nothing), also for a route whose credential
// is in a source; a changed credential or scope mints anew.
func TestReloadKeepsMintedTokens(t *testing.T) {
	c := &tokenCounter{}
	up := httptest.NewServer(c)
	defer up.Close()
	keys := &fakeKeys{values: map[string]string{"files:app/oauth": `{"client_id":"src","client_secret":"src-secret-0123456789"}`}}
	snapshot := func(scope, clientSecret, extra string) *Snapshot {
		t.Helper()
		y := "version: 1\nsources:\n  - {name: files, type: files, dir: " + t.TempDir() + "}\nroutes:\n" +
			"  - {name: api, upstream: " + up.URL + ", secret: oauth, inject: {oauth2: {token_url: " + up.URL + "/token, scopes: [" + scope + "]}}}\n" +
			"  - {name: sourced, upstream: " + up.URL + ", secret: \"files:app/oauth\", inject: {oauth2: {token_url: " + up.URL + "/token}}}\n" + extra
		cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		sec := vault.NewFieldSecret("oauth", map[string]string{"client_id": "app", "client_secret": clientSecret}, time.Now())
		return NewSnapshotWithKeys(cfg, map[string]vault.Secret{"oauth": sec, "other": vault.NewSecret("other", testKey, time.Now())}, keys)
	}
	gw := New(snapshot("read", "secret-0123456789", ""), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
	get := func(route string, wantMints int, why string) {
		t.Helper()
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", "/"+route+"/v1/x", nil))
		if w.Code != 200 || c.count() != wantMints {
			t.Fatalf("%s: %d with %d tokens minted, want 200 and %d", why, w.Code, c.count(), wantMints)
		}
	}
	get("api", 1, "first request")
	get("sourced", 2, "first request from a source")
	gw.Swap(snapshot("read", "secret-0123456789", "  - {name: other, preset: openai, upstream: "+up.URL+", secret: other}\n"))
	get("api", 2, "after a reload that added a route")
	get("sourced", 2, "from a source, after a reload")
	gw.Swap(snapshot("read write", "secret-0123456789", ""))
	get("api", 3, "after a reload that changed the scopes")
	gw.Swap(snapshot("read write", "rotated-0123456789", ""))
	get("api", 4, "after the client secret changed")
	get("sourced", 4, "from a source, two reloads on")
	keys.set("files:app/oauth", `{"client_id":"src","client_secret":"rotated-src-0123456789"}`)
	gw.Swap(snapshot("read write", "rotated-0123456789", ""))
	get("sourced", 5, "from a source whose value changed")
}

// TestReloadKeepsPoolRests: a pool key the upstream rate-limited keeps
// resting in the snapshot a reload brings; a key that left the pool and
// came back does not.
func TestReloadKeepsPoolRests(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		mu.Lock()
		seen[key]++
		mu.Unlock()
		if key == "sk-pool-a-0123456789" {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Write([]byte(`{"ok":true}`))
	}))
	defer up.Close()
	secrets := map[string]vault.Secret{
		"a": vault.NewSecret("a", "sk-pool-a-0123456789", time.Now()),
		"b": vault.NewSecret("b", "sk-pool-b-0123456789", time.Now()),
		"c": vault.NewSecret("c", "sk-pool-c-0123456789", time.Now()),
	}
	snapshot := func(pool string) *Snapshot {
		cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: "+up.URL+", secret: "+pool+", pool: {cooldown: 1h}}\n"), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return NewSnapshot(cfg, secrets)
	}
	gw := New(snapshot("[a, b]"), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
	uses := func(n int) (a, b int) {
		t.Helper()
		mu.Lock()
		clear(seen)
		mu.Unlock()
		for range n {
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, httptest.NewRequest("GET", "/openai/v1/models", nil))
			if w.Code != 200 {
				t.Fatalf("got %d, want 200 from key b", w.Code)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		return seen["sk-pool-a-0123456789"], seen["sk-pool-b-0123456789"]
	}
	if a, _ := uses(4); a != 1 {
		t.Fatalf("key a was tried %d times, want once before it rests", a)
	}
	gw.Swap(snapshot("[a, b]"))
	if a, b := uses(4); a != 0 || b != 4 {
		t.Errorf("after a reload: key a %d, key b %d uses; want 0 and 4 (a rests)", a, b)
	}
	gw.Swap(snapshot("[b, c]"))
	gw.Swap(snapshot("[a, b]"))
	if a, _ := uses(4); a != 1 {
		t.Errorf("key a, back in the pool: tried %d times, want once", a)
	}
}

// TestPoolRestDuringReload: a 429 that answers a request still running on
// the snapshot a reload replaced rests the key in the new one too.
func TestPoolRestDuringReload(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		mu.Lock()
		seen[key]++
		mu.Unlock()
		if key == "sk-pool-a-0123456789" {
			if r.URL.Path == "/v1/slow" {
				arrived <- struct{}{}
				<-release
			}
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Write([]byte(`{"ok":true}`))
	}))
	defer up.Close()
	secrets := map[string]vault.Secret{
		"a": vault.NewSecret("a", "sk-pool-a-0123456789", time.Now()),
		"b": vault.NewSecret("b", "sk-pool-b-0123456789", time.Now()),
	}
	snapshot := func() *Snapshot {
		cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: "+up.URL+", secret: [a, b], pool: {cooldown: 1h}}\n"), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return NewSnapshot(cfg, secrets)
	}
	gw := New(snapshot(), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
	done := make(chan struct{})
	go func() {
		defer close(done)
		gw.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/openai/v1/slow", nil)) // key a first
	}()
	<-arrived
	gw.Swap(snapshot()) // a reload while key a's request is upstream
	close(release)
	<-done
	mu.Lock()
	clear(seen)
	mu.Unlock()
	for range 4 {
		gw.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/openai/v1/models", nil))
	}
	mu.Lock()
	defer mu.Unlock()
	if a := seen["sk-pool-a-0123456789"]; a != 0 {
		t.Errorf("key a, rate-limited for 1h by a request that began before the reload, was tried %d more times after it", a)
	}
}

// refreshingKeys gives one unchanged credential whose version time moves
// on by a ttl at every read, as the source cache gives an exec helper's
// value (it reports none: the fetch time stands in) at every refresh.
type refreshingKeys struct {
	mu      sync.Mutex
	version time.Time
}

func (k *refreshingKeys) GetAs(_ context.Context, ref string, _ source.Form) (source.Result, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.version = k.version.Add(5 * time.Minute)
	return source.Result{Secret: vault.NewFieldSecret(ref, map[string]string{"client_id": "app", "client_secret": "secret-app-0123456789"}, k.version)}, nil
}

// TestSourcedTokenKeptAcrossRefreshes: with max_age set, a source value
// without a version time of its own expires later at each refresh, and
// is compiled anew; its minter, and the token it holds, are kept while
// the credential and the way it mints are the same.
func TestSourcedTokenKeptAcrossRefreshes(t *testing.T) {
	c := &tokenCounter{}
	up := httptest.NewServer(c)
	defer up.Close()
	y := "version: 1\nvault: {max_age: 90d}\nsources:\n  - {name: op, type: exec, command: [helper]}\nroutes:\n" +
		"  - {name: api, upstream: " + up.URL + ", secret: \"op:app\", inject: {oauth2: {token_url: " + up.URL + "/token}}}\n"
	cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gw := New(NewSnapshotWithKeys(cfg, nil, &refreshingKeys{version: time.Now()}), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
	const n = 5
	for range n {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
		if w.Code != http.StatusOK {
			t.Fatalf("status %d", w.Code)
		}
	}
	if got := c.count(); got != 1 {
		t.Errorf("%d requests over %d refreshes of an unchanged credential minted %d tokens, want 1", n, n, got)
	}
}

// TestReloadSeedTakenOnce: after a reload, the token minted before it is
// adopted by the first value compiled, and only by it: once the upstream
// has refused it, a later compile of the same credential (back after a
// rotation) mints anew rather than adopt it again.
func TestReloadSeedTakenOnce(t *testing.T) {
	var mu sync.Mutex
	issued := 0
	revoked := map[string]bool{}
	sent := map[string]int{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path == "/token" {
			issued++
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"access_token":"tok-%d-0123456789abcdef","token_type":"Bearer","expires_in":3600}`, issued)
			return
		}
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		sent[tok]++
		if revoked[tok] {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	defer up.Close()
	const first = "tok-1-0123456789abcdef"
	a, b := `{"client_id":"app","client_secret":"secret-a-0123456789"}`, `{"client_id":"app","client_secret":"secret-b-0123456789"}`
	keys := &fakeKeys{values: map[string]string{"files:app": a}}
	y := "version: 1\nsources:\n  - {name: files, type: files, dir: keys}\nroutes:\n" +
		"  - {name: api, upstream: " + up.URL + ", secret: \"files:app\", inject: {oauth2: {token_url: " + up.URL + "/token}}}\n"
	cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gw := New(NewSnapshotWithKeys(cfg, nil, keys), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
	get := func(want int, why string) {
		t.Helper()
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
		if w.Code != want {
			t.Errorf("%s: status %d, want %d", why, w.Code, want)
		}
	}
	get(http.StatusOK, "first request")
	mu.Lock()
	revoked[first] = true
	mu.Unlock()
	gw.Swap(NewSnapshotWithKeys(cfg, nil, keys))
	get(http.StatusUnauthorized, "after the reload, with the adopted token, refused")
	get(http.StatusOK, "with a new token")
	keys.set("files:app", b)
	get(http.StatusOK, "after a rotation")
	keys.set("files:app", a)
	get(http.StatusOK, "after the rotation was undone")
	mu.Lock()
	defer mu.Unlock()
	if sent[first] != 2 {
		t.Errorf("the token the upstream refused was sent %d times, want 2 (before it was refused, once after the reload)", sent[first])
	}
}

// TestRefusedTokenStaysRefusedAcrossReload: a request still running on the
// snapshot before a reload gets 401 for the minted token, which the
// reload had already adopted: the next request, on the new snapshot,
// mints anew rather than send the token the upstream has just refused.
func TestRefusedTokenStaysRefusedAcrossReload(t *testing.T) {
	var mu sync.Mutex
	issued := 0
	sent := map[string]int{}
	inUpstream := make(chan struct{})
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			mu.Lock()
			issued++
			n := issued
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"access_token":"tok-%d-0123456789abcdef","token_type":"Bearer","expires_in":3600}`, n)
			return
		}
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		mu.Lock()
		sent[tok]++
		mu.Unlock()
		if r.URL.Path == "/api/slow" || r.URL.Path == "/slow" {
			close(inUpstream)
			<-release
		}
		if tok == "tok-1-0123456789abcdef" {
			// revoked by the provider
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: api, upstream: " + up.URL + ", secret: cred, inject: {oauth2: {token_url: " + up.URL + "/token}}}\n"
	cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cred := oauthSecret("app", time.Now())
	snap := func() *Snapshot { return NewSnapshot(cfg, map[string]vault.Secret{"cred": cred}) }
	gw := New(snap(), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})

	done := make(chan int)
	go func() {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/slow", nil))
		done <- w.Code
	}()
	<-inUpstream
	gw.Swap(snap()) // a reload (same config) adopts tok-1 while it is in use
	close(release)
	if code := <-done; code != http.StatusUnauthorized {
		t.Fatalf("first request: %d, want the upstream's 401", code)
	}
	// till has now seen the upstream refuse tok-1.
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
	mu.Lock()
	defer mu.Unlock()
	if sent["tok-1-0123456789abcdef"] != 1 {
		t.Errorf("tok-1 was refused with 401, and then sent again %d more time(s) (status %d): the reload's copy of the token kept its own refused flag",
			sent["tok-1-0123456789abcdef"]-1, w.Code)
	}
}
