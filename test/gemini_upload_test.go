package test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// fakeGeminiFiles answers the Gemini Files API's resumable upload as
// Google does: POST /upload/v1beta/files with X-Goog-Upload-Command:
// start opens a session and names its URL (X-Goog-Upload-URL, on the
// host the request came to); the file's bytes then go to that URL in
// chunks (upload, at X-Goog-Upload-Offset), the last with finalize, whose
// answer is the file resource (X-Goog-Upload-Status: final).
type fakeGeminiFiles struct {
	mu       sync.Mutex
	sessions map[string]*bytes.Buffer
}

func newFakeGeminiFiles() *fakeGeminiFiles {
	return &fakeGeminiFiles{sessions: map[string]*bytes.Buffer{}}
}

func (f *fakeGeminiFiles) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/upload/v1beta/files" {
		http.Error(w, `{"error":{"code":404,"message":"not found"}}`, http.StatusNotFound)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	command := r.Header.Get("X-Goog-Upload-Command")
	if command == "start" {
		if r.Header.Get("X-Goog-Upload-Protocol") != "resumable" {
			http.Error(w, `{"error":{"code":400,"message":"not resumable"}}`, http.StatusBadRequest)
			return
		}
		id := fmt.Sprintf("session-%d", len(f.sessions)+1)
		f.sessions[id] = &bytes.Buffer{}
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		w.Header().Set("X-Goog-Upload-URL", scheme+"://"+r.Host+"/upload/v1beta/files?upload_id="+id+"&upload_protocol=resumable")
		w.Header().Set("X-Goog-Upload-Status", "active")
		w.Header().Set("X-Goog-Upload-Chunk-Granularity", "8388608")
		return
	}
	session := f.sessions[r.URL.Query().Get("upload_id")]
	if session == nil || !strings.Contains(command, "upload") {
		http.Error(w, `{"error":{"code":400,"message":"no such upload session"}}`, http.StatusBadRequest)
		return
	}
	body := new(bytes.Buffer)
	body.ReadFrom(r.Body)
	if off, _ := strconv.Atoi(r.Header.Get("X-Goog-Upload-Offset")); off != session.Len() {
		http.Error(w, `{"error":{"code":400,"message":"wrong offset"}}`, http.StatusBadRequest)
		return
	}
	session.Write(body.Bytes())
	if !strings.Contains(command, "finalize") {
		w.Header().Set("X-Goog-Upload-Status", "active")
		return
	}
	w.Header().Set("X-Goog-Upload-Status", "final")
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"file": map[string]any{
		"name": "files/abc123", "mimeType": "text/plain", "sizeBytes": strconv.Itoa(session.Len()),
		"uri": "https://generativelanguage.googleapis.com/v1beta/files/abc123", "state": "ACTIVE",
		"sha256Hash": fmt.Sprintf("%x", sha256.Sum256(session.Bytes())),
	}})
}

// geminiUploadConfig routes /gemini to u with the gemini preset; extra is
// added to the route.
func geminiUploadConfig(u *upstream, extra string) string {
	return fmt.Sprintf("version: 1\nroutes:\n  - name: gemini\n    preset: gemini\n    upstream: %s\n%s", u.URL, extra)
}

