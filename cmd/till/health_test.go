package main

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/tillgw/till/proxy"
	"time"
)

func TestHealthURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"http://127.0.0.1:9090", "http://127.0.0.1:9090/readyz"},
		{"http://127.0.0.1:9090/", "http://127.0.0.1:9090/readyz"},
		{"http://127.0.0.1:9090/readyz", "http://127.0.0.1:9090/readyz"},
		{"http://[::1]:9090/healthz", "http://[::1]:9090/healthz"},
		{"127.0.0.1:9090", "http://127.0.0.1:9090/readyz"},
		{"https://till.internal:9443", "https://till.internal:9443/readyz"},
		{"unix:/run/till/admin.sock", "http://localhost/readyz (unix:/run/till/admin.sock)"},
	}
	for _, tt := range tests {
		u, err := healthURL(tt.in)
		if err != nil {
			t.Errorf("healthURL(%q): %v", tt.in, err)
			continue
		}
		if got := u.String(); got != tt.want {
			t.Errorf("healthURL(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
	for _, bad := range []string{"ftp://127.0.0.1:9090", "http://", "http://%zz", "localhost", "127.0.0.1:0", "127.0.0.1:http", "till.internal:99999", "unix:", "unix:///run/till/admin.sock"} {
		if _, err := healthURL(bad); err == nil {
			t.Errorf("healthURL(%q): got no error", bad)
		}
	}
}

// TestHealthAdminURL: the default URL is admin.listen's /readyz, asked on
// loopback when the listener is bound to every address.
func TestHealthAdminURL(t *testing.T) {
	tests := []struct{ listen, want string }{
		{"127.0.0.1:9090", "http://127.0.0.1:9090/readyz"},
		{"0.0.0.0:9090", "http://127.0.0.1:9090/readyz"},
		{":9090", "http://127.0.0.1:9090/readyz"},
		{"[::]:9090", "http://[::1]:9090/readyz"},
		{"[::1]:9090", "http://[::1]:9090/readyz"},
		// The resolver below lists ::1 first, as a dialler may try it;
		// net.Listen binds the first IPv4 address, so that one is asked.
		{"localhost:9090", "http://127.0.0.1:9090/readyz"},
		{"v6only.test:9090", "http://[::1]:9090/readyz"},
		{"anyv4.test:9090", "http://127.0.0.1:9090/readyz"},
	}
	fakeResolver(t, map[string][]string{"localhost": {"::1", "127.0.0.1"}, "v6only.test": {"::1"}, "anyv4.test": {"::", "0.0.0.0"}})
	for _, tt := range tests {
		c := newCLI(t)
		// A token: a listener off loopback needs one (probes need none).
		os.WriteFile("till.yaml", []byte("version: 1\nadmin: {listen: \""+tt.listen+"\", token_sha256: "+strings.Repeat("ab", 32)+"}\n"), 0o644)
		u, err := adminURL(context.Background(), "", &env{getenv: func(k string) string { return c.env[k] }}, withURLFlag)
		if err != nil {
			t.Errorf("admin.listen %s: %v", tt.listen, err)
			continue
		}
		if got := u.String(); got != tt.want {
			t.Errorf("admin.listen %s: got %q, want %q", tt.listen, got, tt.want)
		}
	}
	c := newCLI(t)
	os.WriteFile("till.yaml", []byte("version: 1\nadmin: {listen: \"nowhere.test:9090\", token_sha256: "+strings.Repeat("ab", 32)+"}\n"), 0o644)
	if _, err := adminURL(context.Background(), "", &env{getenv: func(k string) string { return c.env[k] }}, withURLFlag); err == nil || !strings.Contains(err.Error(), "nowhere.test") {
		t.Errorf("admin.listen of a name that does not resolve: got %v, want an error naming it", err)
	}
}

// fakeResolver makes lookupIPAddr answer from names for the test's
// length, and no other name.
func fakeResolver(t *testing.T, names map[string][]string) {
	old := lookupIPAddr
	t.Cleanup(func() { lookupIPAddr = old })
	lookupIPAddr = func(_ context.Context, host string) ([]net.IPAddr, error) {
		var ips []net.IPAddr
		for _, a := range names[host] {
			ips = append(ips, net.IPAddr{IP: net.ParseIP(a)})
		}
		if ips == nil {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return ips, nil
	}
}

// TestListenIPIsWhatListenBinds: listenIP picks what net.Listen binds
// for a name, checked against the standard library on a name whose
// addresses this machine has (localhost, whatever order /etc/hosts
// gives).
func TestListenIPIsWhatListenBinds(t *testing.T) {
	ips, err := net.DefaultResolver.LookupIPAddr(context.Background(), "localhost")
	if err != nil || len(ips) == 0 {
		t.Skipf("localhost does not resolve here: %v", err)
	}
	ln, err := net.Listen("tcp", "localhost:0")
	if err != nil {
		t.Skipf("listen on localhost: %v", err)
	}
	defer ln.Close()
	want := listenIP(ips)
	if got := ln.Addr().(*net.TCPAddr).IP; !got.Equal(want.IP) {
		t.Errorf("net.Listen bound %s for localhost (%v); listenIP says %s", got, ips, want.IP)
	}
}

// TestHealthIgnoresProxyEnv: the apps beside till have HTTP_PROXY set;
// the probe must not use it.
func TestHealthIgnoresProxyEnv(t *testing.T) {
	tr, ok := healthClient().Transport.(*http.Transport)
	if !ok || tr.Proxy != nil {
		t.Fatal("the health client's transport has a Proxy function: HTTP_PROXY would apply")
	}
	if healthClient().CheckRedirect == nil {
		t.Error("the health client follows redirects")
	}
}

// TestHealth runs till health against stand-in admin listeners: exit 0 on
// 200 only, and otherwise one line that says why.
func TestHealth(t *testing.T) {
	ready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{"status":"ready"}`))
	}))
	defer ready.Close()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"status":"audit sink failing\u001b[2J"}`))
	}))
	defer failing.Close()
	redirect := httptest.NewServer(http.RedirectHandler(ready.URL+"/readyz", http.StatusFound))
	defer redirect.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	tests := []struct {
		name     string
		args     []string
		config   string
		code     int
		out, err string
	}{
		{"base URL", []string{"--url", ready.URL}, "", 0, ready.URL + "/readyz: ready", ""},
		{"readyz URL", []string{"--url", ready.URL + "/readyz"}, "", 0, "ready", ""},
		{"from admin.listen", nil, "version: 1\nadmin: {listen: " + strings.TrimPrefix(ready.URL, "http://") + "}\n", 0, "ready", ""},
		{"not ready", []string{"--url", failing.URL}, "", 1, "", "/readyz: 503 Service Unavailable: audit sink failing"},
		{"redirect", []string{"--url", redirect.URL}, "", 1, "", "302 Found"},
		{"not found", []string{"--url", ready.URL + "/nope"}, "", 1, "", "404 Not Found"},
		{"nothing listening", []string{"--url", "http://" + closed}, "", 1, "", "connection refused"},
		{"no admin listener", nil, "version: 1\n", 1, "", "till.yaml has no admin listener to ask"},
		{"no config", nil, "", 1, "", "the built-in config (no till.yaml) has no admin listener"},
		{"bad URL", []string{"--url", "ftp://x"}, "", 2, "", "--url: want http://HOST:PORT"},
		{"arguments", []string{"http://127.0.0.1:9090"}, "", 2, "", "usage: till health"},
		// A bare value that is not HOST:PORT may be a key pasted in the
		// wrong place: neither shown nor looked up in DNS.
		{"key as URL", []string{"--url", "sk-proj-0123456789abcdefABCDEF"}, "", 2, "", "--url (30 characters, not shown): want HOST:PORT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCLI(t)
			if tt.config != "" {
				os.WriteFile("till.yaml", []byte(tt.config), 0o644)
			}
			out, errOut, code := c.run("", append([]string{"health"}, tt.args...)...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out, errOut)
			}
			if !strings.Contains(out, tt.out) || !strings.Contains(errOut, tt.err) {
				t.Errorf("got stdout %q, stderr %q; want %q and %q", out, errOut, tt.out, tt.err)
			}
			if strings.Contains(out+errOut, "sk-proj") {
				t.Errorf("the --url value was echoed: %q", errOut)
			}
			if strings.ContainsAny(errOut, "\x1b") {
				t.Errorf("stderr holds a control character from the answer: %q", errOut)
			}
			if tt.code == 1 && tt.config != "version: 1\n" && tt.name != "no config" {
				if n := strings.Count(errOut, "\n"); n != 1 {
					t.Errorf("got %d lines on stderr, want one reason: %q", n, errOut)
				}
			}
		})
	}
}

