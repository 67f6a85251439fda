package proxy

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
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
