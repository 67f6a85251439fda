package test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/tillgw/till/test/fake"
)

// keyed returns a test key made of prefix and a repeated pair, and adds
// it to the suite's leak check.
func keyed(prefix, pair string) string {
	k := prefix + strings.Repeat(pair, 12)
	suiteLeaks.key(k)
	return k
}

// storeRoutes starts till on cfg in a fresh folder with extra environment,
// and returns it with a GET helper that reports the status and, on a
// refusal, till's error code.
func storeRoutes(t *testing.T, cfg, caFile string, env ...string) (*till, func(path string) (int, string)) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	tl := startTillIn(t, dir, caFile, env...)
	return tl, func(path string) (int, string) {
		resp, body := do(t, newRequest(t, "GET", tl.url(path), nil))
		if resp.StatusCode != 200 {
			return resp.StatusCode, tillError(t, resp, body)
		}
		return 200, ""
	}
}

// waitInjected sends GETs to path until the upstream receives want in
// header, failing on any refused request meanwhile (a rotation must not
// fail a request) or when within passes first.
func waitInjected(t *testing.T, get func(string) (int, string), up *upstream, path, header, want string, within time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(within); ; time.Sleep(50 * time.Millisecond) {
		if code, e := get(path); code != 200 {
			t.Fatalf("%s during rotation: %d %s", path, code, e)
		}
		if up.last(t).Header.Get(header) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the rotated value was not in use within %v", path, within)
		}
	}
}

// coldBurst sends n concurrent GETs to path and fails unless all are 200.
func coldBurst(t *testing.T, tl *till, path string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	codes := make(chan int, n)
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 100, MaxIdleConnsPerHost: 100}}
	defer client.CloseIdleConnections()
	for range n {
		wg.Go(func() {
			resp, err := client.Get(tl.url(path))
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		})
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Fatalf("concurrent cold request to %s: status %d\n%s", path, c, tl.stderr.String())
		}
	}
}

