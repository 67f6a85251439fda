package test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReloadTighteningRateKeepsCount: a caller that has spent its rate
// gets nothing more when a reload tightens the route's rate (as an
// operator does to rein in a client): what it took under the old rate
// counts under the new one, in memory and in Redis alike, rather than a
// fresh bucket handing it a whole burst at once.
func TestReloadTighteningRateKeepsCount(t *testing.T) {
	for _, store := range []string{"memory", "redis"} {
		t.Run(store, func(t *testing.T) {
			limits := ""
			if store == "redis" {
				addr, _ := startRedis(t)
				limits = "limits: {redis: redis://" + addr + "/0}\n"
			}
			u := newUpstream(t, http.HandlerFunc(okHandler))
			cfg := "version: 1\n" + limits + "routes:\n  - {name: openai, preset: openai, upstream: " + u.URL + ", rate: 3/h}\n"
			tl := startTill(t, cfg, map[string]string{"openai": openaiKey}, u.caFile)
			get := func() int {
				resp, _ := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
				return resp.StatusCode
			}
			for i := range 3 {
				if c := get(); c != 200 {
					t.Fatalf("request %d within 3/h: %d, want 200", i+1, c)
				}
			}
			path := filepath.Join(tl.dir, "till.yaml")
			if err := os.WriteFile(path, []byte(strings.Replace(cfg, "rate: 3/h", "rate: 2/h", 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "the reload", func() bool {
				return strings.Count(tl.stderr.String(), `"message":"reloaded"`) >= 1
			})
			if c := get(); c != 429 {
				t.Errorf("after 3 requests, a reload to 2/h let the next one by (%d, want 429): the bucket started afresh", c)
			}
		})
	}
}
