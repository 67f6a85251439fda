package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tillgw/till/proxy"
)

const edgeDigest = "fd2b19dd8ba4a0d99da001774f828aa72ddc413aae4872884fc281e96d3fd16f"

// `till init`, `client add web --write`, `client rm web` must give back the
// starter's comments: the commented clients:/sources: documentation that
// add moved above the new clients: key is dropped with the key.
func TestClientRmLastClientKeepsComments(t *testing.T) {
	c := newCLI(t)
	if _, errOut, code := c.run("", "init"); code != 0 {
		t.Fatalf("init: %s", errOut)
	}
	if _, errOut, code := c.run("", "client", "add", "web", "--write"); code != 0 {
		t.Fatalf("client add --write: %s", errOut)
	}
	if _, errOut, code := c.run("", "client", "rm", "web"); code != 0 {
		t.Fatalf("client rm: %s", errOut)
	}
	b, _ := os.ReadFile("till.yaml")
	for _, want := range []string{"# clients:", "# sources:", "#     type: aws_secretsmanager"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("after client add --write + client rm, the config lost the comment %q", want)
		}
	}
}

// A client that a budget names: client rm must refuse it as it refuses a
// client a route names, saying so; it reports "a bug in till", a line number
// of the edited (not the user's) file and the hint "till client add web".
func TestClientRmNamedByBudget(t *testing.T) {
	c := newCLI(t)
	cfg := "version: 1\nclients:\n  - name: web\n    token_sha256: " + edgeDigest +
		"\nroutes:\n  - name: openai\n    preset: openai\nbudgets:\n  - name: web-daily\n    clients: [web]\n    window: day\n    requests: 10\n"
	os.WriteFile("till.yaml", []byte(cfg), 0o644)
	_, errOut, code := c.run("", "client", "rm", "web")
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	if strings.Contains(errOut, "a bug in till") || !strings.Contains(errOut, "web-daily") {
		t.Errorf("client rm of a client a budget names: want an error naming budget web-daily, got:\n%s", errOut)
	}
}

// client add --write on a symlinked config must edit the file the link
// names; it replaces the link with a regular file and leaves the target as
// it was.
func TestClientAddWriteFollowsSymlink(t *testing.T) {
	c := newCLI(t)
	os.Mkdir("shared", 0o755)
	os.WriteFile(filepath.Join("shared", "till.yaml"), []byte("version: 1\nroutes: []\n"), 0o644)
	if err := os.Symlink(filepath.Join("shared", "till.yaml"), "till.yaml"); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := c.run("", "client", "add", "web", "--write"); code != 0 {
		t.Fatalf("client add --write: %s", errOut)
	}
	if st, _ := os.Lstat("till.yaml"); st.Mode()&os.ModeSymlink == 0 {
		t.Error("till.yaml is no longer a symlink")
	}
	if b, _ := os.ReadFile(filepath.Join("shared", "till.yaml")); !strings.Contains(string(b), "name: web") {
		t.Errorf("the symlink's target was not edited:\n%s", b)
	}
}

// The starter's example route (upstream with a base path /v2, allow.paths
// "/v1/items"...) passes till check, yet every request on it is refused:
// allow.paths is matched against the upstream path, base path included.
func TestAllowPathsUnderUpstreamBasePath(t *testing.T) {
	c := newCLI(t)
	if _, errOut, code := c.run("k\n", "secret", "set", "internal-key"); code != 0 {
		t.Fatal(errOut)
	}
	os.WriteFile("till.yaml", []byte(`version: 1
routes:
  - name: internal
    upstream: https://api.example.com/v2
    secret: internal-key
    inject: {header: Authorization, format: "Bearer {secret}"}
    allow:
      methods: [GET, POST]
      paths: ["/v1/items", "/v1/items/*", "/v1/files/**"]
`), 0o644)
	_, _, checkCode := c.run("", "check")
	out, _, testCode := c.run("", "test", "GET", "/internal/v1/items")
	if checkCode == 0 && testCode != 0 {
		t.Errorf("check accepts the route (exit 0) but its documented path is refused:\n%s", out)
	}
	if _, errOut, _ := c.run("", "check"); !strings.Contains(errOut, `hint: write "/v2/v1/items"`) {
		t.Errorf("check does not say how to write the path:\n%s", errOut)
	}
}

