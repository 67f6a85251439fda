package test

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serveOnce runs till serve in dir with args after "serve" (args before it
// go in pre), its stderr to stderr, until read() holds want; then it stops
// till and returns everything read() holds once till has exited.
func serveOnce(t *testing.T, dir string, env []string, stderr io.Writer, read func() string, want string, pre []string, args ...string) string {
	t.Helper()
	argv := append(append(append([]string(nil), pre...), "serve", "--listen", "127.0.0.1:0"), args...)
	cmd := exec.Command(tillBin, argv...)
	cmd.Dir = dir
	cmd.Env = tillEnv(env...)
	var stdout syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		suiteLeaks.text(t.Name()+" stdout", stdout.String())
		suiteLeaks.text(t.Name()+" stderr", read())
	}()
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(read(), want); time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("till %s exited (%v) before it logged %q:\n%s", strings.Join(argv, " "), err, want, read())
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("till %s did not log %q:\n%s", strings.Join(argv, " "), want, read())
		}
	}
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatal("till did not stop on SIGINT")
	}
	return read()
}

// serveLog is serveOnce with stderr captured in a buffer.
func serveLog(t *testing.T, dir string, env []string, want string, pre []string, args ...string) string {
	t.Helper()
	var stderr syncBuffer
	return serveOnce(t, dir, env, &stderr, stderr.String, want, pre, args...)
}

// serveTerminal is serveOnce with a terminal as till's stderr.
func serveTerminal(t *testing.T, dir string, env []string, want string, args ...string) string {
	t.Helper()
	ptm, tty := openPTY(t)
	var out syncBuffer
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(&out, ptm) // ends (EIO) when till and this test close the terminal
	}()
	serveOnce(t, dir, env, tty, out.String, want, nil, args...)
	tty.Close()
	select {
	case <-copied:
	case <-time.After(2 * time.Second):
	}
	return out.String()
}

// jsonLines reports whether every non-empty line of s is a JSON object.
func jsonLines(s string) bool {
	for _, line := range strings.Split(s, "\n") {
		if line = strings.TrimSpace(line); line != "" && !json.Valid([]byte(line)) {
			return false
		}
	}
	return true
}

// noRoutes is the warning a till with no routes logs once it listens.
const noRoutes = "no routes"

func TestLogLevelAndFormat(t *testing.T) {
	dir := t.TempDir() // no config, no vault: built-in defaults, no routes

	t.Run("default", func(t *testing.T) {
		out := serveLog(t, dir, nil, noRoutes, nil)
		if !strings.Contains(out, `"message":"till listening"`) || !jsonLines(out) {
			t.Errorf("the default log is not JSON lines from info on:\n%s", out)
		}
	})
	for _, pre := range [][]string{{"--log-level", "warn"}, nil} {
		var args []string
		if pre == nil {
			args = []string{"--log-level", "warn"}
		}
		t.Run(fmt.Sprintf("warn %q %q", pre, args), func(t *testing.T) {
			out := serveLog(t, dir, nil, noRoutes, pre, args...)
			if strings.Contains(out, "till listening") || strings.Contains(out, `"level":"info"`) {
				t.Errorf("--log-level warn logs info lines:\n%s", out)
			}
			if !strings.Contains(out, `"level":"warn"`) {
				t.Errorf("--log-level warn hides warnings:\n%s", out)
			}
		})
	}
	t.Run("console", func(t *testing.T) {
		out := serveLog(t, dir, nil, noRoutes, []string{"--log-format=console"})
		if jsonLines(out) || !strings.Contains(out, "INF till listening") || !strings.Contains(out, "addr=127.0.0.1:") {
			t.Errorf("--log-format console is not readable lines:\n%s", out)
		}
		if strings.Contains(out, "\x1b[") {
			t.Errorf("colour when stderr is not a terminal:\n%q", out)
		}
	})
	t.Run("bad values", func(t *testing.T) {
		for _, args := range [][]string{
			{"serve", "--log-level", "loud"},
			{"--log-format", "xml", "serve"},
			{"serve", "--log-level"},
		} {
			_, errOut, code := runTill(t, dir, "", nil, args...)
			if code != 2 || !strings.Contains(errOut, "till: error: --log-") {
				t.Errorf("till %q: exit %d, %q; want exit 2 and a clear message", args, code, errOut)
			}
		}
	})
}

