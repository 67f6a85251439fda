package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
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

// expiringKeys is a source whose one value expires at expires, as a
// Vault entry's custom_metadata.expires says.
type expiringKeys struct{ expires time.Time }

func (k expiringKeys) GetAs(_ context.Context, ref string, _ source.Form) (source.Result, error) {
	s := vault.NewSecret(ref, testKey, time.Now())
	s.Expires = k.expires
	return source.Result{Secret: s}, nil
}

// TestSourcedUpgradeEndsWhenItsKeyExpires: a protocol switch (WebSocket)
// on a route whose key comes from a source ends, under on_expired: block,
// when that key expires, as one on a vault key does.
func TestSourcedUpgradeEndsWhenItsKeyExpires(t *testing.T) {
	up := switchingEcho(t, nil)
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nvault: {on_expired: block}\nsources:\n  - {name: corp, type: files, dir: keys}\nroutes:\n  - {name: ws, preset: openai, upstream: "+up.URL+", secret: \"corp:k\"}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	expires := time.Now().Add(time.Second)
	buf := &lockedBuffer{}
	gw := New(NewSnapshotWithKeys(cfg, nil, expiringKeys{expires}), Options{Audit: testAudit(buf), Log: zerolog.Nop()})
	c, br := openHeld(t, gw, "GET /ws/v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", http.StatusSwitchingProtocols)
	if err := echoLine(c, br, "before"); err != nil {
		t.Fatalf("before the key expired: %v", err)
	}
	_, err = br.ReadString('\n')
	endedExpired(t, gw, buf, err, "the connection outlived its source key's expiry ("+expires.Format(time.StampMilli)+")")
}

// TestSourcedKeyExpiringAcrossReload: under on_expired: block, a key
// from a source that expires while a request's body is read, with a
// reload meanwhile, is not sent.
func TestSourcedKeyExpiringAcrossReload(t *testing.T) {
	up := &keyRecorder{}
	srv := httptest.NewServer(up)
	defer srv.Close()
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nvault: {on_expired: block}\nsources:\n  - {name: corp, type: files, dir: keys}\nroutes:\n  - {name: openai, preset: openai, upstream: "+srv.URL+", secret: \"corp:k\", allow: {models: [gpt-4o-mini]}}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	keys := expiringKeys{time.Now().Add(300 * time.Millisecond)}
	gw := New(NewSnapshotWithKeys(cfg, nil, keys), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
	body := `{"model":"gpt-4o-mini","messages":[]}`
	r := httptest.NewRequest("POST", "/openai/v1/chat/completions", nil)
	// The body's first byte comes after a reload, and after the key expired.
	r.Body = &onFirstRead{Reader: strings.NewReader(body), hook: func() {
		gw.Swap(NewSnapshotWithKeys(cfg, nil, keys))
		time.Sleep(time.Until(keys.expires) + 100*time.Millisecond)
	}}
	r.ContentLength = int64(len(body))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, r)
	if sent := up.seen(); len(sent) != 0 || w.Code != http.StatusServiceUnavailable {
		t.Errorf("key expired at %s: %d %s; upstream got %d request(s); want 503 %s and nothing sent",
			keys.expires.Format(time.StampMilli), w.Code, strings.TrimSpace(w.Body.String()), len(sent), CodeSecretExpired)
	}
}

// TestUpgradeEndsAtExpiryMovedByReload: a protocol switch ends at its
// key's expiry as the config served says it: a reload that brings it
// forward (the same value set again with an earlier --expires, or a
// shorter vault.max_age) ends it then, not at the expiry it began with.
func TestUpgradeEndsAtExpiryMovedByReload(t *testing.T) {
	up := switchingEcho(t, nil)
	for _, tt := range []struct{ name, vault string }{
		{"expires set again", "{on_expired: block}"},
		{"max_age shortened", "{on_expired: block, max_age: 1h}"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := func(vault string) *config.Config {
				c, err := config.Parse("till.yaml", []byte("version: 1\nvault: "+vault+"\nroutes:\n  - {name: ws, preset: openai, upstream: "+up.URL+", secret: k}\n"), t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				return c
			}
			k := vault.NewSecret("k", testKey, time.Now().Add(-time.Minute))
			k.Expires = time.Now().Add(24 * time.Hour)
			buf := &lockedBuffer{}
			gw := New(NewSnapshot(cfg("{on_expired: block}"), map[string]vault.Secret{"k": k}), Options{Audit: testAudit(buf), Log: zerolog.Nop()})
			c, br := openHeld(t, gw, "GET /ws/v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", http.StatusSwitchingProtocols)
			if err := echoLine(c, br, "before"); err != nil {
				t.Fatalf("before the reload: %v", err)
			}
			// The reload ends the key's life a second from now: an
			// earlier --expires, or (the same value updated an hour
			// ago, less a second) max_age 1h.
			moved := k
			if tt.vault == "{on_expired: block}" {
				moved.Expires = time.Now().Add(time.Second)
			} else {
				moved.Updated = time.Now().Add(-time.Hour + time.Second)
			}
			gw.Swap(NewSnapshot(cfg(tt.vault), map[string]vault.Secret{"k": moved}))
			if err := echoLine(c, br, "after the reload"); err != nil {
				t.Fatalf("ended at the reload, before its key expired: %v", err)
			}
			_, err := br.ReadString('\n')
			endedExpired(t, gw, buf, err, "the connection outlived its key's expiry as the reload moved it")
		})
	}
}

// agedKeys is a source whose one value's version was made at version
// (a Vault version's created_time, a file's mtime).
type agedKeys struct{ version time.Time }

func (k agedKeys) GetAs(_ context.Context, ref string, _ source.Form) (source.Result, error) {
	return source.Result{Secret: vault.NewSecret(ref, testKey, k.version)}, nil
}

// TestSourcedUpgradeEndsAtMaxAgeShortenedByReload: a reload that
// shortens vault.max_age ends a protocol switch on a source's key once
// the key is older than the new max_age allows, as it does one on a
// vault key (TestUpgradeEndsAtExpiryMovedByReload). It lived on until
// the expiry its key had when it was fetched, under the old max_age.
func TestSourcedUpgradeEndsAtMaxAgeShortenedByReload(t *testing.T) {
	up := switchingEcho(t, nil)
	cfg := func(vault string) *config.Config {
		c, err := config.Parse("till.yaml", []byte("version: 1\nvault: "+vault+"\nsources:\n  - {name: corp, type: files, dir: keys}\nroutes:\n  - {name: ws, preset: openai, upstream: "+up.URL+", secret: \"corp:k\"}\n"), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// Made an hour ago, less a second: max_age 1h ends its life a second
	// from now.
	keys := agedKeys{time.Now().Add(-time.Hour + time.Second)}
	buf := &lockedBuffer{}
	gw := New(NewSnapshotWithKeys(cfg("{on_expired: block}"), nil, keys), Options{Audit: testAudit(buf), Log: zerolog.Nop()})
	c, br := openHeld(t, gw, "GET /ws/v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", http.StatusSwitchingProtocols)
	if err := echoLine(c, br, "before"); err != nil {
		t.Fatalf("before the reload: %v", err)
	}
	gw.Swap(NewSnapshotWithKeys(cfg("{on_expired: block, max_age: 1h}"), nil, keys))
	if err := echoLine(c, br, "after the reload"); err != nil {
		t.Fatalf("ended at the reload, before its key expired: %v", err)
	}
	_, err := br.ReadString('\n')
	endedExpired(t, gw, buf, err, "the connection outlived its key's expiry under the max_age the reload set")
}

// movingExpiryKeys is a source of OAuth2 client credentials whose expiry
// the operator moves (a Vault entry's custom_metadata.expires set anew),
// the value staying the same.
type movingExpiryKeys struct {
	mu      sync.Mutex
	expires time.Time
}

func (k *movingExpiryKeys) set(t time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.expires = t
}

func (k *movingExpiryKeys) GetAs(_ context.Context, ref string, _ source.Form) (source.Result, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	s := vault.NewFieldSecret(ref, map[string]string{"client_id": "app", "client_secret": "secret-app-0123456789"}, time.Now())
	s.Expires = k.expires
	return source.Result{Secret: s}, nil
}

// TestMintedKeyTakesTheSourcesExpiryNow: when a source moves the expiry
// of the credential a route mints with, the value unchanged, the token
// minted (or kept) from it goes under the expiry the source gives now,
// not the one it gave when the minter was made: a request checked again
// before it goes (and a protocol switch cut at its key's expiry) must
// judge the credential as the source says. Here, under on_expired: warn,
// an expired credential renewed in the source must no longer have its
// requests recorded secret_expired.
func TestMintedKeyTakesTheSourcesExpiryNow(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"access_token":"tok-0123456789abcdef","token_type":"Bearer","expires_in":3600}`)
		}
	}))
	defer srv.Close()
	y := "version: 1\nvault: {on_expired: warn}\nsources:\n  - {name: corp, type: files, dir: keys}\nroutes:\n" +
		"  - {name: api, upstream: " + srv.URL + ", secret: \"corp:app\", inject: {oauth2: {token_url: " + srv.URL + "/token}}}\n"
	cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	keys := &movingExpiryKeys{expires: time.Now().Add(-time.Hour)}
	buf := &lockedBuffer{}
	gw := New(NewSnapshotWithKeys(cfg, nil, keys), Options{Audit: testAudit(buf), Log: zerolog.Nop()})
	get := func() map[string]any {
		t.Helper()
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
		if w.Code != http.StatusOK {
			t.Fatalf("status %d, want 200", w.Code)
		}
		recs := buf.records(t)
		return recs[len(recs)-1]
	}
	if rec := get(); rec["reason"] != CodeSecretExpired {
		t.Fatalf("expired credential: record %v; want reason %s", rec, CodeSecretExpired)
	}
	keys.set(time.Now().Add(time.Hour))
	if rec := get(); rec["reason"] != nil && rec["reason"] != "" {
		t.Errorf("credential renewed in its source: record %v; want no reason (the token went under the expiry the source gave before)", rec)
	}
}

// changingKeys is a source cache whose one value the test replaces or
// removes, as a fetch would find at the source.
type changingKeys struct {
	mu  sync.Mutex
	sec vault.Secret
	err error
}

func (k *changingKeys) GetAs(_ context.Context, ref string, _ source.Form) (source.Result, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return source.Result{Secret: k.sec}, k.err
}

func (k *changingKeys) StatusOf(ref string, _ source.Form) source.Status {
	k.mu.Lock()
	defer k.mu.Unlock()
	st := source.Status{Ref: ref, Err: k.err}
	if k.err == nil {
		st.Secret, st.Fetched = k.sec, time.Now()
	}
	return st
}

func (k *changingKeys) set(sec vault.Secret, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.sec, k.err = sec, err
}

// TestSourcedUpgradeEndsWhenItsKeyGoes: a protocol switch (WebSocket)
// that went with a key from a source ends when the gateway is told that
// the source's value changed (Recheck) and the cache holds another value
// or found it gone: as one on a vault key ends when a reload replaces or
// removes it. The same value fetched again, as a new version, or a
// source that fails, leaves it relaying.
func TestSourcedUpgradeEndsWhenItsKeyGoes(t *testing.T) {
	up := switchingEcho(t, nil)
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nsources:\n  - {name: corp, type: files, dir: keys}\nroutes:\n  - {name: ws, preset: openai, upstream: "+up.URL+", secret: \"corp:k\"}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	first := vault.NewSecret("corp:k", testKey, time.Now())
	for _, tt := range []struct {
		name string
		sec  vault.Secret
		err  error
		code string // "": it relays on
	}{
		{"same value again", vault.NewSecret("corp:k", testKey, time.Now().Add(time.Minute)), nil, ""},
		{"source down", vault.Secret{}, fmt.Errorf("down: %w", source.ErrUnavailable), ""},
		{"replaced", vault.NewSecret("corp:k", testKey+"-rotated", time.Now()), nil, CodeSecretUnavailable},
		{"gone", vault.Secret{}, fmt.Errorf("%w: %w", source.ErrUnavailable, source.ErrGone), CodeSecretUnavailable},
	} {
		t.Run(tt.name, func(t *testing.T) {
			keys := &changingKeys{sec: first}
			buf := &lockedBuffer{}
			gw := New(NewSnapshotWithKeys(cfg, nil, keys), Options{Audit: testAudit(buf), Log: zerolog.Nop()})
			c, br := openHeld(t, gw, "GET /ws/v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", http.StatusSwitchingProtocols)
			if err := echoLine(c, br, "before"); err != nil {
				t.Fatalf("before the change: %v", err)
			}
			keys.set(tt.sec, tt.err)
			gw.Recheck()
			err := echoLine(c, br, "after")
			if tt.code == "" {
				if err != nil {
					t.Errorf("ended though its key is the source's still: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("relays on after its key was " + tt.name + " at its source")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			gw.Shutdown(ctx)
			if recs := buf.records(t); len(recs) != 1 || recs[0]["outcome"] != outcomeError || recs[0]["reason"] != tt.code || recs[0]["key_fp"] != first.Fingerprint() {
				t.Errorf("records %v; want one of the first key, an error with reason %s", recs, tt.code)
			}
		})
	}
}

// settableSource is a source whose one value a test sets.
type settableSource struct {
	mu    sync.Mutex
	value string
}

func (s *settableSource) Fetch(context.Context, string) ([]byte, source.Meta, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return []byte(s.value), source.Meta{}, nil
}

func (s *settableSource) set(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.value = v
}

// TestLoneWebSocketSeesItsSourceKeyReplaced: a WebSocket on a key from a
// source ends once the source has another value, though no request on
// its route asks the cache for the key meanwhile: the cache fetches only
// when asked, and a connection held alone asks it on. Caught: it relayed
// on with the replaced key until a request or reload came.
func TestLoneWebSocketSeesItsSourceKeyReplaced(t *testing.T) {
	up := switchingEcho(t, nil)
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nsources:\n  - {name: corp, type: files, dir: keys}\nroutes:\n  - {name: ws, preset: openai, upstream: "+up.URL+", secret: \"corp:k\"}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	src := &settableSource{value: testKey}
	cache := source.NewCache(map[string]source.Spec{"corp": {Source: src, TTL: 500 * time.Millisecond, ID: "corp"}}, source.Options{})
	buf := &lockedBuffer{}
	gw := New(NewSnapshotWithKeys(cfg, nil, cache), Options{Audit: testAudit(buf), Log: zerolog.Nop()})
	cache.OnChange(gw.Recheck)
	c, br := openHeld(t, gw, "GET /ws/v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", http.StatusSwitchingProtocols)
	if err := echoLine(c, br, "before"); err != nil {
		t.Fatalf("before the change: %v", err)
	}
	src.set(testKey + "-rotated")
	for err == nil { // until openHeld's deadline, 10 s
		time.Sleep(50 * time.Millisecond)
		err = echoLine(c, br, "after")
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("relays on with a key its source replaced")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gw.Shutdown(ctx)
	if recs := buf.records(t); len(recs) != 1 || recs[0]["reason"] != CodeSecretUnavailable {
		t.Errorf("records %v; want one, with reason %s", recs, CodeSecretUnavailable)
	}
}
