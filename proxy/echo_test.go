package proxy

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tillgw/till/vault"
)

// percentAll percent-encodes every byte of s, in upper or lower case.
func percentAll(s string, upper bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		f := "%%%02x"
		if upper {
			f = "%%%02X"
		}
		fmt.Fprintf(&b, f, s[i])
	}
	return b.String()
}

func TestEchoesEveryEncodingAtEveryOffset(t *testing.T) {
	const key = "sk-proj-Zq8vR2mKx7Lp0TbW4yNc9HfJ1sDgE6uA3oVi5XeQ"
	const core = "Zq8vR2mKx7Lp0TbW4yNc9HfJ1sDgE6uA3oVi5XeQ"
	forms := echoForms([]string{key, "Bearer " + key})
	var echoed []string
	for _, prefix := range []string{"", "a", "ab", `{"auth":"Bearer `, `{"auth":"Bearer x`, `{"auth":"Bearer xy`} {
		for _, secret := range []string{key, core} {
			payload := []byte(prefix + secret + `"}`)
			echoed = append(echoed,
				base64.StdEncoding.EncodeToString(payload),
				base64.RawStdEncoding.EncodeToString(payload),
				base64.URLEncoding.EncodeToString(payload),
				base64.RawURLEncoding.EncodeToString(payload),
				"v=1;"+base64.StdEncoding.EncodeToString(payload)+";x",
				hex.EncodeToString(payload),
				"0x"+strings.ToUpper(hex.EncodeToString(payload)),
				percentAll(string(payload), true),
				percentAll(string(payload), false),
				url.QueryEscape(string(payload)),
				url.PathEscape(prefix)+secret,
				strings.ReplaceAll(url.QueryEscape(percentAll(secret, true)), "%", "%25"),
			)
		}
	}
	echoed = append(echoed, key, core, "Bearer "+core, "https://evil.example/cb?k="+url.QueryEscape(key),
		"session="+base64.RawURLEncoding.EncodeToString([]byte("k="+core))+"; Path=/; HttpOnly",
		// Some characters encoded, some not.
		core[:10]+percentAll(core[10:20], true)+core[20:])
	for _, v := range echoed {
		if !echoes([]string{v}, forms) {
			t.Errorf("an echo was not found: %q", v)
		}
	}
	if !nameEchoes("X-"+strings.ToUpper(core[:1])+strings.ToLower(core[1:]), forms) || nameEchoes("X-Request-Id", forms) {
		t.Error("a header name holding the key, in another case, was not found (or an innocent one was)")
	}
	innocent := []string{
		"application/json; charset=utf-8", "Wed, 02 Dec 2026 11:57:24 GMT", "sk-proj-", "Bearer",
		"sk-proj-Aq8vR2mKx7Lp0TbW4yNcAAAAAAAAAAAAAAAAAAAAA", "100%", "%zz%4", core[:7],
		base64.StdEncoding.EncodeToString([]byte("an ordinary cookie value, nothing secret in it")),
	}
	for _, v := range innocent {
		if echoes([]string{v}, forms) {
			t.Errorf("an innocent value was taken for an echo: %q", v)
		}
	}
}

func TestKeyCore(t *testing.T) {
	for _, tt := range []struct{ key, want string }{
		{"sk-proj-abcdefghijklmnopqrstuvwxyz", "abcdefghijklmnopqrstuvwxyz"},
		{"sk-ant-api03-abcdefghijklmnopqrstuvwxyz", "abcdefghijklmnopqrstuvwxyz"},
		{"ghp_abcdefghijklmnopqrstuvwxyz0123", "abcdefghijklmnopqrstuvwxyz0123"},
		{"github_pat_11ABCDEFGHIJKLMNOPQRSTUV", "11ABCDEFGHIJKLMNOPQRSTUV"},
		{"xoxb-1234-5678-abcdefghijklmnop", "1234-5678-abcdefghijklmnop"},
		{"AIzaSyAbcdefghijklmnopqrstuvwxyz012", "AIzaSyAbcdefghijklmnopqrstuvwxyz012"},
		{"sk-short", "sk-short"},                    // the rest would be under 16 characters
		{"sk-abcdefghijklmnop", "abcdefghijklmnop"}, // exactly 16 remain
	} {
		if got := keyCore(tt.key); got != tt.want {
			t.Errorf("keyCore(%q): got %q, want %q", tt.key, got, tt.want)
		}
	}
}

func TestPercentDecode(t *testing.T) {
	for in, want := range map[string]string{
		"a%41b":      "aAb",
		"%2541":      "%41", // once
		"100%":       "100%",
		"%zz%4":      "%zz%4",
		"%e2%82%ac%": "€%",
		"plain":      "plain",
	} {
		if got := percentDecode(in); got != want {
			t.Errorf("percentDecode(%q): got %q, want %q", in, got, want)
		}
	}
}

func BenchmarkScrubEchoes(b *testing.B) {
	forms := echoForms([]string{"sk-proj-Zq8vR2mKx7Lp0TbW4yNc9HfJ1sDgE6uA3oVi5XeQ", "Bearer sk-proj-Zq8vR2mKx7Lp0TbW4yNc9HfJ1sDgE6uA3oVi5XeQ"})
	h := map[string][]string{
		"Content-Type":          {"application/json"},
		"Date":                  {"Wed, 02 Dec 2026 11:57:24 GMT"},
		"Openai-Organization":   {"org-abcdefghijklmnop"},
		"Openai-Processing-Ms":  {"312"},
		"X-Request-Id":          {"req_0123456789abcdef0123456789abcdef"},
		"X-Ratelimit-Remaining": {"9999"},
		"Set-Cookie":            {"__cf_bm=abcdefghijklmnopqrstuvwxyz0123456789; path=/; expires=Wed, 02-Dec-26 12:27:24 GMT; domain=.api.openai.com; HttpOnly; Secure; SameSite=None"},
		"Cf-Ray":                {"8f0123456789abcd-AMS"},
	}
	b.ReportAllocs()
	for b.Loop() {
		if scrubEchoes(h, forms) != 0 {
			b.Fatal("removed an innocent header")
		}
	}
}

