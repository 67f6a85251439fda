package test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const adminToken = "admin-token-for-tests-0123456789"

func adminGet(t *testing.T, addr, path, token string) (int, string) {
	t.Helper()
	req := newRequest(t, "GET", "http://"+addr+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, body := do(t, req)
	return resp.StatusCode, string(body)
}

func TestAdminAndMetrics(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	sum := sha256.Sum256([]byte(adminToken))
	cfg := fmt.Sprintf(`version: 1
admin:
  listen: 127.0.0.1:0
  token_sha256: %s
routes:
  - name: openai
    preset: openai
    upstream: %s
    allow:
      methods: [GET]
      paths: ["/v1/models"]
`, hex.EncodeToString(sum[:]), u.URL)
	tl := startTill(t, cfg, map[string]string{"openai": openaiKey}, u.caFile)
	adminAddr := tl.adminAddr()
	do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
	for _, tc := range []struct{ method, path, code string }{
		{"POST", "/openai/v1/models", "method_not_allowed"},
		{"GET", "/openai/v1/files", "path_not_allowed"},
	} {
		resp, body := do(t, newRequest(t, tc.method, tl.url(tc.path), nil))
		if resp.StatusCode != 403 || tillError(t, resp, body) != tc.code {
			t.Errorf("%s %s: got %d %s, want 403 %s", tc.method, tc.path, resp.StatusCode, body, tc.code)
		}
	}
	if n := len(u.requests()); n != 1 {
		t.Errorf("upstream received %d requests, want 1: refusals must not reach it", n)
	}
	tl.waitAudit(3)

	var texts []string
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := adminGet(t, adminAddr, path, ""); code != 200 {
			t.Errorf("%s: got %d %s", path, code, body)
		}
	}
	for _, path := range []string{"/metrics", "/admin/routes"} {
		if code, _ := adminGet(t, adminAddr, path, ""); code != 401 {
			t.Errorf("%s without the admin token: got %d, want 401", path, code)
		}
		if code, _ := adminGet(t, adminAddr, path, "wrong"); code != 401 {
			t.Errorf("%s with a wrong token: got %d, want 401", path, code)
		}
	}
	code, metrics := adminGet(t, adminAddr, "/metrics", adminToken)
	texts = append(texts, metrics)
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`till_requests_total{client="anonymous",code="200",outcome="forwarded",route="openai"} 1`,
		`till_requests_total{client="anonymous",code="403",outcome="denied",route="openai"} 2`,
		`till_key_uses_total{route="openai",secret="openai"} 1`,
		`till_request_duration_seconds_count{route="openai"} 3`,
		`till_upstream_duration_seconds_count{route="openai"} 1`,
		`till_audit_failures_total 0`,
		`go_goroutines`, `process_resident_memory_bytes`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	code, routes := adminGet(t, adminAddr, "/admin/routes", adminToken)
	texts = append(texts, routes)
	var rs []map[string]any
	if code != 200 || json.Unmarshal([]byte(routes), &rs) != nil || len(rs) != 1 || rs[0]["name"] != "openai" ||
		!strings.HasPrefix(rs[0]["fingerprint"].(string), "sha256:") || rs[0]["ready"] != true {
		t.Errorf("/admin/routes: %d %s", code, routes)
	}

	// POST /admin/reload: a broken config is refused, a good one swapped in.
	reload := func() (int, string) {
		req := newRequest(t, "POST", "http://"+adminAddr+"/admin/reload", nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, body := do(t, req)
		return resp.StatusCode, string(body)
	}
	os.WriteFile(tl.dir+"/till.yaml", []byte(cfg+"    timeout: never\n"), 0o644)
	if code, body := reload(); code != 422 || !strings.Contains(body, "till.yaml:12") {
		t.Errorf("reload of a broken config: got %d %s, want 422 naming till.yaml:12", code, body)
	}
	if resp, _ := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil)); resp.StatusCode != 200 {
		t.Errorf("after a failed reload: got %d, want 200", resp.StatusCode)
	}
	os.WriteFile(tl.dir+"/till.yaml", []byte(strings.Replace(cfg, `paths: ["/v1/models"]`, `paths: ["/v1/models", "/v1/files"]`, 1)), 0o644)
	if code, body := reload(); code != 200 || strings.TrimSpace(body) != `{"result":"ok"}` {
		t.Errorf("reload: got %d %s", code, body)
	}
	// A setting only a restart applies is swapped in with the rest, and
	// the answer says it waits.
	os.WriteFile(tl.dir+"/till.yaml", []byte(strings.Replace(strings.Replace(cfg, `paths: ["/v1/models"]`, `paths: ["/v1/models", "/v1/files"]`, 1),
		"version: 1\n", "version: 1\nshutdown_grace: 7s\n", 1)), 0o644)
	if code, body := reload(); code != 200 || strings.TrimSpace(body) != `{"restart_needed":["shutdown_grace"],"result":"ok"}` {
		t.Errorf("reload of a setting that needs a restart: got %d %s", code, body)
	}
	if resp, _ := do(t, newRequest(t, "GET", tl.url("/openai/v1/files"), nil)); resp.StatusCode != 200 {
		t.Errorf("after reload, the newly allowed path: got %d, want 200", resp.StatusCode)
	}
	_, metrics = adminGet(t, adminAddr, "/metrics", adminToken)
	texts = append(texts, metrics)
	if !strings.Contains(metrics, `till_reloads_total{result="failed"}`) || !strings.Contains(metrics, `till_reloads_total{result="ok"}`) {
		t.Error("/metrics does not count reloads")
	}
	tl.stop()
	tl.assertNoLeak([]string{openaiKey, adminToken}, texts...)
}

