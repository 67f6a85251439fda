package main

import (
	"os"
	"strings"
	"testing"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy"
)

// TestDryRunOwnListener: till test takes the base URLs the serve log
// prints: a URL on till's own listener is a base-URL (reverse) request,
// not a proxied one.
func TestDryRunOwnListener(t *testing.T) {
	c := newCLI(t)
	os.WriteFile("till.yaml", []byte("version: 1\nlisten: 127.0.0.1:8080\nroutes: [{name: openai, preset: openai}]\n"), 0o644)
	c.run(key, "secret", "set", "openai")
	tests := []struct {
		url  string
		code int
		want string
	}{
		{"http://127.0.0.1:8080/openai/v1/models", 0, "mode:     reverse"},
		{"http://localhost:8080/openai/v1/models?limit=1", 0, "upstream: GET https://api.openai.com/v1/models?limit=1"},
		{"http://LOCALHOST:8080/openai/v1/models", 0, "route:    openai"},
		{"http://127.0.0.1:8080/nope", 1, "refused: route_not_found"},
		{"http://127.0.0.1:9090/openai/v1/models", 1, "forward.enabled"},
		{"http://[::1]:8080/openai/v1/models", 1, "forward.enabled"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			out, errOut, code := c.run("", "test", "GET", tt.url)
			if code != tt.code || !strings.Contains(out, tt.want) {
				t.Errorf("exit %d, want %d; output lacks %q:\n%s%s", code, tt.code, tt.want, out, errOut)
			}
		})
	}
}

func TestOwnListenerPath(t *testing.T) {
	tests := []struct {
		listen, url string
		names       []string
		want        string
	}{
		{"127.0.0.1:8080", "http://127.0.0.1:8080/openai/v1/models", nil, "/openai/v1/models"},
		{"127.0.0.1:8080", "http://localhost:8080/openai/v1/models", nil, "/openai/v1/models"},
		{"127.0.0.1:8080", "http://app.localhost:8080/x", nil, "/x"},
		{"127.0.0.1:8080", "http://127.0.0.1:8080", nil, "/"},
		{"127.0.0.1:8080", "http://127.0.0.1:8080/a%2Fb?q=1", nil, "/a%2Fb?q=1"},
		{"localhost:8080", "http://127.0.0.1:8080/x", nil, "/x"},
		{"0.0.0.0:8080", "http://127.0.0.1:8080/x", nil, "/x"},
		{"[::]:8080", "http://[::1]:8080/x", nil, "/x"},
		{":8080", "http://localhost:8080/x", nil, "/x"},
		{"10.0.0.5:8080", "http://10.0.0.5:8080/x", nil, "/x"},
		{"0.0.0.0:443", "https://till.internal/x", []string{"till.internal"}, "/x"},
		{"0.0.0.0:80", "http://till.lan/x", []string{"till.lan"}, "/x"},
		// Not till's listener: a proxied request.
		{"127.0.0.1:8080", "http://127.0.0.1:8081/x", nil, ""},
		{"127.0.0.1:8080", "http://[::1]:8080/x", nil, ""},
		{"127.0.0.1:8080", "http://127.0.0.1/x", nil, ""},
		{"10.0.0.5:8080", "http://127.0.0.1:8080/x", nil, ""},
		{"0.0.0.0:8080", "http://api.openai.com:8080/x", nil, ""},
		{"127.0.0.1:8080", "/openai/v1/models", nil, ""},
		{"127.0.0.1:8080", "ftp://127.0.0.1:8080/x", nil, ""},
	}
	for _, tt := range tests {
		cfg := &config.Config{Listen: tt.listen, ServerNames: tt.names}
		cfg.TLS.Names = tt.names
		got, ok := ownListenerPath(tt.url, cfg)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("listen %s, %s: got %q %v, want %q", tt.listen, tt.url, got, ok, tt.want)
		}
	}
}

// till test's rows line up: each value starts in one column, also when
// the credential row (longer than the others' names) shows.
func TestVerdictRowsAligned(t *testing.T) {
	for _, cred := range []string{"static", "oauth2"} {
		var out strings.Builder
		printVerdict(&env{stdout: &out}, "GET", proxy.Verdict{Allowed: true, Mode: "reverse", Route: "r", Client: "anonymous",
			Secret: "s", Fingerprint: "sha256:00", Upstream: "https://x/", Credential: cred, Warning: "w"})
		col := -1
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n")[1:] {
			name, value, _ := strings.Cut(line, ":")
			at := len(line) - len(strings.TrimLeft(value, " "))
			if col == -1 {
				col = at
			}
			if at != col {
				t.Errorf("credential %s: the %s row's value starts at column %d, the first row's at %d:\n%s", cred, name, at, col, out.String())
			}
		}
		want := len("  upstream: ") // as before, for the tests and docs that quote rows
		if cred != "static" {
			want = len("  credential: ")
		}
		if col != want {
			t.Errorf("credential %s: values start at column %d, want %d", cred, col, want)
		}
	}
}

// TestDryRunNamesTheClients: a dry run sends no token, so a route that
// names its clients refuses it as client_unauthenticated; the hint says
// to give --client and which clients the route takes, rather than leave
// the user to wonder which token till test could send.
func TestDryRunNamesTheClients(t *testing.T) {
	c := newCLI(t)
	os.WriteFile("till.yaml", []byte("version: 1\nforward: {enabled: true, intercept: false}\n"+
		"clients: [{name: web, token_sha256: "+strings.Repeat("a", 64)+"}, {name: ci, token_sha256: "+strings.Repeat("b", 64)+"}]\n"+
		"routes: [{name: openai, preset: openai, clients: [web, ci]}]\n"), 0o644)
	c.run(key, "secret", "set", "openai")
	for _, target := range []string{"/openai/v1/models", "http://api.openai.com/v1/models"} {
		out, errOut, code := c.run("", "test", "GET", target)
		want := "hint:     till test sends no token: give --client NAME to test as a client"
		if code != 1 || !strings.Contains(out, "refused: client_unauthenticated") || !strings.Contains(out, want) {
			t.Errorf("test GET %s: exit %d, output lacks %q:\n%s%s", target, code, want, out, errOut)
		}
	}
	if out, _, _ := c.run("", "test", "GET", "/openai/v1/models"); !strings.Contains(out, "(route openai takes web, ci)") {
		t.Errorf("the hint does not name the route's clients:\n%s", out)
	}
	if out, _, _ := c.run("", "test", "--client", "web", "GET", "/openai/v1/models"); strings.Contains(out, "hint:") {
		t.Errorf("a dry run as a client the route takes gets a hint:\n%s", out)
	}
}
