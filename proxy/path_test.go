package proxy

import (
	"net/url"
	"strings"
	"testing"
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

func FuzzCheckPath(f *testing.F) {
	for _, s := range []string{"/openai/v1/chat", "/a/../b", "/a/%2e%2e/b", "/a%2fb", `/a\b`, "/a/./b", "/%zz"} {
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
		if hasDotSegment(u.Path) || strings.ContainsAny(u.Path, "\\\x00\r\n%") {
			t.Errorf("accepted %q (decoded %q)", target, u.Path)
		}
		lower := strings.ToLower(u.EscapedPath())
		if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") {
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