func TestExpiredSecrets(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	for _, mode := range []string{"block", "warn"} {
		t.Run(mode, func(t *testing.T) {
			cfg := fmt.Sprintf("version: 1\nvault: {on_expired: %s}\nroutes:\n  - name: openai\n    preset: openai\n    upstream: %s\n", mode, u.URL)
			dir := t.TempDir()
			os.WriteFile(dir+"/till.yaml", []byte(cfg), 0o644)
			setSecret(t, dir, "openai", openaiKey, "--expires", "1s")
			time.Sleep(1100 * time.Millisecond) // the scenario: time passes, and the secret expires
			if _, errOut, code := runTill(t, dir, "", nil, "check"); code != 1 || !strings.Contains(errOut, "expired") {
				t.Errorf("check: exit %d: %s", code, errOut)
			}
			out, _, _ := runTill(t, dir, "", nil, "secret", "list", "--json")
			if !strings.Contains(out, `"status": "expired"`) {
				t.Errorf("secret list: %s", out)
			}
			tl := startTillIn(t, dir, u.caFile)
			before := len(u.requests())
			resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
			rec := tl.waitAudit(1)[0]
			if mode == "block" {
				if resp.StatusCode != 503 || tillError(t, resp, body) != "secret_expired" || len(u.requests()) != before {
					t.Errorf("blocked: got %d %s", resp.StatusCode, body)
				}
				if rec["outcome"] != "denied" || rec["reason"] != "secret_expired" || rec["key_fp"] != "" {
					t.Errorf("audit: %v", rec)
				}
			} else {
				if resp.StatusCode != 200 || len(u.requests()) != before+1 {
					t.Errorf("warned: got %d %s", resp.StatusCode, body)
				}
				if rec["outcome"] != "forwarded" || rec["reason"] != "secret_expired" || rec["key_fp"] == "" {
					t.Errorf("audit: %v", rec)
				}
			}
		})
	}
}

func TestReloadOnFileChange(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	cfg := fmt.Sprintf("version: 1\nroutes:\n  - name: openai\n    preset: openai\n    upstream: %s\n", u.URL)
	tl := startTill(t, cfg, map[string]string{"openai": openaiKey}, u.caFile)
	const rotated = "sk-rotated-by-file-watch-0123456789"
	setSecret(t, tl.dir, "openai", rotated) // the vault file changes: no signal sent
	if !tl.waitLog(`"message":"reloaded"`) {
		t.Fatalf("no reload after the vault changed:\n%s", tl.stderr.String())
	}
	do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
	if a := u.last(t).Header.Get("Authorization"); a != "Bearer "+rotated {
		t.Error("the rotated key is not in use")
	}
	n := strings.Count(tl.stderr.String(), `"message":"reloaded"`)
	os.WriteFile(tl.dir+"/till.yaml", []byte(cfg+"  - name: second\n    preset: openai\n    upstream: "+u.URL+"\n    secret: openai\n"), 0o644)
	for deadline := time.Now().Add(10 * time.Second); strings.Count(tl.stderr.String(), `"message":"reloaded"`) == n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no reload after the config changed")
		}
	}
	if resp, _ := do(t, newRequest(t, "GET", tl.url("/second/v1/models"), nil)); resp.StatusCode != 200 {
		t.Errorf("the new route: got %d", resp.StatusCode)
	}
}

