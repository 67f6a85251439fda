package test

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeOAuth is a token endpoint (client credentials) and an API that takes
// its tokens: /oauth/token issues hour-long tokens, /oauth/short tokens of
// 61 s (good for 1 s, as till stops a minute early), /oauth/fail fails.
type fakeOAuth struct {
	id, secret string
	mu         sync.Mutex
	issued     map[string]int // path -> tokens issued
	valid      map[string]bool
	tokens     []string
}

func (f *fakeOAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/oauth/") {
		user, pass, ok := r.BasicAuth()
		if !ok {
			r.ParseForm()
			user, pass = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
		if r.Method != http.MethodPost || user != f.id || pass != f.secret || r.URL.Path == "/oauth/fail" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"invalid_client"}`)
			return
		}
		life := 3600
		if r.URL.Path == "/oauth/short" {
			life = 61
		}
		f.mu.Lock()
		f.issued[r.URL.Path]++
		tok := fmt.Sprintf("tok-%s-%d-%s", strings.TrimPrefix(r.URL.Path, "/oauth/"), f.issued[r.URL.Path], strings.Repeat("z9", 12))
		f.valid[tok] = true
		f.tokens = append(f.tokens, tok)
		f.mu.Unlock()
		suiteLeaks.key(tok)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":%d}`, tok, life)
		return
	}
	f.mu.Lock()
	ok := f.valid[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
	f.mu.Unlock()
	if !ok {
		http.Error(w, `{"error":"invalid token"}`, http.StatusUnauthorized)
		return
	}
	fmt.Fprint(w, `{"ok":true}`)
}

func (f *fakeOAuth) count(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.issued[path]
}

// revokeAll makes the API refuse every token issued so far.
func (f *fakeOAuth) revokeAll() {
	f.mu.Lock()
	clear(f.valid)
	f.mu.Unlock()
}

