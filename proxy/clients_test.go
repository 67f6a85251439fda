package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

// TestClientFromLinkLocal: a client allowed from a link-local range is
// admitted from it, whatever interface (zone) its connection came
// through, and still refused outside it.
func TestClientFromLinkLocal(t *testing.T) {
	c := &client{name: "web", cidrs: []netip.Prefix{netip.MustParsePrefix("fe80::/10"), netip.MustParsePrefix("10.0.0.0/8")}}
	for _, tt := range []struct {
		addr string
		want bool
	}{
		{"[fe80::1]:1000", true},
		{"[fe80::1%eth0]:1000", true},
		{"[fe80::1%2]:1000", true},
		{"[::ffff:10.1.2.3]:1000", true},
		{"[fd00::1%eth0]:1000", false},
		{"[2001:db8::1]:1000", false},
		{"192.168.1.1:1000", false},
	} {
		if got := c.from(tt.addr); got != tt.want {
			t.Errorf("from(%q): got %v, want %v", tt.addr, got, tt.want)
		}
	}
}

// TestTokenAfterBasicAsIs: a token after "Basic" as it is, not encoded
// (an SDK that sends its key so, where a route's inject.format is
// "Basic {secret}", a key the provider gives already encoded), names its
// client as after any other scheme, and never reaches an upstream, nor a
// host without a route: a till token holds "_", so it is never Basic
// credentials.
func TestTokenAfterBasicAsIs(t *testing.T) {
	for _, tok := range []string{handMadeToken, testToken} {
		for _, v := range []string{"Basic " + tok, "basic\t" + tok} {
			if got := tokenFrom(v); got != tok {
				t.Errorf("tokenFrom(%q): got %q, want %q", v, got, tok)
			}
		}
	}
	sum := sha256.Sum256([]byte(testToken))
	clients := "clients:\n  - {name: web, token_sha256: " + handMadeDigest() + "}\n  - {name: app, token_sha256: " + hex.EncodeToString(sum[:]) + "}\n"
	t.Run("route", func(t *testing.T) {
		up, seen := seenUpstream(t)
		gw, records := newTestGateway(t, "version: 1\n"+clients+"routes:\n"+
			"  - {name: api, prefix: /api, upstream: \""+up.URL+"\", secret: openai, inject: {header: Authorization, format: \"Basic {secret}\"}, clients: [web]}\n"+
			"  - {name: open, prefix: /open, upstream: \""+up.URL+"\", secret: openai, inject: {header: X-Api-Key, format: \"{secret}\"}}\n", "", secrets(time.Now()))
		for _, path := range []string{"/open/v1/things", "/api/v1/things"} {
			in := httptest.NewRequest("GET", path, nil)
			in.Header.Set("Authorization", "Basic "+handMadeToken)
			in.Header.Set("X-Session", "Basic "+handMadeToken)
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, in)
			if w.Code != 200 {
				t.Fatalf("%s, Authorization: Basic <web's token>: got %d %s, want 200", path, w.Code, w.Body)
			}
			got := (<-seen).Header
			if v := got.Get("X-Session"); v != "" {
				t.Errorf("%s: the upstream got X-Session %q, a client's token", path, v)
			}
			recs := records.records(t)
			if c := recs[len(recs)-1]["client"]; c != "web" {
				t.Errorf("%s: recorded client %v, want web", path, c)
			}
		}
	})
	t.Run("relay", func(t *testing.T) {
		up, seen := seenUpstream(t)
		gw, _ := newTestGateway(t, "version: 1\nforward: {enabled: true, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\n"+clients+"routes: []\n", "", nil)
		in := httptest.NewRequest("GET", up.URL+"/p", nil)
		in.Header.Set("Authorization", "Basic "+handMadeToken)
		in.Header.Set("X-Auth", "Basic "+handMadeToken)
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, in)
		if w.Code != 200 {
			t.Fatalf("got %d, want 200 from the host", w.Code)
		}
		got := (<-seen).Header
		for _, name := range []string{"Authorization", "X-Auth"} {
			if v := got.Get(name); v != "" {
				t.Errorf("the host without a route got %s %q, a client's token", name, v)
			}
		}
	})
}
