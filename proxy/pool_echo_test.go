package proxy

import (
	"io"
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

// TestPoolRetryScrubsEarlierKey: a pool route sends key a, the upstream
// answers 429, till retries with key b, and the upstream's answer to the
// retry echoes key a. The app never sees key a: scrubbing covers every key
// the request sent, not only the last one.
func TestPoolRetryScrubsEarlierKey(t *testing.T) {
	const keyA = "sk-pool-a-0123456789abcdefXYZ"
	const keyB = "sk-pool-b-9876543210zyxwvuABC"
	var mu sync.Mutex
	var seen []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		auth := r.Header.Get("Authorization")
		seen = append(seen, auth)
		if strings.Contains(auth, keyA) {
			w.Header().Set("Retry-After", "60")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		// The answer to the retry quotes the earlier key it saw.
		w.Header().Set("X-Echo", seen[0])
		io.WriteString(w, "ok")
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}, secret: [a, b], pool: {cooldown: 1m}}\n"
	now := time.Now()
	gw, _ := newTestGateway(t, y, up.URL, map[string]vault.Secret{
		"a": vault.NewSecret("a", keyA, now),
		"b": vault.NewSecret("b", keyB, now),
	})
	front := httptest.NewServer(gw)
	defer front.Close()
	resp, err := http.Get(front.URL + "/openai/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(seen) != 2 || resp.StatusCode != 200 {
		t.Fatalf("want a retry with key b and 200: %d sends, status %d", len(seen), resp.StatusCode)
	}
	var dump strings.Builder
	resp.Header.Write(&dump)
	if strings.Contains(dump.String(), keyA) || strings.Contains(dump.String(), "0123456789abcdefXYZ") {
		t.Errorf("key a, sent in this exchange's first attempt, reached the app in a response header:\n%s", dump.String())
	}
}

// onRecord is an audit sink that calls hook, once, when it is given a
// record holding mark, before writing it.
type onRecord struct {
	lockedBuffer
	mark string
	once sync.Once
	hook func()
}

func (o *onRecord) Write(p []byte) (int, error) {
	if strings.Contains(string(p), o.mark) {
		o.once.Do(o.hook)
	}
	return o.lockedBuffer.Write(p)
}

// TestPoolRetryScrubsRotatedKey: a pool's key a is refused (429) and the
// request goes again with key b; a reload that rotates b lands as the
// retry is recorded, so the retry goes with b's new value. The upstream
// echoes that value in a header: it is scrubbed like any key the request
// sent, not passed to the app.
func TestPoolRetryScrubsRotatedKey(t *testing.T) {
	const keyA = "sk-pool-a-0123456789abcdefXYZ"
	const keyB = "sk-pool-b-9876543210zyxwvuABC"
	const keyB2 = "sk-pool-b2-5555555555rotatedQRS"
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		if strings.Contains(auth, keyA) {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Header().Set("X-Echo", auth)
		io.WriteString(w, "ok")
	}))
	defer up.Close()
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: " + up.URL + ", secret: [a, b], pool: {cooldown: 1m}}\n"
	snap := func(b string) *Snapshot {
		cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		return NewSnapshot(cfg, map[string]vault.Secret{"a": vault.NewSecret("a", keyA, now), "b": vault.NewSecret("b", b, now)})
	}
	var gw *Gateway
	sink := &onRecord{mark: `"reason":"` + codePoolRetry + `"`, hook: func() { gw.Swap(snap(keyB2)) }}
	gw = New(snap(keyB), Options{Audit: testAudit(sink), Log: zerolog.Nop()})
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/openai/v1/models", nil)) // key a first: round robin starts there
	if w.Code != http.StatusOK || w.Body.String() != "ok" {
		t.Fatalf("want the retry with key b to answer 200 ok: %d %q", w.Code, w.Body)
	}
	var dump strings.Builder
	w.Header().Write(&dump)
	if strings.Contains(dump.String(), "5555555555rotated") {
		t.Errorf("key b's rotated value, which the retry sent, reached the app in a response header:\n%s", dump.String())
	}
}
