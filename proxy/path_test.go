package proxy

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestCheckPath(t *testing.T) {
	tests := []struct {
		name   string
		target string
		ok     bool
	}{
		{"plain", "/openai/v1/chat/completions", true},
		{"trailing slash", "/openai/v1/", true},
		{"encoded space", "/openai/v1/a%20b", true},
		{"encoded colon", "/gemini/v1/models/x%3AgenerateContent", true},
		{"dots inside a segment", "/openai/v1/a..b/file.json", true},
		{"dot dot", "/openai/../admin", false},
		{"dot dot at end", "/openai/..", false},
		{"dot", "/openai/./v1", false},
		{"encoded dot dot", "/openai/%2e%2e/admin", false},
		{"mixed encoded dot dot", "/openai/.%2E/admin", false},
		{"encoded slash", "/openai/v1%2Fmodels", false},
		{"encoded slash lower", "/openai/v1%2fmodels", false},
		{"encoded backslash", "/openai/v1%5Cmodels", false},
		{"backslash", `/openai/v1\models`, false},
		{"encoded NUL", "/openai/v1%00", false},
		{"encoded newline", "/openai/v1%0a", false},
		{"no leading slash", "openai/v1", false},
		{"dot dot semicolon", "/openai/v1/..;/admin", false},
		{"dot semicolon", "/openai/v1/.;x/admin", false},
		{"encoded dot dot semicolon", "/openai/v1/%2e%2e%3b/admin", false},
		{"dot dot space", "/openai/v1/..%20/admin", false},
		{"double-encoded dot dot", "/openai/v1/%252e%252e/admin", false},
		{"double-encoded slash", "/openai/v1%252fmodels", false},
		{"semicolon elsewhere", "/openai/v1/models;v=2", true},
		{"encoded UTF-8", "/openai/v1/caf%C3%A9", true},
		{"a till client token", "/openai/v1/models/till_PathToken0123456789abcdefghijKLMNOPQRSTU", false},
		{"an encoded till client token", "/openai/v1/till%5FPathToken0123456789abcdefghijKLMNOPQRSTU/x", false},
		{"a word that starts as a token", "/metrics/till_requests_total", true},
		{"overlong slash", "/openai/v1/files/..%C0%AF..%C0%AFadmin", false},
		{"three-byte overlong slash", "/openai/v1/files/..%E0%80%AF..%E0%80%AFadmin", false},
		{"stray 0xFF", "/openai/v1/files/a%FFb", false},
		{"encoded surrogate", "/openai/v1/%ED%A0%80", false},
		// Left to the route (target.modelPath): a Bedrock model ARN.
		{"encoded slash in a model id", "/b/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x%3A0/invoke", true},
		{"encoded slash, no operation", "/b/model/a%2Fb/other", false},
		{"encoded slash before /model/", "/b%2Fc/model/a/invoke", false},
		{"encoded slash after the id", "/b/model/a/invoke%2F", false},
		{"encoded backslash in a model id", "/b/model/a%5Cb/invoke", false},
		{"encoded dot dot in a model id", "/b/model/a%2F..%2Fb/invoke", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, decoded := splitTarget(t, tt.target)
			reason := checkPath(raw, decoded)
			if (reason == "") != tt.ok {
				t.Errorf("checkPath(%q): got %q, want ok=%v", tt.target, reason, tt.ok)
			}
		})
	}
}

func TestCheckPathInvalidEscape(t *testing.T) {
	// net/http refuses these before a handler runs; checkPath refuses them
	// too, for callers that build paths some other way.
	for _, raw := range []string{"/a%zz", "/a%2", "/a%"} {
		if checkPath(raw, "/a") == "" {
			t.Errorf("checkPath(%q): accepted an invalid percent-encoding", raw)
		}
	}
}

// splitTarget returns a request target's raw and decoded path as net/http
// presents them to a handler.
func splitTarget(t testing.TB, target string) (string, string) {
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return target, target
	}
	return u.RawPath, u.Path
}

