package proxy

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"testing"
	"time"
)

// TestLocalURL: a URL the upstream gives into its own origin and path
// comes back as a URL into the route at till; any other stays as it is.
func TestLocalURL(t *testing.T) {
	origin := func() (string, bool) { return "http://127.0.0.1:8080", true }
	for _, tt := range []struct {
		name, upstream, raw, want string
	}{
		{"upload session", "https://generativelanguage.googleapis.com", "https://generativelanguage.googleapis.com/upload/v1beta/files?upload_id=AB-c_d&upload_protocol=resumable",
			"http://127.0.0.1:8080/gem/upload/v1beta/files?upload_id=AB-c_d&upload_protocol=resumable"},
		{"host in upper case, default port", "https://generativelanguage.googleapis.com", "HTTPS://GenerativeLanguage.googleapis.com:443/upload/v1beta/files?upload_id=x",
			"http://127.0.0.1:8080/gem/upload/v1beta/files?upload_id=x"},
		{"upstream path", "https://api.example.com/v2", "https://api.example.com/v2/jobs/1", "http://127.0.0.1:8080/gem/jobs/1"},
		{"upstream path itself", "https://api.example.com/v2", "https://api.example.com/v2", "http://127.0.0.1:8080/gem"},
		{"no path", "https://api.example.com", "https://api.example.com", "http://127.0.0.1:8080/gem"},
		{"escaped path and fragment", "https://api.example.com", "https://api.example.com/a%2Fb?q=%20#f", "http://127.0.0.1:8080/gem/a%2Fb?q=%20#f"},
		{"empty query", "https://api.example.com", "https://api.example.com/a?", "http://127.0.0.1:8080/gem/a?"},
		{"a path alone", "https://api.example.com/v2", "/v2/jobs/1?x=1", "/gem/jobs/1?x=1"},
		{"scheme-relative", "https://api.example.com", "//api.example.com/a", "http://127.0.0.1:8080/gem/a"},
		{"upstream port", "https://api.example.com:8443", "https://api.example.com:8443/a", "http://127.0.0.1:8080/gem/a"},

		{"another host", "https://generativelanguage.googleapis.com", "https://evil.example/upload/v1beta/files?upload_id=x", ""},
		{"a host that ends like it", "https://api.example.com", "https://api.example.com.evil.example/a", ""},
		{"another port", "https://api.example.com", "https://api.example.com:8443/a", ""},
		{"another scheme", "https://api.example.com", "http://api.example.com/a", ""},
		{"scheme-relative elsewhere", "https://api.example.com", "//evil.example/a", ""},
		{"user info", "https://api.example.com", "https://user@api.example.com/a", ""},
		{"outside the upstream path", "https://api.example.com/v2", "https://api.example.com/v20/a", ""},
		{"above the upstream path", "https://api.example.com/v2", "https://api.example.com/other", ""},
		{"a path alone, outside", "https://api.example.com/v2", "/other", ""},
		{"relative to the request", "https://api.example.com", "files/1", ""},
		{"opaque", "https://api.example.com", "mailto:x@api.example.com", ""},
		{"not a URL", "https://api.example.com", "https://api.example.com/%zz", ""},
		{"dot segments above the upstream path", "https://api.example.com/v2", "https://api.example.com/v2/../other", ""},
		{"escaped dot segments above it", "https://api.example.com/v2", "https://api.example.com/v2/%2e%2E/other", ""},
		{"a path alone, dot segments above", "https://api.example.com/v2", "/v2/jobs/../../other", ""},
		{"dot segment", "https://api.example.com/v2", "https://api.example.com/v2/./jobs", ""},
		{"backslash dot segments", "https://api.example.com/v2", "https://api.example.com/v2/..\\other", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up, err := url.Parse(tt.upstream)
			if err != nil {
				t.Fatal(err)
			}
			rt := &route{prefix: "/gem", upstream: up}
			got, ok := rt.localURL(tt.raw, origin)
			if tt.want == "" {
				if ok {
					t.Errorf("got %q, want it left alone", got)
				}
				return
			}
			if !ok || got != tt.want {
				t.Errorf("got %q, %v, want %q", got, ok, tt.want)
			}
		})
	}
}

