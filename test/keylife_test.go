package test

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSourceMaxAgeSurvivesRewrite: a key in a files source older than
// vault.max_age is refused (503 secret_expired), and stays refused when
// its file is written again with the same value, as a Kubernetes Secret
// volume rewrites every key of a Secret when one changes: a new
// modification time on an unrotated key is no rotation. A new value is.
func TestSourceMaxAgeSurvivesRewrite(t *testing.T) {
	up := newUpstream(t, http.HandlerFunc(okHandler))
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets")
	if err := os.Mkdir(secrets, 0o700); err != nil {
		t.Fatal(err)
	}
	old, rotated := "src-aged-"+strings.Repeat("f6", 10), "src-fresh-"+strings.Repeat("a7", 10)
	suiteLeaks.key(old)
	suiteLeaks.key(rotated)
	file := filepath.Join(secrets, "openai")
	write := func(v string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(old)
	aged := time.Now().Add(-40 * 24 * time.Hour)
	if err := os.Chtimes(file, aged, aged); err != nil {
		t.Fatal(err)
	}
	cfg := `version: 1
admin: {listen: 127.0.0.1:0}
vault: {max_age: 30d, on_expired: block}
sources:
  - {name: mounted, type: files, dir: ` + secrets + `}
routes:
  - {name: openai, upstream: ` + up.URL + `, secret: "mounted:openai", inject: {header: Authorization, format: "Bearer {secret}"}}
`
	tl := startTill(t, cfg, nil, up.caFile)
	get := func() (int, string) {
		resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
		if resp.StatusCode != 200 {
			return resp.StatusCode, tillError(t, resp, body)
		}
		return 200, ""
	}
	if code, e := get(); code != 503 || e != "secret_expired" {
		t.Fatalf("a key 40 days old under max_age 30d: %d %s, want 503 secret_expired", code, e)
	}
	// fetches waits until the source was read n times, successfully.
	fetches := func(n int) {
		t.Helper()
		want := `till_secret_fetches_total{result="ok",source="mounted"} ` + strconv.Itoa(n)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			_, metrics := adminGet(t, tl.adminAddr(), "/metrics", "")
			if strings.Contains(metrics, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the source was not read %d times within 10s", n)
			}
			get() // a request has the cache look at the file again
		}
	}
	write(old) // the same value, a new modification time
	fetches(2)
	if code, e := get(); code != 503 || e != "secret_expired" {
		t.Errorf("the same key written again: %d %s, want 503 secret_expired still", code, e)
	}
	write(rotated)
	fetches(3)
	if code, e := get(); code != 200 {
		t.Errorf("a rotated key: %d %s, want 200", code, e)
	}
}