// A key pool with a member missing from the vault passes till check
// (exit 0): check only looks at the pool's first key.
func TestCheckPoolMemberMissing(t *testing.T) {
	c := newCLI(t)
	if _, errOut, code := c.run(key+"\n", "secret", "set", "openai-a"); code != 0 {
		t.Fatal(errOut)
	}
	os.WriteFile("till.yaml", []byte("version: 1\nroutes:\n  - name: openai\n    preset: openai\n    secret: [openai-a, openai-typo]\n"), 0o644)
	out, errOut, code := c.run("", "check")
	if code == 0 {
		t.Errorf("check with pool member openai-typo missing from the vault: exit 0: %s%s", out, errOut)
	}
}

// client add --cert on a config without tls.names writes NAME.key and
// NAME.crt, then fails the --write edit; a retry then fails on the files
// it left.
func TestClientAddCertLeavesNoFiles(t *testing.T) {
	c := newCLI(t)
	if _, errOut, code := c.run("", "ca", "init"); code != 0 {
		t.Fatalf("ca init: %s", errOut)
	}
	os.WriteFile("till.yaml", []byte("version: 1\nroutes: []\n"), 0o644)
	if _, _, code := c.run("", "client", "add", "web", "--cert", "--write"); code == 0 {
		t.Fatal("client add --cert --write without tls.names succeeded")
	}
	if _, err := os.Stat("web.key"); err == nil {
		t.Error("a failed client add --cert left a client private key web.key behind")
	}
}

// With tls.names the listener speaks only TLS (serve logs scheme https),
// but till env prints an http:// proxy URL: apps get an empty reply.
func TestEnvProxyURLOnTLSListener(t *testing.T) {
	c := newCLI(t)
	os.WriteFile("till.yaml", []byte("version: 1\nforward: {enabled: true}\nroutes: []\n"), 0o644)
	if _, errOut, code := c.run("", "ca", "init"); code != 0 {
		t.Fatalf("ca init: %s", errOut)
	}
	os.WriteFile("till.yaml", []byte("version: 1\ntls: {names: [till.internal]}\nforward: {enabled: true}\nroutes: []\n"), 0o644)
	out, errOut, code := c.run("", "env")
	if code != 0 {
		t.Fatalf("env: %s", errOut)
	}
	if !strings.Contains(out, "HTTPS_PROXY='https://till.internal:8080'") {
		t.Errorf("till env on a TLS listener: want an https proxy URL at its name:\n%s", out)
	}
}

// An HTTP client always sends "/" for a URL without a path; till test
// refuses https://api.openai.com with bad_request (and says mode reverse)
// where the gateway forwards GET /.
func TestTestURLWithoutPath(t *testing.T) {
	c := newCLI(t)
	if _, errOut, code := c.run(key+"\n", "secret", "set", "openai"); code != 0 {
		t.Fatal(errOut)
	}
	os.WriteFile("till.yaml", []byte("version: 1\nforward: {enabled: true, intercept: false}\nroutes: [{name: openai, preset: openai}]\n"), 0o644)
	slash, _, c1 := c.run("", "test", "GET", "http://api.openai.com/")
	bare, _, c2 := c.run("", "test", "GET", "http://api.openai.com")
	if c1 != c2 {
		t.Errorf("with / exit %d:\n%s\nwithout exit %d:\n%s", c1, slash, c2, bare)
	}
	other, _, _ := c.run("", "test", "GET", "http://example.com/")
	if strings.Contains(other, "mode:     reverse") {
		t.Errorf("a refused absolute-form request is shown as mode reverse:\n%s", other)
	}
}

