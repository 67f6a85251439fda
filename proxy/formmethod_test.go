package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// overrideFixture is a gateway in front of an upstream that records the
// raw query of every request that reached it with the key: routes to an
// upstream of the user's own that limit methods (items: POST and GET;
// big: POST, max_body 4MB) and a provider's route (openai).
type overrideFixture struct {
	gw      http.Handler
	mu      sync.Mutex
	queries []string
}

func newOverrideFixture(t *testing.T) *overrideFixture {
	f := &overrideFixture{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		f.mu.Lock()
		if r.Header.Get("Authorization") == "Bearer "+testKey {
			f.queries = append(f.queries, r.URL.RawQuery)
		}
		f.mu.Unlock()
		io.WriteString(w, "{}")
	}))
	t.Cleanup(up.Close)
	yaml := `version: 1
routes:
  - name: items
    upstream: {{UP}}
    secret: openai
    inject: {header: Authorization, format: "Bearer {secret}"}
    allow: {methods: [POST, GET]}
  - name: big
    upstream: {{UP}}
    secret: openai
    inject: {header: Authorization, format: "Bearer {secret}"}
    allow: {methods: [POST]}
    max_body: 4MB
  - name: openai
    preset: openai
    upstream: {{UP}}
    allow: {methods: [POST]}
`
	f.gw, _ = newTestGateway(t, yaml, up.URL, secrets(time.Now()))
	return f
}

// post sends a POST with the given Content-Type values (none when nil)
// and returns till's status and the raw queries the upstream received.
func (f *overrideFixture) post(target string, contentTypes []string, body string) (int, string, []string) {
	f.mu.Lock()
	f.queries = nil
	f.mu.Unlock()
	req := httptest.NewRequest("POST", target, strings.NewReader(body))
	req.Header["Content-Type"] = contentTypes
	w := httptest.NewRecorder()
	f.gw.ServeHTTP(w, req)
	f.mu.Lock()
	defer f.mu.Unlock()
	return w.Code, w.Body.String(), f.queries
}

// bodyCase is a POST body and the status till must answer it with: a
// refusal never reaches the upstream, a 200 does.
type bodyCase struct {
	name, path  string
	contentType []string
	body        string
	code        int
}

func runBodyCases(t *testing.T, f *overrideFixture, cases []bodyCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, answer, got := f.post(tc.path, tc.contentType, tc.body)
			if code != tc.code || (code == 200) != (len(got) == 1) {
				t.Errorf("POST %s (Content-Type %q) %q: %d %s, upstream asked %d times; want %d", tc.path, tc.contentType, tc.body, code, answer, len(got), tc.code)
			}
		})
	}
}

const (
	formType = "application/x-www-form-urlencoded"
	jsonType = "application/json"
)

// TestFormMethodWhateverTheContentType: Rack reads the body of a POST
// without a Content-Type as a form, and a multipart/mixed or /related one
// as multipart; Rack and PHP cut a media type at "," (PHP at a space too),
// where Go's parser fails. Checked against php-cgi 8.2 and Rack 2.2.22:
// each of these _method fields turns the POST into a DELETE.
func TestFormMethodWhateverTheContentType(t *testing.T) {
	f := newOverrideFixture(t)
	part := "--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n"
	runBodyCases(t, f, []bodyCase{
		{"no Content-Type", "/items/posts/7", nil, "_method=DELETE", 403},
		{"an empty Content-Type", "/items/posts/7", []string{""}, "_method=DELETE", 403},
		{"a comma after the type", "/items/posts/7", []string{formType + ",x"}, "_method=DELETE", 403},
		{"a space after the type", "/items/posts/7", []string{formType + " x"}, "_method=DELETE", 403},
		{"upper case", "/items/posts/7", []string{strings.ToUpper(formType)}, "_method=DELETE", 403},
		{"multipart/mixed", "/items/posts/7", []string{"multipart/mixed; boundary=b"}, part, 403},
		{"multipart/related", "/items/posts/7", []string{"multipart/related; boundary=b"}, part, 403},
		{"multipart, a comma before the boundary", "/items/posts/7", []string{"multipart/form-data, boundary=b"}, part, 400},
		{"two Content-Types", "/items/posts/7", []string{"text/plain", formType}, "_method=DELETE", 400},
		{"no Content-Type, no _method", "/items/posts/7", nil, `{"title": "x"}`, 200},
		{"no Content-Type on a provider's route", "/openai/v1/files", nil, "_method=DELETE", 200},
	})
}

// phpName is the name PHP gives a query or form field, as
// php_register_variable_ex makes it (checked against php-cgi 8.2): it
// ends at a NUL byte, leading spaces go, and "." and " " before any "["
// read as "_".
func phpName(raw string) string {
	name, _ := url.QueryUnescape(raw)
	name, _, _ = strings.Cut(name, "\x00")
	name = strings.TrimLeft(name, " ")
	base, index, _ := strings.Cut(name, "[")
	return strings.NewReplacer(".", "_", " ", "_").Replace(base) + index
}