func TestLogColour(t *testing.T) {
	dir := t.TempDir()
	out := serveTerminal(t, dir, nil, noRoutes)
	if jsonLines(out) || !strings.Contains(out, "till listening") {
		t.Errorf("on a terminal, the log is not console lines:\n%q", out)
	}
	if !strings.Contains(out, "\x1b[") {
		t.Errorf("no colour on a terminal:\n%q", out)
	}
	out = serveTerminal(t, dir, []string{"NO_COLOR=1"}, noRoutes)
	if !strings.Contains(out, "till listening") || strings.Contains(out, "\x1b[") {
		t.Errorf("NO_COLOR=1: want console lines without ANSI escapes, got:\n%q", out)
	}
	out = serveTerminal(t, dir, nil, noRoutes, "--log-format", "json")
	if !strings.Contains(out, `"message":"till listening"`) || strings.Contains(out, "\x1b[") {
		t.Errorf("--log-format json on a terminal: got:\n%q", out)
	}
}

func TestLogConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(cfg string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("version: 1\nlog: {level: warn, format: console}\n")
	out := serveLog(t, dir, nil, noRoutes, nil)
	if strings.Contains(out, "till listening") || !strings.Contains(out, "WRN "+noRoutes) || jsonLines(out) {
		t.Errorf("log: {level: warn, format: console} not followed:\n%s", out)
	}
	// The flags win over the config.
	out = serveLog(t, dir, nil, noRoutes, []string{"--log-level", "info"}, "--log-format", "json")
	if !strings.Contains(out, `"message":"till listening"`) || !jsonLines(out) {
		t.Errorf("the flags do not win over log: in the config:\n%s", out)
	}
	// A reload applies log: (the config file changes; till notices).
	write("version: 1\nlog: {level: warn}\n")
	var stderr syncBuffer
	cmd := exec.Command(tillBin, "serve", "--listen", "127.0.0.1:0")
	cmd.Dir, cmd.Env, cmd.Stderr = dir, tillEnv(), &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		suiteLeaks.text(t.Name()+" stderr", stderr.String())
	}()
	waitFor(t, 20*time.Second, "the no-routes warning", func() bool { return strings.Contains(stderr.String(), noRoutes) })
	if strings.Contains(stderr.String(), "till listening") {
		t.Errorf("log.level warn logs info lines:\n%s", stderr.String())
	}
	// "reloaded" is an info line: it shows only if the reload applied the
	// new level before logging.
	write("version: 1\nlog: {level: debug}\n")
	waitFor(t, 10*time.Second, "the reload, logged at the new level", func() bool {
		return strings.Contains(stderr.String(), `"message":"reloaded"`)
	})

	// A bad value is a config error with its line.
	write("version: 1\nlog:\n  level: verbose\n")
	if _, errOut, code := runTill(t, dir, "", nil, "check"); code != 1 || !strings.Contains(errOut, "till.yaml:3: log.level: must be") {
		t.Errorf("check of a bad log.level: exit %d, %q", code, errOut)
	}
}

// TestInterceptedServerLogLevelled: --log-level / log.level is the least
// level till writes, net/http's own lines at warn (reference.md). The
// HTTP server behind intercepted CONNECTs (and the ReverseProxies of
// relays and upgrades) logged without a level, which the log writes
// whatever the level, labelled reverseproxy: any app that can CONNECT to
// a route's host wrote a line per connection into a log the operator set
// to errors only, a JSON line without "level".
func TestInterceptedServerLogLevelled(t *testing.T) {
	f := startForward(t, "deny", false, false, "admin: {listen: 127.0.0.1:0}\n")
	admin := f.tl.adminAddr()
	// garbage opens an intercepted tunnel and writes what is not the
	// HTTP/2 client preface, which the server inside logs.
	garbage := func() {
		c, br, resp := connect(t, f.tl.addr, "api.provider.test:"+f.provider.port())
		if resp.StatusCode != 200 {
			t.Fatalf("CONNECT: %d", resp.StatusCode)
		}
		tc := tls.Client(&bufferedConn{c, br}, &tls.Config{ServerName: "api.provider.test", RootCAs: f.tillRoots(t), NextProtos: []string{"h2"}})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		tc.Write([]byte("GARBAGE GARBAGE GARBAGE GARBAGE GARBAGE\r\n\r\n"))
		tc.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, tc)
		tc.Close()
	}
	lines := func(from int) []map[string]any {
		var evs []map[string]any
		for _, line := range strings.Split(strings.TrimSpace(f.tl.stderr.String()[from:]), "\n") {
			if line == "" {
				continue
			}
			var ev map[string]any
			if json.Unmarshal([]byte(line), &ev) != nil {
				ev = map[string]any{"unparsed": line}
			}
			evs = append(evs, ev)
		}
		return evs
	}

	// At the default level, a warning of the intercepting server's.
	before := len(f.tl.stderr.String())
	garbage()
	waitFor(t, 5*time.Second, "the intercepting server's line", func() bool {
		for _, ev := range lines(before) {
			if strings.Contains(fmt.Sprint(ev["message"]), "GARBAGE") {
				return true
			}
		}
		return false
	})
	for _, ev := range lines(before) {
		if strings.Contains(fmt.Sprint(ev["message"]), "GARBAGE") && (ev["level"] != "warn" || ev["component"] != "intercept") {
			t.Errorf("got level %v component %v, want warn, intercept: %v", ev["level"], ev["component"], ev)
		}
	}

	// Errors only, from now on (a reload applies log.level).
	cfgPath := filepath.Join(f.tl.dir, "till.yaml")
	cfg, _ := os.ReadFile(cfgPath)
	os.WriteFile(cfgPath, []byte(strings.Replace(string(cfg), "version: 1\n", "version: 1\nlog: {level: error}\n", 1)), 0o644)
	f.tl.cmd.Process.Signal(syscall.SIGHUP)
	// The "reloaded" line is at info, so not written: the metrics say.
	waitFor(t, 20*time.Second, "the reload", func() bool {
		_, body := adminGet(t, admin, "/metrics", "")
		n, _ := metric(body, `till_reloads_total{result="ok"}`)
		return n >= 1
	})
	before = len(f.tl.stderr.String())
	for i := 0; i < 5; i++ {
		garbage()
	}
	f.tl.stop() // all it wrote is read
	for _, ev := range lines(before) {
		if ev["level"] != "error" && ev["level"] != "fatal" && ev["level"] != "panic" {
			t.Errorf("with log.level error, a line below error or without a level: %v", ev)
		}
	}
}

