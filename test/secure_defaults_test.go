package test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Secure by default (issue 15): a route open to any caller only on
// loopback unless it says so, no expiry in the past, expiring keys named in
// the log, and no literal key in the config.

const openRouteMsg = `routes[0].clients: required when till listens off loopback`

// openConfig is a config with one route to u; clients is the route's
// clients: line ("" for none).
func openConfig(u *upstream, listen, clients string) string {
	cfg := "version: 1\n"
	if listen != "" {
		cfg += "listen: " + listen + "\n"
	}
	cfg += fmt.Sprintf("routes:\n  - name: openai\n    preset: openai\n    upstream: %s\n", u.URL)
	if clients != "" {
		cfg += "    clients: " + clients + "\n"
	}
	return cfg
}

// writeConfig writes till.yaml into dir.
func writeConfig(t *testing.T, dir, cfg string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

// serveRefused runs till serve with args in dir, which must exit 1 before
// it listens, and returns what it printed.
func serveRefused(t *testing.T, dir, caFile string, args ...string) string {
	t.Helper()
	tl, err := tryStartTillCmd(t, dir, caFile, nil, nil, append([]string{"serve"}, args...)...)
	if err == nil {
		tl.stop()
		t.Fatalf("till serve %v started on %s, want it refused", args, tl.addr)
	}
	if !errors.Is(err, errExited) || !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("till serve %v: got %v, want exit status 1", args, err)
	}
	suiteLeaks.text("refused till serve "+strings.Join(args, " "), err.Error())
	return err.Error()
}

// TestOpenRouteOffLoopback: serve and check refuse a route without
// clients on a listener off loopback, the effective one (--listen wins
// over the config), and say how to fix it; clients: any starts.
func TestOpenRouteOffLoopback(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := t.TempDir()
	writeConfig(t, dir, openConfig(u, "", ""))
	setSecret(t, dir, "openai", openaiKey)

	// The config listens on loopback; --listen moves it off.
	out := serveRefused(t, dir, u.caFile, "--listen", "0.0.0.0:0")
	for _, want := range []string{
		"till: error: till.yaml:3: " + openRouteMsg + ` ("0.0.0.0:0")`,
		`"till client add NAME", then clients: [NAME]; or clients: any`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("serve --listen 0.0.0.0:0: no %q in:\n%s", want, out)
		}
	}
	// On loopback the same config serves.
	startTillIn(t, dir, u.caFile).stop()

	// check reads the config's listen address.
	writeConfig(t, dir, openConfig(u, "0.0.0.0:8080", ""))
	_, errOut, code := runTill(t, dir, "", nil, "check")
	if want := "till: error: till.yaml:4: " + openRouteMsg + ` ("0.0.0.0:8080")`; code != 1 || !strings.Contains(errOut, want) {
		t.Errorf("check: exit %d, want 1 and %q:\n%s", code, want, errOut)
	}
	serveRefused(t, dir, u.caFile)

	// clients: any, said explicitly, serves on every interface.
	writeConfig(t, dir, openConfig(u, "0.0.0.0:8080", "any"))
	if out, errOut, code := runTill(t, dir, "", nil, "check"); code != 0 {
		t.Errorf("check with clients: any: exit %d: %s%s", code, out, errOut)
	}
	tl := startTillCmd(t, dir, u.caFile, nil, nil, "serve", "--listen", "0.0.0.0:0")
	port := tl.addr[strings.LastIndex(tl.addr, ":"):]
	resp, body := do(t, newRequest(t, "GET", "http://127.0.0.1"+port+"/openai/v1/models", nil))
	if resp.StatusCode != 200 {
		t.Errorf("through clients: any: got %d %s", resp.StatusCode, body)
	}
	if got := u.last(t).Header.Get("Authorization"); got != "Bearer "+openaiKey {
		t.Errorf("upstream got Authorization %q", got)
	}

	// A reload to a config that opens the route is refused: the old one
	// keeps serving.
	writeConfig(t, dir, openConfig(u, "0.0.0.0:8080", ""))
	if err := tl.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !tl.waitLog("reload failed") || !strings.Contains(tl.stderr.String(), openRouteMsg) {
		t.Errorf("no refused reload in the log:\n%s", tl.stderr.String())
	}
	if resp, body := do(t, newRequest(t, "GET", "http://127.0.0.1"+port+"/openai/v1/models", nil)); resp.StatusCode != 200 {
		t.Errorf("after the refused reload: got %d %s", resp.StatusCode, body)
	}
	tl.stop()
	tl.assertNoLeak([]string{openaiKey})
}

