package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// cli runs till in-process in a fresh working folder.
type cli struct {
	t   *testing.T
	dir string
	env map[string]string
}

func newCLI(t *testing.T) *cli {
	dir := t.TempDir()
	t.Chdir(dir)
	return &cli{t: t, dir: dir, env: map[string]string{}}
}

func (c *cli) run(stdin string, args ...string) (stdout, stderr string, code int) {
	var o, e bytes.Buffer
	code = run(context.Background(), args, &env{
		stdin:  strings.NewReader(stdin),
		stdout: &o,
		stderr: &e,
		getenv: func(k string) string { return c.env[k] },
	})
	return o.String(), e.String(), code
}

// must runs a command that has to succeed, and returns its stdout.
func (c *cli) must(stdin string, args ...string) string {
	c.t.Helper()
	out, errOut, code := c.run(stdin, args...)
	if code != 0 {
		c.t.Fatalf("till %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

const key = "sk-cli-test-0123456789abcdef"

func TestSecretLifecycle(t *testing.T) {
	c := newCLI(t)
	out, errOut, code := c.run(key+"\n", "secret", "set", "openai")
	if code != 0 {
		t.Fatalf("secret set: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, `stored secret "openai" (sha256:`) {
		t.Errorf("secret set output: %q", out)
	}
	for _, f := range []string{"till.vault", "till.key"} {
		st, err := os.Stat(filepath.Join(c.dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode: got %v, want 0600", f, st.Mode().Perm())
		}
	}
	vaultBytes, _ := os.ReadFile(filepath.Join(c.dir, "till.vault"))
	if bytes.Contains(vaultBytes, []byte(key)) {
		t.Error("the vault holds the key in clear")
	}

	// A rotation, with flags after the positional argument, once the clock
	// has moved past the creation time, so that updated can differ from it.
	out, _, _ = c.run("", "secret", "list", "--json")
	var before []struct{ Created time.Time }
	if err := json.Unmarshal([]byte(out), &before); err != nil || len(before) != 1 {
		t.Fatalf("secret list --json: %v: %q", err, out)
	}
	for deadline := time.Now().Add(5 * time.Second); !time.Now().After(before[0].Created); {
		if time.Now().After(deadline) {
			t.Fatalf("the clock stays at or before %v", before[0].Created)
		}
		runtime.Gosched()
	}
	out, errOut, code = c.run("sk-rotated-value", "secret", "set", "openai", "--expires", "90d")
	if code != 0 || !strings.Contains(out, "rotated") {
		t.Fatalf("rotation: exit %d: %s %s", code, out, errOut)
	}
	out, _, code = c.run("", "secret", "list", "--json")
	if code != 0 {
		t.Fatalf("secret list: exit %d", code)
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("secret list --json: %v: %q", err, out)
	}
	if len(rows) != 1 {
		t.Fatalf("got %d rows, want 1", len(rows))
	}
	r := rows[0]
	for _, f := range []string{"name", "fingerprint", "created", "updated", "expires", "status"} {
		if _, ok := r[f]; !ok {
			t.Errorf("secret list row lacks %q", f)
		}
	}
	if r["created"] == r["updated"] || r["status"] != "ok" || r["expires"] == nil {
		t.Errorf("after rotation: %v", r)
	}
	if strings.Contains(out, "sk-rotated-value") || strings.Contains(out, key) {
		t.Error("secret list printed a value")
	}
	out, _, _ = c.run("", "secret", "list")
	if !strings.Contains(out, "NAME") || !strings.Contains(out, "openai") || strings.Contains(out, "sk-rotated") {
		t.Errorf("secret list: %q", out)
	}

	if _, errOut, code = c.run("", "secret", "rm", "openai"); code != 0 {
		t.Fatalf("secret rm: exit %d: %s", code, errOut)
	}
	if _, errOut, code = c.run("", "secret", "rm", "openai"); code != 1 || !strings.Contains(errOut, `"openai"`) {
		t.Errorf("secret rm of a missing secret: exit %d: %s", code, errOut)
	}
}

func TestSecretSetRefusals(t *testing.T) {
	c := newCLI(t)
	tests := []struct {
		name  string
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"value on the command line", "", []string{"secret", "set", "openai", key}, 2, "read from stdin"},
		{"empty value", "", []string{"secret", "set", "openai"}, 1, "no value from stdin"},
		{"white space alone", " \n", []string{"secret", "set", "openai"}, 1, "is the variable set?"},
		// A lowercase key (Mailgun's) is a valid name: given where the
		// name goes, with no value after it, it is not printed back.
		{"key as the name, no value", "", []string{"secret", "set", "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"}, 1, "or run the command at a terminal and paste the value"},
		{"control character", "sk-a\x1bb", []string{"secret", "set", "openai"}, 1, "control character"},
		{"two newlines", "sk-a\n\n", []string{"secret", "set", "openai"}, 1, "spans lines"},
		{"a PEM without --pem", "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n", []string{"secret", "set", "gh"}, 1, "a PEM key takes --pem"},
		{"bad name", key, []string{"secret", "set", "Open AI"}, 2, "secret name"},
		{"bad expiry", key, []string{"secret", "set", "openai", "--expires", "soon"}, 2, "--expires"},
		{"expiry in the past", key, []string{"secret", "set", "openai", "--expires", "2020-01-01"}, 2, "--expires 2020-01-01 is in the past"},
		{"time in the past", key, []string{"secret", "set", "openai", "--expires", "2020-01-01T10:00:00+02:00"}, 2, "--expires 2020-01-01T10:00:00+02:00 is in the past"},
		{"negative duration", key, []string{"secret", "set", "openai", "--expires", "-3d"}, 2, "--expires: want a date"},
		{"key after --expires not echoed", key, []string{"secret", "set", "openai", "--expires", key}, 2, "--expires: want a date"},
		{"bad json", `{"sid": 1}`, []string{"secret", "set", "twilio", "--json"}, 1, ""},
		{"unknown flag", key, []string{"secret", "set", "openai", "--value", "x"}, 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := c.run(tt.stdin, tt.args...)
			if code != tt.code {
				t.Errorf("exit: got %d, want %d (%s)", code, tt.code, errOut)
			}
			if !strings.Contains(errOut, tt.want) {
				t.Errorf("stderr: got %q, want it to mention %q", errOut, tt.want)
			}
			if strings.Contains(out+errOut, key) || strings.Contains(out+errOut, "sk-a") || strings.Contains(out+errOut, "3ax6xnjp29") {
				t.Error("the value was echoed")
			}
		})
	}
	if _, err := os.Stat(filepath.Join(c.dir, "till.vault")); err == nil {
		t.Error("a refused secret set created the vault")
	}
}

func TestInitThenCheck(t *testing.T) {
	c := newCLI(t)
	out, errOut, code := c.run("", "init")
	if code != 0 {
		t.Fatalf("init: exit %d: %s", code, errOut)
	}
	for _, f := range []string{"till.yaml", "till.vault", "till.key"} {
		if _, err := os.Stat(filepath.Join(c.dir, f)); err != nil {
			t.Errorf("init did not create %s", f)
		}
	}
	// The key sits beside the vault, where till.yaml names it: the
	// advice is about backups, not a move that would break the config.
	if !strings.Contains(out, "wrote") || !strings.Contains(out, "its key is till.key (mode 0600): leave it there, and back it up apart from the vault") {
		t.Errorf("init output: %q", out)
	}
	if _, errOut, code = c.run("", "check"); code != 0 {
		t.Errorf("check of the starter config: exit %d: %s", code, errOut)
	}
	if _, errOut, code = c.run("", "init"); code != 1 || !strings.Contains(errOut, "already exists") {
		t.Errorf("second init: exit %d: %s", code, errOut)
	}

	// A route whose secret is missing fails the check.
	cfg := "version: 1\nroutes:\n  - name: openai\n    preset: openai\n"
	if err := os.WriteFile("till.yaml", []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code = c.run("", "check"); code != 1 || !strings.Contains(errOut, `secret "openai" is not in the vault`) {
		t.Errorf("check with a missing secret: exit %d: %s", code, errOut)
	}
	c.run(key, "secret", "set", "openai")
	if out, errOut, code = c.run("", "check"); code != 0 || !strings.Contains(out, "1 route(s)") {
		t.Errorf("check: exit %d: %s %s", code, out, errOut)
	}
	// An expired secret fails it too. secret set refuses an expiry in the
	// past, so the vault is written as time would have left it.
	k, err := vault.LoadKeyFile(filepath.Join(c.dir, "till.key"), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := vault.Open(filepath.Join(c.dir, "till.vault"), k).Update(func(m map[string]vault.Secret) error {
		s := m["openai"]
		s.Expires = time.Now().Add(-time.Hour)
		m["openai"] = s
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code = c.run("", "check"); code != 1 || !strings.Contains(errOut, "expired") {
		t.Errorf("check with an expired secret: exit %d: %s", code, errOut)
	}
	// An expiring one warns.
	c.run(key, "secret", "set", "openai", "--expires", "3d")
	if _, errOut, code = c.run("", "check"); code != 0 || !strings.Contains(errOut, "warning") {
		t.Errorf("check with an expiring secret: exit %d: %s", code, errOut)
	}
}

func TestWrongKeyLeavesVaultAlone(t *testing.T) {
	c := newCLI(t)
	c.run(key, "secret", "set", "openai")
	before, _ := os.ReadFile("till.vault")
	other := t.TempDir() + "/other.key"
	if _, err := vault.LoadKeyFile(other, true); err != nil {
		t.Fatal(err)
	}
	c.env["TILL_KEY_FILE"] = other
	for _, args := range [][]string{{"secret", "list"}, {"check"}, {"secret", "set", "x"}, {"secret", "rm", "openai"}} {
		_, errOut, code := c.run("sk-other", args...)
		if code != 1 || !strings.Contains(errOut, "till.vault") {
			t.Errorf("%v with the wrong key: exit %d: %s", args, code, errOut)
		}
	}
	c.env["TILL_KEY_FILE"] = t.TempDir() + "/missing.key"
	if _, errOut, code := c.run("sk-other", "secret", "set", "x"); code != 1 || !strings.Contains(errOut, "missing.key") {
		t.Errorf("secret set with a missing key file: exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(c.env["TILL_KEY_FILE"]); err == nil {
		t.Error("secret set made a new key for an existing vault")
	}
	after, _ := os.ReadFile("till.vault")
	if !bytes.Equal(before, after) {
		t.Error("the vault changed")
	}
}

func TestPassphrase(t *testing.T) {
	c := newCLI(t)
	c.env["TILL_PASSPHRASE"] = "correct horse battery staple"
	if _, errOut, code := c.run(key, "secret", "set", "openai"); code != 0 {
		t.Fatalf("secret set: exit %d: %s", code, errOut)
	}
	if _, err := os.Stat("till.key"); err == nil {
		t.Error("a key file was created although a passphrase was given")
	}
	if out, _, code := c.run("", "secret", "list"); code != 0 || !strings.Contains(out, "openai") {
		t.Errorf("secret list with the passphrase: exit %d", code)
	}
	c.env["TILL_PASSPHRASE"] = "wrong"
	if _, errOut, code := c.run("", "secret", "list"); code != 1 || !strings.Contains(errOut, "passphrase") {
		t.Errorf("secret list with a wrong passphrase: exit %d: %s", code, errOut)
	}
}

func TestUsage(t *testing.T) {
	c := newCLI(t)
	tests := []struct {
		args []string
		code int
	}{
		{nil, 2},
		{[]string{"frobnicate"}, 2},
		{[]string{"secret"}, 2},
		{[]string{"secret", "nope"}, 2},
		{[]string{"serve", "extra"}, 2},
		{[]string{"check", "--nope"}, 2},
		{[]string{"help"}, 0},
		{[]string{"help", "serve"}, 0},
		{[]string{"serve", "--help"}, 0},
		{[]string{"secret", "set", "-h"}, 0},
		{[]string{"client", "add", "--help"}, 0},
	}
	for _, tt := range tests {
		if _, _, code := c.run("", tt.args...); code != tt.code {
			t.Errorf("till %v: exit %d, want %d", tt.args, code, tt.code)
		}
	}
	out, _, code := c.run("", "version")
	if code != 0 || !strings.HasPrefix(out, "till ") {
		t.Errorf("version: %q", out)
	}
}

func TestConfigErrorsNameFileAndLine(t *testing.T) {
	c := newCLI(t)
	cfg := "version: 1\nroutes:\n  - name: openai\n    preset: openai\n    upstream: http://api.openai.com\n    timeout: soon\n"
	os.WriteFile("bad.yaml", []byte(cfg), 0o644)
	_, errOut, code := c.run("", "check", "-c", "bad.yaml")
	if code != 1 {
		t.Errorf("exit: got %d, want 1", code)
	}
	for _, want := range []string{"bad.yaml:5: routes[0].upstream", "bad.yaml:6: routes[0].timeout"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q: %s", want, errOut)
		}
	}
	c.env["TILL_CONFIG"] = "bad.yaml"
	if _, errOut, code = c.run("", "check"); code != 1 || !strings.Contains(errOut, "bad.yaml:5") {
		t.Errorf("TILL_CONFIG not used: exit %d: %s", code, errOut)
	}
}

func TestClientCommands(t *testing.T) {
	c := newCLI(t)
	cfg := "version: 1\n# clients below\nclients:\n  - name: old\n    token_sha256: " + strings.Repeat("ab", 32) + "\n  - name: used\n    token_sha256: " + strings.Repeat("cd", 32) +
		"\nroutes:\n  - name: openai\n    preset: openai\n    clients: [used]\n"
	os.WriteFile("till.yaml", []byte(cfg), 0o644)

	out, errOut, code := c.run("", "client", "add", "web", "--cidr", "10.0.0.0/8")
	if code != 0 {
		t.Fatalf("client add: exit %d: %s", code, errOut)
	}
	m := regexp.MustCompile(`\b(till_[0-9A-Za-z]+)\b`).FindStringSubmatch(out)
	if m == nil || len(m[1]) != len("till_")+40 {
		t.Fatalf("client add printed no till_ token of 40 base62 characters: %q", out)
	}
	sum := sha256.Sum256([]byte(m[1]))
	if !strings.Contains(out, "token_sha256: "+hex.EncodeToString(sum[:])) || !strings.Contains(out, "cidrs: [10.0.0.0/8]") {
		t.Errorf("client add's config lines: %q", out)
	}
	if b, _ := os.ReadFile("till.yaml"); strings.Contains(string(b), m[1]) {
		t.Error("the token was written to the config")
	}
	out2, _, _ := c.run("", "client", "add", "web2")
	if strings.Contains(out2, m[1]) {
		t.Error("two tokens are the same")
	}
	if _, errOut, code = c.run("", "client", "add", "old"); code != 1 || !strings.Contains(errOut, "already") {
		t.Errorf("client add of an existing name: exit %d: %s", code, errOut)
	}
	if _, _, code = c.run("", "client", "add", "Bad Name"); code != 2 {
		t.Errorf("client add with a bad name: exit %d, want 2", code)
	}

	out, _, code = c.run("", "client", "list")
	if code != 0 || !strings.Contains(out, "old") || !strings.Contains(out, "used") || !strings.Contains(out, "openai") {
		t.Errorf("client list: %q", out)
	}
	if _, errOut, code = c.run("", "client", "rm", "used"); code != 1 || !strings.Contains(errOut, "openai") {
		t.Errorf("client rm of a client a route names: exit %d: %s", code, errOut)
	}
	if _, errOut, code = c.run("", "client", "rm", "old"); code != 0 {
		t.Fatalf("client rm: exit %d: %s", code, errOut)
	}
	b, _ := os.ReadFile("till.yaml")
	if strings.Contains(string(b), "name: old") || !strings.Contains(string(b), "name: used") || !strings.Contains(string(b), "# clients below") {
		t.Errorf("config after client rm:\n%s", b)
	}
	if _, errOut, code = c.run("", "client", "rm", "nobody"); code != 1 {
		t.Errorf("client rm of an unknown client: exit %d: %s", code, errOut)
	}
}

func TestCAAndEnv(t *testing.T) {
	c := newCLI(t)
	os.WriteFile("till.yaml", []byte("version: 1\nlisten: 0.0.0.0:8443\nforward: {enabled: true}\n"), 0o644)
	if _, errOut, code := c.run("", "check"); code != 1 || !strings.Contains(errOut, "till ca init") {
		t.Errorf("check without a CA: exit %d: %s", code, errOut)
	}
	if _, errOut, code := c.run("", "env"); code != 1 || !strings.Contains(errOut, "till ca init") {
		t.Errorf("env without a CA: exit %d: %s", code, errOut)
	}
	out, errOut, code := c.run("", "ca", "init")
	if code != 0 {
		t.Fatalf("ca init: exit %d: %s", code, errOut)
	}
	st, err := os.Stat("till-ca.pem")
	if err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("till-ca.pem: %v %v", st, err)
	}
	if !strings.Contains(out, "till interception CA") {
		t.Errorf("ca init output: %q", out)
	}
	if _, errOut, code = c.run("", "ca", "init"); code != 1 || !strings.Contains(errOut, "already exists") {
		t.Errorf("second ca init: exit %d: %s", code, errOut)
	}
	pemOut, _, code := c.run("", "ca", "export")
	file, _ := os.ReadFile("till-ca.pem")
	if code != 0 || pemOut != string(file) {
		t.Errorf("ca export differs from the file")
	}
	out, _, _ = c.run("", "secret", "list")
	if !strings.Contains(out, "till-ca") {
		t.Errorf("the CA key is not in the vault: %q", out)
	}
	if _, errOut, code = c.run("", "check"); code != 0 {
		t.Errorf("check with a CA: exit %d: %s", code, errOut)
	}

	out, errOut, code = c.run("", "env")
	if code != 0 {
		t.Fatalf("env: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"export HTTP_PROXY='http://127.0.0.1:8443'", "export https_proxy='http://127.0.0.1:8443'",
		"export NO_PROXY='localhost,127.0.0.1,::1,", "till-ca-bundle.pem'", "export NODE_EXTRA_CA_CERTS='" + c.dir + "/till-ca.pem'",
		"export REQUESTS_CA_BUNDLE=", "export CURL_CA_BUNDLE=", "export SSL_CERT_FILE=",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("till env lacks %q:\n%s", want, out)
		}
	}
	bundle, _ := os.ReadFile("till-ca-bundle.pem")
	if !bytes.HasSuffix(bundle, file) || len(bundle) <= len(file) {
		t.Errorf("the bundle is not the system roots followed by till's CA (%d bytes)", len(bundle))
	}
	out, _, _ = c.run("", "env", "--format", "dotenv")
	if !strings.Contains(out, "\nHTTPS_PROXY=http://127.0.0.1:8443\n") {
		t.Errorf("dotenv output:\n%s", out)
	}
	if _, errOut, code = c.run("", "env", "--client", "nobody"); code != 2 || !strings.Contains(errOut, "--client: no client of that name in till.yaml") {
		t.Errorf("env --client of an unknown client: exit %d: %s", code, errOut)
	}
	if _, _, code = c.run("", "env", "--format", "xml"); code != 2 {
		t.Errorf("env --format xml: exit %d, want 2", code)
	}
	// A client's proxy URL reads its token from TILL_TOKEN: without it,
	// till env says so.
	os.WriteFile("till.yaml", []byte("version: 1\nlisten: 0.0.0.0:8443\nforward: {enabled: true}\nclients: [{name: web, token_sha256: "+strings.Repeat("ab", 32)+"}]\n"), 0o644)
	if out, errOut, code = c.run("", "env", "--client", "web"); code != 0 || !strings.Contains(out, "http://web:${TILL_TOKEN}@") || !strings.Contains(errOut, "TILL_TOKEN is not set") {
		t.Errorf("env --client web without TILL_TOKEN: exit %d: %s%s", code, out, errOut)
	}
	c.env["TILL_TOKEN"] = "till_x"
	if _, errOut, code = c.run("", "env", "--client", "web"); code != 0 || errOut != "" {
		t.Errorf("env --client web with TILL_TOKEN: exit %d: %s", code, errOut)
	}
}

func TestDryRun(t *testing.T) {
	c := newCLI(t)
	cfg := "version: 1\nforward: {enabled: true, intercept: false}\nclients:\n  - name: web\n    token_sha256: " + strings.Repeat("ab", 32) +
		"\n  - name: far\n    token_sha256: " + strings.Repeat("cd", 32) + "\n    cidrs: [10.0.0.0/8, \"fd00::/8\"]\n" +
		"routes:\n  - name: openai\n    preset: openai\n    clients: [web, far]\n    rate: 5/s\n    allow:\n      methods: [POST]\n      paths: [/v1/chat/completions]\n" +
		"  - name: anthropic\n    preset: anthropic\n"
	os.WriteFile("till.yaml", []byte(cfg), 0o644)
	c.run(key, "secret", "set", "openai")
	tests := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"allowed", []string{"--client", "web", "POST", "/openai/v1/chat/completions"}, 0,
			[]string{"allowed", "route:    openai", "secret:   openai (sha256:", "upstream: POST https://api.openai.com/v1/chat/completions", "rate:     5/s"}},
		{"flags after the arguments", []string{"POST", "/openai/v1/chat/completions", "--client", "web"}, 0, []string{"allowed"}},
		{"no client", []string{"POST", "/openai/v1/chat/completions"}, 1, []string{"refused: client_unauthenticated"}},
		{"client outside its cidrs", []string{"--client", "far", "POST", "/openai/v1/chat/completions"}, 1, []string{"refused: client_forbidden"}},
		{"client inside its cidrs", []string{"--client", "far", "--from", "10.1.2.3", "POST", "/openai/v1/chat/completions"}, 0, []string{"allowed"}},
		{"client inside its cidrs, IPv6", []string{"--client", "far", "--from", "fd00::5", "POST", "/openai/v1/chat/completions"}, 0, []string{"allowed"}},
		{"method", []string{"--client", "web", "GET", "/openai/v1/chat/completions"}, 1, []string{"refused: method_not_allowed"}},
		{"path", []string{"--client", "web", "POST", "/openai/v1/files"}, 1, []string{"refused: path_not_allowed"}},
		{"dot dot", []string{"--client", "web", "POST", "/openai/v1/../v1/chat/completions"}, 1, []string{"refused: bad_request"}},
		{"no route", []string{"GET", "/nope"}, 1, []string{"refused: route_not_found"}},
		{"no route: the prefixes", []string{"GET", "/v1/models"}, 1, []string{"refused: route_not_found", "hint:     a path starts with its route's prefix: /openai, /anthropic"}},
		{"missing secret", []string{"POST", "/anthropic/v1/messages"}, 1, []string{"refused: secret_missing", "till secret set anthropic"}},
		{"forward, absolute-form", []string{"--client", "web", "POST", "http://api.openai.com/v1/chat/completions"}, 0, []string{"allowed", "mode:     forward"}},
		{"forward, unknown host", []string{"GET", "http://example.com/"}, 1, []string{"refused: host_not_allowed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := c.run("", append([]string{"test"}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit: got %d, want %d\n%s%s", code, tt.code, out, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out+errOut, key) {
				t.Error("the key was printed")
			}
		})
	}
	// A lower-case method (HTTP's are case-sensitive: serve refuses "post"
	// where POST is allowed) or a --from that is no address is a mistake
	// in the call: exit 2.
	for _, args := range [][]string{{"post", "/openai/v1/chat/completions"}, {"--from", "10.1.2.3:80", "POST", "/openai/v1/chat/completions"}} {
		if out, errOut, code := c.run("", append([]string{"test", "--client", "web"}, args...)...); code != 2 || out != "" {
			t.Errorf("test %v: exit %d, want 2: %s%s", args, code, out, errOut)
		}
	}
	// A client name the config lacks is a mistake in the call, not a
	// verdict: exit 2, nothing on stdout.
	if out, errOut, code := c.run("", "test", "--client", "nobody", "POST", "/openai/v1/chat/completions"); code != 2 || out != "" || !strings.Contains(errOut, "no client of that name") {
		t.Errorf("test --client nobody: exit %d, want 2: %s%s", code, out, errOut)
	}
	out, _, code := c.run("", "test", "--json", "--client", "web", "POST", "/openai/v1/chat/completions")
	var v map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v["allowed"] != true || v["route"] != "openai" {
		t.Errorf("test --json: exit %d: %s", code, out)
	}
}

// TestDryRunNoRoutes: with no route at all, till test's hint for a path
// that matches none points at till check, which says what to add.
func TestDryRunNoRoutes(t *testing.T) {
	c := newCLI(t)
	os.WriteFile("till.yaml", []byte("version: 1\nroutes: []\n"), 0o644)
	out, errOut, code := c.run("", "test", "GET", "/openai/v1/models")
	if code != 1 || !strings.Contains(out, "hint:     there are no routes: till check says what to add") {
		t.Errorf("test with no routes: exit %d: %s%s", code, out, errOut)
	}
}

func TestCASecretReserved(t *testing.T) {
	c := newCLI(t)
	if _, errOut, code := c.run("x", "secret", "set", "till-ca"); code != 1 || !strings.Contains(errOut, "CA key") {
		t.Errorf("secret set till-ca: exit %d: %s", code, errOut)
	}
	if _, errOut, code := c.run("", "secret", "rm", "till-ca"); code != 1 || !strings.Contains(errOut, "CA key") {
		t.Errorf("secret rm till-ca: exit %d: %s", code, errOut)
	}
}

// TestExamplesParse keeps the configs in examples/ valid, and servable on
// the address they listen on: off loopback, each route names its clients
// or says clients: any.
func TestExamplesParse(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*/till.yaml")
	more, _ := filepath.Glob("../../examples/*/config/till.yaml")
	files = append(files, more...)
	if len(files) < 3 {
		t.Fatalf("found %d example configs", len(files))
	}
	for _, f := range files {
		cfg, err := config.Load(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if err := cfg.CheckOpenRoutes(cfg.Listen); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestKeyFilePermissionWarning(t *testing.T) {
	c := newCLI(t)
	c.run(key, "secret", "set", "openai")
	if _, errOut, _ := c.run("", "secret", "list"); strings.Contains(errOut, "warning") {
		t.Errorf("a 0600 key file warned: %s", errOut)
	}
	os.Chmod("till.key", 0o644)
	_, errOut, code := c.run("", "secret", "list")
	if code != 0 || !strings.Contains(errOut, "readable by other users") || !strings.Contains(errOut, "chmod 600") {
		t.Errorf("a 0644 key file: exit %d: %q", code, errOut)
	}
}

// TestUnreadableFiles: root reads any file, so "unreadable" here means a
// folder where a file should be, or a path that does not exist.
func TestUnreadableFiles(t *testing.T) {
	c := newCLI(t)
	os.Mkdir("adir", 0o755)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"config is a folder", []string{"check", "-c", "adir"}, "adir"},
		{"config is missing", []string{"check", "-c", "nope.yaml"}, "nope.yaml"},
	}
	for _, tt := range tests {
		if _, errOut, code := c.run("", tt.args...); code != 1 || !strings.Contains(errOut, tt.want) {
			t.Errorf("%s: exit %d: %s", tt.name, code, errOut)
		}
	}
	os.WriteFile("till.yaml", []byte("version: 1\nvault: {path: adir}\n"), 0o644)
	if _, errOut, code := c.run("", "secret", "list"); code != 1 || !strings.Contains(errOut, "adir") {
		t.Errorf("vault is a folder: exit %d: %s", code, errOut)
	}
	os.WriteFile("till.yaml", []byte("version: 1\nvault: {key_file: adir}\n"), 0o644)
	os.WriteFile("till.vault", []byte("not empty"), 0o600)
	if _, errOut, code := c.run("", "secret", "list"); code != 1 || !strings.Contains(errOut, "adir") {
		t.Errorf("key file is a folder: exit %d: %s", code, errOut)
	}
}

// TestNameArgumentsNeverEchoed: a key pasted where the CLI wants a NAME (or
// a command) is never printed back, neither on stdout nor on stderr, and the
// message says what a name looks like instead.
func TestNameArgumentsNeverEchoed(t *testing.T) {
	c := newCLI(t)
	cfg := "version: 1\nforward: {enabled: true}\nclients:\n  - name: web\n    token_sha256: " + strings.Repeat("ab", 32) +
		"\nroutes:\n  - name: openai\n    preset: openai\n    clients: [web]\n"
	if err := os.WriteFile("till.yaml", []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := c.run(key, "secret", "set", "openai"); code != 0 {
		t.Fatalf("secret set: exit %d: %s", code, errOut)
	}
	if _, errOut, code := c.run("", "ca", "init"); code != 0 {
		t.Fatalf("ca init: exit %d: %s", code, errOut)
	}
	pasted := []string{
		"sk-proj-Xk3vT9qLw2RbN7mYc4ZpHd8sJf1GaVe6KuQo5tWnBy0ErIlMx",
		"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY +with spaces/and=slashes",
	}
	for _, k := range pasted {
		tests := []struct {
			name  string
			stdin string
			args  []string
			want  string // what the message says instead
		}{
			{"secret rm", "", []string{"secret", "rm", k}, "secret name"},
			{"secret set", key, []string{"secret", "set", k}, "secret name"},
			{"client rm", "", []string{"client", "rm", k}, "not a client name"},
			{"client rotate", "", []string{"client", "rotate", k}, "not a client name"},
			{"client add", "", []string{"client", "add", k}, "not a client name"},
			{"test --client", "", []string{"test", "--client", k, "GET", "/openai/v1/models"}, "not a client name"},
			{"env --client", "", []string{"env", "--client", k}, "not a client name"},
			{"unknown command", "", []string{k}, "unknown command"},
			{"unknown secret command", "", []string{"secret", k}, "unknown secret command"},
			{"unknown client command", "", []string{"client", k}, "unknown client command"},
			{"unknown ca command", "", []string{"ca", k}, "unknown ca command"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				out, errOut, code := c.run(tt.stdin, tt.args...)
				if code == 0 {
					t.Errorf("exit 0, want a refusal: %s", out)
				}
				if strings.Contains(out+errOut, k) || strings.Contains(out+errOut, k[:16]) {
					t.Errorf("the argument was printed back:\nstdout: %q\nstderr: %q", out, errOut)
				}
				if !strings.Contains(errOut, tt.want) {
					t.Errorf("stderr: got %q, want it to mention %q", errOut, tt.want)
				}
			})
		}
	}
	// A key that starts with '-' is read as a flag: the flag package's
	// messages ("bad flag syntax: ...") would print it back.
	pem := "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----"
	for _, args := range [][]string{{"secret", "rm", pem}, {"client", "rm", pem}, {"secret", "list", "--json=" + pasted[0]}} {
		out, errOut, code := c.run("", args...)
		if code != 2 || strings.Contains(out+errOut, "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7") || strings.Contains(out+errOut, pasted[0]) {
			t.Errorf("%s: exit %d, want 2 without the argument:\nstdout: %q\nstderr: %q", args[:2], code, out, errOut)
		}
	}
	// A valid name is still named.
	if _, errOut, code := c.run("", "client", "rm", "nobody"); code != 1 || !strings.Contains(errOut, `"nobody"`) {
		t.Errorf("client rm nobody: exit %d: %s", code, errOut)
	}
	if _, errOut, code := c.run("", "secret", "rm", "nobody"); code != 1 || !strings.Contains(errOut, `"nobody"`) {
		t.Errorf("secret rm nobody: exit %d: %s", code, errOut)
	}
}

// TestCAInitAfterLostCert: with the CA key in the vault and its certificate
// file gone, ca init writes a new certificate for that key (one that
// serve accepts with the key) instead of leaving no way out.
func TestCAInitAfterLostCert(t *testing.T) {
	c := newCLI(t)
	if _, errOut, code := c.run("", "ca", "init"); code != 0 {
		t.Fatalf("ca init: %s", errOut)
	}
	old, _ := os.ReadFile("till-ca.pem")
	os.Remove("till-ca.pem")
	out, errOut, code := c.run("", "ca", "init")
	if code != 0 || !strings.Contains(out, "wrote a new certificate") {
		t.Fatalf("ca init after the certificate was lost: exit %d: %s%s", code, out, errOut)
	}
	now, err := os.ReadFile("till-ca.pem")
	if err != nil || bytes.Equal(now, old) {
		t.Fatalf("no new certificate: %v", err)
	}
	if _, errOut, code := c.run("", "ca", "init"); code != 1 || !strings.Contains(errOut, "already exists") {
		t.Errorf("ca init with the certificate there: exit %d: %s", code, errOut)
	}
	// The key and the new certificate belong together.
	os.WriteFile("till.yaml", []byte("version: 1\nforward: {enabled: true}\nroutes: []\n"), 0o644)
	if out, errOut, code := c.run("", "check"); code != 0 {
		t.Errorf("check with the reissued certificate: exit %d: %s%s", code, out, errOut)
	}
}

// TestCAInitFinishesACutShortCert: ca init stores the key, then creates
// the certificate file and writes it, without a sync: killed between the
// two, or a power loss before the bytes reached the disk, leaves an empty
// file beside the key. ca init then refused it as "this installation has
// its CA", ca export and check as no PEM certificate, with no way out
// named. An empty file is no certificate any app trusts: ca init writes
// the certificate of the key in the vault there, and check says so; a
// file with anything in it is still never replaced.
func TestCAInitFinishesACutShortCert(t *testing.T) {
	c := newCLI(t)
	c.must("", "ca", "init")
	if err := os.Truncate("till-ca.pem", 0); err != nil {
		t.Fatal(err)
	}
	os.WriteFile("till.yaml", []byte("version: 1\nforward: {enabled: true}\nroutes: []\n"), 0o644)
	if _, errOut, code := c.run("", "check"); code != 1 || !strings.Contains(errOut, "till ca init writes it again") {
		t.Errorf("check with an empty certificate: exit %d: %s", code, errOut)
	}
	out, errOut, code := c.run("", "ca", "init")
	if code != 0 || !strings.Contains(out, "wrote a new certificate") {
		t.Fatalf("ca init after one cut short: exit %d: %s%s", code, out, errOut)
	}
	if st, err := os.Stat("till-ca.pem"); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("till-ca.pem: %v %v", st, err)
	}
	if out, errOut, code := c.run("", "check"); code != 0 {
		t.Errorf("check with the certificate written again: exit %d: %s%s", code, out, errOut)
	}
	os.WriteFile("till-ca.pem", []byte("not a certificate\n"), 0o644)
	if _, errOut, code := c.run("", "ca", "init"); code != 1 || !strings.Contains(errOut, "already exists") {
		t.Errorf("ca init with another file there: exit %d: %s", code, errOut)
	}
	if b, _ := os.ReadFile("till-ca.pem"); string(b) != "not a certificate\n" {
		t.Errorf("ca init replaced a file that is not empty: %q", b)
	}
}

// TestCAInitAfterLostKey: a vault that lost the CA key (replaced, or
// restored from before till ca init) beside the certificate stops
// serve and check; neither they nor ca init may send the operator to
// till ca init alone, which refuses while the certificate is there.
func TestCAInitAfterLostKey(t *testing.T) {
	c := newCLI(t)
	c.must("", "ca", "init")
	os.Remove("till.vault")
	c.must(key, "secret", "set", "openai")
	_, errOut, code := c.run("", "ca", "init")
	if code != 1 || !strings.Contains(errOut, `the vault holds no CA key ("till-ca")`) || !strings.Contains(errOut, "move till-ca.pem away, run till ca init") {
		t.Errorf("ca init with the key lost: exit %d: %s", code, errOut)
	}
	os.WriteFile("till.yaml", []byte("version: 1\nforward: {enabled: true}\nroutes: []\n"), 0o644)
	if _, errOut, code := c.run("", "check"); code != 1 || !strings.Contains(errOut, "move till-ca.pem away, run till ca init") {
		t.Errorf("check with the key lost: exit %d: %s", code, errOut)
	}
	os.Rename("till-ca.pem", "old-ca.pem")
	if out, errOut, code := c.run("", "ca", "init"); code != 0 || !strings.Contains(out, "created the interception CA") {
		t.Errorf("ca init with the certificate moved away: exit %d: %s%s", code, out, errOut)
	}
}