// TestHealthTimeout: an admin listener that never answers fails the check
// within healthTimeout, not the runtime's longer HEALTHCHECK timeout.
func TestHealthTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the 2s timeout")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // accepted by the kernel, never answered
	c := newCLI(t)
	start := time.Now()
	_, errOut, code := c.run("", "health", "--url", "http://"+ln.Addr().String())
	if took := time.Since(start); code != 1 || !strings.Contains(errOut, "no answer within 2s") || took > 4*time.Second {
		t.Errorf("exit %d after %v: %q; want 1 with no answer within 2s", code, took.Round(time.Millisecond), errOut)
	}
}

// rawServer answers every connection with resp, byte for byte: a listener
// at the admin address that is not till (or a hostile one).
func rawServer(t *testing.T, resp string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				c.Write([]byte(resp))
			}()
		}
	}()
	return ln.Addr().String()
}

const esc = "\x1b]0;pwned\x07\x1b[2J"

// TestHealthStatusLineEscapes: a listener that is not till cannot write
// terminal escape sequences through its HTTP reason phrase.
func TestHealthStatusLineEscapes(t *testing.T) {
	addr := rawServer(t, "HTTP/1.1 503 "+esc+"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	c := newCLI(t)
	_, errOut, code := c.run("", "health", "--url", "http://"+addr)
	if code != 1 {
		t.Fatalf("exit %d: %q", code, errOut)
	}
	if strings.ContainsAny(errOut, "\x1b\x07") {
		t.Errorf("till health: stderr holds control characters from the answer's status line: %q", errOut)
	}
}

// TestUsageAnswerEscapes: what answers at the admin URL may not be till.
// Only printable text of it reaches the terminal: a non-200 answer's body,
// and the budget, counter and kind of a 200 answer's table.
func TestUsageAnswerEscapes(t *testing.T) {
	for _, tt := range []struct {
		name   string
		status int
		body   string
	}{
		{"error body", http.StatusInternalServerError, `oops` + esc},
		{"table", http.StatusOK, `[{"budget":"daily","counter":"anonymous\u001b]0;pwned\u0007\u001b[2J",` +
			`"kind":"requests","limit":5,"used":1,"remaining":4,"reset":null}]`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			c := newCLI(t)
			os.WriteFile("till.yaml", []byte("version: 1\nroutes: []\nbudgets: [{name: daily, window: day, requests: 5}]\n"), 0o644)
			out, errOut, code := c.run("", "usage", "--url", srv.URL)
			if code != map[bool]int{true: 0, false: 1}[tt.status == http.StatusOK] {
				t.Fatalf("exit %d: %q", code, errOut)
			}
			if strings.ContainsAny(out+errOut, "\x1b\x07") {
				t.Errorf("till usage printed control characters from the answer: %q %q", out, errOut)
			}
		})
	}
}

