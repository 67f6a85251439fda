package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
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
)

// TestKeyExpiringWhileBodyHeld: under on_expired: block, a key that
// expires while a request's body is read (held for a pool's retry, read
// for model rules, or before a token is minted) is not sent, with no
// reload in between.
func TestKeyExpiringWhileBodyHeld(t *testing.T) {
	up := &keyRecorder{}
	srv := httptest.NewServer(up)
	defer srv.Close()
	sum := sha256.Sum256([]byte(connectToken))
	web := "clients:\n  - {name: web, token_sha256: " + hex.EncodeToString(sum[:]) + "}\n"
	mint := "secret: m, inject: {oauth2: {token_url: " + srv.URL + "/token}}"
	for _, kind := range []struct{ name, route, contentType string }{
		{"pool", "secret: [a, b], pool: {cooldown: 1h}", "application/octet-stream"},
		{"model rules", "secret: a, allow: {models: [gpt-4o-mini]}", "application/json"},
		{"token minted", mint, "application/json"},
	} {
		t.Run(kind.name, func(t *testing.T) {
			now := time.Now()
			expires := now.Add(300 * time.Millisecond)
			mk := func(s vault.Secret) vault.Secret { s.Expires = expires; return s }
			keys := map[string]vault.Secret{
				"a": mk(vault.NewSecret("a", "sk-h67-a-0123456789", now)),
				"b": mk(vault.NewSecret("b", "sk-h67-b-0123456789", now)),
				"m": mk(vault.NewFieldSecret("m", map[string]string{"client_id": "app", "client_secret": "secret-h67-0123456789"}, now)),
			}
			cfg, err := config.Parse("till.yaml", []byte("version: 1\nvault: {on_expired: block}\n"+web+"routes:\n  - {name: openai, preset: openai, upstream: "+srv.URL+", clients: [web], "+kind.route+"}\n"), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			buf := &lockedBuffer{}
			gw := New(NewSnapshot(cfg, keys), Options{Audit: testAudit(buf), Log: zerolog.Nop()})
			before := len(up.seen())
			body := `{"model":"gpt-4o-mini","messages":[]}`
			r := httptest.NewRequest("POST", "/openai/v1/chat/completions", nil)
			// The app's body arrives slowly: its first byte only after the key expired.
			r.Body = &onFirstRead{Reader: strings.NewReader(body), hook: func() { time.Sleep(time.Until(expires) + 100*time.Millisecond) }}
			r.ContentLength = int64(len(body))
			r.Header.Set("Content-Type", kind.contentType)
			r.Header.Set("X-Till-Token", connectToken)
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, r)
			sent := up.seen()[before:]
			if len(sent) != 0 || w.Code != http.StatusServiceUnavailable {
				t.Errorf("key expired at %s, sent at %s: %d %s; upstream got %v; want 503 %s and nothing sent",
					expires.Format(time.StampMilli), time.Now().Format(time.StampMilli), w.Code, strings.TrimSpace(w.Body.String()), sent, CodeSecretExpired)
			}
		})
	}
}

// TestPoolRetryUnderWarn: under on_expired: warn an expired key is used,
// with the warning in its record, by a pool's retry too: a 429 from the
// first expired key is retried with the second, expired as well.
func TestPoolRetryUnderWarn(t *testing.T) {
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		seen = append(seen, key)
		if strings.Contains(key, "-a-") {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Write([]byte(`{"ok":true}`))
	}))
	defer srv.Close()
	past := time.Now().Add(-time.Hour)
	mk := func(name string) vault.Secret {
		s := vault.NewSecret(name, "sk-h67-"+name+"-0123456789", past.Add(-time.Hour))
		s.Expires = past
		return s
	}
	keys := map[string]vault.Secret{"a": mk("a"), "b": mk("b")}
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nvault: {on_expired: warn}\nroutes:\n  - {name: openai, preset: openai, upstream: "+srv.URL+", secret: [a, b], pool: {cooldown: 1h}}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	buf := &lockedBuffer{}
	gw := New(NewSnapshot(cfg, keys), Options{Audit: testAudit(buf), Log: zerolog.Nop()})
	// Round robin: the first request takes key a, the pool's first.
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/openai/v1/models", nil))
	if len(seen) == 0 || !strings.Contains(seen[0], "-a-") {
		t.Fatalf("first key sent %v; want a", seen)
	}
	if w.Code != http.StatusOK || len(seen) != 2 {
		t.Errorf("under on_expired: warn, key a answered 429: app got %d, keys sent %v; want the retry with key b (as usable as a under warn) and 200", w.Code, seen)
	}
	if recs := buf.records(t); len(recs) == 0 || recs[len(recs)-1]["reason"] != CodeSecretExpired {
		t.Errorf("the retry's record does not say secret_expired: %v", recs)
	}
}

