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
	upURL, last := keyRecorder(t)
	dir := t.TempDir()
	cfg := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: " + upURL + "}\n"
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
	if last() != newKey {
		t.Errorf("after `till secret set` printed %q (%q), the next request (%d) went with the old key", strings.TrimSpace(out), errOut, resp.StatusCode)
	}
}

// TestRolledBackVaultKeepsTheRotation: an older copy of the vault put
// back while till serves (a backup restored, a deploy tool's stale copy)
// does not bring back the key a rotation took away, perhaps a leaked one:
// the reload is refused, says why, and requests go on with the rotated
// key.
func TestRolledBackVaultKeepsTheRotation(t *testing.T) {
	const oldKey, newKey = "sk-rollback-old-0123456789", "sk-rollback-new-0123456789"
	upURL, last := keyRecorder(t)
	dir := t.TempDir()
	cfg := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: " + upURL + "}\n"
	if err := os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	vaultFile := filepath.Join(dir, "till.vault")
	setSecret(t, dir, "openai", oldKey)
	backup, err := os.ReadFile(vaultFile)
	if err != nil {
		t.Fatal(err)
	}
	tl := startTillIn(t, dir, "")
	setSecret(t, dir, "openai", newKey)
	if !tl.waitLog(`"message":"reloaded"`) {
		t.Fatal("the rotation was not reloaded")
	}
	// The copy goes back whole, as cp to a temp name and mv would.
	if err := os.WriteFile(vaultFile+".restore", backup, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(vaultFile+".restore", vaultFile); err != nil {
		t.Fatal(err)
	}
	if !tl.waitLog("before its last rotation") {
		t.Fatalf("putting back the vault as it was before the rotation logged no refusal:\n%s", tl.stderr.String())
	}
	do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
	if k := last(); k != newKey {
		t.Errorf("after an older vault was put back, the request went with a key of %d characters, want the rotated one", len(k))
	}
}

// keyRecorder starts an upstream that answers every request and keeps
// the bearer key each came with; last returns the latest one's.
func keyRecorder(t *testing.T) (url string, last func() string) {
	var mu sync.Mutex
	var got []string
	up := newHTTPServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		mu.Unlock()
		w.Write([]byte(`{"ok":true}`))
	}))
	return up.URL, func() string {
		mu.Lock()
		defer mu.Unlock()
		return got[len(got)-1]
	}
}