// TestUsageURLPasswordHidden: till health and till usage show --url
// without its password.
func TestUsageURLPasswordHidden(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	c := newCLI(t)
	os.WriteFile("till.yaml", []byte("version: 1\nroutes: []\nbudgets: [{name: daily, window: day, requests: 5}]\n"), 0o644)
	u := strings.Replace(srv.URL, "http://", "http://ops:Sup3rSecretPw@", 1)
	_, herr, _ := c.run("", "health", "--url", u)
	_, uerr, _ := c.run("", "usage", "--url", u)
	if strings.Contains(herr, "Sup3rSecretPw") {
		t.Errorf("till health printed the URL's password: %q", herr)
	}
	if strings.Contains(uerr, "Sup3rSecretPw") {
		t.Errorf("till usage printed the URL's password: %q", uerr)
	}
}

// TestProbeFailureSaysItsOwnWait: a call to the admin listener that runs
// out of time says how long it waited, its own wait (till usage's,
// till test --mint's), not the health check's.
func TestProbeFailureSaysItsOwnWait(t *testing.T) {
	hold := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hold }))
	defer srv.Close()
	defer close(hold)
	ctx, cancel := answerWithin(context.Background(), 300*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	_, err := srv.Client().Do(req)
	if err == nil {
		t.Fatal("a held request got an answer")
	}
	if got := probeFailure(ctx, err); got != "no answer within 300ms" {
		t.Errorf("probeFailure: %q, want %q", got, "no answer within 300ms")
	}
}

// TestMintAnswerEscapes: what answers POST /admin/test for till test
// --mint may not be till. Only printable text of its verdict reaches the
// terminal.
func TestMintAnswerEscapes(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"allowed":false,"route":"api` + `\u001b]0;pwned\u0007","code":"credential_unavailable\u001b[2J","reason":"no` + `\u009b2J"}`))
	}))
	defer srv.Close()
	c := newCLI(t)
	os.WriteFile("till.yaml", []byte("version: 1\nadmin: {listen: \""+strings.TrimPrefix(srv.URL, "http://")+"\"}\nroutes: []\n"), 0o644)
	var v proxy.Verdict
	mintByServe("till.yaml", &env{getenv: func(k string) string { return c.env[k] }}, proxy.TestRequest{Method: "GET", Target: "/api/x"}, &v)
	if v.Route != "api]0;pwned" || v.Code != "credential_unavailable[2J" || v.Reason != "no2J" {
		t.Errorf("verdict %+v: want the answer's printable text only", v)
	}
}
