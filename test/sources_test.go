package test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSources drives till with a files source and an exec source: the
// value is injected, a rewrite and a ..data swap are live within ttl, a
// helper that fails or hangs gives 503 secret_unavailable, failure_ttl
// gives secret_stale, and 1,000 cold requests cause one fetch.
func TestSources(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: runs helpers and waits for ttls")
	}
	up := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	v1, v2, v3 := "src-key-"+strings.Repeat("a1", 10), "src-key-"+strings.Repeat("b2", 10), "src-key-"+strings.Repeat("c3", 10)
	ev, ev2 := "exec-key-"+strings.Repeat("d4", 10), "exec-key-"+strings.Repeat("e5", 10)
	for _, k := range []string{v1, v2, v3, ev, ev2} {
		suiteLeaks.key(k)
	}
	// A Kubernetes Secret volume: openai -> ..data/openai, ..data -> ..v1.
	must(os.MkdirAll(filepath.Join(secrets, "..v1"), 0o700))
	must(os.WriteFile(filepath.Join(secrets, "..v1", "openai"), []byte(v1+"\n"), 0o600))
	must(os.Symlink("..v1", filepath.Join(secrets, "..data")))
	must(os.Symlink("..data/openai", filepath.Join(secrets, "openai")))

	count := filepath.Join(dir, "count")
	mode := filepath.Join(dir, "mode")
	value := filepath.Join(dir, "value")
	must(os.WriteFile(value, []byte(ev+"\n"), 0o600))
	must(os.WriteFile(mode, []byte("ok"), 0o600))
	helper := filepath.Join(dir, "helper")
	must(os.WriteFile(helper, []byte(`#!/bin/sh
echo "$1" >> `+count+`
case "$(cat `+mode+`)" in
ok) sleep 0.2; cat `+value+`; echo "helper note for $1" >&2 ;;
fail) echo "helper failed" >&2; exit 2 ;;
hang) sleep 30 ;;
esac
`), 0o700))

	cfg := `version: 1
sources:
  - {name: mounted, type: files, dir: ` + secrets + `, ttl: 1s}
  - {name: op, type: exec, command: [` + helper + `], ttl: 2s, failure_ttl: 3s, timeout: 1s}
  - {name: strict, type: exec, command: [` + helper + `], ttl: 1s, timeout: 1s}
  - {name: once, type: exec, command: [` + helper + `], ttl: 1h, timeout: 10s}
routes:
  - name: files
    upstream: ` + up.URL + `
    secret: "mounted:openai"
    inject: {header: Authorization, format: "Bearer {secret}"}
  - name: exec
    upstream: ` + up.URL + `
    secret: "op:item"
    inject: {header: X-Api-Key}
  - name: strict
    upstream: ` + up.URL + `
    secret: "strict:item"
    inject: {header: X-Api-Key}
  - name: cold
    upstream: ` + up.URL + `
    secret: "once:cold"
    inject: {header: X-Api-Key}
`
	tl := startTill(t, cfg, nil, up.caFile)
	get := func(path string) (int, string) {
		resp, body := do(t, newRequest(t, "GET", tl.url(path), nil))
		if resp.StatusCode != 200 {
			return resp.StatusCode, tillError(t, resp, body)
		}
		return 200, ""
	}
	if code, e := get("/files/v1"); code != 200 {
		t.Fatalf("files route: %d %s", code, e)
	}
	if got := up.last(t).Header.Get("Authorization"); got != "Bearer "+v1 {
		t.Errorf("files route: wrong key injected")
	}

	// Rotation by rewrite, then by a ..data swap: live within ttl, no
	// failed request meanwhile.
	must(os.WriteFile(filepath.Join(secrets, "..v1", "openai"), []byte(v2+"\n"), 0o600))
	waitRotation := func(want string) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for {
			if code, e := get("/files/v1"); code != 200 {
				t.Fatalf("during rotation: %d %s", code, e)
			}
			if up.last(t).Header.Get("Authorization") == "Bearer "+want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("rotated value not in use within ttl")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitRotation(v2)
	must(os.MkdirAll(filepath.Join(secrets, "..v2"), 0o700))
	must(os.WriteFile(filepath.Join(secrets, "..v2", "openai"), []byte(v3+"\n"), 0o600))
	must(os.Symlink("..v2", filepath.Join(secrets, "..data_tmp")))
	must(os.Rename(filepath.Join(secrets, "..data_tmp"), filepath.Join(secrets, "..data")))
	waitRotation(v3)

	// 1,000 concurrent requests for a cold ref: one run of the helper.
	var wg sync.WaitGroup
	codes := make(chan int, 1000)
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 100, MaxIdleConnsPerHost: 100}}
	for range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(tl.url("/cold/v1"))
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Fatalf("concurrent cold request: status %d", c)
		}
	}
	// From a source with a long ttl: a burst that outlasts 3/4 of a
	// short one (a busy machine) rightly refreshes it.
	if b, _ := os.ReadFile(count); strings.Count(string(b), "cold\n") != 1 {
		t.Errorf("helper ran %d times for 1,000 cold requests, want 1", strings.Count(string(b), "cold\n"))
	}
	if code, e := get("/exec/v1"); code != 200 {
		t.Fatalf("exec route: %d %s", code, e)
	}
	if got := up.last(t).Header.Get("X-Api-Key"); got != ev {
		t.Errorf("exec route: wrong key injected")
	}
	// The helper's answer changes: live within ttl (2s), no failed request.
	must(os.WriteFile(value, []byte(ev2+"\n"), 0o600))
	for deadline := time.Now().Add(4 * time.Second); up.last(t).Header.Get("X-Api-Key") != ev2; time.Sleep(50 * time.Millisecond) {
		if code, e := get("/exec/v1"); code != 200 {
			t.Fatalf("exec rotation: %d %s", code, e)
		}
		if time.Now().After(deadline) {
			t.Fatal("the helper's new value was not in use within ttl")
		}
	}

	// The helper fails: within failure_ttl the last good value is used
	// (secret_stale); the strict source refuses at once.
	must(os.WriteFile(mode, []byte("fail"), 0o600))
	time.Sleep(2100 * time.Millisecond) // past op's ttl
	if code, e := get("/exec/v1"); code != 200 {
		t.Fatalf("within failure_ttl: %d %s", code, e)
	}
	if code, e := get("/strict/v1"); code != 503 || e != "secret_unavailable" {
		t.Errorf("failing helper: got %d %s, want 503 secret_unavailable", code, e)
	}
	// It hangs: 503 within its timeout.
	must(os.WriteFile(mode, []byte("hang"), 0o600))
	time.Sleep(1100 * time.Millisecond)
	start := time.Now()
	if code, e := get("/strict/v1"); code != 503 || e != "secret_unavailable" {
		t.Errorf("hanging helper: got %d %s, want 503 secret_unavailable", code, e)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("hanging helper: answered after %s", d)
	}
	stale := false
	for _, r := range tl.audit() {
		if r["route"] == "exec" && r["reason"] == "secret_stale" {
			stale = true
			if r["secret"] != "op:item" || r["key_fp"] == "" {
				t.Errorf("stale record: %v", r)
			}
		}
	}
	if !stale {
		t.Error("no audit record with reason secret_stale")
	}
	if !tl.waitLog("credential helper wrote to stderr") {
		t.Error("the helper's stderr was not logged")
	}
	tl.stop()
	tl.assertNoLeak([]string{v1, v2, v3, ev, ev2})
}