// TestReloadUnderLoad changes the config 20 times, half of them invalid,
// while a client sends requests without pause: no request may fail, and
// each valid change must be live.
func TestReloadUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	u := newUpstream(t, http.HandlerFunc(okHandler))
	base := fmt.Sprintf("version: 1\nroutes:\n  - name: openai\n    preset: openai\n    upstream: %s\n", u.URL)
	tl := startTill(t, base, map[string]string{"openai": openaiKey}, u.caFile)
	var sent, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get(tl.url("/openai/v1/models"))
				sent.Add(1)
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
				}
			}
		}()
	}
	for i := 0; i < 20; i++ {
		cfg := base + fmt.Sprintf("  - name: extra%d\n    preset: openai\n    upstream: %s\n    secret: openai\n", i, u.URL)
		if i%2 == 1 {
			cfg += "    timeout: not-a-duration\n"
		}
		os.WriteFile(tl.dir+"/till.yaml", []byte(cfg), 0o644)
		want := `"message":"reloaded"`
		if i%2 == 1 {
			want = "reload failed"
		}
		n := strings.Count(tl.stderr.String(), want)
		tl.cmd.Process.Signal(sighup)
		for deadline := time.Now().Add(10 * time.Second); strings.Count(tl.stderr.String(), want) == n; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("reload %d: no %q", i, want)
			}
		}
		if i%2 == 0 {
			resp, _ := do(t, newRequest(t, "GET", tl.url(fmt.Sprintf("/extra%d/v1/models", i)), nil))
			if resp.StatusCode != 200 {
				t.Errorf("reload %d: the new route answered %d", i, resp.StatusCode)
			}
		}
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 || sent.Load() < 20 {
		t.Errorf("%d of %d requests failed during reloads", failed.Load(), sent.Load())
	}
	t.Logf("%d requests during 20 reloads, %d failed", sent.Load(), failed.Load())
}

var sighup = syscall.SIGHUP

// TestBadVaultKeepsServing: a truncated, corrupted or swapped vault makes
// the reload fail; the running gateway keeps its keys and keeps serving.
func TestBadVaultKeepsServing(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	cfg := fmt.Sprintf("version: 1\nroutes:\n  - name: openai\n    preset: openai\n    upstream: %s\n", u.URL)
	tl := startTill(t, cfg, map[string]string{"openai": openaiKey}, u.caFile)
	good, err := os.ReadFile(tl.dir + "/till.vault")
	if err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	setSecret(t, other, "openai", "sk-from-another-installation-0123")
	swapped, _ := os.ReadFile(other + "/till.vault")
	corrupt := append([]byte(nil), good...)
	corrupt[len(corrupt)/2] ^= 0xff
	for name, bad := range map[string][]byte{"truncated": good[:len(good)/2], "corrupted": corrupt, "swapped": swapped, "empty": {}} {
		t.Run(name, func(t *testing.T) {
			n := strings.Count(tl.stderr.String(), "reload failed")
			if err := os.WriteFile(tl.dir+"/till.vault", bad, 0o600); err != nil {
				t.Fatal(err)
			}
			waitFailedReload(t, tl, n)
			resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
			if resp.StatusCode != 200 || u.last(t).Header.Get("Authorization") != "Bearer "+openaiKey {
				t.Errorf("after a %s vault: got %d %s, want the old key still in use", name, resp.StatusCode, body)
			}
		})
	}
	if _, errOut, code := runTill(t, tl.dir, "", nil, "check"); code != 1 || !strings.Contains(errOut, "till.vault") {
		t.Errorf("check on a bad vault: exit %d: %s", code, errOut)
	}
	// A vault that goes away (a volume unmounted) is no empty vault: the
	// keys stay.
	t.Run("removed", func(t *testing.T) {
		os.WriteFile(tl.dir+"/till.vault", good, 0o600)
		if !tl.waitLog(`"message":"reloaded"`) {
			t.Fatal("the good vault put back was not reloaded")
		}
		n := strings.Count(tl.stderr.String(), "reload failed")
		if err := os.Remove(tl.dir + "/till.vault"); err != nil {
			t.Fatal(err)
		}
		waitFailedReload(t, tl, n)
		resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
		if resp.StatusCode != 200 || u.last(t).Header.Get("Authorization") != "Bearer "+openaiKey {
			t.Errorf("after the vault was removed: got %d %s, want the old key still in use", resp.StatusCode, body)
		}
	})
	tl.stop()
	tl.assertNoLeak([]string{openaiKey})
}

// waitFailedReload waits for till to log a failed reload after the n it
// had logged.
func waitFailedReload(t *testing.T, tl *till, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); strings.Count(tl.stderr.String(), "reload failed") == n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no failed reload logged:\n%s", tl.stderr.String())
		}
	}
}
