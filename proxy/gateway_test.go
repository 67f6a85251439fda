package proxy

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/tillgw/till/audit"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

const testKey = "sk-unit-test-key-0123456789"

// newTestGateway compiles yaml (with {{UP}} replaced by the upstream URL)
// and returns a gateway whose audit records land in the returned buffer.
func newTestGateway(t testing.TB, yaml, upstream string, secrets map[string]vault.Secret) (*Gateway, *lockedBuffer) {
	t.Helper()
	cfg, err := config.Parse("till.yaml", []byte(strings.ReplaceAll(yaml, "{{UP}}", upstream)), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	buf := &lockedBuffer{}
	gw := New(NewSnapshot(cfg, secrets), Options{Audit: testAudit(buf), Log: zerolog.Nop()})
	return gw, buf
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns what was written.
func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// records returns the request records written.
func (l *lockedBuffer) records(t testing.TB) []map[string]any { return l.events(t, "request") }

// uses returns the use records written.
func (l *lockedBuffer) uses(t testing.TB) []map[string]any { return l.events(t, "use") }

// events returns the records of the event written.
func (l *lockedBuffer) events(t testing.TB, event string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if m["event"] == event {
			out = append(out, m)
		}
	}
	return out
}

func secrets(now time.Time) map[string]vault.Secret {
	return map[string]vault.Secret{"openai": vault.NewSecret("openai", testKey, now)}
}

const baseYAML = `version: 1
routes:
  - name: openai
    preset: openai
    upstream: {{UP}}
    allow:
      methods: [GET, POST]
      paths: ["/v1/chat/completions", "/v1/models/*"]
  - name: nested
    preset: openai
    prefix: /openai/special
    upstream: {{UP}}/special
    secret: openai
`

func TestGatewayRouting(t *testing.T) {
	var got *http.Request
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Clone(r.Context())
		w.Header().Set("X-Leak", "Bearer "+testKey)
		io.WriteString(w, "ok")
	}))
	defer up.Close()
	gw, audit := newTestGateway(t, baseYAML, up.URL, secrets(time.Now()))

	tests := []struct {
		name, method, target string
		status               int
		upstreamPath, code   string
	}{
		{"allowed", "POST", "/openai/v1/chat/completions", 200, "/v1/chat/completions", ""},
		{"glob one segment", "GET", "/openai/v1/models/gpt-4o", 200, "/v1/models/gpt-4o", ""},
		{"glob is one segment only", "GET", "/openai/v1/models/a/b", 403, "", CodePathNotAllowed},
		{"method refused", "DELETE", "/openai/v1/chat/completions", 403, "", CodeMethodNotAllowed},
		{"path refused", "GET", "/openai/v1/files", 403, "", CodePathNotAllowed},
		{"longest prefix wins", "GET", "/openai/special/x", 200, "/special/x", ""},
		{"no route", "GET", "/other", 404, "", CodeRouteNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got = nil
			req := httptest.NewRequest(tt.method, tt.target, nil)
			req.Header.Set("Authorization", "Bearer dummy")
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, req)
			if w.Code != tt.status {
				t.Fatalf("status: got %d, want %d (%s)", w.Code, tt.status, w.Body)
			}
			if tt.code != "" {
				if h := w.Header().Get("X-Till-Error"); h != tt.code {
					t.Errorf("X-Till-Error: got %q, want %q", h, tt.code)
				}
				if got != nil {
					t.Error("a refused request reached the upstream")
				}
				return
			}
			if got.URL.Path != tt.upstreamPath {
				t.Errorf("upstream path: got %q, want %q", got.URL.Path, tt.upstreamPath)
			}
			if v := got.Header.Values("Authorization"); len(v) != 1 || v[0] != "Bearer "+testKey {
				t.Errorf("upstream Authorization: got %d values, want the key once", len(v))
			}
			if w.Header().Get("X-Leak") != "" {
				t.Error("a response header echoing the key reached the app")
			}
		})
	}
	if recs := audit.records(t); len(recs) != len(tests) {
		t.Errorf("got %d audit records, want %d", len(recs), len(tests))
	}
}

