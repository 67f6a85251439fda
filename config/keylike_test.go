package config

import (
	"strings"
	"testing"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// keyLikeCases are values and whether they look like a key. Keys are built
// from parts, so that no scanner takes this file for a leak.
var keyLikeCases = []struct {
	name string
	s    string
	want bool
}{
	{"openai legacy", "sk-" + strings.Repeat("T3BlbkFJ", 6), true},
	{"openai project", "sk-proj-" + strings.Repeat("Zx9_Qw8-", 8), true},
	{"anthropic", "sk-ant-api03-" + strings.Repeat("aB9-", 20), true},
	{"stripe secret", "sk_live_" + strings.Repeat("51Hx", 6), true},
	{"stripe restricted", "rk_live_" + strings.Repeat("51Hx", 6), true},
	{"stripe test", "sk_test_" + strings.Repeat("51Hx", 6), true},
	{"slack bot", "xoxb-" + "2048-4096-" + "aBcDeFgHiJ", true},
	{"slack user", "xoxp-" + "1234567890-" + "0987654321", true},
	{"github classic", "ghp_" + strings.Repeat("a1B2", 9), true},
	{"github fine-grained", "github_pat_" + strings.Repeat("11AB_cd", 12), true},
	{"aws access key id", "AKIA" + strings.Repeat("IOSF", 4), true},
	{"google", "AIza" + strings.Repeat("SyD-", 9), true},
	{"sendgrid", "SG." + strings.Repeat("aB1", 8) + "." + strings.Repeat("cD2", 15), true},
	{"hugging face", "hf_" + strings.Repeat("AbC1", 9), true},
	{"groq", "gsk_" + strings.Repeat("Xy7z", 13), true},
	{"jwt", "eyJhbGciOiJIUzI1NiJ9" + "." + "eyJzdWIiOiIxMjM0NTY3ODkwIn0" + "." + "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", true},
	{"bearer and a key", "Bearer " + "sk-" + strings.Repeat("T3BlbkFJ", 6), true},
	{"key in quotes", `"` + "AKIA" + strings.Repeat("IOSF", 4) + `"`, true},
	{"key after a comma", "v2," + "ghp_" + strings.Repeat("a1B2", 9), true},
	{"random base62, 32", "q8Ff2Lk9Zr1Xm4Vt7Pw3Nd6Hs5Bj0Yc2", true},
	{"random base62, 40", "Zq3nR8vT1kLm9XcW2bYp7Hs4Gd6Jf0Ae5UoI8rKt", true},
	{"random base64url with a dash", "Vq7-Lr2Kx9Zm4Tn8Wb1Yc6Hd3Jf5Ga0Ps7Qe", true},

	{"empty", "", false},
	{"placeholder format", "Bearer {secret}", false},
	{"version date", "2023-06-01", false},
	{"media type", "application/json", false},
	{"openai beta", "assistants=v2", false},
	{"anthropic betas", "prompt-caching-2024-07-31,max-tokens-3-5-sonnet-2024-07-15", false},
	{"capitalised dated flag", "Max-Tokens-3-5-Sonnet-2024-07-15", false},
	{"uuid", "3f2504e0-4f89-11d3-9a0c-0305e82c3301", false},
	{"upper-case uuid", "3F2504E0-4F89-11D3-9A0C-0305E82C3301", false},
	{"sha-256 hex", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", false},
	{"camel case identifier", "AcmeBillingServiceClient2024Production", false},
	{"user agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36", false},
	{"openai organization", "org-AbCdEf1234567890GhIjKlMn", false},
	{"openai project id", "proj_AbCdEf1234567890GhIjKlMn", false},
	{"prefix then a short word", "sk-hardcoded", false},
	{"prefix then lower-case words", "sk-learn-preprocessing-pipeline", false},
	{"dotted version", "v1.2.3-beta.4+build.2024", false},
	{"url", "https://example.com/callback?state=1", false},
	{"31 random characters", "q8Ff2Lk9Zr1Xm4Vt7Pw3Nd6Hs5Bj0Yc", false},
	{"no digits", "qFfLkZrXmVtPwNdHsBjYcGeQaWsEdRfTg", false},
	{"repeated", "aA1-aA1-aA1-aA1-aA1-aA1-aA1-aA1-aA1", false},
	{"aws prefix, lower case", "AKIA" + strings.Repeat("iosf", 4), false},
}

func TestLooksLikeKey(t *testing.T) {
	for _, tt := range keyLikeCases {
		t.Run(tt.name, func(t *testing.T) {
			if got := looksLikeKey(tt.s); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// headerConfig is a config with one route whose header X-Test is v,
// written by the YAML encoder so that any string can be the value.
func headerConfig(t *testing.T, v string) []byte {
	t.Helper()
	doc := map[string]any{
		"version": 1,
		"routes": []any{map[string]any{
			"name": "x", "preset": "openai",
			"headers": map[string]string{"X-Test": v},
		}},
	}
	data, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// FuzzKeyLooking checks the detector's properties, and that a config
// refuses a key-looking header value without ever repeating it, and
// accepts any other.
func FuzzKeyLooking(f *testing.F) {
	for _, tt := range keyLikeCases {
		f.Add(tt.s)
	}
	for _, s := range seedLines(f, "templates.txt") {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		key := looksLikeKey(s)
		if key != looksLikeKey(s) {
			t.Fatal("not deterministic")
		}
		if key && len(s) < 15 {
			t.Fatalf("%q is too short to be a key", s)
		}
		if key && !looksLikeKey("x "+s+" y") {
			t.Fatalf("%q looks like a key, but not with text around it", s)
		}
		if !strings.ContainsFunc(s, func(r rune) bool { return r < 0x80 && isKeyChar(byte(r)) }) && key {
			t.Fatalf("%q has no key character", s)
		}
		if tmpl, err := ParseTemplate("{secret}" + s); err == nil && tmpl.hasLiteralKey() != key {
			t.Fatalf("template literal %q: got %v, want %v", s, tmpl.hasLiteralKey(), key)
		}

		if !utf8.ValidString(s) || strings.ContainsFunc(s, isControl) {
			return // refused as a header value for other reasons
		}
		c, err := Parse("till.yaml", headerConfig(t, s), "/etc/till")
		switch {
		case key && err == nil:
			t.Fatalf("a header value %q that looks like a key was accepted", s)
		case key && !strings.Contains(err.Error(), "looks like a literal key (not shown)"):
			t.Fatalf("got %v, want the literal key error", err)
		case key && strings.Contains(err.Error(), s):
			t.Fatalf("the error repeats the value: %v", err)
		case !key && err != nil && strings.Contains(err.Error(), "literal key"):
			t.Fatalf("%q does not look like a key, but: %v", s, err)
		case !key && err == nil && c.Routes[0].Headers["X-Test"] != s:
			t.Fatalf("got header %q, want %q", c.Routes[0].Headers["X-Test"], s)
		}
	})
}

// TestKeyAnywhereRefused: a key pasted into any value of the config, not
// only a header, an inject template or a secret name, is refused without
// being shown: accepted, it was logged at each start and shown by till
// check. limits.redis alone may hold a password.
func TestKeyAnywhereRefused(t *testing.T) {
	k := fakeOpenAIKey
	for _, tt := range []struct{ where, yaml string }{
		{"routes[0].prefix", "routes: [{name: a, preset: openai, prefix: /" + k + "}]"},
		{"routes[0].upstream", "routes: [{name: a, preset: openai, upstream: 'https://api.example.com/" + k + "'}]"},
		{"routes[0].inject.header", "routes: [{name: a, upstream: 'https://x.example', inject: {header: " + k + "}}]"},
		{"routes[0].inject.query", "routes: [{name: a, upstream: 'https://x.example', inject: {query: " + k + "}}]"},
		{"routes[0].strip[1]", "routes: [{name: a, preset: openai, strip: [X-Org, " + k + "]}]"},
		{"routes[0].strip_query[0]", "routes: [{name: a, preset: openai, strip_query: [" + k + "]}]"},
		{"routes[0].allow.paths[0]", "routes: [{name: a, preset: openai, allow: {paths: ['/v1/" + k + "']}}]"},
		{"routes[0].allow.models[0]", "routes: [{name: a, preset: openai, allow: {models: [" + k + "]}}]"},
		{"audit.file", "audit: {file: /var/log/" + k + "}\nroutes: []"},
		{"vault.path", "vault: {path: /etc/till/" + k + "}\nroutes: []"},
	} {
		_, err := Parse("till.yaml", []byte("version: 1\n"+tt.yaml+"\n"), "/etc/till")
		switch {
		case err == nil:
			t.Errorf("%s: a key was accepted", tt.where)
		case !strings.Contains(err.Error(), tt.where+": looks like a literal key (not shown)"):
			t.Errorf("%s: got %v, want the literal key error there", tt.where, err)
		case strings.Contains(err.Error(), k[8:]):
			t.Errorf("%s: the error shows the key: %v", tt.where, err)
		}
	}
	y := "version: 1\nlimits: {redis: 'redis://:" + k[8:] + "@127.0.0.1:6379'}\nroutes: []\n"
	if _, err := Parse("till.yaml", []byte(y), "/etc/till"); err != nil {
		t.Errorf("a password in limits.redis: %v", err)
	}
}

// TestIDsInPathsAccepted: paths and URLs hold ids that look random (a
// Twilio account's, a Google Sheet's, a Cloudflare account's): there only
// a provider's key prefix is refused, while a random run in a value that
// is no path still is.
func TestIDsInPathsAccepted(t *testing.T) {
	for _, y := range []string{
		"routes: [{name: tw, preset: twilio, secret: tw, allow: {paths: ['/2010-04-01/Accounts/AC3f9a2b71c04d5e86f7a1b2c3d4e5f607/Messages.json']}}]",
		"routes: [{name: tw, preset: twilio, secret: tw, upstream: 'https://api.twilio.com/2010-04-01/Accounts/AC7e4b19d03a5c82f6e1d0b4a9c3f85e27'}]",
		"routes: [{name: g, preset: openai, secret: g, allow: {paths: ['/v4/spreadsheets/1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms/*']}}]",
		"routes: [{name: o, preset: openai, secret: o, upstream: 'https://gateway.ai.cloudflare.com/v1/0123456789abcdef0123456789abcdef/my-gw/openai'}]",
	} {
		if _, err := Parse("till.yaml", []byte("version: 1\n"+y+"\n"), "/etc/till"); err != nil {
			t.Errorf("%s: %v", y, err)
		}
	}
	y := "version: 1\nroutes: [{name: a, preset: openai, strip: [X-Org, 1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms]}]\n"
	if _, err := Parse("till.yaml", []byte(y), "/etc/till"); err == nil || !strings.Contains(err.Error(), "routes[0].strip[1]: looks like a literal key (not shown)") {
		t.Errorf("a random run as a strip entry: %v", err)
	}
}

// TestKeyNotShownByOtherProblems: a key pasted where a message quotes the
// value (a name given twice, a path segment, a source) is refused for
// that, not as a key, since its line has a problem already; the message
// must still not show it.
func TestKeyNotShownByOtherProblems(t *testing.T) {
	k := fakeOpenAIKey
	lower := "sk-" + strings.Repeat("ab3d", 8) // a key that is a valid name
	src := "sources: [{name: x, type: files, dir: /tmp}]\n"
	for _, tt := range []struct{ where, yaml string }{
		{"routes[0].secret[1]", src + "routes: [{name: a, preset: openai, secret: ['x:" + k + "', 'x:" + k + "']}]"},
		{"routes[1].name", "routes: [{name: " + lower + ", preset: openai}, {name: " + lower + ", preset: openai, prefix: /b}]"},
		{"routes[0].secret", src + "routes: [{name: a, preset: openai, secret: '" + lower + ":p'}]"},
		{"routes[0].allow.paths[0]", "routes: [{name: a, preset: openai, allow: {paths: ['/v1/" + k + "%zz']}}]"},
		{"sources[1].name", "sources: [{name: " + lower + ", type: files, dir: /a}, {name: " + lower + ", type: files, dir: /b}]\nroutes: []"},
		{"budgets[1].name", "routes: []\nbudgets: [{name: " + lower + ", window: 1h, requests: 1}, {name: " + lower + ", window: 1h, requests: 1}]"},
	} {
		_, err := Parse("till.yaml", []byte("version: 1\n"+tt.yaml+"\n"), "/etc/till")
		switch {
		case err == nil:
			t.Errorf("%s: parsed", tt.where)
		case !strings.Contains(err.Error(), tt.where+": "):
			t.Errorf("%s: got %v, want a problem there", tt.where, err)
		case strings.Contains(err.Error(), k[8:]) || strings.Contains(err.Error(), lower[3:]) || looksLikeKey(err.Error()):
			t.Errorf("%s: the error shows the key: %v", tt.where, err)
		}
	}
}

// TestTextHoldsKey: a helper's trace that shows a URL and, elsewhere, a
// key without a provider's prefix holds a key, though HoldsKey (which
// lets a path's random ids by) does not say so of it.
func TestTextHoldsKey(t *testing.T) {
	const key = "Xk4Qa7Zp2Qa7Zp2Qa7Zp2Qa7Zp2Qa7Zp2Qa7Zp2"
	trace := "+ curl -s https://vault.example/v1/secret/openai\n+ key=" + key + "\nerror: refused\n"
	if !TextHoldsKey(trace) {
		t.Errorf("TextHoldsKey(%q) = false, want true", trace)
	}
	if HoldsKey(trace) {
		t.Errorf("HoldsKey(%q) = true: the two judges no longer differ, and TextHoldsKey is not needed", trace)
	}
	for _, said := range []string{"[ERROR] You are not currently signed in.", "item not found: vaults/prod/items/openai-2024", "curl: (6) Could not resolve host: vault.example"} {
		if TextHoldsKey(said) {
			t.Errorf("TextHoldsKey(%q) = true, want a plain message let by", said)
		}
	}
}
