package proxy

import (
	"encoding/json"
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

// TestMintGiveUpsLoggedPerInterval: while a token endpoint hangs, every
// request waiting for its token gives up at its route's timeout (502
// credential_unavailable, each with its record), and the log has one
// line per route at once, then one per interval saying how many more
// gave up since. Caught: a warn line per request, a log flood at the
// rate requests come.
func TestMintGiveUpsLoggedPerInterval(t *testing.T) {
	endpoint := holdingEndpoint(t)
	route := func(name, scope string) string {
		return "  - {name: " + name + ", upstream: " + endpoint.URL + ", secret: cred, timeout: 200ms, inject: {oauth2: {token_url: " + endpoint.URL + "/token, scopes: [" + scope + "]}}}\n"
	}
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n"+route("api", "a")+route("other", "b")), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cred := vault.NewFieldSecret("cred", map[string]string{"client_id": "app", "client_secret": "cs-0123456789abcdef"}, time.Now())
	records, logs := &lockedBuffer{}, &lockedBuffer{}
	gw := New(NewSnapshot(cfg, map[string]vault.Secret{"cred": cred}), Options{Audit: testAudit(records), Log: zerolog.New(logs)})
	gw.mintFails.every = time.Second

	const perRoute = 50
	var wg sync.WaitGroup
	for i := range 2 * perRoute {
		path := "/api/x"
		if i%2 == 1 {
			path = "/other/x"
		}
		wg.Go(func() {
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
			if w.Code != http.StatusBadGateway {
				t.Errorf("GET %s: %d, want 502", path, w.Code)
			}
		})
	}
	wg.Wait()
	if n := len(records.records(t)); n != 2*perRoute {
		t.Errorf("%d request records, want %d", n, 2*perRoute)
	}
	lines := func() []map[string]any {
		var out []map[string]any
		for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
			var ev map[string]any
			if json.Unmarshal([]byte(l), &ev) == nil && strings.Contains(ev["message"].(string), "cannot be obtained from its token endpoint") {
				out = append(out, ev)
			}
		}
		return out
	}
	if got := lines(); len(got) != 2 {
		t.Fatalf("%d lines for %d requests that gave up on 2 routes, want 2 (one per route): %v", len(got), 2*perRoute, got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(lines()) < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got := lines()
	if len(got) != 4 {
		t.Fatalf("%d lines after the interval, want 4 (one more per route): %v", len(got), got)
	}
	counted := map[any]float64{}
	for _, ev := range got[2:] {
		counted[ev["route"]] = ev["requests"].(float64)
		if !strings.Contains(ev["message"].(string), "49 more requests") || !strings.Contains(ev["error"].(string), "no token within the route's timeout") {
			t.Errorf("the interval's line: %v; want it to count 49 more, with their error", ev)
		}
	}
	if counted["api"] != perRoute-1 || counted["other"] != perRoute-1 {
		t.Errorf("counted %v, want %d more for each route", counted, perRoute-1)
	}
}

// TestMintGiveUpsLoggedAtShutdown: the failures counted since the last
// line are logged when the gateway shuts down, not lost with the timer
// that would have logged them at the interval's end.
func TestMintGiveUpsLoggedAtShutdown(t *testing.T) {
	endpoint := holdingEndpoint(t)
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: api, upstream: "+endpoint.URL+", secret: cred, timeout: 100ms, inject: {oauth2: {token_url: "+endpoint.URL+"/token}}}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cred := vault.NewFieldSecret("cred", map[string]string{"client_id": "app", "client_secret": "cs-0123456789abcdef"}, time.Now())
	logs := &lockedBuffer{}
	gw := New(NewSnapshot(cfg, map[string]vault.Secret{"cred": cred}), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.New(logs)})
	gw.mintFails.every = time.Hour
	for range 3 {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
		if w.Code != http.StatusBadGateway {
			t.Fatalf("GET /api/x: %d, want 502", w.Code)
		}
	}
	if err := gw.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "2 more requests since the last such line") {
		t.Errorf("the log after shutdown does not count the 2 failures after the first:\n%s", logs.String())
	}
}