// TestKeyExpiringWhileBodyHeldUnderWarn: under on_expired: warn, a key
// that expires while a request's body is read goes, and the request's
// record says secret_expired, as it does for a key expired when the
// request came: the record is how an operator learns an expired key is
// still used.
func TestKeyExpiringWhileBodyHeldUnderWarn(t *testing.T) {
	up := &keyRecorder{}
	srv := httptest.NewServer(up)
	defer srv.Close()
	mint := "secret: m, inject: {oauth2: {token_url: " + srv.URL + "/token}}"
	for _, kind := range []struct{ name, route, contentType string }{
		{"pool", "secret: [a, b], pool: {cooldown: 1h}", "application/octet-stream"},
		{"model rules", "secret: a, allow: {models: [gpt-4o-mini]}", "application/json"},
		{"token minted", mint, "application/json"},
	} {
		for _, reload := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s reload=%v", kind.name, reload), func(t *testing.T) {
				now := time.Now()
				expires := now.Add(300 * time.Millisecond)
				mk := func(s vault.Secret) vault.Secret { s.Expires = expires; return s }
				keys := map[string]vault.Secret{
					"a": mk(vault.NewSecret("a", "sk-h67-a-0123456789", now)),
					"b": mk(vault.NewSecret("b", "sk-h67-b-0123456789", now)),
					"m": mk(vault.NewFieldSecret("m", map[string]string{"client_id": "app", "client_secret": "secret-h67-0123456789"}, now)),
				}
				cfg, err := config.Parse("till.yaml", []byte("version: 1\nvault: {on_expired: warn}\nroutes:\n  - {name: openai, preset: openai, upstream: "+srv.URL+", "+kind.route+"}\n"), t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				buf := &lockedBuffer{}
				gw := New(NewSnapshot(cfg, keys), Options{Audit: testAudit(buf), Log: zerolog.Nop()})
				body := `{"model":"gpt-4o-mini","messages":[]}`
				r := httptest.NewRequest("POST", "/openai/v1/chat/completions", nil)
				// The app's body arrives slowly: its first byte only after the key expired.
				r.Body = &onFirstRead{Reader: strings.NewReader(body), hook: func() {
					if reload {
						gw.Swap(NewSnapshot(cfg, keys))
					}
					time.Sleep(time.Until(expires) + 100*time.Millisecond)
				}}
				r.ContentLength = int64(len(body))
				r.Header.Set("Content-Type", kind.contentType)
				w := httptest.NewRecorder()
				gw.ServeHTTP(w, r)
				if w.Code != http.StatusOK {
					t.Fatalf("got %d %s; want 200 under warn", w.Code, strings.TrimSpace(w.Body.String()))
				}
				recs := buf.records(t)
				if len(recs) != 1 || recs[0]["outcome"] != "forwarded" || recs[0]["reason"] != CodeSecretExpired {
					t.Errorf("key expired at %s before it went: records %v; want one, forwarded with reason %s",
						expires.Format(time.StampMilli), recs, CodeSecretExpired)
				}
			})
		}
	}
}