// TestUseRecordedBeforeKeyLeaves checks, from the upstream, that the use
// record of the key it receives is already written (invariant 8).
func TestUseRecordedBeforeKeyLeaves(t *testing.T) {
	var buf *lockedBuffer
	var seen []map[string]any
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = buf.uses(t)
	}))
	defer up.Close()
	gw, b := newTestGateway(t, baseYAML, up.URL, secrets(time.Now()))
	buf = b
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("POST", "/openai/v1/chat/completions", strings.NewReader("{}")))
	if w.Code != 200 {
		t.Fatalf("status %d", w.Code)
	}
	recs := buf.records(t)
	if len(seen) != 1 || len(recs) != 1 {
		t.Fatalf("the upstream saw %d use records written before the key arrived, want 1; %d request records", len(seen), len(recs))
	}
	u, r := seen[0], recs[0]
	for _, f := range []string{"id", "client", "route", "secret", "key_fp", "method", "host", "path"} {
		if u[f] != r[f] || u[f] == nil {
			t.Errorf("%s: use record %v, request record %v", f, u[f], r[f])
		}
	}
	if u["attempt"] != 1.0 || r["attempt"] != 1.0 || u["key_fp"] == "" {
		t.Errorf("attempt: use %v, request %v; key_fp %v", u["attempt"], r["attempt"], u["key_fp"])
	}
}

func TestGatewaySecretStates(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer up.Close()
	expired := vault.NewSecret("openai", testKey, time.Now().Add(-48*time.Hour))
	expired.Expires = time.Now().Add(-time.Hour)
	tests := []struct {
		name    string
		yaml    string
		secrets map[string]vault.Secret
		status  int
		reason  string
	}{
		{"missing", baseYAML, nil, 503, CodeSecretMissing},
		{"expired blocks", baseYAML, map[string]vault.Secret{"openai": expired}, 503, CodeSecretExpired},
		{"expired warns", baseYAML + "vault: {on_expired: warn}\n", map[string]vault.Secret{"openai": expired}, 200, CodeSecretExpired},
		// A JSON document an earlier till's secret set stored as one
		// key: sent whole, every key in it would go.
		{"document as one key", baseYAML, map[string]vault.Secret{"openai": vault.NewSecret("openai", `{"api_key": "`+testKey+`"}`, time.Now())}, 503, CodeSecretMissing},
		{"list as one key", baseYAML, map[string]vault.Secret{"openai": vault.NewSecret("openai", `["`+testKey+`"]`, time.Now())}, 503, CodeSecretMissing},
		{"max_age", baseYAML + "vault: {max_age: 1d}\n", map[string]vault.Secret{"openai": vault.NewSecret("openai", testKey, time.Now().Add(-48*time.Hour))}, 503, CodeSecretExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw, audit := newTestGateway(t, tt.yaml, up.URL, tt.secrets)
			w := httptest.NewRecorder()
			gw.ServeHTTP(w, httptest.NewRequest("GET", "/openai/v1/models/x", nil))
			if w.Code != tt.status {
				t.Fatalf("status: got %d, want %d (%s)", w.Code, tt.status, w.Body)
			}
			rec := audit.records(t)[0]
			if rec["reason"] != tt.reason {
				t.Errorf("audit reason: got %q, want %q", rec["reason"], tt.reason)
			}
		})
	}
}

// testAudit writes audit records to w.
func testAudit(w io.Writer) *Audit { return NewAudit(audit.New(w, audit.Options{})) }

// failingWriter fails while fail is set, and after ok more writes when
// ok is positive.
type failingWriter struct {
	mu   sync.Mutex
	fail bool
	ok   int
	buf  bytes.Buffer
}

func (f *failingWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ok > 0 {
		f.ok--
		f.fail = f.ok == 0
	} else if f.fail {
		return 0, errors.New("disk full")
	}
	return f.buf.Write(p)
}

