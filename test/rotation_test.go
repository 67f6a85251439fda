package test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestRotationWhileConfigRefused: while serve refuses a config edit (here
// forward mode without the CA, which the CLI accepts), a rotation still
// reaches the running till: the vault as it is now serves with the
// previous config, and the next request goes with the new key (the old
// one may be a leaked one being rotated away).
func TestRotationWhileConfigRefused(t *testing.T) {
	const oldKey, newKey = "sk-h67-rot-old-0123456789", "sk-h67-rot-new-0123456789"
	var mu sync.Mutex
	var got []string
	up := newHTTPServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		mu.Unlock()
		w.Write([]byte(`{"ok":true}`))
	}))
	dir := t.TempDir()
	cfg := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: " + up.URL + "}\n"
	write := func(s string) {
		if err := os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(cfg)
	setSecret(t, dir, "openai", oldKey)
	tl := startTillIn(t, dir, "")
	// An edit in progress, valid YAML that serve's reload refuses.
	write(cfg + "forward: {enabled: true}\n")
	if !tl.waitLog("reload failed") {
		t.Fatal("no failed reload logged")
	}
	out, errOut, code := runTill(t, dir, newKey, nil, "secret", "set", "openai")
	if code != 0 {
		t.Fatalf("secret set: exit %d %s%s", code, out, errOut)
	}
	if !tl.waitLog("serve with the previous config") {
		t.Fatal("the rotation was not served")
	}
	resp, _ := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
	mu.Lock()
	last := got[len(got)-1]
	mu.Unlock()
	if last != newKey {
		t.Errorf("after `till secret set` printed %q (%q), the next request (%d) went with the old key", strings.TrimSpace(out), errOut, resp.StatusCode)
	}
}