// TestValidAuthority: the app's Host goes into a URL only when it is a
// host and port, and nothing more.
func TestValidAuthority(t *testing.T) {
	for s, want := range map[string]bool{
		"127.0.0.1:8080": true, "localhost": true, "till.internal.:443": true, "[::1]:8080": true,
		"[::1]": true, "my_host-1.example": true,
		"": false, "::1": false, "[::1%25eth0]:80": false, "[127.0.0.1]:80": false, "host:": false,
		"host:0": false, "host:65536": false, "host:+80": false, "host:8x": false, "a:b:c": false,
		"evil.example/x": false, "evil.example?x": false, "evil.example#x": false, "u@evil.example": false,
		"host..example": false, "host%2Fx": false, "ho st": false, "[::1]]:80": false, "[00000]": false, "[00000]:80": false,
	} {
		if got := validAuthority(s); got != want {
			t.Errorf("validAuthority(%q) = %v, want %v", s, got, want)
		}
	}
}

const uploadYAML = `version: 1
routes:
  - name: gemini
    preset: gemini
    prefix: /gem
    upstream: {{UP}}
    secret: openai
`

// TestUploadSessionLocalized: the Gemini Files API's resumable upload
// session (X-Goog-Upload-URL) and a Location into the upstream come back
// to the app under the route at till, where it sent the request, so
// that the file's bytes go through the route too; a Location elsewhere,
// or a Host that is no host, leaves them as the upstream gave them.
func TestUploadSessionLocalized(t *testing.T) {
	var upURL string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Goog-Upload-URL", upURL+"/upload/v1beta/files?upload_id=s1")
		w.Header().Set("Location", r.URL.Query().Get("loc"))
		w.Header().Set("X-Goog-Upload-Status", "active")
	}))
	defer up.Close()
	upURL = up.URL
	gw, _ := newTestGateway(t, uploadYAML, up.URL, secrets(time.Now()))
	for _, tt := range []struct {
		name, host, loc string
		tls             bool
		wantUpload      string
		wantLoc         string
	}{
		{"as the app reached till", "127.0.0.1:8080", up.URL + "/b/o?upload_id=g", false,
			"http://127.0.0.1:8080/gem/upload/v1beta/files?upload_id=s1", "http://127.0.0.1:8080/gem/b/o?upload_id=g"},
		{"over TLS, by name", "till.internal", "https://storage.example/b", true,
			"https://till.internal/gem/upload/v1beta/files?upload_id=s1", "https://storage.example/b"},
		{"a Host that is no host", "x y", up.URL + "/b", false, up.URL + "/upload/v1beta/files?upload_id=s1", up.URL + "/b"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/gem/upload/v1beta/files?loc="+url.QueryEscape(tt.loc), nil)
			r.Host = tt.host
			if tt.tls {
				r.TLS = &tls.ConnectionState{}
			}
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			if got := w.Header().Get("X-Goog-Upload-URL"); got != tt.wantUpload {
				t.Errorf("X-Goog-Upload-URL: got %q, want %q", got, tt.wantUpload)
			}
			if got := w.Header().Get("Location"); got != tt.wantLoc {
				t.Errorf("Location: got %q, want %q", got, tt.wantLoc)
			}
		})
	}
}

// TestFilesUploadUnderTokenBudget: on a Gemini route under a token
// budget, the chunks of a Files API upload, which now come through till,
// are file bytes (sent as application/json by the SDKs): they stream
// unread, as uploads do, and cost no tokens, as the upload costs none.
// Read as a request, a chunk was refused (not JSON; over 1 MiB) and
// would have been charged a token per 4 bytes.
func TestFilesUploadUnderTokenBudget(t *testing.T) {
	var got int
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got += len(b)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Goog-Upload-Status", "final")
		io.WriteString(w, `{"file":{"name":"files/a"}}`)
	}))
	defer up.Close()
	gw, buf := newTestGateway(t, uploadYAML+"budgets:\n  - {name: b, window: 1d, tokens: 1000}\n", up.URL, secrets(time.Now()))
	for _, size := range []int{5, 2 << 20} {
		r := httptest.NewRequest("POST", "/gem/upload/v1beta/files?upload_id=s1&upload_protocol=resumable", strings.NewReader(strings.Repeat("\x00", size)))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("X-Goog-Upload-Command", "upload, finalize")
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Fatalf("%d bytes: status %d: %s", size, w.Code, w.Body)
		}
	}
	if got != 5+2<<20 {
		t.Errorf("the upstream got %d bytes, want %d", got, 5+2<<20)
	}
	if used := usedTokens(t, gw); used != 0 {
		t.Errorf("the budget counted %v tokens, want 0", used)
	}
	for _, rec := range buf.records(t) {
		if rec["reason"] != "" {
			t.Errorf("record: %v", rec)
		}
	}
}