// TestAuditFailClosedAndRecovers fails the audit sink: no key may reach
// the upstream while its use cannot be recorded, and requests go through
// again once the sink works, with the records of the refused ones.
func TestAuditFailClosedAndRecovers(t *testing.T) {
	var hits atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer up.Close()
	cfg, err := config.Parse("till.yaml", []byte(strings.ReplaceAll(baseYAML, "{{UP}}", up.URL)), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sink := &failingWriter{fail: true}
	var reported atomic.Int32
	a := NewAudit(audit.New(sink, audit.Options{OnError: func(error, []byte) { reported.Add(1) }}))
	gw := New(NewSnapshot(cfg, secrets(time.Now())), Options{Audit: a, Log: zerolog.Nop()})
	serve := func() (int, string) {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", "/openai/v1/models/x", nil))
		return w.Code, w.Header().Get("X-Till-Error")
	}
	for i := range 2 {
		if code, e := serve(); code != 503 || e != CodeAuditUnavailable {
			t.Fatalf("request %d while the sink fails: got %d %q, want 503 audit_unavailable", i+1, code, e)
		}
	}
	if hits.Load() != 0 || reported.Load() == 0 || a.Healthy() || a.Failures() == 0 {
		t.Fatalf("while failing: %d upstream hits (want 0), %d failures reported, healthy %v", hits.Load(), reported.Load(), a.Healthy())
	}
	sink.mu.Lock()
	sink.fail = false
	sink.mu.Unlock()
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if code, _ := serve(); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sink works again, and requests are still refused 3s later")
		}
	}
	if hits.Load() != 1 {
		t.Errorf("upstream hits: got %d, want 1", hits.Load())
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if n := strings.Count(sink.buf.String(), `"reason":"audit_unavailable"`); n < 2 {
		t.Errorf("%d records of the refused requests written late, want 2 or more:\n%s", n, sink.buf.String())
	}
}

func TestMatch(t *testing.T) {
	cfg, err := config.Parse("till.yaml", []byte(strings.ReplaceAll(baseYAML, "{{UP}}", "https://api.example.com")), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := NewSnapshot(cfg, nil)
	tests := []struct{ path, route, rest string }{
		{"/openai", "openai", ""},
		{"/openai/", "openai", "/"},
		{"/openai/v1/x", "openai", "/v1/x"},
		{"/openai/special", "nested", ""},
		{"/openai/specialx", "openai", "/specialx"},
		{"/openai/special/v1", "nested", "/v1"},
		{"/openaix", "", ""},
		{"/", "", ""},
	}
	for _, tt := range tests {
		r, rest := s.match(tt.path)
		name := ""
		if r != nil {
			name = r.name
		}
		if name != tt.route || rest != tt.rest {
			t.Errorf("match(%q): got %q %q, want %q %q", tt.path, name, rest, tt.route, tt.rest)
		}
	}
}

// BenchmarkGateway measures one request through the handler to a local
// upstream over a keep-alive connection, audit record included.
func BenchmarkGateway(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`)
	}))
	defer up.Close()
	gw, _ := newTestGateway(b, baseYAML, up.URL, secrets(time.Now()))
	gw.audit = testAudit(io.Discard)
	front := httptest.NewServer(gw)
	defer front.Close()
	client := front.Client()
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	url := front.URL + "/openai/v1/chat/completions"
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		resp, err := client.Post(url, "application/json", strings.NewReader(`{"model":"x"}`))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// BenchmarkHandler measures the gateway's own work per request (in-process
// recorder in front, keep-alive upstream behind).
func BenchmarkHandler(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"ok":true}`)
	}))
	defer up.Close()
	gw, _ := newTestGateway(b, baseYAML, up.URL, secrets(time.Now()))
	gw.audit = testAudit(io.Discard)
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", "/openai/v1/models/x", nil))
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
}

// BenchmarkUpstreamDirect is the baseline: the same request straight to
// the upstream with the same kind of client.
func BenchmarkUpstreamDirect(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`)
	}))
	defer up.Close()
	client := up.Client()
	b.ReportAllocs()
	for b.Loop() {
		resp, err := client.Post(up.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"x"}`))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

