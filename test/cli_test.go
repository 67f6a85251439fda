package test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// TestCLIHelp: till CMD --help and till help CMD print the command's usage
// with examples on stdout and exit 0; a mistyped command is named back
// only as the command meant.
func TestCLIHelp(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"secret", "--help"}, {"secret", "set", "--help"}, {"help", "secret", "set"}, {"client", "--help"},
		{"client", "add", "-h"}, {"ca", "--help"}, {"audit", "--help"}, {"test", "--help"}, {"serve", "-h"},
	} {
		out, errOut, code := runTill(t, dir, "", nil, args...)
		if code != 0 || errOut != "" || !strings.HasPrefix(out, "Usage: till ") || !strings.Contains(out, "Examples:") {
			t.Errorf("till %s: exit %d: %s\n%s", strings.Join(args, " "), code, errOut, out)
		}
	}
	_, errOut, code := runTill(t, dir, "", nil, "serv", "--listen", "127.0.0.1:0")
	if code != 2 || errOut != "till: error: unknown command (did you mean \"serve\"?)\n" {
		t.Errorf("till serv: exit %d: %q", code, errOut)
	}
	pasted := "sk-proj-Xk3vT9qLw2RbN7mYc4ZpHd8sJf1GaVe6KuQo5tWnBy0ErIlMx"
	if out, errOut, code := runTill(t, dir, "", nil, pasted, "--help"); code != 2 || strings.Contains(out+errOut, pasted[:12]) {
		t.Errorf("a pasted key as the command: exit %d: %q %q", code, out, errOut)
	}
}

// TestDryRunServeLogURL: the base URL the serve log prints for a route
// works with till test as it stands, and with an app on the same host:
// a listener on every interface (the image's 0.0.0.0:8080) is named by
// 127.0.0.1, not by the [::] Go reports it bound.
func TestDryRunServeLogURL(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "0.0.0.0"} {
		t.Run(host, func(t *testing.T) { dryRunServeLogURL(t, host) })
	}
}

func dryRunServeLogURL(t *testing.T, host string) {
	dir := t.TempDir()
	setSecret(t, dir, "openai", "sk-dry-run-serve-log-0123456789")
	var tl *till
	for try := 0; tl == nil; try++ {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		ln.Close()
		cfg := fmt.Sprintf("version: 1\nlisten: %s\nroutes: [{name: openai, preset: openai, clients: any}]\n", net.JoinHostPort(host, port))
		if err := os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		tl, err = tryStartTillCmd(t, dir, "", nil, nil, "serve")
		if err != nil && (!errors.Is(err, errExited) || try == 3) {
			t.Fatal(err)
		}
	}
	// The routes are logged after "till listening", which start waits for.
	tl.waitLog(`"base_url"`)
	base := tl.logged("route", "base_url")
	if !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("the serve log names no base URL on 127.0.0.1:\n%s", tl.stderr.String())
	}
	if host == "0.0.0.0" {
		// As docs/reference.md says of listen: 0.0.0.0 binds IPv6 too.
		u, _ := url.Parse(base)
		if c, err := net.Dial("tcp", net.JoinHostPort("::1", u.Port())); err == nil {
			c.Close()
		} else if probe, perr := net.Listen("tcp", "[::1]:0"); perr == nil {
			probe.Close()
			t.Errorf("listen: 0.0.0.0 does not take connections over IPv6: %v", err)
		}
	}
	tl.stop()
	out, errOut, code := runTill(t, dir, "", nil, "test", "GET", base+"/models")
	if code != 0 || !strings.Contains(out, "mode:     reverse") || !strings.Contains(out, "upstream: GET https://api.openai.com/v1/models") {
		t.Errorf("till test GET %s/models: exit %d:\n%s%s", base, code, out, errOut)
	}
}

// TestMissingVaultNamed: check reports a vault the config names but that
// is not there, with its path.
func TestMissingVaultNamed(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "till.yaml"), []byte("version: 1\nvault: {path: /var/lib/till-missing/till.vault}\n"), 0o644)
	_, errOut, code := runTill(t, dir, "", nil, "check")
	if code != 1 || !strings.Contains(errOut, "the vault folder /var/lib/till-missing does not exist") || !strings.Contains(errOut, "fix vault.path") {
		t.Errorf("check: exit %d: %s", code, errOut)
	}
}