// TestGeminiResumableUploadThroughRoute: a Gemini Files API upload
// through a route's base URL stays with till. The session URL Google
// names (X-Goog-Upload-URL) comes back under the route at till, so the
// file's bytes and the finalize go through the route, with its key and
// its records, not to Google directly (an app that can reach only till
// could not upload at all). max_body caps each chunk.
func TestGeminiResumableUploadThroughRoute(t *testing.T) {
	up := newUpstream(t, newFakeGeminiFiles())
	tl := startTill(t, geminiUploadConfig(up, "    max_body: 1KB\n"), providerSecrets, up.caFile)
	start := func(t *testing.T) string {
		t.Helper()
		req := newRequest(t, "POST", tl.url("/gemini/upload/v1beta/files"), strings.NewReader(`{"file":{"displayName":"hello.txt"}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Goog-Api-Key", "dummy-app-key")
		req.Header.Set("X-Goog-Upload-Protocol", "resumable")
		req.Header.Set("X-Goog-Upload-Command", "start")
		req.Header.Set("X-Goog-Upload-Header-Content-Type", "text/plain")
		resp, body := do(t, req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("start: %d %s", resp.StatusCode, body)
		}
		return resp.Header.Get("X-Goog-Upload-URL")
	}
	chunk := func(t *testing.T, session, command string, offset int, data string) (*http.Response, []byte) {
		t.Helper()
		req := newRequest(t, "POST", session, strings.NewReader(data))
		req.Header.Set("Content-Type", "application/json") // as the SDKs send it
		req.Header.Set("X-Goog-Upload-Command", command)
		req.Header.Set("X-Goog-Upload-Offset", strconv.Itoa(offset))
		return do(t, req)
	}

	t.Run("start, upload, finalize", func(t *testing.T) {
		session := start(t)
		if want := tl.url("/gemini/upload/v1beta/files?upload_id="); !strings.HasPrefix(session, want) {
			t.Fatalf("X-Goog-Upload-URL: got %q, want it under %q", session, want)
		}
		if resp, body := chunk(t, session, "upload", 0, "hello, "); resp.StatusCode != http.StatusOK || resp.Header.Get("X-Goog-Upload-Status") != "active" {
			t.Fatalf("upload: %d %q %s", resp.StatusCode, resp.Header.Get("X-Goog-Upload-Status"), body)
		}
		resp, body := chunk(t, session, "upload, finalize", 7, "world")
		var got struct {
			File struct{ Name, SizeBytes, Sha256Hash string }
		}
		if err := json.Unmarshal(body, &got); err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("X-Goog-Upload-Status") != "final" {
			t.Fatalf("finalize: %d %q %s", resp.StatusCode, resp.Header.Get("X-Goog-Upload-Status"), body)
		}
		if got.File.Name != "files/abc123" || got.File.SizeBytes != "12" || got.File.Sha256Hash != fmt.Sprintf("%x", sha256.Sum256([]byte("hello, world"))) {
			t.Errorf("file: %+v", got.File)
		}
		seen := up.requests()
		if len(seen) != 3 {
			t.Fatalf("the upstream received %d requests, want 3 (start, upload, finalize)", len(seen))
		}
		for _, r := range seen {
			if v := r.Header.Values("X-Goog-Api-Key"); len(v) != 1 || v[0] != geminiKey {
				t.Errorf("%s %s: the upstream got %d x-goog-api-key values, want the route's key alone", r.Method, r.Path, len(v))
			}
		}
		recs := tl.waitAudit(3)
		for _, r := range recs {
			if r["route"] != "gemini" || r["outcome"] != "forwarded" || r["mode"] != "reverse" || r["path"] != "/gemini/upload/v1beta/files" || r["key_fp"] == "" {
				t.Errorf("record: %v", r)
			}
		}
		if recs[1]["bytes_in"] != float64(7) || recs[2]["bytes_in"] != float64(5) {
			t.Errorf("bytes_in: %v, %v, want 7 and 5", recs[1]["bytes_in"], recs[2]["bytes_in"])
		}
	})

	t.Run("a chunk over max_body", func(t *testing.T) {
		session := start(t)
		before := len(up.requests())
		resp, body := chunk(t, session, "upload, finalize", 0, strings.Repeat("x", 2048))
		if resp.StatusCode != http.StatusBadRequest || tillError(t, resp, body) != "bad_request" {
			t.Errorf("got %d %s, want 400 bad_request", resp.StatusCode, body)
		}
		if n := len(up.requests()); n != before {
			t.Errorf("the upstream received %d more requests, want none", n-before)
		}
	})
	tl.stop()
	tl.assertNoLeak([]string{geminiKey})
}

// TestGeminiFilesNodeSDK: the official Google Gen AI SDK for Node
// uploads a file, from disk and from a Blob, through a route's base URL,
// under a token budget.
// The SDK (2.x) sends the bytes to the session URL's path on its own base
// URL's host: the path must hold the route's prefix, or till has no route
// for it (404); the 1.x SDKs send them to the URL as given, which must
// then be till's.
func TestGeminiFilesNodeSDK(t *testing.T) {
	up := newUpstream(t, newFakeGeminiFiles())
	// Under a token budget, whose route reads JSON bodies: the SDK sends
	// the file's chunks as application/json.
	cfg := geminiUploadConfig(up, "") + "budgets:\n  - {name: daily, window: 1d, tokens: 1000}\n"
	tl := startTill(t, cfg, providerSecrets, up.caFile)
	onDisk := filepath.Join(t.TempDir(), "hello.txt")
	if err := os.WriteFile(onDisk, []byte("from a file on disk"), 0o644); err != nil {
		t.Fatal(err)
	}

	type uploaded struct{ Name, SizeBytes, Sha256Hash string }
	var res struct{ Path, Blob uploaded }
	runSDK(t, "gemini-upload.mjs", &res, "GEMINI_BASE_URL="+tl.url("/gemini"), "GEMINI_UPLOAD_FILE="+onDisk)
	for _, c := range []struct {
		got  uploaded
		want string
	}{{res.Path, "from a file on disk"}, {res.Blob, "from a blob"}} {
		if c.got.Name != "files/abc123" || c.got.SizeBytes != strconv.Itoa(len(c.want)) || c.got.Sha256Hash != fmt.Sprintf("%x", sha256.Sum256([]byte(c.want))) {
			t.Errorf("uploaded %+v, want %q", c.got, c.want)
		}
	}
	seen := up.requests()
	if len(seen) != 4 {
		t.Fatalf("the upstream received %d requests, want 4 (a start and a finalize per file)", len(seen))
	}
	for _, r := range seen {
		if v := r.Header.Values("X-Goog-Api-Key"); len(v) != 1 || v[0] != geminiKey {
			t.Errorf("%s %s: the upstream got %d x-goog-api-key values, want the route's key alone", r.Method, r.Path, len(v))
		}
	}
	for _, r := range tl.waitAudit(4) {
		if r["route"] != "gemini" || r["outcome"] != "forwarded" || r["path"] != "/gemini/upload/v1beta/files" {
			t.Errorf("record: %v", r)
		}
	}
	tl.stop()
	tl.assertNoLeak([]string{geminiKey})
}

// forwardGeminiFiles is the Gemini Files API of the forward-mode tests'
// provider (providerHandler).
var forwardGeminiFiles = newFakeGeminiFiles()

// TestGeminiUploadSessionInForwardMode: through till as HTTP_PROXY, the
// session URL an upload's start names is left as the upstream gave it:
// the app reaches the upstream's origin through till already, and the
// file's bytes and the finalize go through the intercepted CONNECT, on
// the route, with their records. An absolute-form (http://) start is not
// moved to http:// either: the app's proxy settings for https:// URLs
// take the session, as they would take any https:// URL.
func TestGeminiUploadSessionInForwardMode(t *testing.T) {
	f := startForward(t, "deny", false, false)
	client := f.goClient(t)
	post := func(t *testing.T, url string, h map[string]string, body string) *http.Response {
		t.Helper()
		req := newRequest(t, "POST", url, strings.NewReader(body))
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %d", url, resp.StatusCode)
		}
		return resp
	}
	for _, tt := range []struct{ name, base, mode string }{
		{"intercepted", f.providerURL, "intercept"},
		{"absolute-form", "http://api.provider.test:" + f.provider.port(), "forward"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(f.tl.audit())
			resp := post(t, tt.base+"/upload/v1beta/files", map[string]string{
				"X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
			}, `{"file":{}}`)
			session := resp.Header.Get("X-Goog-Upload-URL")
			if want := f.providerURL + "/upload/v1beta/files?upload_id="; !strings.HasPrefix(session, want) {
				t.Fatalf("X-Goog-Upload-URL: got %q, want it as the upstream gave it, under %q", session, want)
			}
			resp = post(t, session, map[string]string{"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"}, "bytes")
			if s := resp.Header.Get("X-Goog-Upload-Status"); s != "final" {
				t.Errorf("finalize: X-Goog-Upload-Status %q", s)
			}
			recs := f.tl.waitAudit(before + 2)[before:]
			for i, want := range []string{tt.mode, "intercept"} {
				if r := recs[i]; r["mode"] != want || r["route"] != "provider" || r["outcome"] != "forwarded" || r["path"] != "/upload/v1beta/files" {
					t.Errorf("record %d: %v, want mode %s on the route", i, r, want)
				}
			}
		})
	}
}