// TestSourceVault drives till against a strict fake Vault: AppRole,
// Kubernetes (with a namespace) and token-file auth inject the right
// values; a new KV version is live within ttl with no failed request;
// 1,000 cold requests cause one read; a revoked token is replaced (a new
// login, or the agent's rewritten token file); Vault down gives
// secret_unavailable, or secret_stale within failure_ttl; till check,
// secret list and the metrics see the refs; nothing leaks.
func TestSourceVault(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: waits for ttls")
	}
	up := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	v := fake.NewVault(t, time.Hour)
	dir := t.TempDir()
	file := func(name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	roleID, secretID := keyed("role-", "r1"), keyed("secret-id-", "s1")
	jwt := keyed("eyJhbGciOiJSUzI1NiJ9.", "j1")
	agentToken := v.IssueToken(0)
	suiteLeaks.key(agentToken)
	v.EnableAppRole(roleID, secretID)
	// A second server, in a namespace, for Kubernetes auth.
	ns := fake.NewVault(t, time.Hour)
	ns.RequireNamespace("team/prod")
	ns.EnableKubernetes("till", jwt)
	openai1, openai2 := keyed("sk-vault-a-", "a1"), keyed("sk-vault-a-", "a2")
	other, cold, anth := keyed("sk-vault-o-", "o1"), keyed("sk-vault-c-", "c1"), keyed("sk-vault-k-", "k1")
	v.Put("secret/openai", map[string]string{"api_key": openai1, "org": "org-1"}, nil)
	v.Put("secret/other", map[string]string{"key": other}, nil)
	v.Put("secret/cold", map[string]string{"key": cold}, nil)
	ns.Put("kv/anthropic", map[string]string{"key": anth}, nil)

	cfg := `version: 1
admin: {listen: 127.0.0.1:0}
sources:
  - name: corp
    type: vault
    address: ` + v.URL + `
    ca_file: ` + v.CAFile + `
    auth: {approle: {role_id_file: ` + file("role-id", roleID) + `, secret_id_file: ` + file("secret-id", secretID+"\n") + `}}
    ttl: 1s
    failure_ttl: 1h
  - name: slow
    type: vault
    address: ` + v.URL + `
    ca_file: ` + v.CAFile + `
    auth: {approle: {role_id_file: ` + file("role-id", roleID) + `, secret_id_file: ` + file("secret-id", secretID+"\n") + `}}
    ttl: 1h
  - name: agent
    type: vault
    address: ` + v.URL + `
    ca_file: ` + v.CAFile + `
    auth: {token_file: ` + file("token", agentToken) + `}
    ttl: 1s
  - name: k8s
    type: vault
    address: ` + ns.URL + `
    ca_file: ` + ns.CAFile + `
    namespace: team/prod
    auth: {kubernetes: {role: till, jwt_file: ` + file("sa-token", jwt) + `}}
    ttl: 1h
routes:
  - {name: openai, upstream: "` + up.URL + `", secret: "corp:secret/openai#api_key", inject: {header: Authorization, format: "Bearer {secret}"}}
  - {name: other, upstream: "` + up.URL + `", secret: "agent:secret/other", inject: {header: X-Api-Key}}
  - {name: cold, upstream: "` + up.URL + `", secret: "slow:secret/cold", inject: {header: X-Api-Key}}
  - {name: anth, upstream: "` + up.URL + `", secret: "k8s:kv/anthropic#key", inject: {header: X-Api-Key}}
`
	tl, get := storeRoutes(t, cfg, up.caFile)
	for _, c := range []struct{ path, header, want string }{
		{"/openai/v1", "Authorization", "Bearer " + openai1},
		{"/other/v1", "X-Api-Key", other},
		{"/anth/v1", "X-Api-Key", anth},
	} {
		if code, e := get(c.path); code != 200 {
			t.Fatalf("%s: %d %s", c.path, code, e)
		}
		if up.last(t).Header.Get(c.header) != c.want {
			t.Errorf("%s: wrong key injected", c.path)
		}
	}

	// 1,000 concurrent requests for a cold ref: one read from Vault.
	coldBurst(t, tl, "/cold/v1", 1000)
	if n := v.Reads("secret/cold"); n != 1 {
		t.Errorf("1,000 cold requests caused %d reads, want 1", n)
	}

	// A new version is live within ttl, with no failed request.
	v.Put("secret/openai", map[string]string{"api_key": openai2, "org": "org-1"}, nil)
	waitInjected(t, get, up, "/openai/v1", "Authorization", "Bearer "+openai2, 3*time.Second)
	if !tl.waitLog("fetched a new value of a secret") {
		t.Error("the rotation was not logged")
	}

	// Every token is revoked: the AppRole source logs in again; the
	// token-file source fails until the agent rewrites its file.
	logins := v.Logins()
	v.RevokeAll()
	time.Sleep(1100 * time.Millisecond) // past both ttls
	if code, e := get("/openai/v1"); code != 200 {
		t.Fatalf("after a revocation, AppRole: %d %s", code, e)
	}
	if v.Logins() != logins+1 {
		t.Errorf("after a revocation: %d new logins, want 1", v.Logins()-logins)
	}
	if code, e := get("/other/v1"); code != 503 || e != "secret_unavailable" {
		t.Errorf("revoked agent token: got %d %s, want 503 secret_unavailable", code, e)
	}
	newToken := v.IssueToken(0)
	suiteLeaks.key(newToken)
	file("token", newToken+"\n")
	time.Sleep(1100 * time.Millisecond) // the failure is remembered a second
	if code, e := get("/other/v1"); code != 200 || up.last(t).Header.Get("X-Api-Key") != other {
		t.Errorf("after the agent rewrote the token file: %d %s", code, e)
	}

	// till check and secret list fetch every ref.
	out, errOut, code := runTill(t, tl.dir, "", []string{"SSL_CERT_FILE=" + up.caFile}, "check")
	if code != 0 || !strings.Contains(out, "4 fetched from sources") {
		t.Errorf("till check: exit %d: %s %s", code, out, errOut)
	}
	out, _, code = runTill(t, tl.dir, "", nil, "test", "GET", "/openai/v1/models")
	if code != 0 || !strings.Contains(out, "secret:   corp:secret/openai#api_key (sha256:") {
		t.Errorf("till test: exit %d: %s", code, out)
	}
	out, _, _ = runTill(t, tl.dir, "", nil, "secret", "list", "--json")
	var rows []struct {
		Name, Source, Fingerprint, Status string
		VersionTime                       *time.Time `json:"version_time"`
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 4 {
		t.Fatalf("secret list --json: %v: %s", err, out)
	}
	if r := rows[0]; r.Name != "corp:secret/openai#api_key" || r.Source != "corp" || r.Fingerprint == "" || r.Status != "ok" || r.VersionTime == nil || time.Since(*r.VersionTime) > time.Minute {
		t.Errorf("secret list row: %+v", r)
	}

	// The metrics: fetch results and each key's age.
	code, m := adminGet(t, tl.adminAddr(), "/metrics", "")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	if n, ok := metric(m, `till_secret_fetches_total{result="ok",source="corp"}`); !ok || n < 3 {
		t.Errorf("till_secret_fetches_total for corp: %v %v", n, ok)
	}
	if age, ok := metric(m, `till_secret_age_seconds{secret="corp:secret/openai#api_key"}`); !ok || age < 0 || age > 60 {
		t.Errorf("till_secret_age_seconds: %v %v", age, ok)
	}

	// Vault down: the corp ref stands in within failure_ttl (secret_stale),
	// the agent's fails at once; till check fails and says why.
	v.SetDown(true)
	time.Sleep(1100 * time.Millisecond)
	if code, e := get("/openai/v1"); code != 200 {
		t.Errorf("Vault down, within failure_ttl: %d %s", code, e)
	}
	if code, e := get("/other/v1"); code != 503 || e != "secret_unavailable" {
		t.Errorf("Vault down: got %d %s, want 503 secret_unavailable", code, e)
	}
	out, errOut, code = runTill(t, tl.dir, "", nil, "check")
	if code != 1 || !strings.Contains(errOut, `secret "agent:secret/other" (source "agent") cannot be fetched: read secret/other: 503 Vault is sealed`) {
		t.Errorf("till check with Vault down: exit %d: %s %s", code, out, errOut)
	}
	out, _, code = runTill(t, tl.dir, "", nil, "test", "GET", "/other/v1/models")
	if code != 1 || !strings.Contains(out, "refused: secret_unavailable") || !strings.Contains(out, "503 Vault is sealed") {
		t.Errorf("till test with Vault down: exit %d: %s", code, out)
	}
	stale := false
	for _, r := range tl.audit() {
		if r["route"] == "openai" && r["reason"] == "secret_stale" && r["secret"] == "corp:secret/openai#api_key" {
			stale = true
		}
	}
	if !stale {
		t.Error("no audit record with reason secret_stale")
	}

	// Vault is back and the entry deleted: a revocation, not an outage.
	// failure_ttl does not stand the deleted value in.
	v.SetDown(false)
	v.Delete("secret/openai")
	time.Sleep(1100 * time.Millisecond) // the failure is remembered a second
	if code, e := get("/openai/v1"); code != 503 || e != "secret_unavailable" {
		t.Errorf("entry deleted, within failure_ttl: got %d %s, want 503 secret_unavailable", code, e)
	}
	tl.stop()
	tl.assertNoLeak([]string{openai1, openai2, other, cold, anth, roleID, secretID, jwt, agentToken, newToken})
}

// TestSourceSecretsManager drives till against a fake Secrets Manager that
// checks every SigV4 signature: a plain and a JSON #FIELD secret inject
// the right values, a new version is live within ttl, 1,000 cold requests
// cause one call, and the service failing gives secret_unavailable.
func TestSourceSecretsManager(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: waits for ttls")
	}
	up := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	creds := aws.Credentials{AccessKeyID: "AKIAFAKETILL0000E2E1", SecretAccessKey: keyed("aws-secret-", "w1"), SessionToken: keyed("aws-session-", "x1")}
	sm := fake.NewSecretsManager(t, creds, "eu-central-1")
	plain1, plain2 := keyed("sk-aws-p-", "p1"), keyed("sk-aws-p-", "p2")
	field, cold := keyed("sk-aws-j-", "j1"), keyed("sk-aws-c-", "c1")
	sm.Put("prod/openai", plain1)
	sm.Put("prod/json", `{"api_key": "`+field+`", "org": "org-1"}`)
	sm.Put("prod/cold", cold)
	cfg := `version: 1
sources:
  - {name: aws, type: aws_secretsmanager, region: eu-central-1, endpoint: "` + sm.URL + `", ttl: 1s}
  - {name: slow, type: aws_secretsmanager, region: eu-central-1, endpoint: "` + sm.URL + `", ttl: 1h}
routes:
  - {name: plain, upstream: "` + up.URL + `", secret: "aws:prod/openai", inject: {header: X-Api-Key}}
  - {name: json, upstream: "` + up.URL + `", secret: "aws:prod/json#api_key", inject: {header: X-Api-Key}}
  - {name: cold, upstream: "` + up.URL + `", secret: "slow:prod/cold", inject: {header: X-Api-Key}}
`
	env := []string{"AWS_ACCESS_KEY_ID=" + creds.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + creds.SecretAccessKey,
		"AWS_SESSION_TOKEN=" + creds.SessionToken, "AWS_CA_BUNDLE=" + sm.CAFile, "AWS_EC2_METADATA_DISABLED=true"}
	tl, get := storeRoutes(t, cfg, up.caFile, env...)
	for path, want := range map[string]string{"/plain/v1": plain1, "/json/v1": field} {
		if code, e := get(path); code != 200 || up.last(t).Header.Get("X-Api-Key") != want {
			t.Fatalf("%s: %d %s, or the wrong key", path, code, e)
		}
	}
	// From a source with a long ttl: a burst that outlasts 3/4 of a
	// short one (a busy machine) rightly refreshes it.
	coldBurst(t, tl, "/cold/v1", 1000)
	if n := sm.Calls("prod/cold"); n != 1 {
		t.Errorf("1,000 cold requests caused %d calls, want 1", n)
	}
	sm.Put("prod/openai", plain2)
	waitInjected(t, get, up, "/plain/v1", "X-Api-Key", plain2, 3*time.Second)
	if n := sm.Refused(); n != 0 {
		t.Errorf("the fake refused %d of till's signatures", n)
	}
	out, errOut, code := runTill(t, tl.dir, "", append(env, "SSL_CERT_FILE="+up.caFile), "check")
	if code != 0 {
		t.Errorf("till check: exit %d: %s %s", code, out, errOut)
	}
	sm.SetDown(true)
	time.Sleep(1100 * time.Millisecond)
	if code, e := get("/plain/v1"); code != 503 || e != "secret_unavailable" {
		t.Errorf("Secrets Manager down: got %d %s, want 503 secret_unavailable", code, e)
	}
	if !tl.waitLog("InternalServiceError") {
		t.Error("the service's error was not logged")
	}
	tl.stop()
	tl.assertNoLeak([]string{plain1, plain2, field, cold, creds.SecretAccessKey, creds.SessionToken})
}