func TestIsFilesUpload(t *testing.T) {
	for path, want := range map[string]bool{
		"/upload/v1beta/files": true, "/upload/v1/files/": true, "/UPLOAD/V1BETA/FILES": true, "/base/upload/v1alpha/files": true,
		"/v1beta/files": false, "/upload/files": false, "/files": false, "/upload/v1beta/files/abc": false,
		"/upload/v1beta/fileSearchStores/s:uploadToFileSearchStore": false, "/upload/beta/files": false,
		"/v1beta/models/gemini-2.5-flash:generateContent": false, "/xupload/v1beta/files": false,
	} {
		if got := isFilesUpload(path); got != want {
			t.Errorf("isFilesUpload(%q) = %v, want %v", path, got, want)
		}
	}
}

// FuzzLocalURL: a URL is given back under till only when it points into
// the route's upstream, and then as the prefix and the rest of its path,
// query and fragment; an authority validAuthority takes is a URL's host
// and nothing more.
func FuzzLocalURL(f *testing.F) {
	for _, s := range []string{
		"https://generativelanguage.googleapis.com/upload/v1beta/files?upload_id=x",
		"https://api.example.com/v2/a?b#c", "/v2/a", "//api.example.com/v2", "https://api.example.com:443/v2/",
		"https://api.example.com.evil/v2", "https://u@api.example.com/v2", "files/1", "https://api.example.com/v2%2F..",
		"https://api.example.com/v2/../x", "/v2/a/%2e%2e/%2E%2e/x", "/v2/..\\x",
	} {
		f.Add(s, "127.0.0.1:8080")
	}
	f.Add("https://api.example.com/v2", "[::1]:80")
	f.Add("/v2", "evil.example/x")
	up, _ := url.Parse("https://api.example.com/v2")
	rt := &route{prefix: "/gem", upstream: up}
	f.Fuzz(func(t *testing.T, raw, host string) {
		if validAuthority(host) {
			u, err := url.Parse("http://" + host)
			if err != nil || u.Host != host || u.Path != "" || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
				t.Fatalf("validAuthority(%q), but as a URL's host it reads %+v (%v)", host, u, err)
			}
		}
		origin := func() (string, bool) { return "http://" + host, validAuthority(host) }
		got, ok := rt.localURL(raw, origin)
		if !ok {
			return
		}
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("localURL(%q) = %q: raw does not parse", raw, got)
		}
		if u.Host != "" && hostKey("https", u.Host) != "api.example.com:443" {
			t.Fatalf("localURL(%q) = %q: a URL into another host", raw, got)
		}
		rest, cut := strings.CutPrefix(got, "http://"+host+"/gem")
		if u.Host == "" && u.Scheme == "" {
			rest, cut = strings.CutPrefix(got, "/gem")
		}
		if !cut || rest != "" && !strings.HasPrefix(rest, "/") && !strings.HasPrefix(rest, "?") && !strings.HasPrefix(rest, "#") {
			t.Fatalf("localURL(%q) = %q: not under the route at till", raw, got)
		}
		if p := u.EscapedPath(); p != "/v2" && !strings.HasPrefix(p, "/v2/") {
			t.Fatalf("localURL(%q) = %q: a path outside the upstream's", raw, got)
		}
		// As the app and the upstream resolve it (RFC 3986, section 5.2.4).
		resolved := path.Clean("/" + strings.ReplaceAll(u.Path, "\\", "/"))
		if resolved != "/v2" && !strings.HasPrefix(resolved, "/v2/") {
			t.Fatalf("localURL(%q) = %q: a path outside the upstream's once resolved (%q)", raw, got, resolved)
		}
	})
}
