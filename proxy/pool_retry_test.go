package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
	"github.com/tillgw/till/vault/source"
)

// poolUpstream answers each request with status(r), and {"ok":true} when
// that is 200; sent returns the Authorization of each request so far.
func poolUpstream(t *testing.T, status func(r *http.Request) int) (up *httptest.Server, sent func() []string) {
	t.Helper()
	var mu sync.Mutex
	var seen []string
	up = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		if code := status(r); code != http.StatusOK {
			w.WriteHeader(code)
			return
		}
		io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(up.Close)
	return up, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

// aThrottled answers 429 to key a and 200 to the others.
func aThrottled(r *http.Request) int {
	if strings.Contains(r.Header.Get("Authorization"), "-a-") {
		return http.StatusTooManyRequests
	}
	return http.StatusOK
}

// poolGateway serves a pool route of the keys named (each
// sk-pool-NAME-0123456789), cooldown 1m, to the upstream at upURL.
func poolGateway(t *testing.T, upURL string, names ...string) *Gateway {
	now := time.Now()
	secrets := map[string]vault.Secret{}
	for _, n := range names {
		secrets[n] = vault.NewSecret(n, "sk-pool-"+n+"-0123456789", now)
	}
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}, secret: [" + strings.Join(names, ", ") + "], pool: {cooldown: 1m}}\n"
	gw, _ := newTestGateway(t, y, upURL, secrets)
	return gw
}

// TestRetryAfterHugeSeconds: a Retry-After of more seconds than a
// time.Duration holds, or than an int64, rests the key maxRetryAfter, not
// for nothing.
func TestRetryAfterHugeSeconds(t *testing.T) {
	p := &pool{cooldown: time.Minute}
	now := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	for _, v := range []string{"9300000000", "18446744073", "99999999999999999999999"} {
		h := http.Header{}
		h.Set("Retry-After", v)
		d, ok := p.restFor(&http.Response{StatusCode: 429, Header: h}, nil, now)
		if !ok || d != maxRetryAfter {
			t.Errorf("429 Retry-After: %s rests the key %v (ok %v); want at least the cooldown (maxRetryAfter %v)", v, d, ok, maxRetryAfter)
		}
	}
}

// TestPoolRetrySkipsUnusableMember: pool [a, b, c] under on_expired:
// block with b expired. Key a answers 429; the retry passes b over and
// goes with c, the next ready key.
func TestPoolRetrySkipsUnusableMember(t *testing.T) {
	up, seen := poolUpstream(t, aThrottled)
	now := time.Now()
	b := vault.NewSecret("b", "sk-pool-b-0123456789", now.Add(-2*time.Hour))
	b.Expires = now.Add(-time.Hour)
	y := "version: 1\nvault: {on_expired: block}\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}, secret: [a, b, c], pool: {cooldown: 1h}}\n"
	gw, _ := newTestGateway(t, y, up.URL, map[string]vault.Secret{
		"a": vault.NewSecret("a", "sk-pool-a-0123456789", now),
		"b": b,
		"c": vault.NewSecret("c", "sk-pool-c-0123456789", now),
	})
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/openai/v1/models", nil)) // round robin: a first
	if w.Code != 200 {
		t.Errorf("a answered 429, c is ready: the app got %d, upstream saw %v; want a retry with c and 200", w.Code, seen())
	}
}

// TestRequestRejectedByTwoKeysRestsNone: a request to a path the upstream
// forbids whatever the key (403 for the request, not the key) rests no
// key: a rejected key rests only once another key serves the request, so
// one caller cannot set the whole pool aside.
func TestRequestRejectedByTwoKeysRestsNone(t *testing.T) {
	up, sent := poolUpstream(t, func(r *http.Request) int {
		if strings.HasPrefix(r.URL.Path, "/v1/organization") {
			return http.StatusForbidden // e.g. an admin-key-only endpoint
		}
		return aThrottled(r)
	})
	gw := poolGateway(t, up.URL, "a", "b", "c")
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/openai/v1/organization/users", nil))
	first := len(sent())
	resting := 0
	for _, m := range poolOf(t, gw).members {
		if m.restUntil.Load() > time.Now().UnixNano() {
			resting++
		}
	}
	w = httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/openai/v1/models", nil))
	if resting != 0 || first != 2 || w.Code != 200 {
		t.Errorf("one request to a forbidden path (sent %d times, with every key) rests %d of 3 keys for ten cooldowns; the next request, which key b or c serves, got %d", first, resting, w.Code)
	}
}