// TestPoolRetryAfterFirstKeyExpired: under on_expired: block, a pool's
// key that expires while its attempt is answered (429) does not keep the
// request from going again with the next key, which has not expired.
func TestPoolRetryAfterFirstKeyExpired(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	var expires time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		mu.Lock()
		seen = append(seen, key)
		wait := time.Until(expires)
		mu.Unlock()
		if strings.Contains(key, "-a-") {
			time.Sleep(wait + 100*time.Millisecond) // the answer comes after key a expired
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Write([]byte(`{"ok":true}`))
	}))
	defer srv.Close()
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nvault: {on_expired: block}\nroutes:\n  - {name: openai, preset: openai, upstream: "+srv.URL+", secret: [a, b], pool: {cooldown: 1h}}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	a := vault.NewSecret("a", "sk-h67-a-0123456789", now)
	keys := map[string]vault.Secret{"a": a, "b": vault.NewSecret("b", "sk-h67-b-0123456789", now)}
	gw := New(NewSnapshot(cfg, keys), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
	// Key a expires soon after the request is decided.
	mu.Lock()
	expires = time.Now().Add(300 * time.Millisecond)
	mu.Unlock()
	a.Expires = expires
	keys["a"] = a
	gw.Swap(NewSnapshot(cfg, keys))
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/openai/v1/models", nil)) // round robin: key a first
	mu.Lock()
	defer mu.Unlock()
	if len(seen) > 0 && strings.Contains(seen[0], "-b-") {
		t.Skip("key a expired before the request was decided (a slow machine): nothing to retry")
	}
	if w.Code != http.StatusOK || len(seen) != 2 || !strings.Contains(seen[1], "-b-") {
		t.Errorf("key a answered 429 after it expired: app got %d, %d key(s) sent; want the retry with key b and 200", w.Code, len(seen))
	}
}

// TestPoolPrefersUnexpiredKeysUnderWarn: under on_expired: warn, a pool
// uses an expired key only when no other can be used: not in its turn
// (round robin or sticky), nor for a retry, while a key that has not
// expired is ready.
func TestPoolPrefersUnexpiredKeysUnderWarn(t *testing.T) {
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		seen = append(seen, key)
		if strings.Contains(key, "-c-") {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Write([]byte(`{"ok":true}`))
	}))
	defer srv.Close()
	now := time.Now()
	mk := func(name string, expires time.Time) vault.Secret {
		s := vault.NewSecret(name, "sk-h67-"+name+"-0123456789", now.Add(-time.Hour))
		s.Expires = expires
		return s
	}
	keys := map[string]vault.Secret{"a": mk("a", now.Add(-time.Minute)), "b": mk("b", time.Time{}), "c": mk("c", time.Time{})}
	for _, strategy := range []string{"round_robin", "sticky"} {
		t.Run(strategy, func(t *testing.T) {
			cfg, err := config.Parse("till.yaml", []byte("version: 1\nvault: {on_expired: warn}\nroutes:\n  - {name: openai, preset: openai, upstream: "+srv.URL+", secret: [a, b], pool: {strategy: "+strategy+"}}\n  - {name: retry, preset: openai, prefix: /retry, upstream: "+srv.URL+", secret: [c, a, b]}\n"), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			buf := &lockedBuffer{}
			gw := New(NewSnapshot(cfg, keys), Options{Audit: testAudit(buf), Log: zerolog.Nop()})
			seen = nil
			for range 4 {
				gw.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/openai/v1/models", nil))
			}
			for _, k := range seen {
				if strings.Contains(k, "-a-") {
					t.Errorf("keys sent %q: the expired key a went while b was ready", seen)
					break
				}
			}
			if strategy == "sticky" {
				return
			}
			// Key c answers 429: the retry takes b, not the expired a after it.
			seen = nil
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, httptest.NewRequest("GET", "/retry/v1/models", nil))
			if w.Code != http.StatusOK || len(seen) != 2 || !strings.Contains(seen[0], "-c-") || !strings.Contains(seen[1], "-b-") {
				t.Errorf("retry after c's 429: app got %d, keys sent %q; want c then b", w.Code, seen)
			}
			recs := buf.records(t)
			if last := recs[len(recs)-1]; last["reason"] != "" || last["secret"] != "b" {
				t.Errorf("the retry's record: %v; want key b without a warning", last)
			}
		})
	}
}