// FuzzEchoes: a key of 8 bytes or more, encoded whole inside any other
// bytes (base64 in either alphabet, padded or not, hex, percent-encoded),
// is always found.
func FuzzEchoes(f *testing.F) {
	f.Add("sk-proj-Zq8vR2mKx7Lp0TbW4yNc9HfJ1sDgE6uA3oVi5XeQ", `{"auth":"Bearer `, `"}`, uint8(0))
	f.Add("AIzaSyAbcdefghijklmnop", "x", "", uint8(3))
	f.Add("12345678", "", "", uint8(6))
	f.Fuzz(func(t *testing.T, key, prefix, suffix string, how uint8) {
		if len(key) < minEchoForm || len(key) > 256 || len(prefix) > 64 || len(suffix) > 64 {
			return
		}
		payload := []byte(prefix + key + suffix)
		var echoed string
		switch how % 7 {
		case 0:
			echoed = base64.StdEncoding.EncodeToString(payload)
		case 1:
			echoed = base64.RawStdEncoding.EncodeToString(payload)
		case 2:
			echoed = base64.URLEncoding.EncodeToString(payload)
		case 3:
			echoed = base64.RawURLEncoding.EncodeToString(payload)
		case 4:
			echoed = hex.EncodeToString(payload)
		case 5:
			echoed = strings.ToUpper(hex.EncodeToString(payload))
		case 6:
			echoed = percentAll(string(payload), how&8 != 0)
		}
		if !echoes([]string{echoed}, echoForms([]string{key})) {
			t.Errorf("not found: key %q in %q", key, echoed)
		}
	})
}

// FuzzFoldedHolds: foldedHolds finds f in v exactly when v without its
// spaces and tabs contains f without its own.
func FuzzFoldedHolds(f *testing.F) {
	f.Add("x-key: sk-proj-Zq8vR2m Kx7Lp0TbW4yNc9\t HfJ1sDgE6uA3oVi5XeQ", "Zq8vR2mKx7Lp0TbW4yNc9HfJ1sDgE6uA3oVi5XeQ")
	f.Add("aab aab", "a b a ab")
	f.Add("Wed, 02 Dec 2026 11:57:24 GMT", "sk-proj-Zq8vR2mKx7Lp0TbW4yNc9")
	f.Fuzz(func(t *testing.T, v, form string) {
		drop := func(s string) string { return strings.NewReplacer(" ", "", "\t", "").Replace(s) }
		want := drop(form) != "" && strings.Contains(drop(v), drop(form))
		if got := foldedHolds(v, form); got != want {
			t.Fatalf("foldedHolds(%q, %q) = %v, want %v", v, form, got, want)
		}
	})
}

// TestShortKeyScrubsNoUnrelatedHeader: a key shorter than MinEchoLength
// (a one-character test key) would be found, as text, in almost every
// header: the upstream's Content-Type, its request id, and every header
// name with its letter. Such a value is not looked for on its own; the
// forms long enough to be told apart (the header as injected) still are.
func TestShortKeyScrubsNoUnrelatedHeader(t *testing.T) {
	forms := echoForms([]string{"x", "Bearer x"})
	for _, v := range []string{"text/plain", "max-age=0", "x", "1x2"} {
		if echoes([]string{v}, forms) {
			t.Errorf("the one-character key's forms %q take %q for an echo", forms, v)
		}
	}
	if nameEchoes("X-Request-Id", forms) {
		t.Errorf("the one-character key's forms %q take the name X-Request-Id for an echo", forms)
	}
	if !echoes([]string{"Bearer x"}, forms) {
		t.Errorf("the injected value's echo %q was not found in %q", "Bearer x", forms)
	}
	if got := echoForms([]string{"abcdefg"}); len(got) != 0 {
		t.Errorf("a 7-character value gives forms %q, want none", got)
	}
	if got := echoForms([]string{"abcdefgh"}); len(got) == 0 {
		t.Errorf("an 8-character value gives no form")
	}
}

// TestShortKeyKeepsUpstreamHeaders: behind a route whose key is one
// character (till secret set k, fed "x"), the app gets the upstream's
// headers that merely hold that letter, and not one echoing the header
// as injected.
func TestShortKeyKeepsUpstreamHeaders(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "req-1")
		w.Header().Set("X-Echo", r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "text/plain")
	}))
	defer up.Close()
	gw, _ := newTestGateway(t, "version: 1\nroutes:\n  - {name: api, upstream: {{UP}}, secret: k, inject: {header: Authorization, format: 'Bearer {secret}'}}\n",
		up.URL, map[string]vault.Secret{"k": vault.NewSecret("k", "x", time.Now())})
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
	h := w.Result().Header
	if h.Get("X-Request-Id") != "req-1" || h.Get("Content-Type") != "text/plain" || h.Get("X-Echo") != "" {
		t.Errorf("the app got X-Request-Id %q, Content-Type %q, X-Echo %q; want req-1, text/plain and no echo",
			h.Get("X-Request-Id"), h.Get("Content-Type"), h.Get("X-Echo"))
	}
}
