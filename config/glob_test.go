package config

import "testing"

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		glob, path string
		want       bool
	}{
		{"/v1/models", "/v1/models", true},
		{"/v1/models", "/v1/models/", false},
		{"/v1/models", "/v1/Models", false},
		{"/v1/models", "/v1/models/x", false},
		{"/v1/models", "/v1", false},
		{"/v1/models/*", "/v1/models/gpt-4o", true},
		{"/v1/models/*", "/v1/models/", false},
		{"/v1/models/*", "/v1/models", false},
		{"/v1/models/*", "/v1/models/a/b", false},
		{"/v1/models/*", "/v1/models/..", false},
		{"/v1/*/completions", "/v1/chat/completions", true},
		{"/v1/*/completions", "/v1//completions", false},
		// Tomcat, Jetty and Spring drop a segment's ";parameters"
		// before routing: ";x" is an empty segment to them.
		{"/v1/models/*", "/v1/models/;x", false},
		{"/v1/models/*", "/v1/models/;", false},
		{"/v1/*/completions", "/v1/;x/completions", false},
		{"/v1/models/*", "/v1/models/gpt-4o;x", true},
		{"/v1/**", "/v1", true},
		{"/v1/**", "/v1/", true},
		{"/v1/**", "/v1/a", true},
		{"/v1/**", "/v1/a/b/c", true},
		{"/v1/**", "/v2/a", false},
		{"/v1/**", "/v1/../admin", false},
		{"/v1/**", "/v1/a/./b", false},
		{"/v1/**", "/v1x", false},
		{"/**", "/", true},
		{"/**", "/anything/at/all", true},
		{"/", "/", true},
		{"/", "/a", false},
		{"/*", "/", false},
		{"/*", "/a", true},
		{"/v1/models", "v1/models", false},
		{"/v1/models", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.glob+" "+tt.path, func(t *testing.T) {
			g, err := ParseGlob(tt.glob)
			if err != nil {
				t.Fatal(err)
			}
			if got := g.Match(tt.path); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			if g.String() != tt.glob {
				t.Errorf("String: got %q, want %q", g.String(), tt.glob)
			}
		})
	}
	var zero Glob
	if zero.Match("/") {
		t.Error("zero Glob matched")
	}
}

func TestParseGlobErrors(t *testing.T) {
	tests := []struct {
		glob, want string
	}{
		{"v1/models", `must start with "/"`},
		{"", `must start with "/"`},
		{"/a/**/b", `"**" is only allowed as the last segment`},
		{"/a/b*", `"*" must be a whole segment`},
		{"/a/***", `"*" must be a whole segment`},
		{"/a//b", `must not have empty segments ("//" or a trailing "/")`},
		{"/a/", `must not have empty segments ("//" or a trailing "/")`},
		{"/a/../b", `must not have "." or ".." segments`},
		{"/a b", "segments may use only URL path characters (letters, digits and -._~!$&'()+,;=:@%)"},
		{"/a?b", "segments may use only URL path characters (letters, digits and -._~!$&'()+,;=:@%)"},
		{"/a/%zz", `segment "%zz" has an invalid percent-encoding`},
		{"/a/%2e%2E", `segment "%2e%2E" encodes a dot segment, which no request path that till forwards holds`},
		{"/a/%2A", `segment "%2A" encodes a "*", which would read as the wildcard`},
		{"/a%2Fb", `segment "a%2Fb" encodes a slash, backslash, percent sign or control character, which no request path that till forwards holds`},
		{"/a/%2541", `segment "%2541" encodes a slash, backslash, percent sign or control character, which no request path that till forwards holds`},
		{"/a/%0A", `segment "%0A" encodes a slash, backslash, percent sign or control character, which no request path that till forwards holds`},
	}
	for _, tt := range tests {
		t.Run(tt.glob, func(t *testing.T) {
			_, err := ParseGlob(tt.glob)
			if got := errString(err); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestGlobMatchAllocs(t *testing.T) {
	g, err := ParseGlob("/v1/*/completions/**")
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		g.Match("/v1/chat/completions/a/b")
	})
	if allocs != 0 {
		t.Errorf("Match allocated %v times, want 0", allocs)
	}
}

func TestGlobCanMatchUnder(t *testing.T) {
	for _, tt := range []struct {
		glob, base string
		want       bool
	}{
		{"/v1/items", "", true},
		{"/v1/items", "/", true},
		{"/v2/items", "/v2", true},
		{"/v2/items", "/v2/", true},
		{"/v2", "/v2", true},
		{"/*/items", "/v2", true},
		{"/**", "/v2/beta", true},
		{"/v2/**", "/v2/beta", true},
		{"/v1/items", "/v2", false},
		{"/v2", "/v2/beta", false},
		{"/v2/*", "/v2/beta", true},
		{"/", "/v2", false},
	} {
		g, err := ParseGlob(tt.glob)
		if err != nil {
			t.Fatal(err)
		}
		if got := g.CanMatchUnder(tt.base); got != tt.want {
			t.Errorf("%s under %q: got %v, want %v", tt.glob, tt.base, got, tt.want)
		}
	}
}
