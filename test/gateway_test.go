package test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

const (
	openaiKey = "sk-test-0123456789abcdefOPENAI"
	geminiKey = "AIza-test-9876543210GEMINIkey"
	twilioSID = "AC0123456789abcdef0123456789abcdef"
	twilioTok = "twilio-auth-token-0123456789XYZ"
)

// providerConfig routes three inject forms (header, query, basic) to u.
func providerConfig(u *upstream, extra string) string {
	return fmt.Sprintf(`version: 1
routes:
  - name: openai
    preset: openai
    upstream: %[1]s
  - name: gemini
    upstream: %[1]s/gem
    inject: {query: key}
  - name: twilio
    preset: twilio
    upstream: %[1]s
  - name: slow
    preset: openai
    upstream: %[1]s
    secret: openai
    timeout: 300ms
%[2]s`, u.URL, extra)
}

var providerSecrets = map[string]string{
	"openai": openaiKey + "\n", // one trailing newline is trimmed

	"gemini": geminiKey,
	"twilio": fmt.Sprintf(`{"sid": %q, "token": %q}`, twilioSID, twilioTok),
}

var allKeys = []string{openaiKey, geminiKey, twilioSID, twilioTok}

func okHandler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"ok":true}`)
}

func TestInjectForms(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	tl := startTill(t, providerConfig(u, ""), providerSecrets, u.caFile)
	var responses []string

	t.Run("header replaces the client's Authorization", func(t *testing.T) {
		req := newRequest(t, "POST", tl.url("/openai/v1/chat/completions?stream=false"), strings.NewReader(`{"model":"x"}`))
		req.Header.Set("Authorization", "Bearer sk-dummy-from-the-app")
		req.Header.Add("Authorization", "Bearer second-dummy")
		req.Header.Set("X-Till-Token", "till_whatever")
		req.Header.Set("Proxy-Authorization", "Basic Zm9vOmJhcg==")
		req.Header.Set("Connection", "X-Hop")
		req.Header.Set("X-Hop", "hop-by-hop")
		req.Header.Set("Keep-Alive", "timeout=5")
		req.Header.Set("X-Forwarded-For", "10.1.2.3")
		req.Header.Set("Forwarded", "for=10.1.2.3")
		resp, body := do(t, req)
		responses = append(responses, dump(resp, body))
		if resp.StatusCode != 200 {
			t.Fatalf("status: got %d, want 200: %s", resp.StatusCode, body)
		}
		got := u.last(t)
		if v := got.Header.Values("Authorization"); len(v) != 1 || v[0] != "Bearer "+openaiKey {
			t.Errorf("upstream Authorization: got %d values, want exactly the real key", len(v))
		}
		for _, h := range []string{"X-Till-Token", "Proxy-Authorization", "X-Forwarded-For", "Forwarded", "X-Hop", "Keep-Alive"} {
			if v := got.Header.Get(h); v != "" {
				t.Errorf("upstream received %s", h)
			}
		}
		if got.Path != "/v1/chat/completions" || got.Query.Get("stream") != "false" {
			t.Errorf("upstream path: got %q ?%v, want /v1/chat/completions ?stream=false", got.Path, got.Query)
		}
		if string(got.Body) != `{"model":"x"}` {
			t.Errorf("upstream body: got %q", got.Body)
		}
		if got.Proto != 2 && !plainUpstreams {
			t.Errorf("upstream protocol: got HTTP/%d, want HTTP/2 (the upstream offers it)", got.Proto)
		}
		if want := u.Listener.Addr().String(); got.Host != want {
			t.Errorf("upstream Host: got %q, want %q", got.Host, want)
		}
	})

	t.Run("query parameter replaces the client's", func(t *testing.T) {
		req := newRequest(t, "GET", tl.url("/gemini/v1beta/models?key=dummy&%6bey=encoded-dummy&pageSize=5"), nil)
		resp, body := do(t, req)
		responses = append(responses, dump(resp, body))
		if resp.StatusCode != 200 {
			t.Fatalf("status: got %d, want 200: %s", resp.StatusCode, body)
		}
		got := u.last(t)
		if v := got.Query["key"]; len(v) != 1 || v[0] != geminiKey {
			t.Errorf("upstream key parameter: got %d values, want exactly the real key", len(v))
		}
		if got.Path != "/gem/v1beta/models" || got.Query.Get("pageSize") != "5" {
			t.Errorf("upstream path: got %q %v", got.Path, got.Query)
		}
	})

	t.Run("basic auth from two fields", func(t *testing.T) {
		req := newRequest(t, "GET", tl.url("/twilio/2010-04-01/Accounts.json"), nil)
		req.SetBasicAuth("dummy", "dummy")
		resp, body := do(t, req)
		responses = append(responses, dump(resp, body))
		if resp.StatusCode != 200 {
			t.Fatalf("status: got %d, want 200: %s", resp.StatusCode, body)
		}
		got := u.last(t)
		want := "Basic " + base64.StdEncoding.EncodeToString([]byte(twilioSID+":"+twilioTok))
		if v := got.Header.Values("Authorization"); len(v) != 1 || v[0] != want {
			t.Errorf("upstream Authorization: got %d values, want the real basic credentials", len(v))
		}
	})

	recs := tl.waitAudit(3)
	for _, r := range recs {
		checkAuditFields(t, r)
		// The openai route meters usage, and this upstream reports none.
		wantReason := ""
		if r["route"] == "openai" {
			wantReason = "usage_unknown"
		}
		if r["outcome"] != "forwarded" || r["reason"] != wantReason || r["mode"] != "reverse" || r["event"] != "request" {
			t.Errorf("audit record: %v", r)
		}
		if fp, _ := r["key_fp"].(string); !strings.HasPrefix(fp, "sha256:") || len(fp) != len("sha256:")+16 {
			t.Errorf("key_fp: got %q", fp)
		}
	}
	if r := recs[0]; r["route"] != "openai" || r["path"] != "/openai/v1/chat/completions" || r["status"] != 200.0 ||
		r["bytes_in"] != float64(len(`{"model":"x"}`)) || r["bytes_out"] != float64(len(`{"ok":true}`)) || r["method"] != "POST" {
		t.Errorf("openai audit record: %v", r)
	}
	tl.stop()
	tl.assertNoLeak(allKeys, responses...)
}

func TestRefusals(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	tl := startTill(t, providerConfig(u, ""), providerSecrets, u.caFile)
	tests := []struct {
		name, target, code string
		status             int
	}{
		{"unknown route", "/nope/v1", "route_not_found", 404},
		{"prefix is whole segments", "/openaiX/v1", "route_not_found", 404},
		{"dot dot", "/openai/v1/../../admin", "bad_request", 400},
		{"encoded dot dot", "/openai/v1/%2e%2e/x", "bad_request", 400},
		{"encoded slash", "/openai/v1%2fmodels", "bad_request", 400},
		{"encoded backslash", "/openai/v1%5cmodels", "bad_request", 400},
		{"backslash", "/openai/v1\\models", "bad_request", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, header, body := rawRequest(t, tl.addr, "GET "+tt.target+" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
			if status != tt.status {
				t.Errorf("status: got %d, want %d (%s)", status, tt.status, body)
			}
			if !strings.Contains(header, "X-Till-Error: "+tt.code) || !strings.Contains(body, `"code":"`+tt.code+`"`) {
				t.Errorf("got %q %q, want code %q", header, body, tt.code)
			}
		})
	}
	if n := len(u.requests()); n != 0 {
		t.Errorf("upstream received %d requests, want 0", n)
	}
	recs := tl.waitAudit(len(tests))
	for _, r := range recs {
		checkAuditFields(t, r)
		if r["outcome"] != "denied" || r["reason"] == "" || r["key_fp"] != "" {
			t.Errorf("denied audit record: %v", r)
		}
	}
}

// rawRequest writes a request as is (Go's client would clean the path) and
// returns the status, the header block and the body.
func rawRequest(t *testing.T, addr, raw string) (int, string, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, raw)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var h strings.Builder
	resp.Header.Write(&h)
	suiteLeaks.text(t.Name()+" raw response", h.String()+string(body))
	return resp.StatusCode, h.String(), string(body)
}

func TestUpstreamBehaviour(t *testing.T) {
	second := newUpstream(t, http.HandlerFunc(okHandler))
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/redirect":
			http.Redirect(w, r, second.URL+"/stolen", http.StatusFound)
		case "/echo":
			w.Header().Set("X-Echo-Auth", r.Header.Get("Authorization"))
			w.Header().Set("X-Other", "fine")
			okHandler(w, r)
		case "/sse":
			serveGatedSSE(w, r)
		case "/sleep":
			time.Sleep(2 * time.Second) // slow on purpose: outlasts the route's timeout
			okHandler(w, r)
		case "/ws":
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			typ, msg, err := c.Read(r.Context())
			if err == nil {
				c.Write(r.Context(), typ, append([]byte("echo: "), msg...))
			}
			c.Close(websocket.StatusNormalClosure, "")
		default:
			okHandler(w, r)
		}
	}))
	tl := startTill(t, providerConfig(u, ""), providerSecrets, u.caFile)
	var responses []string

	t.Run("redirect returned, not followed", func(t *testing.T) {
		resp, body := do(t, newRequest(t, "GET", tl.url("/openai/redirect"), nil))
		responses = append(responses, dump(resp, body))
		if resp.StatusCode != http.StatusFound || !strings.HasSuffix(resp.Header.Get("Location"), "/stolen") {
			t.Errorf("got %d %q, want 302 to /stolen", resp.StatusCode, resp.Header.Get("Location"))
		}
		if n := len(second.requests()); n != 0 {
			t.Errorf("the redirect target received %d requests, want 0", n)
		}
	})

	t.Run("echoed key header removed", func(t *testing.T) {
		resp, body := do(t, newRequest(t, "GET", tl.url("/openai/echo"), nil))
		responses = append(responses, dump(resp, body))
		if resp.Header.Get("X-Echo-Auth") != "" {
			t.Error("the header echoing the key reached the app")
		}
		if resp.Header.Get("X-Other") != "fine" {
			t.Error("an innocent header was removed")
		}
	})

	t.Run("server-sent events flushed at once", func(t *testing.T) {
		gate, query := newSSEGate(t)
		resp, err := http.Get(tl.url("/openai/sse" + query))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || line != "data: first\n" {
			t.Fatalf("first line: got %q, %v", line, err)
		}
		gate.firstEventSeen(t)
		rest, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(rest), "data: last") {
			t.Errorf("stream rest: got %q", rest)
		}
	})

	t.Run("websocket echo", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, "ws://"+tl.addr+"/openai/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if err := c.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
			t.Fatal(err)
		}
		_, msg, err := c.Read(ctx)
		if err != nil || string(msg) != "echo: hello" {
			t.Errorf("got %q, %v, want %q", msg, err, "echo: hello")
		}
		got := u.last(t)
		if got.Header.Get("Authorization") != "Bearer "+openaiKey {
			t.Error("the WebSocket handshake upstream did not carry the key")
		}
	})

	t.Run("slow upstream times out", func(t *testing.T) {
		resp, body := do(t, newRequest(t, "GET", tl.url("/slow/sleep"), nil))
		responses = append(responses, dump(resp, body))
		if resp.StatusCode != 504 || tillError(t, resp, body) != "upstream_timeout" {
			t.Errorf("got %d %s, want 504 upstream_timeout", resp.StatusCode, body)
		}
	})

	var timeout auditRecord
	for deadline := time.Now().Add(5 * time.Second); timeout == nil && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, r := range tl.audit() {
			checkAuditFields(t, r)
			if r["reason"] == "upstream_timeout" {
				timeout = r
			}
		}
	}
	if timeout == nil || timeout["outcome"] != "error" || timeout["key_fp"] == "" || timeout["status"] != 504.0 {
		t.Errorf("timeout audit record: %v", timeout)
	}
	tl.stop()
	tl.assertNoLeak(allKeys, responses...)
}

func TestUpstreamDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	cfg := fmt.Sprintf("version: 1\nroutes:\n  - name: openai\n    preset: openai\n    upstream: https://%s\n", addr)
	tl := startTill(t, cfg, map[string]string{"openai": openaiKey}, "")
	resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
	if resp.StatusCode != 502 || tillError(t, resp, body) != "upstream_unreachable" {
		t.Errorf("got %d %s, want 502 upstream_unreachable", resp.StatusCode, body)
	}
	r := tl.waitAudit(1)[0]
	checkAuditFields(t, r)
	if r["outcome"] != "error" || r["reason"] != "upstream_unreachable" || r["key_fp"] == "" || r["status"] != 502.0 {
		t.Errorf("audit record: %v", r)
	}
	tl.stop()
	tl.assertNoLeak([]string{openaiKey}, dump(resp, body))
}

func TestGracefulShutdown(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Second) // slow on purpose: in flight when SIGTERM comes
		okHandler(w, r)
	}))
	tl := startTill(t, providerConfig(u, ""), providerSecrets, u.caFile)
	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Get(tl.url("/openai/v1/models"))
		if err != nil {
			done <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{status: resp.StatusCode, body: string(b)}
	}()
	waitFor(t, 10*time.Second, "the request to reach the upstream", func() bool { return len(u.requests()) > 0 })
	if err := tl.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.err != nil || res.status != 200 || res.body != `{"ok":true}` {
		t.Errorf("in-flight request: got %d %q %v, want 200", res.status, res.body, res.err)
	}
	<-tl.done
	if tl.exit != nil {
		t.Errorf("till exited with %v after SIGTERM, want 0", tl.exit)
	}
	if recs := tl.audit(); len(recs) != 1 || recs[0]["status"] != 200.0 {
		t.Errorf("audit after shutdown: %v", recs)
	}
}

func TestBadConfigExits(t *testing.T) {
	dir := t.TempDir()
	cfg := "version: 1\nroutes:\n  - name: openai\n    upstream: http://api.openai.com\n    secrett: x\n"
	if err := os.WriteFile(dir+"/till.yaml", []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runTill(t, dir, "", nil, "serve", "--listen", "127.0.0.1:0")
	if code != 1 {
		t.Errorf("exit code: got %d, want 1", code)
	}
	for _, want := range []string{"till.yaml:4: routes[0].upstream", "till.yaml:5: routes[0].secrett"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

func TestDefaultsServePresetFromVault(t *testing.T) {
	// No config file: the openai preset is live because its secret is in the
	// vault. Its upstream is the real provider, which this machine cannot
	// reach, so the request ends as upstream_unreachable with the key attached.
	tl := startTill(t, "", map[string]string{"openai": openaiKey}, "")
	if !tl.waitLog(`"base_url":"http://` + tl.addr + `/openai/v1"`) {
		t.Errorf("log does not announce the openai base URL:\n%s", tl.stderr.String())
	}
	resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
	if resp.StatusCode == 404 {
		t.Fatalf("the openai preset route is not live: %s", body)
	}
	r := tl.waitAudit(1)[0]
	if r["route"] != "openai" || r["host"] != "api.openai.com" || r["key_fp"] == "" {
		t.Errorf("audit record: %v", r)
	}
	resp, body = do(t, newRequest(t, "GET", tl.url("/anthropic/v1/messages"), nil))
	if resp.StatusCode != 404 || tillError(t, resp, body) != "route_not_found" {
		t.Errorf("a preset without a secret is live: got %d", resp.StatusCode)
	}
	tl.stop()
	tl.assertNoLeak([]string{openaiKey})
}

// TestAuditUnavailableFailsClosed: no record can be written (no file may
// grow: RLIMIT_FSIZE 0, systemd's LimitFSIZE=0), so no key is sent.
func TestAuditUnavailableFailsClosed(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := tillDir(t, providerConfig(u, "audit: {file: audit.log}\n"))
	wrapper := []string{"sh", "-c", `ulimit -f 0 && exec "$@"`, "sh"}
	tl := startTillCmd(t, dir, u.caFile, wrapper, nil, "serve", "--listen", "127.0.0.1:0")
	do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil)) // its record cannot be written
	n := len(u.requests())
	for i := 0; i < 3; i++ {
		resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
		if resp.StatusCode != 503 || tillError(t, resp, body) != "audit_unavailable" {
			t.Errorf("got %d %s, want 503 audit_unavailable", resp.StatusCode, body)
		}
	}
	if got := len(u.requests()); got != n {
		t.Errorf("upstream received %d more requests while the audit sink was failing", got-n)
	}
	if !tl.waitLog("cannot write an audit record") {
		t.Errorf("the failure is not logged:\n%s", tl.stderr.String())
	}
}

func TestRequestBodyStreams(t *testing.T) {
	firstChunk := make(chan struct{})
	// This upstream reads the body itself, as it arrives.
	srv, caFile := newTLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(r.Body, buf); err != nil || string(buf) != "first" {
			http.Error(w, "bad first chunk", 500)
			return
		}
		close(firstChunk) // the app has not sent the rest yet
		rest, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s+%s", buf, rest)
	}))
	cfg := fmt.Sprintf("version: 1\nroutes:\n  - name: openai\n    preset: openai\n    upstream: %s\n", srv.URL)
	tl := startTill(t, cfg, map[string]string{"openai": openaiKey}, caFile)

	pr, pw := io.Pipe()
	go func() {
		io.WriteString(pw, "first")
		select {
		case <-firstChunk:
			io.WriteString(pw, "second")
		case <-time.After(5 * time.Second):
			// till buffered the body: the upstream never saw the first chunk
		}
		pw.Close()
	}()
	req := newRequest(t, "POST", tl.url("/openai/v1/files"), pr)
	// An upload: on a route that meters usage, other bodies up to 1 MiB
	// are read whole first (their model, their reservation).
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, body := do(t, req)
	if resp.StatusCode != 200 || string(body) != "first+second" {
		t.Errorf("got %d %q, want 200 %q: the request body was not streamed", resp.StatusCode, body, "first+second")
	}
}

func TestUpstreamCertificateVerified(t *testing.T) {
	needsTLSUpstream(t)
	u := newUpstream(t, http.HandlerFunc(okHandler))
	cfg := fmt.Sprintf("version: 1\nroutes:\n  - name: openai\n    preset: openai\n    upstream: %s\n", u.URL)
	// No SSL_CERT_FILE: the upstream's self-signed certificate is not trusted.
	tl := startTill(t, cfg, map[string]string{"openai": openaiKey}, "")
	resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
	if resp.StatusCode != 502 || tillError(t, resp, body) != "upstream_unreachable" {
		t.Errorf("got %d %s, want 502 upstream_unreachable", resp.StatusCode, body)
	}
	if n := len(u.requests()); n != 0 {
		t.Errorf("an upstream with an untrusted certificate received %d requests", n)
	}
	if !tl.waitLog("certificate") {
		t.Errorf("the log does not say why:\n%s", tl.stderr.String())
	}
}

func TestReload(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	good := fmt.Sprintf("version: 1\nroutes:\n  - name: openai\n    preset: openai\n    upstream: %s\n", u.URL)
	tl := startTill(t, good, map[string]string{"openai": openaiKey}, u.caFile)
	get := func(path string) int {
		resp, _ := do(t, newRequest(t, "GET", tl.url(path), nil))
		return resp.StatusCode
	}
	hup := func(wantLog string) {
		t.Helper()
		n := strings.Count(tl.stderr.String(), wantLog)
		if err := tl.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); strings.Count(tl.stderr.String(), wantLog) == n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log after SIGHUP:\n%s", wantLog, tl.stderr.String())
			}
		}
	}

	// A broken config is refused and the old one keeps serving.
	os.WriteFile(tl.dir+"/till.yaml", []byte(good+"    timeout: never\n"), 0o644)
	hup("reload failed")
	if !strings.Contains(tl.stderr.String(), "till.yaml:6: routes[0].timeout") {
		t.Errorf("the failed reload does not name file:line:\n%s", tl.stderr.String())
	}
	if got := get("/openai/v1/models"); got != 200 {
		t.Errorf("after a failed reload: got %d, want 200", got)
	}

	// A rotated key and a new route take effect on reload.
	const rotated = "sk-rotated-0123456789abcdef"
	os.WriteFile(tl.dir+"/till.yaml", []byte(good), 0o644)
	setSecret(t, tl.dir, "openai", rotated)
	os.WriteFile(tl.dir+"/till.yaml", []byte(good+"  - name: second\n    preset: openai\n    upstream: "+u.URL+"\n    secret: openai\n"), 0o644)
	hup(`"message":"reloaded"`)
	if got := get("/second/v1/models"); got != 200 {
		t.Errorf("new route after reload: got %d, want 200", got)
	}
	if a := u.last(t).Header.Get("Authorization"); a != "Bearer "+rotated {
		t.Error("the rotated key was not used after reload")
	}
	tl.stop()
	tl.assertNoLeak([]string{openaiKey, rotated})
}

func TestConcurrentSecretSets(t *testing.T) {
	dir := t.TempDir()
	setSecret(t, dir, "first", "value-first") // creates the key and vault
	const n = 8
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			cmd := exec.Command(tillBin, "secret", "set", fmt.Sprintf("key%d", i))
			cmd.Dir = dir
			cmd.Env = tillEnv()
			cmd.Stdin = strings.NewReader(fmt.Sprintf("value-%d", i))
			out, err := cmd.CombinedOutput()
			if err != nil {
				err = fmt.Errorf("%v: %s", err, out)
			}
			errs <- err
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	out, _, code := runTill(t, dir, "", nil, "secret", "list", "--json")
	var rows []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &rows) != nil {
		t.Fatalf("secret list: exit %d: %q", code, out)
	}
	if len(rows) != n+1 {
		t.Errorf("got %d secrets after %d concurrent sets, want %d: an update was lost", len(rows), n, n+1)
	}
}

func TestAuditFile(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	tl := startTill(t, providerConfig(u, "audit: {file: logs/audit.log}\n"), providerSecrets, u.caFile)
	do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
	do(t, newRequest(t, "GET", tl.url("/nowhere"), nil))
	tl.stop() // flushes and closes the audit file
	path := tl.dir + "/logs/audit.log"
	st, err := os.Stat(path)
	if err != nil {
		t.Fatalf("audit file (relative to the config): %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("audit file mode: got %v, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	requests := 0
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var r auditRecord
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		if r["event"] == "request" {
			requests++
			checkAuditFields(t, r)
		}
	}
	if requests != 2 {
		t.Fatalf("got %d request records, want 2:\n%s", requests, b)
	}
	if tl.stdout.String() != "" {
		t.Errorf("records went to stdout too: %q", tl.stdout.String())
	}
	b, _ = os.ReadFile(path)
	tl.assertNoLeak(allKeys, string(b))
}

func TestShutdownRecordsUpgradedConnections(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(context.Background())
			if err != nil {
				return
			}
			c.Write(context.Background(), typ, msg)
		}
	}))
	tl := startTill(t, providerConfig(u, "shutdown_grace: 1s\n"), providerSecrets, u.caFile)
	ctx := context.Background()
	c, _, err := websocket.Dial(ctx, "ws://"+tl.addr+"/openai/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.Write(ctx, websocket.MessageText, []byte("hi"))
	if _, _, err := c.Read(ctx); err != nil {
		t.Fatal(err)
	}
	tl.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-tl.done:
	case <-time.After(15 * time.Second):
		t.Fatal("till did not end the WebSocket after the grace period")
	}
	recs := tl.audit()
	if len(recs) != 1 || recs[0]["status"] != 101.0 || recs[0]["key_fp"] == "" || recs[0]["reason"] != "shutdown" {
		t.Errorf("audit after shutdown: got %v, want the WebSocket's record, reason shutdown\n%s", recs, tl.stderr.String())
	}
	if !strings.Contains(tl.stderr.String(), `"cut":1,`) {
		t.Errorf("the log does not say one request was cut:\n%s", tl.stderr.String())
	}
}

func TestClosedStdoutFailsClosed(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := t.TempDir()
	cfg := fmt.Sprintf("version: 1\nroutes:\n  - name: openai\n    preset: openai\n    upstream: %s\n", u.URL)
	os.WriteFile(dir+"/till.yaml", []byte(cfg), 0o644)
	setSecret(t, dir, "openai", openaiKey)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	cmd := exec.Command(tillBin, "serve", "--listen", "127.0.0.1:0")
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, tillEnv("SSL_CERT_FILE="+u.caFile), w, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	r.Close() // the audit sink's reader is gone: writes fail with EPIPE
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	tl := &till{t: t, stderr: stderr}
	if !tl.waitLog("till listening") {
		t.Fatalf("till did not start:\n%s", stderr.String())
	}
	var ev struct{ Addr string }
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(line, "till listening") {
			json.Unmarshal([]byte(line), &ev)
		}
	}
	statuses := []int{}
	for i := 0; i < 3; i++ {
		resp, err := http.Get("http://" + ev.Addr + "/openai/v1/models")
		if err != nil {
			t.Fatalf("request %d: %v (did till die of SIGPIPE?)", i, err)
		}
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
	}
	if statuses[1] != 503 || statuses[2] != 503 {
		t.Errorf("statuses: got %v, want 503 once the audit sink failed", statuses)
	}
	if !tl.waitLog(`"record":{`) {
		t.Errorf("the lost record is not kept in the operational log:\n%s", stderr.String())
	}
}

// TestUpstreamTLSSessionsResumed: a new connection to an upstream resumes
// the TLS session of an earlier one instead of a full handshake (a burst
// of new connections stays cheap).
func TestUpstreamTLSSessionsResumed(t *testing.T) {
	needsTLSUpstream(t)
	var mu sync.Mutex
	var resumed []bool
	srv, caFile := newTLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		resumed = append(resumed, r.TLS.DidResume)
		mu.Unlock()
		w.Header().Set("Connection", "close") // each request on a new connection
		okHandler(w, r)
	}))
	srv.Config.SetKeepAlivesEnabled(false) // HTTP/2 too: one request per connection
	cfg := fmt.Sprintf("version: 1\nroutes:\n  - name: openai\n    preset: openai\n    upstream: %s\n", srv.URL)
	tl := startTill(t, cfg, map[string]string{"openai": openaiKey}, caFile)
	for range 3 {
		if resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil)); resp.StatusCode != 200 {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(resumed) != 3 || resumed[0] || !resumed[1] || !resumed[2] {
		t.Errorf("resumed per connection: %v, want [false true true]", resumed)
	}
}
