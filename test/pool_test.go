package test

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestKeyPool drives a route with a pool of three keys against an upstream
// that refuses some: a 429 with Retry-After moves the request to the next
// key within the same request and rests the key until then; a 401 rests a
// key for ten cooldowns; every attempt has its use and request records
// (same id, attempt 1, 2); a body goes again whole; when every key rests,
// the app gets the last answer; a sticky pool keeps a client on one key.
func TestKeyPool(t *testing.T) {
	a, b, c := keyed("sk-pool-a-", "a1"), keyed("sk-pool-b-", "b1"), keyed("sk-pool-c-", "c1")
	var mu sync.Mutex
	refuse := map[string]int{} // key -> status to answer with
	var streamBreaks atomic.Bool
	var bodies []string
	up := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		status := refuse[key]
		bodies = append(bodies, string(body))
		mu.Unlock()
		switch {
		case status == 0 && streamBreaks.Load():
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {\"choices\":[]}\n\n")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the upstream breaks off mid-stream
		case status == 0:
			io.WriteString(w, `{"ok":true}`)
		case status == http.StatusTooManyRequests:
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(status)
			io.WriteString(w, `{"error":"rate limited"}`)
		default:
			w.WriteHeader(status)
			io.WriteString(w, `{"error":"refused"}`)
		}
	}))
	set := func(key string, status int) {
		mu.Lock()
		refuse[key] = status
		mu.Unlock()
	}
	cfg := `version: 1
routes:
  - name: openai
    preset: openai
    upstream: ` + up.URL + `
    secret: [key-a, key-b, key-c]
    pool: {cooldown: 30s}
  - name: sticky
    preset: openai
    prefix: /sticky
    upstream: ` + up.URL + `
    secret: [key-a, key-b, key-c]
    pool: {strategy: sticky}
`
	tl := startTill(t, cfg, map[string]string{"key-a": a, "key-b": b, "key-c": c}, up.caFile)
	post := func(path string) (*http.Response, string) {
		resp, body := do(t, newRequest(t, "POST", tl.url(path), strings.NewReader(`{"model":"gpt-4o-mini"}`)))
		return resp, string(body)
	}
	lastKey := func() string {
		return strings.TrimPrefix(up.last(t).Header.Get("Authorization"), "Bearer ")
	}

	// Round robin: three requests, three keys.
	seen := map[string]bool{}
	for range 3 {
		if resp, body := post("/openai/v1/chat/completions"); resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		seen[lastKey()] = true
	}
	if len(seen) != 3 {
		t.Errorf("round robin used %d keys of 3", len(seen))
	}

	// Key A answers 429 Retry-After: 2: each request that takes it goes
	// on with another key, and A rests for 2 s.
	set(a, http.StatusTooManyRequests)
	for range 3 {
		resp, body := post("/openai/v1/chat/completions")
		if resp.StatusCode != 200 {
			t.Fatalf("with key A rate limited: %d %s", resp.StatusCode, body)
		}
	}
	mu.Lock()
	for _, body := range bodies[len(bodies)-len(up.requests()):] {
		if body != `{"model":"gpt-4o-mini"}` {
			t.Errorf("a retried request's body was %q", body)
		}
	}
	mu.Unlock()
	var retried auditRecord
	for _, r := range tl.audit() {
		if r["reason"] == "pool_retry" {
			retried = r
		}
	}
	if retried == nil || retried["status"] != float64(429) || retried["secret"] != "key-a" || retried["attempt"] != float64(1) {
		t.Fatalf("the refused attempt's record: %v", retried)
	}
	var next auditRecord
	for _, r := range tl.audit() {
		if r["id"] == retried["id"] && r["reason"] != "pool_retry" {
			next = r
		}
	}
	if next == nil || next["attempt"] != float64(2) || next["outcome"] != "forwarded" || next["secret"] == "key-a" {
		t.Errorf("the retried attempt's record: %v", next)
	}
	uses := 0
	for _, u := range tl.uses() {
		if u["id"] == retried["id"] {
			uses++
		}
	}
	if uses != 2 {
		t.Errorf("%d use records for a request sent twice, want 2", uses)
	}
	// A rests: for 2 s no request reaches the upstream with it.
	set(a, 0)
	for range 4 {
		post("/openai/v1/chat/completions")
		if lastKey() == a {
			t.Fatal("a resting key was used")
		}
	}
	time.Sleep(2100 * time.Millisecond)
	usedA := false
	for range 3 {
		post("/openai/v1/chat/completions")
		usedA = usedA || lastKey() == a
	}
	if !usedA {
		t.Error("key A was not used again after its Retry-After")
	}

	// 401 on B: logged as key_rejected, B rests (10 × 30 s).
	set(b, http.StatusUnauthorized)
	for range 3 {
		if resp, body := post("/openai/v1/chat/completions"); resp.StatusCode != 200 {
			t.Fatalf("with key B rejected: %d %s", resp.StatusCode, body)
		}
	}
	if !tl.waitLog("key_rejected") {
		t.Error("a rejected key was not logged as key_rejected")
	}
	set(b, 0)
	for range 4 {
		post("/openai/v1/chat/completions")
		if lastKey() == b {
			t.Fatal("a rejected key was used within its rest")
		}
	}

	// Every key refuses: the app gets the last answer.
	set(a, http.StatusTooManyRequests)
	set(c, http.StatusTooManyRequests)
	if resp, _ := post("/openai/v1/chat/completions"); resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "2" {
		t.Errorf("every key refused: got %d (Retry-After %q), want the upstream's 429", resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	// A stream that began is never sent again, even if it breaks off.
	set(a, 0)
	set(c, 0)
	streamBreaks.Store(true)
	n := len(up.requests())
	resp, err := http.DefaultClient.Do(newRequest(t, "POST", tl.url("/openai/v1/chat/completions"), strings.NewReader(`{"model":"gpt-4o-mini","stream":true}`)))
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	streamBreaks.Store(false)
	if got := len(up.requests()) - n; got != 1 {
		t.Errorf("a stream that broke off was sent %d times, want once", got)
	}

	// Sticky: one client keeps to one key.
	set(a, 0)
	set(c, 0)
	time.Sleep(2100 * time.Millisecond)
	keys := map[string]bool{}
	for range 5 {
		post("/sticky/v1/chat/completions")
		keys[lastKey()] = true
	}
	if len(keys) != 1 {
		t.Errorf("a sticky pool used %d keys for one client", len(keys))
	}
	tl.stop()
	tl.assertNoLeak([]string{a, b, c})
}