// metric returns the value of the series whose line in the Prometheus
// text starts with series (name and labels, as printed), and whether
// there is one.
func metric(text, series string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			return v, err == nil
		}
	}
	return 0, false
}

func TestObservabilityMetrics(t *testing.T) {
	release := make(chan struct{})
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/slow") {
			<-release
		}
		okHandler(w, r)
	}))
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(providerConfig(u, "admin: {listen: 127.0.0.1:0}\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	setSecret(t, dir, "openai", openaiKey, "--expires", "30d")
	setSecret(t, dir, "gemini", geminiKey)
	setSecret(t, dir, "twilio", providerSecrets["twilio"], "--json")
	out, _, _ := runTill(t, dir, "", nil, "secret", "list", "--json")
	var listed []struct {
		Name    string
		Expires *time.Time
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil {
		t.Fatalf("secret list --json: %v: %s", err, out)
	}
	var expires time.Time
	for _, s := range listed {
		if s.Name == "openai" && s.Expires != nil {
			expires = *s.Expires
		}
	}
	if expires.IsZero() {
		t.Fatalf("secret list shows no expiry for openai: %s", out)
	}
	tl := startTillIn(t, dir, u.caFile)
	admin := tl.adminAddr()
	scrape := func() string {
		t.Helper()
		code, body := adminGet(t, admin, "/metrics", "")
		if code != 200 {
			t.Fatalf("/metrics: %d", code)
		}
		return body
	}

	m := scrape()
	if v, ok := metric(m, `till_secret_expiry_timestamp_seconds{secret="openai"}`); !ok || v != float64(expires.Unix()) {
		t.Errorf("openai expiry: got %v (present %v), want %d", v, ok, expires.Unix())
	}
	for _, name := range []string{"gemini", "twilio"} {
		if _, ok := metric(m, `till_secret_expiry_timestamp_seconds{secret="`+name+`"}`); ok {
			t.Errorf("%s has no expiry, and a series", name)
		}
	}
	build := regexp.MustCompile(`(?m)^till_build_info\{commit="[^"]+",go="` + regexp.QuoteMeta(runtime.Version()) + `",version="[^"]+"\} 1$`)
	if !build.MatchString(m) {
		t.Errorf("no till_build_info with this Go version:\n%s", grepLines(m, "till_build_info"))
	}
	for series, want := range map[string]float64{"till_requests_in_flight": 0, "till_audit_healthy": 1} {
		if v, ok := metric(m, series); !ok || v != want {
			t.Errorf("%s at rest: got %v (present %v), want %v", series, v, ok, want)
		}
	}
	loaded, ok := metric(m, "till_config_last_reload_success_timestamp_seconds")
	if now := float64(time.Now().Unix()); !ok || loaded < now-60 || loaded > now+1 {
		t.Errorf("last reload at start: got %v (present %v), want about %v", loaded, ok, now)
	}

	// A slow request is in flight while its upstream holds it.
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get(tl.url("/openai/v1/slow"))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	waitFor(t, 10*time.Second, "till_requests_in_flight ≥ 1", func() bool {
		v, _ := metric(scrape(), "till_requests_in_flight")
		return v >= 1
	})
	close(release)
	<-done
	waitFor(t, 10*time.Second, "till_requests_in_flight back to 0", func() bool {
		v, _ := metric(scrape(), "till_requests_in_flight")
		return v == 0
	})

	// A reload moves the timestamp; the secret's expiry stays.
	time.Sleep(20 * time.Millisecond)
	resp, body := do(t, newRequest(t, "POST", "http://"+admin+"/admin/reload", nil))
	if resp.StatusCode != 200 {
		t.Fatalf("reload: %d %s", resp.StatusCode, body)
	}
	m = scrape()
	if v, _ := metric(m, "till_config_last_reload_success_timestamp_seconds"); v <= loaded {
		t.Errorf("after POST /admin/reload: got %v, want later than %v", v, loaded)
	}
	if v, _ := metric(m, `till_secret_expiry_timestamp_seconds{secret="openai"}`); v != float64(expires.Unix()) {
		t.Errorf("openai expiry after reload: got %v, want %d", v, expires.Unix())
	}
	tl.stop()
	tl.assertNoLeak(allKeys, m)
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

func TestVersionOutput(t *testing.T) {
	out, errOut, code := runTill(t, t.TempDir(), "", nil, "version")
	want := regexp.MustCompile(`^till \S+\ncommit: \S+\nbuilt:  \S+\ngo:     ` + regexp.QuoteMeta(runtime.Version()) + `\n$`)
	if code != 0 || !want.MatchString(out) {
		t.Errorf("till version: exit %d, %q %q; want version, commit, build date and Go version", code, out, errOut)
	}
}

// TestACMELogged checks that certmagic's log reaches till's: the ACME
// issuance at start is logged at info, as JSON lines like till's own,
// without a private key.
func TestACMELogged(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an ACME server")
	}
	u := newUpstream(t, http.HandlerFunc(okHandler))
	p := newPKI(t)
	dirURL, _ := startPebble(t, p)
	upstreamCA, _ := os.ReadFile(u.caFile)
	pebbleCA, _ := os.ReadFile(p.caFile)
	roots := filepath.Join(t.TempDir(), "roots.pem")
	os.WriteFile(roots, append(upstreamCA, pebbleCA...), 0o644)

	tlsBlock := fmt.Sprintf("  names: [localhost]\n  acme: {email: ops@example.com, ca: %q}\n", dirURL)
	tl := startTill(t, tlsListenerConfig(u, tlsBlock, "", ""), map[string]string{"openai": openaiKey}, roots)
	tl.stop()
	var certmagic, obtained int
	for _, line := range strings.Split(strings.TrimSpace(tl.stderr.String()), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Errorf("a log line is not JSON: %q", line)
			continue
		}
		if ev["component"] != "certmagic" {
			continue
		}
		certmagic++
		if ev["level"] == "info" && strings.Contains(fmt.Sprint(ev["message"]), "certificate obtained successfully") {
			obtained++
		}
		if ev["level"] == "debug" {
			t.Errorf("a debug line at the default level: %q", line)
		}
	}
	if certmagic == 0 || obtained == 0 {
		t.Errorf("certmagic's issuance is not in till's log (%d certmagic lines, %d obtained):\n%s", certmagic, obtained, tl.stderr.String())
	}
	if strings.Contains(tl.stderr.String(), "PRIVATE KEY") {
		t.Error("a private key in the log")
	}
	tl.assertNoLeak([]string{openaiKey})
}

// TestServeWarningsAreLogLines: what serve warns about the files it reads
// (a vault key its group can read, as fsGroup leaves a Kubernetes Secret's;
// a config its group can write), at start and at each reload, is a line
// of its log like the rest: JSON, at level warn. A plain line there is
// one a log pipeline that parses JSON cannot read (GKE files a stderr
// line it cannot parse as an ERROR).
func TestServeWarningsAreLogLines(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := t.TempDir()
	setSecret(t, dir, "openai", openaiKey)
	cfg := fmt.Sprintf("version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: %q}\n", u.URL)
	if err := os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	for f, mode := range map[string]os.FileMode{"till.key": 0o640, "till.yaml": 0o664} {
		if err := os.Chmod(filepath.Join(dir, f), mode); err != nil {
			t.Fatal(err)
		}
	}
	tl := startTillIn(t, dir, u.caFile)
	tl.cmd.Process.Signal(sighup)
	if !tl.waitLog(`"message":"reloaded"`) {
		t.Fatalf("no reload logged:\n%s", tl.stderr.String())
	}
	tl.stop()
	out := tl.stderr.String()
	if !jsonLines(out) {
		t.Errorf("serve's log is not JSON lines:\n%s", out)
	}
	for _, warning := range []string{"readable by other users", "writable by its group"} {
		n := 0
		for line := range strings.Lines(out) {
			if strings.Contains(line, `"level":"warn"`) && strings.Contains(line, warning) {
				n++
			}
		}
		if n != 2 {
			t.Errorf("%d warnings at level warn saying %q, want 2 (start, reload):\n%s", n, warning, out)
		}
	}
}