// TestMethodFieldAsPHPAndRackName: PHP reads a field named ".method",
// " _method" or "_method\x00x" as _method, in a form body or the query
// (where Laravel and Symfony look for one); Rack 2 reads "[_method]",
// "]_method" and "_method]" as _method in a form. Checked against php-cgi
// 8.2 and Rack 2.2.22: each turns the POST into a DELETE. In a form they
// are refused; from the query they are removed, as _method is.
func TestMethodFieldAsPHPAndRackName(t *testing.T) {
	f := newOverrideFixture(t)
	form := []string{formType}
	multipartPart := func(name string) string {
		return "--b\r\nContent-Disposition: form-data; name=\"" + name + "\"\r\n\r\nDELETE\r\n--b--\r\n"
	}
	mp := []string{"multipart/form-data; boundary=b"}
	runBodyCases(t, f, []bodyCase{
		{"a dot for the underscore", "/items/posts/7", form, ".method=DELETE", 403},
		{"leading spaces", "/items/posts/7", form, "%20+.method=DELETE", 403},
		{"cut at a NUL", "/items/posts/7", form, "_method%00x=DELETE", 403},
		{"Rack 2's leading brackets", "/items/posts/7", form, "[_method]=DELETE", 403},
		{"Rack 2's leading bracket", "/items/posts/7", form, "]_method=DELETE", 403},
		{"Rack 2's trailing bracket", "/items/posts/7", form, "_method]=DELETE", 403},
		{"multipart, a dot for the underscore", "/items/posts/7", mp, multipartPart(".method"), 403},
		{"multipart, cut at a NUL (Go's reader refuses it)", "/items/posts/7", mp, multipartPart("_method\x00x"), 400},
		{"another field ending in _method", "/items/posts/7", form, "payment_method=card&x.method=1&_methods=DELETE&_method_=DELETE", 200},
		{"multipart, another field ending in _method", "/items/posts/7", mp, multipartPart("payment_method"), 200},
	})
	for _, q := range []string{".method=DELETE", "%2Emethod=DELETE", "%20_method=DELETE", "+.method=DELETE", "_method%00x=DELETE", "_method%00%zz=DELETE"} {
		code, answer, got := f.post("/items/posts/7?a=1&"+q, []string{jsonType}, "{}")
		if code != 200 || len(got) != 1 {
			t.Errorf("POST ?%s: %d %s, upstream asked %d times; want 200, once", q, code, answer, len(got))
			continue
		}
		for _, param := range strings.Split(got[0], "&") {
			if name, _, _ := strings.Cut(param, "="); phpName(name) == "_method" {
				t.Errorf("POST ?%s: the upstream got the query %q, whose %q PHP reads as _method", q, got[0], name)
			}
		}
	}
}

// TestMultipartAsPHPAndRackSplit: PHP and Rack find parts in a multipart
// body that Go's reader does not, and each of these bodies turned the
// POST into a DELETE at php-cgi 8.2 or Rack 2.2.22 while Go's reader saw
// no _method: PHP takes the first "boundary" in the Content-Type (Racks
// without the fix 2.2.22 has, the last), and a value after "boundary= "
// with its space; PHP
// ends a part at "\n--boundary" where Go holds to the first delimiter's
// CRLF; Rack takes a name after the last "; name=" before the next colon,
// across lines and inside another parameter's quotes, and a Content-ID
// for a missing name.
func TestMultipartAsPHPAndRackSplit(t *testing.T) {
	f := newOverrideFixture(t)
	mp := []string{"multipart/form-data; boundary=b"}
	const partX = "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n"
	runBodyCases(t, f, []bodyCase{
		{"PHP's first boundary", "/items/posts/7", []string{"multipart/form-data; boundary_x=a; boundary=b"},
			"--a\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--a--\r\n--b--\r\n", 400},
		{"Rack's last boundary", "/items/posts/7", []string{`multipart/form-data; boundary=b; x="boundary=a"`},
			"--a\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--a--\r\n--b--\r\n", 400},
		{"PHP's boundary after a space", "/items/posts/7", []string{"multipart/form-data; boundary= b"},
			"-- b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n-- b--\r\n--b--\r\n", 400},
		{"PHP's parts split at LF", "/items/posts/7", mp,
			partX + "hello\n--b\nContent-Disposition: form-data; name=\"_method\"\n\nDELETE\n--b--\r\n--b--\r\n", 403},
		{"Rack's name in another parameter", "/items/posts/7", mp,
			"--b\r\nContent-Disposition: form-data; name=\"x\"; foo=\"; name=_method\"\r\n\r\nDELETE\r\n--b--\r\n", 403},
		{"Rack's Content-ID", "/items/posts/7", mp,
			"--b\r\nContent-Disposition: form-data\r\nContent-ID: _method\r\n\r\nDELETE\r\n--b--\r\n", 403},
		{"Rack's headers past an LF blank line", "/items/posts/7", mp,
			"--b\r\nContent-Disposition: form-data; name=x;\n\nname=_method\r\n\r\nDELETE\r\n--b--\r\n", 400},
		{"Rack's escapes", "/items/posts/7", mp,
			"--b\r\nContent-Disposition: form-data; name=\"\\_\\method\"\r\n\r\nDELETE\r\n--b--\r\n", 403},
		{"PHP's parts split at LF, allowed method", "/items/posts/7", mp,
			partX + "hello\n--b\nContent-Disposition: form-data; name=\"_method\"\n\nget\n--b--\r\n--b--\r\n", 200},
		{"a file that mentions _method", "/items/posts/7", mp,
			"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.html\"\r\n\r\n<input name=\"_method\" value=\"delete\">\r\n--b--\r\n", 200},
	})
}