// TestOAuth2 drives routes that mint their tokens with OAuth2 client
// credentials: 1,000 requests within a token's life cause one token
// request, and a reload keeps the token; a 401 from the API makes the next request mint anew; a token
// near its expiry is replaced once; a failing token endpoint gives 502
// credential_unavailable; nothing leaks.
func TestOAuth2(t *testing.T) {
	f := &fakeOAuth{id: "till-client", secret: keyed("oauth-secret-", "o2"), issued: map[string]int{}, valid: map[string]bool{}}
	up := newUpstream(t, f)
	route := func(name, tokenPath string) string {
		return "  - {name: " + name + ", upstream: \"" + up.URL + "\", secret: oauth, inject: {oauth2: {token_url: \"" + up.URL + tokenPath + "\", scopes: [api]}}}\n"
	}
	cfg := "version: 1\nroutes:\n" + route("api", "/oauth/token") + route("short", "/oauth/short") + route("broken", "/oauth/fail")
	tl := startTill(t, cfg, map[string]string{"oauth": `{"client_id":"till-client","client_secret":"` + f.secret + `"}`}, up.caFile)

	var wg sync.WaitGroup
	var failed atomic.Int32
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 100, MaxIdleConnsPerHost: 100}}
	for range 1000 {
		wg.Go(func() {
			resp, err := client.Get(tl.url("/api/v1/things"))
			if err != nil || resp.StatusCode != 200 {
				failed.Add(1)
			}
			if err == nil {
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 || f.count("/oauth/token") != 1 {
		t.Fatalf("1,000 requests: %d failed, %d tokens minted; want 0 and 1", failed.Load(), f.count("/oauth/token"))
	}

	// A reload for another secret's sake (the vault changed) keeps the
	// token: the credential it was minted from did not change.
	reloads := strings.Count(tl.stderr.String(), `"message":"reloaded"`)
	setSecret(t, tl.dir, "unrelated", keyed("sk-unrelated-", "u1"))
	waitFor(t, 10*time.Second, "a reload", func() bool {
		return strings.Count(tl.stderr.String(), `"message":"reloaded"`) > reloads
	})
	if resp, _ := do(t, newRequest(t, "GET", tl.url("/api/v1/things"), nil)); resp.StatusCode != 200 || f.count("/oauth/token") != 1 {
		t.Fatalf("after a reload: %d with %d tokens minted; want 200 and 1", resp.StatusCode, f.count("/oauth/token"))
	}

	// The API refuses the token: that request gets the 401, the next one a
	// new token.
	f.revokeAll()
	get := func(path string) (int, string) {
		resp, body := do(t, newRequest(t, "GET", tl.url(path), nil))
		if resp.Header.Get("X-Till-Error") != "" {
			return resp.StatusCode, tillError(t, resp, body)
		}
		return resp.StatusCode, ""
	}
	if code, _ := get("/api/v1/things"); code != 401 {
		t.Fatalf("with the token revoked: %d, want the API's 401", code)
	}
	if code, e := get("/api/v1/things"); code != 200 || f.count("/oauth/token") != 2 {
		t.Fatalf("after a 401: %d %s with %d tokens minted; want 200 and 2", code, e, f.count("/oauth/token"))
	}
	if code, _ := get("/api/v1/things"); code != 200 || f.count("/oauth/token") != 2 {
		t.Errorf("the new token was not kept: %d tokens minted", f.count("/oauth/token"))
	}

	// A token that expires: replaced once, a minute before its expiry.
	for range 3 {
		if code, e := get("/short/v1/things"); code != 200 {
			t.Fatalf("short-lived token: %d %s", code, e)
		}
	}
	time.Sleep(1100 * time.Millisecond)
	for range 3 {
		if code, e := get("/short/v1/things"); code != 200 {
			t.Fatalf("after the token's life: %d %s", code, e)
		}
	}
	if n := f.count("/oauth/short"); n != 2 {
		t.Errorf("a token near its expiry: %d tokens minted, want 2", n)
	}

	// The token endpoint refuses: 502 credential_unavailable.
	if code, e := get("/broken/v1/things"); code != 502 || e != "credential_unavailable" {
		t.Errorf("a failing token endpoint: %d %s, want 502 credential_unavailable", code, e)
	}
	if !tl.waitLog("cannot be obtained from its token endpoint") {
		t.Error("the token endpoint's failure was not logged")
	}
	// till test names the mechanism and, with --mint, tries the endpoint.
	env := []string{"SSL_CERT_FILE=" + up.caFile}
	out, _, code := runTill(t, tl.dir, "", env, "test", "--mint", "GET", "/api/v1/things")
	if code != 0 || !strings.Contains(out, "credential: oauth2") || !strings.Contains(out, "a token was obtained") {
		t.Errorf("till test --mint: exit %d: %s", code, out)
	}
	out, _, code = runTill(t, tl.dir, "", env, "test", "--mint", "GET", "/broken/v1/things")
	if code != 1 || !strings.Contains(out, "refused: credential_unavailable") || strings.Contains(out, f.secret) {
		t.Errorf("till test --mint on a failing endpoint: exit %d: %s", code, out)
	}
	for _, r := range tl.audit() {
		if r["route"] == "api" && r["status"] == float64(200) && (r["credential"] != "oauth2" || r["key_fp"] == "") {
			t.Errorf("record: %v", r)
			break
		}
	}
	tl.stop()
	f.mu.Lock()
	secrets := append([]string{f.secret}, f.tokens...)
	f.mu.Unlock()
	tl.assertNoLeak(secrets)
}

// TestTillTestMintIsRecorded: till test --mint asks a token endpoint with
// the route's client secret, a key use: its use record goes to the
// config's audit file first, as serve's asks do, chained to serve's
// records (till audit verify passes). While a running till holds the
// file, the ask cannot be recorded, so it is not made (audit_unavailable),
// and the endpoint is never asked. Caught: the ask went, recorded nowhere.
func TestTillTestMintIsRecorded(t *testing.T) {
	f := &fakeOAuth{id: "till-client", secret: keyed("oauth-secret-", "tm"), issued: map[string]int{}, valid: map[string]bool{}}
	up := newUpstream(t, f)
	cfg := "version: 1\naudit: {file: audit.log}\nclients:\n  - {name: web, token_sha256: " + strings.Repeat("ab", 32) + "}\nroutes:\n" +
		"  - {name: api, upstream: \"" + up.URL + "\", secret: oauth, clients: any, inject: {oauth2: {token_url: \"" + up.URL + "/oauth/token\", scopes: [api]}}}\n"
	tl := startTill(t, cfg, map[string]string{"oauth": `{"client_id":"till-client","client_secret":"` + f.secret + `"}`}, up.caFile)
	env := []string{"SSL_CERT_FILE=" + up.caFile}
	trail := filepath.Join(tl.dir, "audit.log")

	// serve holds the trail and has no admin listener to ask: not
	// recorded, so not asked; the reason says how to have serve asked.
	out, _, code := runTill(t, tl.dir, "", env, "test", "--mint", "--client", "web", "GET", "/api/v1/things")
	if code != 1 || !strings.Contains(out, "refused: audit_unavailable") || !strings.Contains(out, "admin: {listen:") || f.count("/oauth/token") != 0 {
		t.Errorf("till test --mint while serve holds the audit file: exit %d, %d asks: %s", code, f.count("/oauth/token"), out)
	}
	if resp, _ := do(t, newRequest(t, "GET", tl.url("/api/v1/things"), nil)); resp.StatusCode != 200 {
		t.Fatalf("a live request: %d", resp.StatusCode)
	}
	tl.stop()
	asked := f.count("/oauth/token")

	out, _, code = runTill(t, tl.dir, "", env, "test", "--mint", "--client", "web", "GET", "/api/v1/things")
	if code != 0 || !strings.Contains(out, "a token was obtained") || f.count("/oauth/token") != asked+1 {
		t.Fatalf("till test --mint: exit %d, %d asks (want %d): %s", code, f.count("/oauth/token"), asked+1, out)
	}
	recs := readIncidentTrail(t, trail)
	last := recs[len(recs)-1].rec
	host := up.Listener.Addr().String() // the endpoint's host, whatever its scheme (TILL_TEST_UPSTREAM)
	if last["event"] != "use" || last["client"] != "web" || last["route"] != "api" || last["secret"] != "oauth" ||
		last["key_fp"] == "" || last["method"] != "POST" || last["host"] != host || last["path"] != "/oauth/token" ||
		last["credential"] != "oauth2" || last["attempt"] != 1.0 {
		t.Errorf("the trail's last record is %v; want the use record of till test's ask", last)
	}
	if out, errOut, code := auditVerify(t, tl.dir, "audit.log"); code != 0 {
		t.Errorf("till audit verify after till test --mint: exit %d\n%s%s", code, out, errOut)
	}

	// A trail on stdout is serve's: the record goes to stderr, and
	// --json prints the verdict alone.
	onStdout := strings.Replace(cfg, "audit: {file: audit.log}\n", "", 1)
	if err := os.WriteFile(filepath.Join(tl.dir, "stdout.yaml"), []byte(onStdout), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runTill(t, tl.dir, "", env, "test", "-c", "stdout.yaml", "--mint", "--json", "--client", "web", "GET", "/api/v1/things")
	var verdict map[string]any
	if err := json.Unmarshal([]byte(out), &verdict); code != 0 || err != nil || verdict["allowed"] != true {
		t.Errorf("till test --mint --json with the trail on stdout: exit %d, stdout not one verdict (%v): %s", code, err, out)
	}
	if !strings.Contains(errOut, `"event":"use"`) || !strings.Contains(errOut, `"path":"/oauth/token"`) {
		t.Errorf("till test --mint with the trail on stdout: no use record on stderr: %s", errOut)
	}

	// A trail that cannot be written (a link, which till never writes
	// through): not recorded, so not asked.
	if err := os.Rename(trail, trail+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(trail+".old", trail); err != nil {
		t.Fatal(err)
	}
	asked = f.count("/oauth/token")
	out, _, code = runTill(t, tl.dir, "", env, "test", "--mint", "GET", "/api/v1/things")
	if code != 1 || !strings.Contains(out, "refused: audit_unavailable") || f.count("/oauth/token") != asked {
		t.Errorf("till test --mint with an unwritable audit file: exit %d, %d asks (want %d): %s", code, f.count("/oauth/token"), asked, out)
	}
	tl.assertNoLeak([]string{f.secret})
}

// TestTillTestMintAsksServe: while a running till holds the audit file,
// till test --mint asks it, through its admin listener (POST
// /admin/test, with TILL_ADMIN_TOKEN), to mint as it would for the
// request: the token endpoint, which checks the client secret, is asked
// once, by serve, whose trail holds the ask's use record; a later test
// is told the token serve holds, without an ask, and a live request goes
// with that token. A refused request asks nothing; a wrong admin token
// is refused, by the CLI and by the listener; the token never reaches
// the CLI's output or the trail. Caught: till test --mint was refused
// whenever till ran, which in production is always.
func TestTillTestMintAsksServe(t *testing.T) {
	const adminToken, webToken = "admin-token-mint-0123456789", "till_MintAsksServeWebClient0123456789"
	f := &fakeOAuth{id: "till-client", secret: keyed("oauth-secret-", "ms"), issued: map[string]int{}, valid: map[string]bool{}}
	up := newUpstream(t, f)
	cfg := fmt.Sprintf("version: 1\nadmin: {listen: \"127.0.0.1:0\", token_sha256: %x}\naudit: {file: audit.log}\n", sha256.Sum256([]byte(adminToken))) +
		fmt.Sprintf("clients:\n  - {name: web, token_sha256: %x}\nroutes:\n", sha256.Sum256([]byte(webToken))) +
		"  - {name: api, upstream: \"" + up.URL + "\", secret: oauth, clients: [web], allow: {methods: [GET]}, inject: {oauth2: {token_url: \"" + up.URL + "/oauth/token\", scopes: [api]}}}\n"
	tl := startTill(t, cfg, map[string]string{"oauth": `{"client_id":"till-client","client_secret":"` + f.secret + `"}`}, up.caFile)
	// The CLI reads the admin address from its config: the one serve bound.
	admin := tl.adminAddr()
	if err := os.WriteFile(filepath.Join(tl.dir, "cli.yaml"), []byte(strings.Replace(cfg, "127.0.0.1:0", admin, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"SSL_CERT_FILE=" + up.caFile, "TILL_ADMIN_TOKEN=" + adminToken}
	mint := func(env []string, args ...string) (string, int) {
		out, errOut, code := runTill(t, tl.dir, "", env, append([]string{"test", "-c", "cli.yaml", "--mint", "--client", "web"}, args...)...)
		return out + errOut, code
	}
	var outputs []string

	out, code := mint(env, "GET", "/api/v1/things")
	outputs = append(outputs, out)
	if code != 0 || !strings.Contains(out, "a token was obtained") || f.count("/oauth/token") != 1 {
		t.Fatalf("till test --mint while serve runs: exit %d, %d asks (want 1): %s", code, f.count("/oauth/token"), out)
	}
	var ask auditRecord
	recs := readIncidentTrail(t, filepath.Join(tl.dir, "audit.log"))
	for _, r := range recs {
		if r.rec["event"] == "use" && r.rec["path"] == "/oauth/token" {
			ask = r.rec
		}
	}
	if ask == nil || ask["client"] != "web" || ask["route"] != "api" || ask["method"] != "POST" || ask["key_fp"] == "" || ask["credential"] != "oauth2" {
		t.Errorf("serve's trail has no use record of the ask (got %v)", ask)
	}

	// The token is serve's now: the next test is told so, without an ask.
	out, code = mint(env, "--json", "GET", "/api/v1/things")
	outputs = append(outputs, out)
	var v map[string]any
	if json.Unmarshal([]byte(out), &v); code != 0 || v["allowed"] != true || !strings.Contains(fmt.Sprint(v["warning"]), "not asked for this test") || f.count("/oauth/token") != 1 {
		t.Errorf("a second till test --mint --json: exit %d, %d asks (want 1): %s", code, f.count("/oauth/token"), out)
	}
	live := newRequest(t, "GET", tl.url("/api/v1/things"), nil)
	live.Header.Set("X-Till-Token", webToken)
	if resp, body := do(t, live); resp.StatusCode != 200 || f.count("/oauth/token") != 1 {
		t.Errorf("a request after till test --mint: %d %s, %d asks; want 200 with the token serve minted for the test", resp.StatusCode, body, f.count("/oauth/token"))
	}
	// A refused request asks nothing.
	out, code = mint(env, "POST", "/api/v1/things")
	outputs = append(outputs, out)
	if code != 1 || !strings.Contains(out, "refused: method_not_allowed") {
		t.Errorf("till test --mint of a refused request: exit %d: %s", code, out)
	}
	// A wrong admin token: the CLI does not send it, and the listener
	// refuses it.
	out, code = mint([]string{"SSL_CERT_FILE=" + up.caFile, "TILL_ADMIN_TOKEN=admin-token-wrong-0123456789"}, "GET", "/api/v1/things")
	outputs = append(outputs, out)
	if code != 1 || !strings.Contains(out, "refused: audit_unavailable") || !strings.Contains(out, "TILL_ADMIN_TOKEN") {
		t.Errorf("till test --mint with a wrong admin token: exit %d: %s", code, out)
	}
	req := newRequest(t, "POST", "http://"+admin+"/admin/test", strings.NewReader(`{"method":"GET","target":"/api/v1/things","client":"web"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer admin-token-wrong-0123456789")
	if resp, body := do(t, req); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST /admin/test with a wrong admin token: %d %s, want 401", resp.StatusCode, body)
	}
	if n := f.count("/oauth/token"); n != 1 {
		t.Errorf("%d asks of the token endpoint, want the first test's one", n)
	}
	tl.stop()
	if out, errOut, code := auditVerify(t, tl.dir, "audit.log"); code != 0 {
		t.Errorf("till audit verify: exit %d\n%s%s", code, out, errOut)
	}
	f.mu.Lock()
	tokens := append([]string(nil), f.tokens...)
	f.mu.Unlock()
	trail, _ := os.ReadFile(filepath.Join(tl.dir, "audit.log"))
	for _, tok := range tokens {
		if strings.Contains(strings.Join(outputs, "")+string(trail), tok) {
			t.Errorf("the minted token is in till test's output or the trail")
		}
	}
	tl.assertNoLeak(append([]string{f.secret}, tokens...))
}