// clients[].cidrs accepts an IPv4-mapped IPv6 prefix (also from client add
// --cidr) that can never match: source addresses are unmapped first.
func TestMappedCIDR(t *testing.T) {
	c := newCLI(t)
	if _, errOut, code := c.run(key+"\n", "secret", "set", "openai"); code != 0 {
		t.Fatal(errOut)
	}
	os.WriteFile("till.yaml", []byte("version: 1\nclients:\n  - name: web\n    token_sha256: "+edgeDigest+
		"\n    cidrs: [\"::ffff:10.0.0.0/104\"]\nroutes:\n  - {name: openai, preset: openai, clients: [web]}\n"), 0o644)
	_, _, checkCode := c.run("", "check")
	out, _, code := c.run("", "test", "--client", "web", "--from", "10.0.0.5", "GET", "/openai/v1/models")
	if checkCode == 0 && code != 0 {
		t.Errorf("check accepts cidrs ::ffff:10.0.0.0/104, yet 10.0.0.5 is refused:\n%s", out)
	}
}

// till usage --budget or --client with a name the config does not have (a
// typo), or that no client could have, is a usage error (2), as in till
// test and till env, and the name is not echoed.
func TestUsageUnknownBudget(t *testing.T) {
	c := newCLI(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`[{"budget":"web-daily","counter":"anonymous","kind":"requests","limit":5,"used":1,"remaining":4,"reset":null}]`))
	}))
	defer srv.Close()
	os.WriteFile("till.yaml", []byte("version: 1\nroutes: []\nbudgets: [{name: web-daily, window: day, requests: 5}]\n"), 0o644)
	out, _, code := c.run("", "usage", "--url", srv.URL, "--budget", "web-dialy")
	if code != 2 {
		t.Errorf("usage --budget web-dialy (no such budget): exit %d:\n%s", code, out)
	}
	// Nor a client it does not have; anonymous is every caller without one.
	out, errOut, code := c.run("", "usage", "--url", srv.URL, "--client", "wbe")
	if code != 2 || strings.Contains(errOut, "wbe") {
		t.Errorf("usage --client wbe (no such client): exit %d: %s%s", code, out, errOut)
	}
	if out, errOut, code := c.run("", "usage", "--url", srv.URL, "--client", "No Body"); code != 2 || strings.Contains(errOut, "No Body") {
		t.Errorf("usage --client \"No Body\" (not a client name): exit %d: %s%s", code, out, errOut)
	}
	if out, errOut, code := c.run("", "usage", "--url", srv.URL, "--client", "anonymous"); code != 0 || !strings.Contains(out, "web-daily") {
		t.Errorf("usage --client anonymous: exit %d: %s%s", code, out, errOut)
	}
}