func TestResponseEchoesRemoved(t *testing.T) {
	const key = "AIza/abc+def=ghi0123456789"
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Early", "key="+r.URL.Query().Get("key"))
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("X-Early")
		w.Header().Set("X-Query", r.URL.RawQuery)
		w.Header().Set("X-B64", base64.StdEncoding.EncodeToString([]byte(key)))
		w.Header().Set("X-Hex", hex.EncodeToString([]byte(key)))
		w.Header().Set("X-Till-Request-Id", "spoofed")
		w.Header().Set("X-Till-Error", "secret_expired")
		w.Header().Set("Trailer", "X-Trailer-Echo, X-Trailer-Fine")
		io.WriteString(w, "body")
		w.Header().Set("X-Trailer-Echo", key)
		w.Header().Set("X-Trailer-Fine", "fine")
	}))
	defer up.Close()
	yaml := "version: 1\nroutes:\n  - name: gem\n    upstream: {{UP}}\n    inject: {query: key}\n"
	gw, _ := newTestGateway(t, yaml, up.URL, map[string]vault.Secret{"gem": vault.NewSecret("gem", key, time.Now())})
	front := httptest.NewServer(gw)
	defer front.Close()

	var early http.Header
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		early = http.Header(h).Clone()
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", front.URL+"/gem/x?key=dummy;key=attacker&a=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "body" {
		t.Fatalf("body: got %q", body)
	}
	var dump strings.Builder
	early.Write(&dump)
	resp.Header.Write(&dump)
	resp.Trailer.Write(&dump)
	for _, form := range echoForms([]string{key}) {
		if strings.Contains(dump.String(), form) {
			t.Errorf("a form of the key reached the app:\n%s", dump.String())
		}
	}
	if q := resp.Header.Get("X-Query"); q != "" {
		t.Errorf("the echoed query header survived: %q", q)
	}
	if got := resp.Trailer.Get("X-Trailer-Fine"); got != "fine" {
		t.Errorf("an innocent trailer was removed: %q", got)
	}
	if ids := resp.Header.Values("X-Till-Request-Id"); len(ids) != 1 || ids[0] == "spoofed" {
		t.Errorf("request id: got %q, want till's only", ids)
	}
	if e := resp.Header.Values("X-Till-Error"); len(e) != 0 {
		t.Errorf("the upstream named a till error code: %q", e)
	}
}

func TestUpstreamSeesOneQueryKey(t *testing.T) {
	var got string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.URL.RawQuery }))
	defer up.Close()
	yaml := "version: 1\nroutes:\n  - name: gem\n    upstream: {{UP}}\n    inject: {query: key}\n"
	gw, _ := newTestGateway(t, yaml, up.URL, map[string]vault.Secret{"gem": vault.NewSecret("gem", "real", time.Now())})
	gw.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/gem/x?a=1;key=attacker&%6bey=x&key=y", nil))
	if got != "a=1&key=real" {
		t.Errorf("upstream query: got %q, want %q", got, "a=1&key=real")
	}
}

func TestTimeoutCountsFromEndOfUpload(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}))
	defer up.Close()
	yaml := "version: 1\nroutes:\n  - name: openai\n    preset: openai\n    upstream: {{UP}}\n    timeout: 200ms\n"
	gw, _ := newTestGateway(t, yaml, up.URL, secrets(time.Now()))
	front := httptest.NewServer(gw)
	defer front.Close()
	pr, pw := io.Pipe()
	go func() {
		for i := 0; i < 4; i++ {
			time.Sleep(100 * time.Millisecond) // an upload slower than the timeout
			io.WriteString(pw, "x")
		}
		pw.Close()
	}()
	resp, err := http.Post(front.URL+"/openai/upload", "text/plain", pr)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "xxxx" {
		t.Errorf("slow upload: got %d %q, want 200 %q", resp.StatusCode, body, "xxxx")
	}
}
