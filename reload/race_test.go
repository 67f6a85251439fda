package reload

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/audit"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy"
	"github.com/tillgw/till/vault"
)

// hit is one request an upstream got.
type hit struct{ upstream, path, key string }

// TestReloadStormNeverMixesConfigs reloads from many goroutines at once
// (a SIGHUP storm, POST /admin/reload, GET /admin/routes), alternating between two
// configs that give route r a different upstream, key, client and paths,
// and one that is refused, while requests run: every key that leaves goes
// as one of the two configs says (never alice's request with bob's key or
// to bob's upstream), has its use record naming the client, route, key
// and path it went for, and every request has its record.
func TestReloadStormNeverMixesConfigs(t *testing.T) {
	const keyA, keyB = "sk-storm-alice-0123456789abcdef", "sk-storm-bob-0123456789abcdef"
	var mu sync.Mutex
	var hits []hit
	upstream := func(name string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			mu.Lock()
			hits = append(hits, hit{name, r.URL.Path, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")})
			mu.Unlock()
			w.Write([]byte(`{"ok":true}`))
		}))
		t.Cleanup(s.Close)
		return s
	}
	upA, upB := upstream("A"), upstream("B")
	hash := func(tok string) string { s := sha256.Sum256([]byte(tok)); return hex.EncodeToString(s[:]) }
	clients := "clients:\n  - {name: alice, token_sha256: " + hash("till_alice0123456789") + "}\n" +
		"  - {name: bob, token_sha256: " + hash("till_bob0123456789") + "}\n"
	dir := t.TempDir()
	cfgX := parse(t, dir, "version: 1\n"+clients+"routes:\n  - {name: r, preset: openai, upstream: "+upA.URL+", secret: a, clients: [alice], allow: {paths: [/v1/a/*]}}\n")
	cfgY := parse(t, dir, "version: 1\n"+clients+"routes:\n  - {name: r, preset: openai, upstream: "+upB.URL+", secret: b, clients: [bob], allow: {paths: [/v1/b/*]}}\n")
	secrets := map[string]vault.Secret{
		"a": vault.NewSecret("a", keyA, time.Now()),
		"b": vault.NewSecret("b", keyB, time.Now()),
	}
	buf := &lockedBuffer{}
	gw := proxy.New(proxy.NewSnapshot(cfgX, secrets), proxy.Options{Audit: proxy.NewAudit(audit.New(buf, audit.Options{})), Log: zerolog.Nop()})
	var n atomic.Int64
	r := New(cfgX, secrets, Options{
		Load: func() (*config.Config, map[string]vault.Secret, error) {
			switch n.Add(1) % 3 {
			case 0:
				return cfgX, secrets, nil
			case 1:
				return cfgY, secrets, nil
			}
			return nil, nil, errors.New("till.yaml:3: refused")
		},
		Gateway: gw,
		Metrics: &fakeMetrics{},
		Log:     zerolog.Nop(),
	})

	admin := proxy.NewAdmin(proxy.AdminOptions{Gateway: gw, Reload: r.Reload, RestartNeeded: r.RestartNeeded})
	reloads := []func(){
		func() { _ = r.Reload() }, // SIGHUP
		func() { _ = r.Reload() },
		func() { admin.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/admin/reload", nil)) },
		func() { admin.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/admin/routes", nil)) },
	}
	stop := make(chan struct{})
	var reloaders sync.WaitGroup
	for _, reload := range reloads {
		reloaders.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					reload()
				}
			}
		})
	}
	want := map[string]struct{ upstream, key, path string }{
		"alice": {"A", keyA, "/v1/a/"},
		"bob":   {"B", keyB, "/v1/b/"},
	}
	var sent sync.WaitGroup
	var forwarded atomic.Int64
	const perWorker = 150
	for w := range 4 {
		sent.Go(func() {
			for i := range perWorker {
				client := []string{"alice", "bob"}[(w+i)%2]
				path := fmt.Sprintf("/r/v1/%s/%d-%d", []string{"a", "b"}[(w+i/2)%2], w, i)
				req := httptest.NewRequest("POST", path, strings.NewReader(`{"input":"x"}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer till_"+client+"0123456789")
				rec := httptest.NewRecorder()
				gw.ServeHTTP(rec, req)
				switch rec.Code {
				case http.StatusOK:
					forwarded.Add(1)
					if !strings.HasPrefix(path, "/r"+want[client].path) {
						t.Errorf("%s's %s went, which neither config allows", client, path)
					}
				case http.StatusForbidden, http.StatusNotFound:
				default:
					t.Errorf("%s %s: %d %s", client, path, rec.Code, rec.Body)
				}
			}
		})
	}
	sent.Wait()
	close(stop)
	reloaders.Wait()

	uses := map[string]map[string]any{} // by path
	requests := 0
	for _, rec := range warnings(t, buf.String()) { // the audit's JSON lines
		switch rec["event"] {
		case "use":
			uses[rec["path"].(string)] = rec
		case "request":
			requests++
		}
	}
	if requests != 4*perWorker {
		t.Errorf("%d request records for %d requests", requests, 4*perWorker)
	}
	mu.Lock()
	defer mu.Unlock()
	// A use record is written before the upstream's connection is got; a
	// reload while it dials can still stop the key, so there may be more
	// use records than keys sent, never fewer.
	if len(hits) != int(forwarded.Load()) || len(uses) < len(hits) {
		t.Errorf("%d answered 200, %d reached an upstream, %d use records", forwarded.Load(), len(hits), len(uses))
	}
	for _, h := range hits {
		u := uses["/r"+h.path]
		client, _ := u["client"].(string)
		w, ok := want[client]
		if u == nil || !ok {
			t.Errorf("upstream %s got %s with no use record naming a client: %v", h.upstream, h.path, u)
			continue
		}
		switch {
		case h.key == "":
			t.Errorf("%s's request %s reached upstream %s without its key: one the new config refused was sent all the same", client, h.path, h.upstream)
		case h.upstream != w.upstream || h.key != w.key || !strings.HasPrefix(h.path, w.path):
			t.Errorf("%s's request %s reached upstream %s with the key of another config", client, h.path, h.upstream)
		}
		if fp := secrets[map[string]string{"alice": "a", "bob": "b"}[client]].Fingerprint(); u["key_fp"] != fp || u["route"] != "r" {
			t.Errorf("use record %v: want key_fp %s on route r", u, fp)
		}
	}
	t.Logf("%d of %d requests forwarded during %d reloads", forwarded.Load(), 4*perWorker, n.Load())
}