// TestKeyExpiringDuringUpstreamDial: under on_expired: block, a key that
// expires while till connects to the upstream (a slow DNS answer or
// handshake), with no reload, is not sent: the last check is when the
// connection is got, before anything is written on it.
func TestKeyExpiringDuringUpstreamDial(t *testing.T) {
	up := &keyRecorder{}
	srv := httptest.NewServer(up)
	defer srv.Close()
	expires := time.Now().Add(300 * time.Millisecond)
	k := vault.NewSecret("k", testKey, time.Now())
	k.Expires = expires
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nvault: {on_expired: block}\nroutes:\n  - {name: openai, preset: openai, upstream: "+srv.URL+", secret: k}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tr := NewTransport()
	var d net.Dialer
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		time.Sleep(time.Until(expires) + 100*time.Millisecond) // the network is slow
		return d.DialContext(ctx, network, addr)
	}
	gw := New(NewSnapshot(cfg, map[string]vault.Secret{"k": k}), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop(), Transport: tr})
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/openai/v1/models", nil))
	if sent := up.seen(); len(sent) != 0 || w.Code != http.StatusServiceUnavailable {
		t.Errorf("key expired at %s, while till dialled: %d %s; upstream got %d request(s); want 503 %s and nothing sent",
			expires.Format(time.StampMilli), w.Code, strings.TrimSpace(w.Body.String()), len(sent), CodeSecretExpired)
	}
}

// TestKeyExpiringDuringTokenEndpointDial: a minting route's secret that
// expires while till connects to the token endpoint (a slow DNS answer or
// handshake), with no reload, is not sent there under on_expired: block:
// the last check is when the connection is got, before anything is
// written on it, as for an upstream (TestKeyExpiringDuringUpstreamDial).
// Under warn it goes, and the request's record says secret_expired.
func TestKeyExpiringDuringTokenEndpointDial(t *testing.T) {
	for _, tt := range []struct {
		onExpired string
		asks      int
		code      int
		reason    string
	}{
		{"block", 0, http.StatusServiceUnavailable, CodeSecretExpired},
		{"warn", 1, http.StatusOK, CodeSecretExpired},
	} {
		t.Run(tt.onExpired, func(t *testing.T) {
			te := newTokenEndpoint(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`{"ok":true}`)) })
			var expires time.Time
			tr := NewTransport()
			var d net.Dialer
			tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				time.Sleep(time.Until(expires) + 100*time.Millisecond) // the network is slow
				return d.DialContext(ctx, network, addr)
			}
			oldTransport := tokenClient.Transport
			tokenClient.Transport = tr
			t.Cleanup(func() { tokenClient.Transport = oldTransport })
			cfg, err := config.Parse("till.yaml", []byte("version: 1\nvault: {on_expired: "+tt.onExpired+"}\nroutes:\n  - {name: api, upstream: "+te.URL+", secret: app, inject: {oauth2: {token_url: "+te.URL+"/token}}}\n"), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			records := &lockedBuffer{}
			expires = time.Now().Add(300 * time.Millisecond) // set just before the request: setup may be slow
			k := oauthSecret("app", time.Now())
			k.Expires = expires
			gw := New(NewSnapshot(cfg, map[string]vault.Secret{"app": k}), Options{Audit: testAudit(records), Log: zerolog.Nop()})
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
			if n := te.count(); n != tt.asks || w.Code != tt.code {
				t.Errorf("secret expired at %s, while till dialled the token endpoint: %d %s; the endpoint was asked %d time(s); want %d and %d ask(s)",
					expires.Format(time.StampMilli), w.Code, strings.TrimSpace(w.Body.String()), n, tt.code, tt.asks)
			}
			recs := records.records(t)
			if len(recs) != 1 || recs[0]["reason"] != tt.reason {
				t.Errorf("the request's record: %v; want reason %s", recs, tt.reason)
			}
		})
	}
}