// TestBuiltInDefaultsOffLoopback: without a config file the routes come
// from the vault and cannot name clients, so only loopback serves them.
func TestBuiltInDefaultsOffLoopback(t *testing.T) {
	dir := t.TempDir()
	setSecret(t, dir, "openai", openaiKey)
	out := serveRefused(t, dir, "", "--listen", "0.0.0.0:0")
	for _, want := range []string{`the built-in defaults (no config file) serve only on loopback, and "0.0.0.0:0" is not`, "till init"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	startTillIn(t, dir, "").stop()
}

// TestExpiresInThePast: secret set refuses an expiry already past, stores
// nothing, and echoes only the date it parsed.
func TestExpiresInThePast(t *testing.T) {
	dir := t.TempDir()
	suiteLeaks.key(openaiKey)
	for _, when := range []string{"2020-01-01", "2020-01-01T00:00:00Z"} {
		_, errOut, code := runTill(t, dir, openaiKey, nil, "secret", "set", "openai", "--expires", when)
		if want := "till: error: --expires " + when + " is in the past"; code != 2 || !strings.Contains(errOut, want) {
			t.Errorf("--expires %s: exit %d, want 2 and %q: %s", when, code, want, errOut)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "till.vault")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused secret set made the vault: %v", err)
	}
	// With a vault: nothing is stored, the secret there is unchanged.
	setSecret(t, dir, "other", "sk-other-0123456789abcdefghij")
	before, _, _ := runTill(t, dir, "", nil, "secret", "list", "--json")
	if _, errOut, code := runTill(t, dir, openaiKey, nil, "secret", "set", "other", "--expires", "2020-01-01"); code != 2 {
		t.Errorf("rotation with a past expiry: exit %d: %s", code, errOut)
	}
	if after, _, _ := runTill(t, dir, "", nil, "secret", "list", "--json"); after != before || strings.Contains(after, `"openai"`) {
		t.Errorf("a refused secret set changed the vault:\nbefore %s\nafter %s", before, after)
	}
	// A value that is not a date is not echoed: it may be a key.
	_, errOut, code := runTill(t, dir, "", nil, "secret", "set", "openai", "--expires", openaiKey)
	if code != 2 || strings.Contains(errOut, openaiKey) || !strings.Contains(errOut, "--expires: want a date") {
		t.Errorf("--expires KEY: exit %d: %s", code, errOut)
	}
}

// TestExpiringKeyWarnedAtStart: serve names a route whose key expires
// within 14 days at warn, with its fingerprint and expiry, never a value.
func TestExpiringKeyWarnedAtStart(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := t.TempDir()
	writeConfig(t, dir, openConfig(u, "", ""))
	setSecret(t, dir, "openai", openaiKey, "--expires", "3d")
	listed, _, _ := runTill(t, dir, "", nil, "secret", "list", "--json")
	var secrets []struct{ Fingerprint string }
	if err := json.Unmarshal([]byte(listed), &secrets); err != nil || len(secrets) != 1 {
		t.Fatalf("secret list: %v %s", err, listed)
	}
	tl := startTillIn(t, dir, u.caFile)
	if !tl.waitLog("expires within 14 days") {
		t.Fatalf("no expiry warning at start:\n%s", tl.stderr.String())
	}
	var warn map[string]any
	for _, line := range strings.Split(tl.stderr.String(), "\n") {
		var ev map[string]any
		if json.Unmarshal([]byte(line), &ev) == nil && ev["status"] == "expiring" {
			warn = ev
		}
	}
	expires, _ := time.Parse(time.RFC3339, fmt.Sprint(warn["expires"]))
	if warn["level"] != "warn" || warn["route"] != "openai" || warn["secret"] != "openai" || warn["key_fp"] != secrets[0].Fingerprint ||
		expires.Before(time.Now().Add(70*time.Hour)) || expires.After(time.Now().Add(73*time.Hour)) {
		t.Errorf("expiry warning: got %v", warn)
	}
	tl.stop()
	tl.assertNoLeak([]string{openaiKey})
}

// TestLiteralKeyInConfig: a key written into the config is refused by
// check and serve, with the field and line, and never printed.
func TestLiteralKeyInConfig(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	literal := "sk-proj-" + "Qm3Xr8Tz1Lk" + "9Vb2Nw7Hc4Jd6Fp0"
	suiteLeaks.key(literal)
	for _, tt := range []struct{ name, route, want string }{
		{"header", "    headers: {X-Api-Key: " + literal + "}\n", "till.yaml:6: routes[0].headers.X-Api-Key: looks like a literal key (not shown); remove it from the config, store it with till secret set NAME, and inject it with {secret}"},
		{"format", "    inject: {header: Authorization, format: \"Bearer " + literal + "\"}\n", "till.yaml:6: routes[0].inject.format: looks like a literal key (not shown)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			setSecret(t, dir, "openai", openaiKey) // secret set reads the config too
			writeConfig(t, dir, openConfig(u, "", "")+tt.route)
			out, errOut, code := runTill(t, dir, "", nil, "check")
			if code != 1 || !strings.Contains(errOut, tt.want) {
				t.Errorf("check: exit %d, want 1 and %q: %s", code, tt.want, errOut)
			}
			refused := serveRefused(t, dir, u.caFile, "--listen", "127.0.0.1:0")
			if !strings.Contains(refused, tt.want) {
				t.Errorf("serve: no %q in:\n%s", tt.want, refused)
			}
			for _, text := range []string{out, errOut, refused} {
				if strings.Contains(text, literal) || strings.Contains(text, literal[8:]) {
					t.Errorf("the literal key was printed:\n%s", text)
				}
			}
		})
	}
}