// TestPoolNoEarlyHintsBeforeRetry: attempt 1 (key a) sends 103 Early
// Hints, then 429; till retries with b. Nothing of the refused attempt,
// its 103 included, reaches the app.
func TestPoolNoEarlyHintsBeforeRetry(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.Header.Get("Authorization"), "-a-") {
			w.Header().Set("Link", "</from-key-a>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		io.WriteString(w, `{"ok":true}`)
	}))
	defer up.Close()
	front := httptest.NewServer(poolGateway(t, up.URL, "a", "b"))
	defer front.Close()
	var hints []string
	req, _ := http.NewRequest("GET", front.URL+"/openai/v1/models", nil)
	req = req.WithContext(withGot1xx(req, func(code int, h map[string][]string) {
		hints = append(hints, strings.Join(h["Link"], ","))
	}))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(hints) > 0 {
		t.Errorf("the app got key a's 103 %v, then b's %d: part of a refused attempt reached the app before its retry", hints, resp.StatusCode)
	}
}

func poolOf(t *testing.T, gw *Gateway) *pool {
	for _, r := range gw.live.Load().routes {
		if r.pool != nil {
			return r.pool
		}
	}
	t.Fatal("no pool")
	return nil
}

func withGot1xx(r *http.Request, f func(int, map[string][]string)) context.Context {
	return httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error { f(code, h); return nil },
	})
}

// TestPoolRetryRecords: a and b answer 429, c 200: the POST body goes each
// time; each attempt has its use and request records, with its key's
// secret and fingerprint and its number; a Retry-After of 30 rests a and
// b for 30 s from their answers, once c served the request.
func TestPoolRetryRecords(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b))
		k := r.Header.Get("Authorization")
		if strings.Contains(k, "-a-") || strings.Contains(k, "-b-") {
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		io.WriteString(w, `{"ok":true}`)
	}))
	defer up.Close()
	now := time.Now()
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}, secret: [a, b, c], pool: {cooldown: 1m}}\n"
	sec := map[string]vault.Secret{
		"a": vault.NewSecret("a", "sk-pool-a-0123456789", now),
		"b": vault.NewSecret("b", "sk-pool-b-0123456789", now),
		"c": vault.NewSecret("c", "sk-pool-c-0123456789", now),
	}
	gw, buf := newTestGateway(t, y, up.URL, sec)
	body := `{"model":"gpt-4o-mini","messages":[]}`
	r := httptest.NewRequest("POST", "/openai/v1/chat/completions", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, r)
	if w.Code != 200 || len(bodies) != 3 {
		t.Fatalf("got %d after %d sends", w.Code, len(bodies))
	}
	for i, b := range bodies {
		if b != body {
			t.Errorf("send %d body %q", i+1, b)
		}
	}
	uses, reqs := buf.uses(t), buf.records(t)
	for i, u := range uses {
		name := string(rune('a' + i))
		if u["attempt"] != float64(i+1) || u["secret"] != name || u["key_fp"] != sec[name].Fingerprint() {
			t.Errorf("use %d: %v", i, u)
		}
	}
	for i, q := range reqs {
		name := string(rune('a' + i))
		wantReason := "pool_retry"
		if i == 2 {
			wantReason = "usage_unknown" // the answer tells no usage
		}
		if q["attempt"] != float64(i+1) || q["secret"] != name || q["key_fp"] != sec[name].Fingerprint() || q["reason"] != wantReason {
			t.Errorf("request %d: %v", i, q)
		}
	}
	for _, m := range poolOf(t, gw).members[:2] {
		if d := time.Until(time.Unix(0, m.restUntil.Load())); d < 25*time.Second || d > 31*time.Second {
			t.Errorf("rest %v, want ~30s", d)
		}
	}
}