// TestHTTPProxyExampleSetup runs the setup commands in the comment of
// examples/http-proxy/till.yaml as written, in a copy of the example:
// the proxy URL they leave must carry the token (eval before the token
// is set gave an empty one).
func TestHTTPProxyExampleSetup(t *testing.T) {
	data, err := os.ReadFile("../examples/http-proxy/till.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	inSetup := false
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case strings.Contains(line, "Setup (from this folder):"):
			inSetup = true
		case inSetup && strings.HasPrefix(line, "#   "):
			script.WriteString(strings.TrimPrefix(line, "#   ") + "\n")
		case inSetup:
			inSetup = false
		}
	}
	script.WriteString(`printf 'HTTPS_PROXY=%s\n' "$HTTPS_PROXY"` + "\n")
	dir, bin := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "till.yaml"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(tillBin, filepath.Join(bin, "till")); err != nil {
		t.Fatal(err)
	}
	key := "sk-http-proxy-example-0123456789"
	suiteLeaks.key(key)
	cmd := exec.Command("bash", "-c", script.String())
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"), "HOME=" + dir, "OPENAI_API_KEY=" + key}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	suiteLeaks.text("examples/http-proxy setup", stdout.String()+stderr.String())
	if err != nil {
		t.Fatalf("the setup commands failed: %v\nscript:\n%s\nstdout:\n%s\nstderr:\n%s", err, script.String(), stdout.String(), stderr.String())
	}
	if !regexp.MustCompile(`(?m)^HTTPS_PROXY=http://web:till_\.\.\.@127\.0\.0\.1:8080$`).MatchString(stdout.String()) {
		t.Errorf("the proxy URL does not carry TILL_TOKEN:\nscript:\n%s\nstdout:\n%s", script.String(), stdout.String())
	}
	cfg, _ := os.ReadFile(filepath.Join(dir, "till.yaml"))
	if !strings.Contains(string(cfg), "\nclients:\n  - name: web\n") {
		t.Errorf("the client is not in the config:\n%s", cfg)
	}
}

// TestGeneratedFilesIgnored: what till writes beside a config (vault, key,
// CA, CA bundle, client certificates) is git-ignored, so that running an
// example in the repository cannot commit a key.
func TestGeneratedFilesIgnored(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	if err := exec.Command("git", "-C", "..", "rev-parse", "--git-dir").Run(); err != nil {
		t.Skip("not a git checkout")
	}
	for _, f := range []string{
		"examples/http-proxy/till-ca.pem", "examples/http-proxy/till-ca-bundle.pem", "examples/http-proxy/till.vault",
		"examples/http-proxy/till.key", "examples/http-proxy/web.crt", "examples/http-proxy/web.key",
		"examples/quickstart/till.vault", "examples/sidecar-compose/till/till.key", "till-ca.pem", "till-ca-bundle.pem",
	} {
		cmd := exec.Command("git", "check-ignore", "-q", "--no-index", f)
		cmd.Dir = ".."
		if err := cmd.Run(); err != nil {
			t.Errorf("%s is not git-ignored: %v", f, err)
		}
	}
}

// TestCLIOutputToClosedPipe: a command whose output is piped into a
// reader that has gone (till secret list | head -1, till audit summary
// ... | head) ends as other tools do, killed by SIGPIPE, saying nothing.
// It printed "till: error: write /dev/stdout: broken pipe" and exited 1,
// as only serve, whose audit records may go to stdout, must outlive its
// reader (TestClosedStdoutFailsClosed).
func TestCLIOutputToClosedPipe(t *testing.T) {
	dir := t.TempDir()
	setSecret(t, dir, "openai", "sk-closed-pipe-0123456789abcdef")
	for _, args := range [][]string{{"secret", "list"}, {"secret", "list", "--json"}, {"version"}} {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		r.Close() // the reader is gone before till writes
		var errOut bytes.Buffer
		cmd := exec.Command(tillBin, args...)
		cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, tillEnv(), w, &errOut
		err = cmd.Run()
		w.Close()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGPIPE || errOut.Len() > 0 {
			t.Errorf("till %s into a closed pipe: %v, want killed by SIGPIPE, and nothing said: %q", strings.Join(args, " "), err, errOut.String())
		}
	}
}
