package test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigMovedAwayKeepsItsPolicy: a till started without -c serves
// ./till.yaml. Moving that file away (git stash, an editor that removes
// before it writes) must fail the reload, not swap in the built-in
// defaults, whose routes attach every preset-named key without the
// config's rules.
func TestConfigMovedAwayKeepsItsPolicy(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	cfg := fmt.Sprintf(`version: 1
routes:
  - name: openai
    preset: openai
    upstream: %s
    allow:
      methods: [GET]
      paths: ["/v1/models"]
`, u.URL)
	tl := startTill(t, cfg, map[string]string{"openai": openaiKey}, u.caFile)
	refused := func(when string) {
		t.Helper()
		resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/files"), nil))
		if resp.StatusCode != 403 || tillError(t, resp, body) != "path_not_allowed" {
			t.Errorf("%s: GET /openai/v1/files got %d %s, want 403 path_not_allowed", when, resp.StatusCode, body)
		}
	}
	refused("before")
	if err := os.Rename(filepath.Join(tl.dir, "till.yaml"), filepath.Join(tl.dir, "till.yaml.bak")); err != nil {
		t.Fatal(err)
	}
	// The watch sees the file go and reloads; so does a SIGHUP.
	tl.cmd.Process.Signal(sighup)
	waitFor(t, 10e9, "a reload after the config went", func() bool {
		return strings.Contains(tl.stderr.String(), "reload failed") || strings.Contains(tl.stderr.String(), `"message":"reloaded"`)
	})
	if strings.Contains(tl.stderr.String(), `"message":"reloaded"`) {
		t.Errorf("a reload without the config file succeeded:\n%s", tl.stderr.String())
	}
	if !strings.Contains(tl.stderr.String(), "no config file at till.yaml") {
		t.Errorf("the failed reload does not say the config file is gone:\n%s", tl.stderr.String())
	}
	refused("after the config went")
	if n := len(tl.uses()); n != 0 {
		t.Errorf("%d key uses, want none", n)
	}
	tl.stop()
	tl.assertNoLeak([]string{openaiKey})
}
