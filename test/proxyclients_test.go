package test

import (
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path"
	"strings"
	"testing"
)

// TestProxyClientsNamedInsideTunnel drives till in forward mode with the
// HTTP client stacks apps use, each sending its till token only where it
// sends proxy credentials: on the CONNECT (curl, Python's urllib, undici's
// ProxyAgent and EnvHttpProxyAgent, HTTP/1.1 and HTTP/2 inside), or as
// curl's --proxy-header X-Till-Token. Every request inside a tunnel,
// the second on a kept-alive one included, must be recorded as the client
// whose token its CONNECT carried, never as anonymous or another client,
// with the path it asked for; so must an http:// URL's absolute-form
// request, the token on the request itself.
func TestProxyClientsNamedInsideTunnel(t *testing.T) {
	if testing.Short() {
		t.Skip("starts till and client processes")
	}
	tokA, linesA := addClient(t, t.TempDir(), "alpha")
	tokB, linesB := addClient(t, t.TempDir(), "beta")
	f := startForward(t, "deny", false, false, "clients:\n"+linesA+linesB)
	proxyAs := func(name, tok string) string {
		u, err := url.Parse(f.proxyURL)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword(name, tok)
		return u.String()
	}
	proxyA, proxyB := proxyAs("alpha", tokA), proxyAs("beta", tokB)
	var outputs []string
	run := func(t *testing.T, env map[string]string, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = f.clientEnv()
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		if name == "node" {
			cmd.Dir = "sdk"
		}
		out, err := cmd.CombinedOutput()
		outputs = append(outputs, string(out))
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		return string(out)
	}
	// want maps each path asked for to the client it must be recorded as.
	want := map[string]string{}
	u := func(c string) string { return f.providerURL + "/v1/models/" + c }
	plain := func(c string) string { return strings.Replace(u(c), "https://", "http://", 1) }
	t.Run("curl", func(t *testing.T) {
		run(t, map[string]string{"HTTPS_PROXY": proxyA, "https_proxy": proxyA}, "curl", "-sS", "--fail-with-body",
			"-o", "/dev/null", "-o", "/dev/null", u("curl-h1-0"), u("curl-h1-1"))
		run(t, map[string]string{"HTTPS_PROXY": proxyB, "https_proxy": proxyB}, "curl", "-sS", "--fail-with-body", "--http2",
			"-o", "/dev/null", "-o", "/dev/null", u("curl-h2-0"), u("curl-h2-1"))
		run(t, nil, "curl", "-sS", "--fail-with-body", "--proxy-header", "X-Till-Token: "+tokB, "--http2",
			"-o", "/dev/null", "-o", "/dev/null", u("curl-xtoken-0"), u("curl-xtoken-1"))
		// Not one curl with two proxy users (--next): curl before 8.19
		// (Debian 12 has 7.88) sends the second user's requests in the
		// first one's tunnel (curl/curl#20842), which till records as
		// the first's, rightly. Separate runs above give each its own.
		// A tunnel each, the second offering the first's TLS 1.3 session.
		run(t, map[string]string{"HTTPS_PROXY": proxyA, "https_proxy": proxyA}, "curl", "-sS", "--fail-with-body", "--tlsv1.3",
			"-H", "Connection: close", "-o", "/dev/null", "-o", "/dev/null", u("curl-resume-0"), u("curl-resume-1"))
		want["curl-resume-0"], want["curl-resume-1"] = "alpha", "alpha"
		want["curl-h1-0"], want["curl-h1-1"] = "alpha", "alpha"
		want["curl-h2-0"], want["curl-h2-1"] = "beta", "beta"
		want["curl-xtoken-0"], want["curl-xtoken-1"] = "beta", "beta"
	})
	t.Run("python urllib", func(t *testing.T) {
		run(t, map[string]string{"HTTPS_PROXY": proxyB, "https_proxy": proxyB}, "python3", "-c",
			`import urllib.request, sys
for u in sys.argv[1:]: urllib.request.urlopen(u).read()`, u("urllib-0"), u("urllib-1"))
		want["urllib-0"], want["urllib-1"] = "beta", "beta"
		// An http:// URL goes in absolute form, the token on the request.
		run(t, map[string]string{"HTTP_PROXY": proxyB, "http_proxy": proxyB}, "python3", "-c",
			`import urllib.request, sys; urllib.request.urlopen(sys.argv[1]).read()`, plain("urllib-plain-0"))
		run(t, map[string]string{"HTTP_PROXY": proxyA, "http_proxy": proxyA}, "curl", "-sS", "--fail-with-body",
			"-o", "/dev/null", plain("curl-plain-0"))
		want["urllib-plain-0"], want["curl-plain-0"] = "beta", "alpha"
	})
	t.Run("python requests", func(t *testing.T) {
		if err := exec.Command("python3", "-c", "import requests").Run(); err != nil {
			t.Skip("python3-requests is not installed")
		}
		run(t, map[string]string{"HTTPS_PROXY": proxyA, "https_proxy": proxyA, "REQUESTS_CA_BUNDLE": f.caBundle}, "python3", "-c",
			`import requests, sys
s = requests.Session()
for u in sys.argv[1:3]: s.get(u).raise_for_status()
b = {"https": sys.argv[4]}
for u in sys.argv[3:4]: s.get(u, proxies=b).raise_for_status()`, u("requests-0"), u("requests-1"), u("requests-beta"), proxyB)
		want["requests-0"], want["requests-1"], want["requests-beta"] = "alpha", "alpha", "beta"
	})
	t.Run("node undici and openai", func(t *testing.T) {
		if _, err := os.Stat("sdk/node_modules/undici"); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("sdk/node_modules is missing: .ci/run must run npm ci in test/sdk")
			}
			t.Skip("run npm ci in test/sdk to enable the SDK test")
		}
		out := run(t, map[string]string{"HTTPS_PROXY": proxyA, "https_proxy": proxyA, "PROXY_A": proxyA, "PROXY_B": proxyB,
			"PROVIDER_URL": f.providerURL}, "node", "proxy-clients.mjs")
		var res map[string][]string
		if err := json.Unmarshal([]byte(out), &res); err != nil || len(res) != 5 {
			t.Fatalf("node printed %q", out)
		}
		for c, who := range map[string]string{"undici-h1": "alpha", "undici-h2": "beta", "undici-env": "alpha", "undici-plain": "beta"} {
			want[c+"-0"], want[c+"-1"] = who, who
		}
		want["chat/completions"] = "beta"
	})
	recs := f.tl.waitAudit(len(want))
	for _, r := range recs {
		p, _ := r["path"].(string)
		c := strings.TrimPrefix(p, "/v1/models/")
		if p == "/v1/chat/completions" {
			c = "chat/completions"
		}
		who, ok := want[c]
		if !ok {
			t.Errorf("a record for a path no client asked for: %v", r)
			continue
		}
		delete(want, c)
		mode := "intercept"
		if strings.Contains(c, "-plain-") {
			mode = "forward"
		}
		if r["client"] != who || r["mode"] != mode || r["outcome"] != "forwarded" || r["route"] != "provider" {
			t.Errorf("%s: record %v, want client %q, mode %s, forwarded on route provider", path.Base(p), r, who, mode)
		}
	}
	if len(want) != 0 {
		t.Errorf("no record for %v", want)
	}
	f.tl.stop()
	f.tl.assertNoLeak([]string{providerKey, tokA, tokB}, outputs...)
}
