package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/tillgw/till/config"
)

// TestBrowserRequestsRefused: what a web page can make a browser send to a
// till on 127.0.0.1 (a cross-site POST, a DNS-rebinding Host) never gets
// the key; apps that are not browsers, same-origin requests and listed
// origins do.
func TestBrowserRequestsRefused(t *testing.T) {
	sent := 0
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { sent++ }))
	defer up.Close()
	yaml := baseYAML + "browser_origins: [\"http://localhost:3000\"]\nserver_names: [till.lan]\n"
	gw, _ := newTestGateway(t, yaml, up.URL, secrets(time.Now()))
	loopback := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	anyAddr := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 8080}
	for _, tt := range []struct {
		name   string
		local  *net.TCPAddr
		host   string
		header map[string]string
		want   string // error code; "" for forwarded
	}{
		{"an app, no browser headers", loopback, "127.0.0.1:8080", nil, ""},
		{"localhost", loopback, "localhost:8080", nil, ""},
		{"a .localhost name", loopback, "till.localhost:8080", nil, ""},
		{"IPv6 loopback", loopback, "[::1]:8080", nil, ""},
		{"a listed server name", loopback, "TILL.lan.:8080", nil, ""},
		{"DNS rebinding", loopback, "evil.example:8080", nil, CodeHostNotAllowed},
		{"rebinding to a name ending in localhost", loopback, "evillocalhost:8080", nil, CodeHostNotAllowed},
		{"any Host on a listener that is not loopback", anyAddr, "till.internal:8080", nil, ""},
		{"cross-site fetch", loopback, "127.0.0.1:8080", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, CodeOriginForbidden},
		{"cross-site form without Origin", loopback, "127.0.0.1:8080", map[string]string{"Sec-Fetch-Site": "cross-site"}, CodeOriginForbidden},
		{"same-site", loopback, "127.0.0.1:8080", map[string]string{"Sec-Fetch-Site": "same-site"}, CodeOriginForbidden},
		{"an Origin of another site", loopback, "127.0.0.1:8080", map[string]string{"Origin": "http://evil.example"}, CodeOriginForbidden},
		{"another port of the same host", loopback, "127.0.0.1:8080", map[string]string{"Origin": "http://127.0.0.1:8081"}, CodeOriginForbidden},
		{"Origin null", loopback, "127.0.0.1:8080", map[string]string{"Origin": "null"}, CodeOriginForbidden},
		{"same origin", loopback, "127.0.0.1:8080", map[string]string{"Origin": "http://127.0.0.1:8080", "Sec-Fetch-Site": "same-origin"}, ""},
		{"typed into the address bar", loopback, "127.0.0.1:8080", map[string]string{"Sec-Fetch-Site": "none"}, ""},
		{"a listed origin, cross-site", loopback, "127.0.0.1:8080", map[string]string{"Origin": "http://LOCALHOST:3000", "Sec-Fetch-Site": "cross-site"}, ""},
		{"a listed origin's other port", loopback, "127.0.0.1:8080", map[string]string{"Origin": "http://localhost:3001"}, CodeOriginForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := sent
			r := httptest.NewRequest("POST", "/openai/v1/chat/completions", nil)
			r.Host = tt.host
			r.Header.Set("Content-Type", "text/plain")
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, tt.local))
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, r)
			got := w.Header().Get("X-Till-Error")
			if got != tt.want {
				t.Errorf("got %d %q, want %q", w.Code, got, tt.want)
			}
			if tt.want != "" && (w.Code != http.StatusForbidden || sent != before) {
				t.Errorf("a refused request: status %d, reached the upstream: %v", w.Code, sent != before)
			}
		})
	}
}

// The admin listener refuses what the gateway refuses of web pages: on a
// loopback listener, a Host that is not a loopback name (DNS rebinding
// would let a page read /admin/routes), and a request from another origin
// (a form's POST to /admin/reload), even from an origin browser_origins
// lists for the routes; probes and the CLI pass.
func TestAdminRefusesWebPages(t *testing.T) {
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nbrowser_origins: [\"http://localhost:5173\"]\nroutes:\n  - {name: openai, preset: openai, upstream: https://api.example.com}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gw := New(NewSnapshot(cfg, secrets(time.Now())), Options{Audit: testAudit(io.Discard), Log: zerolog.Nop()})
	reloads := 0
	h := NewAdmin(AdminOptions{Gateway: gw, Reload: func() error { reloads++; return nil }})
	loopback := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9090}
	for _, tt := range []struct {
		name, method, url string
		header            map[string]string
		want              int
	}{
		{"rebound Host", "GET", "http://rebind.attacker.example:9090/admin/routes", nil, 403},
		{"cross-site reload", "POST", "http://127.0.0.1:9090/admin/reload", map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, 403},
		{"other origin", "POST", "http://127.0.0.1:9090/admin/reload", map[string]string{"Origin": "https://evil.example"}, 403},
		{"listed origin", "POST", "http://127.0.0.1:9090/admin/reload", map[string]string{"Origin": "http://localhost:5173", "Sec-Fetch-Site": "same-site"}, 403},
		{"CLI reload", "POST", "http://127.0.0.1:9090/admin/reload", nil, 200},
		{"localhost", "GET", "http://localhost:9090/admin/routes", nil, 200},
		{"probe", "GET", "http://127.0.0.1:9090/healthz", nil, 200},
	} {
		r := httptest.NewRequest(tt.method, tt.url, nil)
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, loopback))
		for k, v := range tt.header {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tt.want {
			t.Errorf("%s: %d %s, want %d", tt.name, w.Code, strings.TrimSpace(w.Body.String()), tt.want)
		}
	}
	if reloads != 1 {
		t.Errorf("%d reloads, want the CLI's one", reloads)
	}
}