// TestHelperEnv: a credential helper gets till's environment without
// till's own secrets.
func TestHelperEnv(t *testing.T) {
	got := helperEnv([]string{"PATH=/bin", "TILL_PASSPHRASE=hunter2", "HOME=/root", "TILL_ADMIN_TOKEN=t", "TILL_CONFIG=x", "OP_SESSION=s"})
	if want := []string{"PATH=/bin", "HOME=/root", "TILL_CONFIG=x", "OP_SESSION=s"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestHelperEnvWithholdsClientToken: a till started from a shell that
// ran `eval "$(till env --client web)"` holds a client token in TILL_TOKEN
// and in the proxy URLs; a credential helper gets neither (invariant 2:
// client tokens never leave till), and so does not send its own requests
// through till with another client's token. A proxy that is not till's
// (no token in it) is kept: the helper may need it.
func TestHelperEnvWithholdsClientToken(t *testing.T) {
	const tok = "till_c_0123456789abcdef0123456789abcdef"
	got := helperEnv([]string{"PATH=/bin", "TILL_TOKEN=" + tok, "HTTPS_PROXY=http://web:" + tok + "@127.0.0.1:8080",
		"http_proxy=http://web:" + tok + "@127.0.0.1:8080", "ALL_PROXY=http://web:" + tok + "@127.0.0.1:8080",
		"NO_PROXY=localhost", "HTTP_PROXY=http://corp-proxy:3128", "OP_SESSION=s"})
	if want := []string{"PATH=/bin", "NO_PROXY=localhost", "HTTP_PROXY=http://corp-proxy:3128", "OP_SESSION=s"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestMissingConfigHint: a config file that is not there is said so, with
// where its path came from, not "fix the lines above".
func TestMissingConfigHint(t *testing.T) {
	c := newCLI(t)
	_, errOut, code := c.run("", "check", "-c", "missing.yaml")
	if code != 1 || !strings.Contains(errOut, "no config file at missing.yaml") || strings.Contains(errOut, "lines above") {
		t.Errorf("check -c missing.yaml: exit %d:\n%s", code, errOut)
	}
}

// TestTestWarnsOfModelRules: a dry run without --model on a route with
// model rules is allowed (a request without a body is), with a warning
// that a body must name an allowed model, as serve requires.
func TestTestWarnsOfModelRules(t *testing.T) {
	c := newCLI(t)
	if _, errOut, code := c.run(key+"\n", "secret", "set", "openai"); code != 0 {
		t.Fatal(errOut)
	}
	os.WriteFile("till.yaml", []byte("version: 1\nroutes:\n  - {name: openai, preset: openai, allow: {models: [\"gpt-4o*\"]}}\n"), 0o644)
	out, _, code := c.run("", "test", "POST", "/openai/v1/chat/completions")
	if code != 0 || !strings.Contains(out, "warning:  this route checks the model") {
		t.Errorf("test without --model: exit %d:\n%s", code, out)
	}
	if out, _, _ := c.run("", "test", "--model", "gpt-4o-mini", "POST", "/openai/v1/chat/completions"); strings.Contains(out, "warning") {
		t.Errorf("test with an allowed --model warns:\n%s", out)
	}
}

// TestHTTPErrorLogLeveled: net/http's error log has levels, so that
// --log-level applies: a TLS handshake error (any TCP probe makes one)
// is debug, other lines warn.
func TestHTTPErrorLogLeveled(t *testing.T) {
	for level, want := range map[string][]string{
		"error": nil,
		"warn":  {`"level":"warn","component":"http"`, `"message":"http: Accept error: too many open files"`},
		"debug": {`"level":"debug","component":"http"`, `"message":"http: TLS handshake error from 10.0.0.7:50434: EOF"`},
	} {
		var stderr bytes.Buffer
		e := &env{stderr: &stderr, getenv: func(string) string { return "" }, log: logFlags{level: level, format: "json"}}
		errLog := proxy.NewErrorLog(newLogOutput(e).logger(), "http")
		errLog.Print("http: TLS handshake error from 10.0.0.7:50434: EOF")
		errLog.Print("http: Accept error: too many open files")
		got := stderr.String()
		lines := map[string]int{"error": 0, "warn": 1, "debug": 2}[level]
		if strings.Count(got, "\n") != lines {
			t.Errorf("--log-level %s: %s", level, got)
		}
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("--log-level %s: want %s in %s", level, w, got)
			}
		}
	}
}

// till's own keys (the CA's, the audit signing key) are no provider's:
// max_age does not age them in secret list, as serve and check do not,
// and a flag value that may be a pasted key is not echoed.
func TestSecretListOwnKeysAndCIDREcho(t *testing.T) {
	c := newCLI(t)
	os.WriteFile("till.yaml", []byte("version: 1\nvault: {max_age: 1s}\nforward: {enabled: true}\nroutes: []\n"), 0o644)
	if _, errOut, code := c.run("", "ca", "init"); code != 0 {
		t.Fatalf("ca init: %s", errOut)
	}
	if _, errOut, code := c.run("sk-provider-0123456789abcdef", "secret", "set", "openai"); code != 0 {
		t.Fatalf("secret set: %s", errOut)
	}
	time.Sleep(1100 * time.Millisecond) // past max_age
	out, errOut, code := c.run("", "secret", "list")
	if code != 0 {
		t.Fatalf("secret list: %s", errOut)
	}
	for _, line := range strings.Split(out, "\n") {
		switch f := strings.Fields(line); {
		case len(f) == 0:
		case f[0] == "till-ca" && strings.Contains(line, "expired"):
			t.Errorf("till's CA key listed as expired: %q", line)
		case f[0] == "openai" && !strings.Contains(line, "expired"):
			t.Errorf("a provider key past max_age not listed as expired: %q", line)
		}
	}
	const pasted = "sk-proj-PASTEDKEY0123456789"
	_, errOut, code = c.run("", "client", "add", "web", "--cidr", pasted)
	if code == 0 || strings.Contains(errOut, "PASTEDKEY") || !strings.Contains(errOut, "--cidr value 1") {
		t.Errorf("client add --cidr with a pasted key: exit %d: %s", code, errOut)
	}
}

// check passes a route whose allowed model a dollar budget would refuse
// for want of a price, and says so.
func TestCheckWarnsOfUnpricedModels(t *testing.T) {
	c := newCLI(t)
	if _, errOut, code := c.run(key+"\n", "secret", "set", "openai"); code != 0 {
		t.Fatal(errOut)
	}
	os.WriteFile("till.yaml", []byte("version: 1\nroutes: [{name: openai, preset: openai, allow: {models: [gpt-9*]}}]\nbudgets: [{name: money, window: 1d, usd: 5}]\n"), 0o644)
	_, errOut, code := c.run("", "check")
	if code != 0 || !strings.Contains(errOut, `till: warning: route "openai" allows model "gpt-9*", which the price table does not price`) {
		t.Errorf("check: exit %d: %s", code, errOut)
	}
}

// check passes a route whose key is too short for its echo to be removed
// from an upstream's headers, and says so, naming the route and secret.
func TestCheckWarnsOfShortKey(t *testing.T) {
	c := newCLI(t)
	c.run("x\n", "secret", "set", "openai")
	os.WriteFile("till.yaml", []byte("version: 1\nroutes: [{name: openai, preset: openai}]\n"), 0o644)
	_, errOut, code := c.run("", "check")
	if code != 0 || !strings.Contains(errOut, `till: warning: route "openai": secret "openai" is a key shorter than 8 characters`) {
		t.Errorf("check: exit %d: %s", code, errOut)
	}
}

// check -c FILE's and test -c FILE's hint for a missing secret stores it
// in that config's vault: without -c, following it filled a vault in the
// working folder.
func TestCheckHintKeepsTheConfig(t *testing.T) {
	c := newCLI(t)
	os.MkdirAll("app", 0o755)
	os.WriteFile("app/till.yaml", []byte("version: 1\nroutes: [{name: openai, preset: openai}]\n"), 0o644)
	_, errOut, code := c.run("", "check", "-c", "app/till.yaml")
	if code != 1 || !strings.Contains(errOut, "\ntill: hint: till secret set openai -c app/till.yaml\n") {
		t.Fatalf("check -c: exit %d: %s", code, errOut)
	}
	out, _, code := c.run("", "test", "-c", "app/till.yaml", "GET", "/openai/v1/models")
	if code != 1 || !strings.Contains(out, "\n  hint:     till secret set openai -c app/till.yaml\n") {
		t.Fatalf("test -c: exit %d: %s", code, out)
	}
	if _, errOut, code := c.run(key+"\n", "secret", "set", "openai", "-c", "app/till.yaml"); code != 0 {
		t.Fatalf("the hint's command: %s", errOut)
	}
	if _, errOut, code := c.run("", "check", "-c", "app/till.yaml"); code != 0 {
		t.Errorf("check -c after following the hint: exit %d: %s", code, errOut)
	}
}

// The hint for a missing secret gives the flag its route's form needs:
// a plain "till secret set aws" prompted for one value, which a SigV4
// route then refused for want of fields.
func TestCheckHintGivesTheSecretsForm(t *testing.T) {
	c := newCLI(t)
	os.WriteFile("till.yaml", []byte(`version: 1
routes:
  - {name: bedrock, preset: bedrock, region: us-east-1, secret: aws}
  - {name: github, preset: github-app, secret: gh-app, inject: {github_app: {app_id: 1, installation_id: 2}}}
  - {name: twilio, preset: twilio}
  - {name: openai, preset: openai}
`), 0o644)
	_, errOut, code := c.run("", "check")
	for _, want := range []string{"till secret set aws --json\n", "till secret set gh-app --pem\n", "till secret set twilio --json\n", "till secret set openai\n"} {
		if code != 1 || !strings.Contains(errOut, "\ntill: hint: "+want) {
			t.Errorf("check: exit %d, want the hint %q:\n%s", code, want, errOut)
		}
	}
	out, _, code := c.run("", "test", "GET", "/github/user")
	if code != 1 || !strings.Contains(out, "\n  hint:     till secret set gh-app --pem\n") {
		t.Errorf("test: exit %d: %s", code, out)
	}
}

// forward.ca_cert is read at each reload, by the running till: a device
// there (/dev/zero) was read until memory ran out, taking the gateway
// down with the reload that should only have been refused. check (and
// the reload) now refuse what is no regular file, or one too large for a
// certificate, without reading it all.
func TestCACertOnlyARegularFile(t *testing.T) {
	c := newCLI(t)
	os.WriteFile("big.pem", nil, 0o600)
	os.Truncate("big.pem", 2<<20)
	for file, want := range map[string]string{os.DevNull: "is not a regular file but a device", "big.pem": "big.pem is larger than 1 MiB: is it the right file?"} {
		os.WriteFile("till.yaml", []byte("version: 1\nforward: {enabled: true, ca_cert: "+file+"}\nroutes: []\n"), 0o600)
		_, errOut, code := c.run("", "check")
		if code != 1 || !strings.Contains(errOut, "forward.intercept needs the CA certificate") || !strings.Contains(errOut, want) {
			t.Errorf("%s: exit %d, want 1 and %q:\n%s", file, code, want, errOut)
		}
	}
}

// TestUnreadableConfigHint: a config that cannot be read is no config
// with lines to fix: "fix the lines above" was the hint for every error
// but a missing file. One that till's user may not read gets a hint that
// says so and how to mend it (only a user other than root can be
// refused); a vault or key file likewise.
func TestUnreadableConfigHint(t *testing.T) {
	c := newCLI(t)
	os.WriteFile("afile", nil, 0o644)
	_, errOut, code := c.run("", "check", "-c", "afile/till.yaml")
	if code != 1 || !strings.Contains(errOut, "afile/till.yaml: not a directory") || strings.Contains(errOut, "lines above") {
		t.Errorf("check -c afile/till.yaml: exit %d:\n%s", code, errOut)
	}
	if os.Geteuid() == 0 {
		t.Skip("root reads every file")
	}
	c.must(key+"\n", "secret", "set", "openai")
	os.WriteFile("till.yaml", []byte("version: 1\nroutes: []\n"), 0o644)
	for _, f := range []string{"till.yaml", "till.vault", "till.key"} {
		os.Chmod(f, 0)
		_, errOut, code := c.run("", "secret", "list")
		os.Chmod(f, 0o600)
		if code != 1 || !strings.Contains(errOut, "till: hint: till runs as uid ") || !strings.Contains(errOut, "which may not read ") || !strings.Contains(errOut, f+": make it readable") || strings.Contains(errOut, "lines above") {
			t.Errorf("%s unreadable: exit %d:\n%s", f, code, errOut)
		}
	}
}
