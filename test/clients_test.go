package test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// addClient runs till client add in dir and returns the token and the
// config lines it printed.
func addClient(t *testing.T, dir, name string, args ...string) (string, string) {
	t.Helper()
	out, errOut, code := runTill(t, dir, "", nil, append([]string{"client", "add", name}, args...)...)
	if code != 0 {
		t.Fatalf("till client add: exit %d: %s", code, errOut)
	}
	tok := regexp.MustCompile(`till_[0-9A-Za-z]{40}`).FindString(out)
	if tok == "" {
		t.Fatalf("no token in %q", out)
	}
	i := strings.Index(out, "  - name: ")
	if i < 0 {
		t.Fatalf("no config lines in %q", out)
	}
	lines, _, _ := strings.Cut(out[i:], "\n\n")
	return tok, lines + "\n"
}

func TestClients(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := t.TempDir()
	webTok, webLines := addClient(t, dir, "web")
	batchTok, batchLines := addClient(t, dir, "batch")
	farTok, farLines := addClient(t, dir, "far", "--cidr", "10.0.0.0/8")
	sum := sha256.Sum256([]byte(webTok))
	if !strings.Contains(webLines, hex.EncodeToString(sum[:])) {
		t.Fatalf("client add's token_sha256 is not the SHA-256 of its token")
	}
	cfg := fmt.Sprintf(`version: 1
clients:
%s%s%sroutes:
  - name: openai
    preset: openai
    upstream: %s
    clients: [web, far]
  - name: open
    preset: openai
    upstream: %s
    secret: openai
  - name: limited
    preset: openai
    upstream: %s
    secret: openai
    rate: 2/m
`, webLines, batchLines, farLines, u.URL, u.URL, u.URL)
	tl := startTill(t, cfg, map[string]string{"openai": openaiKey}, u.caFile)
	basic := func(user, pass string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}
	tests := []struct {
		name, path, header, value string
		status                    int
		client, code              string
	}{
		{"X-Till-Token", "/openai/v1/models", "X-Till-Token", webTok, 200, "web", ""},
		{"the injected header, as an SDK sends it", "/openai/v1/models", "Authorization", "Bearer " + webTok, 200, "web", ""},
		{"Proxy-Authorization Basic", "/openai/v1/models", "Proxy-Authorization", basic("web", webTok), 200, "web", ""},
		{"Proxy-Authorization Bearer", "/openai/v1/models", "Proxy-Authorization", "Bearer " + webTok, 200, "web", ""},
		{"no token", "/openai/v1/models", "Authorization", "Bearer sk-dummy", 401, "anonymous", "client_unauthenticated"},
		{"unknown token", "/openai/v1/models", "X-Till-Token", "till_" + strings.Repeat("x", 40), 401, "anonymous", "client_unauthenticated"},
		{"client not on the route", "/openai/v1/models", "X-Till-Token", batchTok, 403, "batch", "client_forbidden"},
		{"client outside its cidrs", "/openai/v1/models", "X-Till-Token", farTok, 403, "far", "client_forbidden"},
		{"open route, anonymous", "/open/v1/models", "Authorization", "Bearer sk-dummy", 200, "anonymous", ""},
		{"open route, known client recorded", "/open/v1/models", "X-Till-Token", batchTok, 200, "batch", ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(u.requests())
			req := newRequest(t, "GET", tl.url(tt.path), nil)
			req.Header.Set(tt.header, tt.value)
			resp, body := do(t, req)
			if resp.StatusCode != tt.status {
				t.Fatalf("status: got %d, want %d (%s)", resp.StatusCode, tt.status, body)
			}
			if tt.code != "" {
				if got := tillError(t, resp, body); got != tt.code {
					t.Errorf("code: got %q, want %q", got, tt.code)
				}
				if len(u.requests()) != before {
					t.Error("a refused request reached the upstream")
				}
			} else {
				got := u.last(t)
				if v := got.Header.Values("Authorization"); len(v) != 1 || v[0] != "Bearer "+openaiKey {
					t.Error("the upstream did not get exactly the real key")
				}
				for name, vs := range got.Header {
					for _, v := range vs {
						if strings.Contains(v, "till_") {
							t.Errorf("a till token reached the upstream in %s", name)
						}
					}
				}
			}
			if tt.status == 401 && resp.Header.Get("Proxy-Authenticate") != "" {
				t.Error("reverse mode answered with Proxy-Authenticate")
			}
			recs := tl.waitAudit(i + 1)
			if r := recs[i]; r["client"] != tt.client {
				t.Errorf("audit client: got %v, want %q", r["client"], tt.client)
			}
		})
	}

	t.Run("rate limit", func(t *testing.T) {
		var statuses []int
		var retry string
		for i := 0; i < 3; i++ {
			req := newRequest(t, "GET", tl.url("/limited/v1/models"), nil)
			req.Header.Set("X-Till-Token", webTok)
			resp, body := do(t, req)
			statuses = append(statuses, resp.StatusCode)
			if resp.StatusCode == 429 {
				retry = resp.Header.Get("Retry-After")
				if tillError(t, resp, body) != "rate_limited" {
					t.Error("429 without rate_limited")
				}
			}
		}
		if fmt.Sprint(statuses) != "[200 200 429]" {
			t.Errorf("statuses: got %v, want [200 200 429] (2/m allows a burst of 2)", statuses)
		}
		if n, err := strconv.Atoi(retry); err != nil || n < 1 || n > 30 {
			t.Errorf("Retry-After: got %q, want about 30 seconds", retry)
		}
		// Another client has its own bucket.
		req := newRequest(t, "GET", tl.url("/limited/v1/models"), nil)
		req.Header.Set("X-Till-Token", batchTok)
		if resp, _ := do(t, req); resp.StatusCode != 200 {
			t.Errorf("another client: got %d, want 200", resp.StatusCode)
		}
	})
	tl.stop()
	tl.assertNoLeak([]string{openaiKey, webTok, batchTok, farTok})
}

// TestClientTokenInRouteFormat: an app gives its till token where its SDK
// puts the key, in the format of the header the route injects, scheme
// and all: DeepL's SDKs send "Authorization: DeepL-Auth-Key KEY". That
// names the client, and neither the token nor the app's scheme line
// reaches the upstream.
func TestClientTokenInRouteFormat(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	tok, lines := addClient(t, t.TempDir(), "web")
	cfg := `version: 1
clients:
` + lines + `routes:
  - name: deepl
    upstream: ` + u.URL + `
    secret: deepl
    inject: {header: Authorization, format: "DeepL-Auth-Key {secret}"}
    clients: [web]
`
	tl := startTill(t, cfg, map[string]string{"deepl": openaiKey}, u.caFile)
	req := newRequest(t, "POST", tl.url("/deepl/v2/translate"), strings.NewReader(`{"text":["hi"]}`))
	req.Header.Set("Authorization", "DeepL-Auth-Key "+tok)
	resp, body := do(t, req)
	if resp.StatusCode != 200 {
		t.Fatalf("Authorization: DeepL-Auth-Key <web's token>: got %d %s, want 200", resp.StatusCode, body)
	}
	if v := u.last(t).Header.Values("Authorization"); len(v) != 1 || v[0] != "DeepL-Auth-Key "+openaiKey {
		t.Error("the upstream did not get exactly the route's key")
	}
	if r := tl.waitAudit(1)[0]; r["client"] != "web" {
		t.Errorf("audit client: got %v, want web", r["client"])
	}
	tl.stop()
	tl.assertNoLeak([]string{openaiKey, tok})
}