// oneFailing is a source where one ref cannot be fetched.
type oneFailing struct {
	fakeKeys
	bad string
}

func (o *oneFailing) GetAs(ctx context.Context, ref string, form source.Form) (source.Result, error) {
	if ref == o.bad {
		return source.Result{}, fmt.Errorf("fake source down: %w", source.ErrUnavailable)
	}
	return o.fakeKeys.GetAs(ctx, ref, form)
}

// TestPoolRetrySkipsFailingSourceMember: pool [a, mounted:b, c] where the
// source cannot give b. a answers 429; the retry passes b over and goes
// with c.
func TestPoolRetrySkipsFailingSourceMember(t *testing.T) {
	up, seen := poolUpstream(t, aThrottled)
	y := "version: 1\nsources:\n  - {name: mounted, type: files, dir: keys}\nroutes:\n  - {name: openai, preset: openai, upstream: " + up.URL + ", secret: [a, \"mounted:b\", c], pool: {cooldown: 1h}}\n"
	cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	keys := &oneFailing{fakeKeys: fakeKeys{values: map[string]string{}}, bad: "mounted:b"}
	gw := New(NewSnapshotWithKeys(cfg, map[string]vault.Secret{
		"a": vault.NewSecret("a", "sk-pool-a-0123456789", now),
		"c": vault.NewSecret("c", "sk-pool-c-0123456789", now),
	}, keys), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/openai/v1/models", nil))
	if w.Code != 200 {
		t.Errorf("a answered 429, b's source is down, c is ready: the app got %d, upstream saw %v; want a retry with c and 200", w.Code, seen())
	}
}

// TestRejectedKeyRestsOnceAnotherServes: a key the upstream rejects (401)
// while the next key serves the same request rests for ten cooldowns, and
// the log says key_rejected; the next request goes with the other key.
func TestRejectedKeyRestsOnceAnotherServes(t *testing.T) {
	up, seen := poolUpstream(t, func(r *http.Request) int {
		if strings.Contains(r.Header.Get("Authorization"), "-a-") {
			return http.StatusUnauthorized // a revoked key
		}
		return http.StatusOK
	})
	gw := poolGateway(t, up.URL, "a", "b")
	for range 2 {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", "/openai/v1/models", nil))
		if w.Code != 200 {
			t.Fatalf("got %d, want b's 200", w.Code)
		}
	}
	a := poolOf(t, gw).members[0]
	if rest := time.Until(time.Unix(0, a.restUntil.Load())); rest < 9*time.Minute || len(seen()) != 3 {
		t.Errorf("a rejected, b served: a rests %v, upstream saw %v; want ten cooldowns and a, b, b", rest, seen())
	}
}

// TestRequestThrottledByEveryKeyRestsNone: a 429 rests its key only once
// another key served the request. Some 429s are about the request, not
// the key: OpenAI answers 429 "Request too large for gpt-4o ... on tokens
// per min" to a request over the TPM limit, whatever the key. The breach
// caught: one such request from any caller, anonymous included, went with
// every key in turn and rested each for the cooldown, leaving the pool no
// failover (a key really throttled then passed its 429 on while the
// others were ready): one request a minute kept any pool at one key.
func TestRequestThrottledByEveryKeyRestsNone(t *testing.T) {
	up, sent := poolUpstream(t, func(r *http.Request) int {
		if r.Method == "POST" {
			b, _ := io.ReadAll(r.Body)
			if strings.Contains(string(b), `"max_tokens":900000`) {
				return http.StatusTooManyRequests // request too large for the TPM limit
			}
		}
		return aThrottled(r) // key a is really throttled now; b and c are fine
	})
	gw := poolGateway(t, up.URL, "a", "b", "c")

	// One anonymous request the provider refuses whatever the key.
	w := httptest.NewRecorder()
	r := httptest.NewRequest("POST", "/openai/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o","max_tokens":900000,"messages":[]}`))
	r.Header.Set("Content-Type", "application/json")
	gw.ServeHTTP(w, r)
	first := len(sent())
	resting := 0
	for _, m := range poolOf(t, gw).members {
		if m.restUntil.Load() > time.Now().UnixNano() {
			resting++
		}
	}

	// The other apps' requests: b and c are ready to serve them.
	codes := []int{}
	for range 3 {
		w = httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", "/openai/v1/models", nil))
		codes = append(codes, w.Code)
	}
	for _, c := range codes {
		if c != 200 || resting == 3 {
			t.Fatalf("one request the provider throttles whatever the key (sent %d times, once per key) rests %d of 3 keys; "+
				"then requests that b or c would serve got %v (a's 429 passed on, no failover)", first, resting, codes)
		}
	}
}

// TestRejectedKeyRestsOnlyWhenAnotherServes: a key refused with 401/403
// rests only when the next key served the request (2xx, 3xx); any 4xx or
// 5xx is as likely the request's, which the caller chooses. Pool [a, b]:
// a is a restricted key (OpenAI project keys can be limited per
// endpoint) that gets 403 on /v1/files, b a full key; a caller asks for a
// file that does not exist, and b answers 404. The breach caught: b's 404
// counted as serving the request, so a rested ten cooldowns (up to 300
// days) for one bogus GET from any caller.
func TestRejectedKeyRestsOnlyWhenAnotherServes(t *testing.T) {
	up, sent := poolUpstream(t, func(r *http.Request) int {
		if strings.HasPrefix(r.URL.Path, "/v1/files") {
			if strings.Contains(r.Header.Get("Authorization"), "-a-") {
				return http.StatusForbidden // restricted key: no files scope
			}
			return http.StatusNotFound // no such file
		}
		return http.StatusOK
	})
	gw := poolGateway(t, up.URL, "a", "b")
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/openai/v1/files/file-doesnotexist", nil)) // round robin: a first
	a := poolOf(t, gw).members[0]
	if rest := time.Until(time.Unix(0, a.restUntil.Load())); rest > 0 {
		t.Errorf("a request no key served (a 403, b %d; upstream saw %v) rests a for %v: a caller sets a key aside with one bogus request",
			w.Code, sent(), rest.Round(time.Second))
	}
}

// TestSourcedKeyRestIsItsValues: the rest of a key kept in a source
// belongs to the value refused, as a vault key's does. Pool [mounted:a,
// mounted:b]: a's value is revoked (401), b serves, a rests ten cooldowns;
// the operator rotates a in the source. The breach caught: the rest was
// the ref's, so a's new, good value stayed unused for the rest of the ten
// cooldowns (up to 300 days) while b carried the whole load.
func TestSourcedKeyRestIsItsValues(t *testing.T) {
	up, seen := poolUpstream(t, func(r *http.Request) int {
		if strings.Contains(r.Header.Get("Authorization"), "sk-old-a") {
			return http.StatusUnauthorized // revoked
		}
		return http.StatusOK
	})
	y := "version: 1\nsources:\n  - {name: mounted, type: files, dir: keys}\nroutes:\n  - {name: openai, preset: openai, upstream: " + up.URL + ", secret: [\"mounted:a\", \"mounted:b\"], pool: {cooldown: 1h}}\n"
	cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	keys := &fakeKeys{values: map[string]string{
		"mounted:a": "sk-old-a-0123456789abcdef",
		"mounted:b": "sk-good-b-0123456789abcdef",
	}}
	gw := New(NewSnapshotWithKeys(cfg, map[string]vault.Secret{}, keys), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
	get := func() int {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", "/openai/v1/models", nil))
		return w.Code
	}
	if c := get(); c != 200 { // a: 401, then b: 200; a rests
		t.Fatalf("first request: %d (upstream saw %v)", c, seen())
	}
	keys.set("mounted:a", "sk-new-a-0123456789abcdef") // rotated in the source
	for range 6 {
		get()
	}
	newA := 0
	for _, k := range seen() {
		if strings.Contains(k, "sk-new-a") {
			newA++
		}
	}
	if newA == 0 {
		t.Errorf("a was rotated in its source after its 401; of the next 6 round-robin requests none went with a's new value "+
			"(upstream saw %d requests, all but the first with b): the rest of the revoked value holds the new one aside", len(seen()))
	}
}