// TestAdminTokenSchemeAnyCase: the admin listener takes its token as
// RFC 9110 reads an authorization scheme, in any case ("bearer TOKEN"
// from a script) and after one or more spaces (section 11.4: 1*SP), and
// refuses a wrong token, another scheme, or none; a refusal never echoes
// what was sent.
func TestAdminTokenSchemeAnyCase(t *testing.T) {
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: https://api.example.com}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gw := New(NewSnapshot(cfg, secrets(time.Now())), Options{Audit: testAudit(io.Discard), Log: zerolog.Nop()})
	const token = "admin-token-0123456789"
	sum := sha256.Sum256([]byte(token))
	h := NewAdmin(AdminOptions{Gateway: gw, TokenSHA256: hex.EncodeToString(sum[:])})
	for _, tt := range []struct {
		auth string
		want int
	}{
		{"Bearer " + token, 200},
		{"bearer " + token, 200},
		{"BEARER " + token, 200},
		{"Bearer   " + token, 200},
		{"Bearer\t" + token, 401}, // 1*SP: a tab does not part them
		{"Bearer other", 401},
		{"Bearer " + token + "x", 401},
		{"Bearer ", 401},
		{"Bearer", 401},
		{"Basic " + token, 401},
		{token, 401},
		{"", 401},
	} {
		r := httptest.NewRequest("GET", "http://127.0.0.1:9090/admin/routes", nil)
		if tt.auth != "" {
			r.Header.Set("Authorization", tt.auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tt.want {
			t.Errorf("Authorization %q: %d, want %d", strings.SplitN(tt.auth, " ", 2)[0], w.Code, tt.want)
		}
		if w.Code == http.StatusUnauthorized && strings.Contains(w.Body.String()+w.Header().Get("WWW-Authenticate"), token) {
			t.Errorf("Authorization %q: the refusal echoes the token: %q", strings.SplitN(tt.auth, " ", 2)[0], w.Body.String())
		}
	}
}

// TestBrowserOriginWithDefaultPort: a browser serializes an origin
// without its scheme's default port (RFC 6454, section 6.1), so a page at
// https://app.example.com sends just that. browser_origins written with
// the port (https://app.example.com:443), which the config takes, listed
// an origin no browser sends: the app was refused. Origins compare as
// origins; another port, scheme or host is still another origin.
func TestBrowserOriginWithDefaultPort(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer up.Close()
	yaml := baseYAML + "browser_origins: [\"https://app.example.com:443\", \"http://Intranet.example:80\", \"http://localhost:3000\"]\n"
	gw, _ := newTestGateway(t, yaml, up.URL, secrets(time.Now()))
	loopback := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	for _, tt := range []struct {
		origin, want string
	}{
		{"https://app.example.com", ""},
		{"https://app.example.com:443", ""},
		{"http://intranet.example", ""},
		{"http://localhost:3000", ""},
		{"http://app.example.com", CodeOriginForbidden},
		{"https://app.example.com:8443", CodeOriginForbidden},
		{"http://localhost", CodeOriginForbidden},
		{"https://app.example.com/", CodeOriginForbidden},
		{"https://user@app.example.com", CodeOriginForbidden},
		{"null", CodeOriginForbidden},
	} {
		r := httptest.NewRequest("POST", "/openai/v1/chat/completions", nil)
		r.Host = "127.0.0.1:8080"
		r.Header.Set("Origin", tt.origin)
		r.Header.Set("Sec-Fetch-Site", "cross-site")
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, loopback))
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, r)
		if got := w.Header().Get("X-Till-Error"); got != tt.want {
			t.Errorf("Origin %s: got %d %q, want %q", tt.origin, w.Code, got, tt.want)
		}
	}
}