// TestJSONMethodNeverSent: Laravel reads a POST's input from its JSON
// body when the Content-Type holds "/json" or "+json", and runs it as the
// method a top-level "_method" string names (Symfony's getMethod);
// Express's method-override, given req.body._method, takes the first
// element of an array. On a route to an upstream of the user's own that
// limits methods, such a body is refused; a nested _method, which no
// framework reads, is not, nor is a body that is not JSON, which neither
// json_decode nor JSON.parse reads. Of two members of one name, they
// keep the last (checked with php 8.2 and node), as Go's map decoding
// does.
func TestJSONMethodNeverSent(t *testing.T) {
	f := newOverrideFixture(t)
	j := []string{jsonType}
	big := `{"pad": "` + strings.Repeat("x", 2<<20) + `", "_method": "DELETE"}`
	runBodyCases(t, f, []bodyCase{
		{"top level", "/items/posts/7", j, `{"title": "x", "_method": "DELETE"}`, 403},
		{"lower case", "/items/posts/7", j, `{"_method": "delete"}`, 403},
		{"escaped key", "/items/posts/7", j, `{"\u005fmethod": "PUT"}`, 403},
		{"the last of two", "/items/posts/7", j, `{"_method": "POST", "_method": "DELETE"}`, 403},
		{"the first of two, which json_decode drops", "/items/posts/7", j, `{"_method": "DELETE", "_method": "POST"}`, 200},
		{"an array", "/items/posts/7", j, `{"_method": ["DELETE"]}`, 403},
		{"a JSON API type", "/items/posts/7", []string{"application/vnd.api+json"}, `{"_method": "DELETE"}`, 403},
		{"/json in a parameter", "/items/posts/7", []string{"text/plain; profile=/json"}, `{"_method": "DELETE"}`, 403},
		{"malformed, which no framework reads", "/items/posts/7", j, `{"_method": "DELETE",}`, 200},
		{"JSON Lines", "/items/posts/7", []string{"application/jsonl"}, "{\"_method\": \"DELETE\"}\n{\"a\": 1}\n", 200},
		{"over 1 MiB", "/items/posts/7", j, big, 400},
		{"over 1 MiB, within max_body", "/big/posts/7", j, big, 403},
		{"allowed method", "/items/posts/7", j, `{"_method": "get"}`, 200},
		{"nested", "/items/posts/7", j, `{"data": {"_method": "DELETE"}}`, 200},
		{"in an array", "/items/posts/7", j, `[{"_method": "DELETE"}]`, 200},
		{"not a string", "/items/posts/7", j, `{"_method": 1}`, 200},
		{"another key", "/items/posts/7", j, `{"payment_method": "DELETE"}`, 200},
		{"not JSON by its type", "/items/posts/7", []string{"text/plain"}, `{"_method": "DELETE"`, 200},
		{"on a provider's route", "/openai/v1/files", j, `{"_method": "DELETE"}`, 200},
	})
}

// TestConnectionCannotHideContentType: a header the request's Connection
// header names never goes upstream (it is hop-by-hop), so the policy must
// judge the request without it too. Here the Content-Type that made till
// read the body as JSON (no _method at its top level) is dropped on the
// way, and Rack reads the body, a POST without a Content-Type, as a form
// whose _method turns it into a DELETE.
func TestConnectionCannotHideContentType(t *testing.T) {
	f := newOverrideFixture(t)
	for _, conn := range []string{"Content-Type", "keep-alive, content-type"} {
		req := httptest.NewRequest("POST", "/items/posts/7", strings.NewReader(`{"a": "&_method=DELETE&"}`))
		req.Header.Set("Content-Type", jsonType)
		req.Header.Set("Connection", conn)
		w := httptest.NewRecorder()
		f.gw.ServeHTTP(w, req)
		f.mu.Lock()
		sent := len(f.queries)
		f.queries = nil
		f.mu.Unlock()
		if w.Code != http.StatusForbidden || sent != 0 {
			t.Errorf("Connection: %s: got %d, sent upstream %d times; want 403, never sent", conn, w.Code, sent)
		}
	}
}