// TestReloadToInterceptWithoutCA: a reload turning interception on with
// no CA was taken (with a note that it applies at the next restart, which
// would then fail); it is refused, and forward mode keeps working.
func TestReloadToInterceptWithoutCA(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	cfg := func(intercept bool) string {
		return fmt.Sprintf("version: 1\nforward: {enabled: true, intercept: %v}\nroutes:\n  - {name: openai, preset: openai, upstream: %s}\n", intercept, u.URL)
	}
	tl := startTill(t, cfg(false), map[string]string{"openai": openaiKey}, u.caFile)
	writeConfig(t, tl.dir, cfg(true))
	if err := tl.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !tl.waitLog("reload failed") || !strings.Contains(tl.stderr.String(), "forward.intercept needs the CA") {
		t.Errorf("a reload to interception without a CA was not refused:\n%s", tl.stderr.String())
	}
	if resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil)); resp.StatusCode != 200 {
		t.Errorf("after the refused reload: got %d %s", resp.StatusCode, body)
	}
	tl.stop()
}

// TestReloadToPublicListenWithOpenRoutes: a reload that moves listen off
// loopback while a route has no clients was taken with a note that listen
// applies at the next restart, which would then refuse the file. It is
// refused; with --listen, which the restart would serve instead, it is
// taken.
func TestReloadToPublicListenWithOpenRoutes(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	cfg := func(listen string) string {
		return fmt.Sprintf("version: 1\nlisten: %q\nroutes:\n  - {name: openai, preset: openai, upstream: %s}\n", listen, u.URL)
	}
	for _, tt := range []struct {
		name, log string
		args      []string
	}{
		{"listen from the config", "routes[0].clients", []string{"serve"}},
		{"listen from --listen", "take effect at the next restart", []string{"serve", "--listen", "127.0.0.1:0"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeConfig(t, dir, cfg("127.0.0.1:0"))
			setSecret(t, dir, "openai", openaiKey)
			tl := startTillCmd(t, dir, u.caFile, nil, nil, tt.args...)
			writeConfig(t, dir, cfg("0.0.0.0:0"))
			if err := tl.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			if !tl.waitLog(tt.log) {
				t.Errorf("after a reload to listen 0.0.0.0 with an open route, no %q in the log:\n%s", tt.log, tl.stderr.String())
			}
			if resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil)); resp.StatusCode != 200 {
				t.Errorf("after the reload: got %d %s", resp.StatusCode, body)
			}
			tl.stop()
		})
	}
}