// TestInvalidUTF8PathRefused: checkPath refused %2F and %5C but not an
// overlong UTF-8 slash (%C0%AF) or other invalid UTF-8, which some servers
// (old IIS, lenient Java decoders) read as "/": with allow paths:
// [/v1/files/*], /v1/files/..%C0%AF..%C0%AFadmin is one segment to till
// and ../../admin to such an upstream. It gets 400 bad_request, live and
// in till test alike, and nothing is sent.
func TestInvalidUTF8PathRefused(t *testing.T) {
	sent := false
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { sent = true }))
	defer up.Close()
	gw, _ := newTestGateway(t, "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}, allow: {paths: [\"/v1/files/*\"]}}\n", up.URL, secrets(time.Now()))
	for _, target := range []string{
		"/openai/v1/files/..%C0%AF..%C0%AFadmin",
		"/openai/v1/files/..%E0%80%AF..%E0%80%AFadmin",
		"/openai/v1/files/a%FFb",
	} {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			t.Fatal(err)
		}
		if reason := checkPath(u.RawPath, u.Path); reason == "" {
			t.Errorf("checkPath(%q) accepted a path that is not valid UTF-8", target)
		}
		r := httptest.NewRequest("GET", target, nil)
		r.RemoteAddr = "127.0.0.1:1234"
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, r)
		if live := w.Header().Get("X-Till-Error"); w.Code != http.StatusBadRequest || live != CodeBadRequest || sent {
			t.Errorf("GET %s: %d %q, sent %v; want 400 bad_request, nothing sent", target, w.Code, live, sent)
		}
		if v := gw.Snapshot().Explain("GET", target, "", "127.0.0.1:1234", "", time.Now()); v.Allowed || v.Code != CodeBadRequest {
			t.Errorf("till test GET %s: %q (allowed %v); want bad_request", target, v.Code, v.Allowed)
		}
	}
}

func FuzzCheckPath(f *testing.F) {
	for _, s := range []string{"/openai/v1/chat", "/a/../b", "/a/%2e%2e/b", "/a%2fb", `/a\b`, "/a/./b", "/%zz", "/a/..%C0%AF..", "/caf%C3%A9", "/b/model/a%2Fb/invoke", "/b/MODEL/a%2F%2E%2E/converse"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		if checkPath(u.RawPath, u.Path) != "" {
			return
		}
		// An accepted path has nothing a normaliser could act on.
		if hasDotSegment(u.Path) || strings.ContainsAny(u.Path, "\\\x00\r\n%") || !utf8.ValidString(u.Path) {
			t.Errorf("accepted %q (decoded %q)", target, u.Path)
		}
		// An encoded slash only where a Bedrock model id may be, for
		// the route to decide (target.modelPath).
		lo, hi := modelSpan(u.RawPath)
		outside := strings.ToLower(u.RawPath[:lo] + u.RawPath[hi:])
		if strings.Contains(outside, "%2f") || strings.Contains(strings.ToLower(u.RawPath), "%5c") {
			t.Errorf("accepted an encoded slash in %q", target)
		}
	})
}

func TestWithoutParam(t *testing.T) {
	tests := []struct{ raw, want string }{
		{"", ""},
		{"key=a", ""},
		{"key=a&x=1", "x=1"},
		{"x=1&key=a&y=2&key=b", "x=1&y=2"},
		{"%6bey=a&x=1", "x=1"},
		{"keys=a&x=1", "keys=a&x=1"},
		{"key&x=1", "x=1"},
		{"bad%zz=1&x=1", "x=1"},
		{"a=1;key=attacker&key=b", "a=1"},
	}
	for _, tt := range tests {
		if got := withoutParam(tt.raw, "key"); got != tt.want {
			t.Errorf("withoutParam(%q): got %q, want %q", tt.raw, got, tt.want)
		}
	}
}