// TestReloadToTLSWithoutCA: a reload giving the listener tls.names, which
// needs till's CA without tls.acme, was taken with a note that it applies
// at the next restart, which would then fail; it is refused.
func TestReloadToTLSWithoutCA(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	cfg := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: " + u.URL + "}\n"
	tl := startTill(t, cfg, map[string]string{"openai": openaiKey}, u.caFile)
	writeConfig(t, tl.dir, "version: 1\ntls: {names: [localhost]}\n"+cfg[len("version: 1\n"):])
	if err := tl.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !tl.waitLog("reload failed") || strings.Contains(tl.stderr.String(), "take effect at the next restart") {
		t.Errorf("a reload to TLS without the CA was not refused:\n%s", tl.stderr.String())
	}
	if resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil)); resp.StatusCode != 200 {
		t.Errorf("after the refused reload: got %d %s", resp.StatusCode, body)
	}
	tl.stop()
}

// TestAuditFileServeCannotOpen: till check passed, and a reload took, an
// audit.file that serve refuses to open (a folder, a symbolic link, a
// file whose last line is no record), so a start gated on check failed
// anyway. check now refuses it as serve does, and so does a reload
// (which would leave it for the next restart to fail on), without
// creating or changing anything.
func TestAuditFileServeCannotOpen(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	cfg := func(file string) string {
		return fmt.Sprintf("version: 1\naudit: {file: %s}\nroutes:\n  - {name: openai, preset: openai, upstream: %s}\n", file, u.URL)
	}
	for _, tt := range []struct{ name, file, want string }{
		{"folder", "logs", "is a directory"},
		{"symbolic link", "link.jsonl", "is a symbolic link"},
		{"not an audit file", "notes.txt", "not an audit file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			os.Mkdir(filepath.Join(dir, "logs"), 0o700)
			os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("line one\nno newline at the end"), 0o600)
			os.Symlink("audit.jsonl", filepath.Join(dir, "link.jsonl"))
			setSecret(t, dir, "openai", openaiKey)
			writeConfig(t, dir, cfg(tt.file))
			if _, errOut, code := runTill(t, dir, "", nil, "check"); code != 1 || !strings.Contains(errOut, tt.want) || !strings.Contains(errOut, "hint: check audit.file") || strings.Count(errOut, "hint") != 1 {
				t.Errorf("check: exit %d, want 1 and %q:\n%s", code, tt.want, errOut)
			}
			if out := serveRefused(t, dir, u.caFile); !strings.Contains(out, tt.want) {
				t.Errorf("serve: want %q:\n%s", tt.want, out)
			}
			writeConfig(t, dir, cfg("audit.jsonl"))
			tl := startTillIn(t, dir, u.caFile)
			writeConfig(t, dir, cfg(tt.file))
			if err := tl.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			if !tl.waitLog("reload failed") || !strings.Contains(tl.stderr.String(), tt.want) {
				t.Errorf("a reload to it was not refused:\n%s", tl.stderr.String())
			}
			tl.stop()
			if data, _ := os.ReadFile(filepath.Join(dir, "notes.txt")); string(data) != "line one\nno newline at the end" {
				t.Errorf("notes.txt was changed: %q", data)
			}
		})
	}
}

// TestOpenRouteWhereLocalhostIsNot: the config takes the name localhost
// for loopback, but Go resolves it through /etc/hosts like any other
// name; where that says localhost is 0.0.0.0, till bound every interface.
// What is bound decides: serve refuses an open route there, and a reload
// that opens one is refused too.
func TestOpenRouteWhereLocalhostIsNot(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := t.TempDir()
	setSecret(t, dir, "openai", openaiKey)
	wrapper := hostsFileWrapper(t, "0.0.0.0 localhost\n")

	writeConfig(t, dir, openConfig(u, "localhost:0", ""))
	_, err := tryStartTillCmd(t, dir, u.caFile, wrapper, nil, "serve")
	if err == nil || !strings.Contains(err.Error(), `listen on "localhost:0" bound `) || !strings.Contains(err.Error(), openRouteMsg) {
		t.Fatalf("serve on localhost bound to 0.0.0.0 with an open route: got %v", err)
	}

	writeConfig(t, dir, openConfig(u, "localhost:0", "any"))
	tl := startTillCmd(t, dir, u.caFile, wrapper, nil, "serve")
	writeConfig(t, dir, openConfig(u, "localhost:0", ""))
	if err := tl.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !tl.waitLog("reload failed") || !strings.Contains(tl.stderr.String(), openRouteMsg) {
		t.Errorf("a reload opening the route was not refused:\n%s", tl.stderr.String())
	}
	tl.stop()
}

// TestReloadRefusesTheServedAdminTokenAsAClients: admin.token_sha256
// waits for a restart, so a reload that changes it and gives a client the
// old one (the hash the admin listener still takes) passed the config's
// own check, which compares the clients with the new admin token only:
// that client's app could then read /metrics and /admin/* and reload
// till with its client token. The reload is refused.
func TestReloadRefusesTheServedAdminTokenAsAClients(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	const served = "till_AdminTokenServedAtStart0123456789abcde"
	hash := func(s string) string { sum := sha256.Sum256([]byte(s)); return hex.EncodeToString(sum[:]) }
	cfg := func(admin, clients, routeClients string) string {
		return fmt.Sprintf("version: 1\nadmin: {listen: 127.0.0.1:0, token_sha256: %s}\n%sroutes:\n  - {name: openai, preset: openai, upstream: %s%s}\n",
			admin, clients, u.URL, routeClients)
	}
	dir := t.TempDir()
	writeConfig(t, dir, cfg(hash(served), "", ""))
	setSecret(t, dir, "openai", openaiKey)
	tl := startTillIn(t, dir, u.caFile)
	admin := tl.adminAddr()
	writeConfig(t, dir, cfg(hash("another-admin-token-0123456789"), "clients:\n  - {name: web, token_sha256: "+hash(served)+"}\n", ", clients: [web]"))
	req := newRequest(t, "POST", "http://"+admin+"/admin/reload", nil)
	req.Header.Set("Authorization", "Bearer "+served)
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(string(body), "admin") {
		t.Errorf("reload giving client web the admin token served: %d %s, want 422 naming the admin token", resp.StatusCode, body)
	}
	if strings.Contains(string(body), served) {
		t.Errorf("the reload's answer quotes the token: %s", body)
	}
	req = newRequest(t, "GET", tl.url("/openai/v1/models"), nil)
	req.Header.Set("X-Till-Token", served)
	do(t, req)
	if recs := tl.waitAudit(1); recs[len(recs)-1]["client"] == "web" {
		t.Errorf("the admin token served names client web after the reload: %v", recs[len(recs)-1])
	}
}
