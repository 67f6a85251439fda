package test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Process faults: till killed, stopped or reloaded while it works.

// fingerprintOf is a secret's fingerprint as till prints it: "sha256:" and
// the first 16 hex digits of SHA-256 of the value.
func fingerprintOf(value string) string {
	sum := sha256.Sum256([]byte(value))
	return "sha256:" + hex.EncodeToString(sum[:])[:16]
}

// listFingerprints runs till secret list --json in dir and returns each
// secret's fingerprint by name; it fails the test if the vault cannot be read.
func listFingerprints(t *testing.T, dir string) map[string]string {
	t.Helper()
	out, errOut, code := runTill(t, dir, "", nil, "secret", "list", "--json")
	var rows []struct{ Name, Fingerprint string }
	if code != 0 {
		t.Fatalf("till secret list: exit %d: the vault is unreadable\n%s", code, errOut)
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("till secret list --json: %v\n%s", err, out)
	}
	fps := map[string]string{}
	for _, r := range rows {
		fps[r.Name] = r.Fingerprint
	}
	return fps
}

// TestKill9DuringSecretSet kills `till secret set` at random points, again
// and again: the vault must stay readable and keep every write that was
// acknowledged (exit 0), whether it added a secret or rotated one.
func TestKill9DuringSecretSet(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: 200 processes killed")
	}
	const tries = 200
	dir := t.TempDir()
	// acked is the fingerprint of each name's last acknowledged value;
	// maybe holds those of writes that were killed and may or may not have
	// landed since.
	acked := map[string]string{}
	maybe := map[string][]string{}

	begin := time.Now()
	setSecret(t, dir, "k0", "value-k0") // creates the key and the vault
	acked["k0"] = fingerprintOf("value-k0")
	// Kill within 0–30 ms, narrowed to the lifetime of an uncontended
	// `secret set` when that is shorter, so that most kills land while it
	// runs: before, during and after the write.
	var longest time.Duration
	for range 3 {
		start := time.Now()
		setSecret(t, dir, "k0", "value-k0")
		longest = max(longest, time.Since(start))
	}
	window := min(30*time.Millisecond, max(5*time.Millisecond, longest*6/5))

	// Each try starts two till processes (secret set, then secret list):
	// about 15 s in all on an idle machine, and minutes on one as loaded
	// as CI's can be, which is no failure. The bound only ends a run that
	// stopped getting anywhere, with a message, before the suite's timeout.
	const bound = 5 * time.Minute
	var killed, done int
	for i := 1; i <= tries; i++ {
		if time.Since(begin) > bound {
			t.Fatalf("only %d tries in %v", i-1, time.Since(begin))
		}
		name := fmt.Sprintf("k%d", i)
		if i%3 == 0 {
			name = fmt.Sprintf("k%d", rand.IntN(i)) // rotate an earlier one
		}
		value := fmt.Sprintf("value-%d-%016x", i, rand.Uint64())
		cmd := exec.Command(tillBin, "secret", "set", name)
		cmd.Dir = dir
		cmd.Env = tillEnv()
		cmd.Stdin = strings.NewReader(value)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if i%10 != 0 { // every tenth write runs to its end
			// The scenario: a kill at a random moment of the write.
			time.Sleep(rand.N(window))
			_ = cmd.Process.Signal(syscall.SIGKILL) // fails when it has already exited
		}
		err := cmd.Wait()
		var ee *exec.ExitError
		switch {
		case err == nil:
			done++
			acked[name] = fingerprintOf(value)
			delete(maybe, name)
		case errors.As(err, &ee) && ee.ProcessState.Sys().(syscall.WaitStatus).Signaled():
			killed++
			maybe[name] = append(maybe[name], fingerprintOf(value))
		default:
			t.Fatalf("try %d: till secret set %s: %v\n%s", i, name, err, out.String())
		}

		got := listFingerprints(t, dir)
		for name, fp := range acked {
			switch g, ok := got[name]; {
			case !ok:
				t.Fatalf("try %d: acknowledged secret %q is gone", i, name)
			case g != fp && !slices.Contains(maybe[name], g):
				t.Fatalf("try %d: secret %q has fingerprint %s, want %s (acknowledged) or one of the killed writes %v", i, name, g, fp, maybe[name])
			}
		}
		for name, g := range got {
			if _, ok := acked[name]; !ok && !slices.Contains(maybe[name], g) {
				t.Fatalf("try %d: secret %q has fingerprint %s, which no write gave it", i, name, g)
			}
			// What is on disk now is what a later kill must not undo.
			acked[name] = g
			delete(maybe, name)
		}
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".till.vault.tmp-*"))
	t.Logf("%d tries in %v (kill within %v): %d killed, %d ran to the end; %d secrets; %d temp files left by killed writes",
		tries, time.Since(begin).Round(time.Millisecond), window.Round(100*time.Microsecond), killed, done, len(acked), len(leftovers))
	if killed == 0 {
		t.Error("no write was killed: the test proved nothing")
	}
}

// unavailable skips a test that needs what this machine may lack (root,
// namespaces), and fails it in CI, where everything must run.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// needTmpfsNamespace checks that this machine can mount a tmpfs in a
// private mount namespace (root), as startTillOnSmallDisk does.
func needTmpfsNamespace(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("unshare", "-m", "sh", "-c", `mount -t tmpfs -o size=32k tmpfs "$0"`, t.TempDir()).CombinedOutput(); err != nil {
		unavailable(t, "cannot mount a tmpfs in a private mount namespace (needs root): %v %s", err, out)
	}
}

// startTillOnSmallDisk serves the config in dir with its audit folder,
// dir/audit, on a tmpfs of size mounted only in till's mount namespace,
// and returns till and that folder as the test reaches it (through
// /proc/PID/root), where filling it fills till's disk.
func startTillOnSmallDisk(t *testing.T, dir, caFile, size string) (*till, string) {
	t.Helper()
	return startTillOnDisk(t, dir, caFile, size, ":")
}

// startTillOnDisk is startTillOnSmallDisk, with the shell command prep
// run on the mounted tmpfs ("$0") before till starts.
func startTillOnDisk(t *testing.T, dir, caFile, size, prep string) (*till, string) {
	t.Helper()
	auditDir := filepath.Join(dir, "audit")
	if err := os.Mkdir(auditDir, 0o700); err != nil {
		t.Fatal(err)
	}
	wrapper := []string{"unshare", "-m", "sh", "-c", `mount -t tmpfs -o size=` + size + `,mode=0700 tmpfs "$0" && { ` + prep + `; exec "$@"; }`, auditDir}
	tl := startTillCmd(t, dir, caFile, wrapper, nil, "serve", "--listen", "127.0.0.1:0")
	nsDir := fmt.Sprintf("/proc/%d/root%s", tl.cmd.Process.Pid, auditDir)
	if _, err := os.Stat(filepath.Join(nsDir, "audit.log")); err != nil {
		unavailable(t, "cannot reach till's audit folder through /proc: %v", err)
	}
	if _, err := os.Stat(filepath.Join(auditDir, "audit.log")); err == nil {
		t.Fatal("the audit file is outside the tmpfs: the mount did not happen in till's namespace")
	}
	return tl, nsDir
}

// TestAuditSinkRecovers fills the disk under the audit file while till
// serves, then frees it: till must refuse requests (503
// audit_unavailable) while it cannot write, and serve again by itself,
// without a restart, once it can. The audit file lives on a 32 KiB tmpfs
// mounted only in till's mount namespace; the test reaches it through
// /proc/PID/root.
func TestAuditSinkRecovers(t *testing.T) {
	needTmpfsNamespace(t)
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := t.TempDir()
	cfg := fmt.Sprintf("version: 1\nadmin: {listen: 127.0.0.1:0}\naudit: {file: audit/audit.log}\nroutes:\n  - name: openai\n    preset: openai\n    upstream: %s\n", u.URL)
	if err := os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	setSecret(t, dir, "openai", openaiKey)
	tl, nsDir := startTillOnSmallDisk(t, dir, u.caFile, "32k")
	admin := tl.adminAddr()

	type answer struct {
		status int
		code   string
		id     string
	}
	var answers []answer
	get := func() answer {
		t.Helper()
		resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
		a := answer{status: resp.StatusCode, id: resp.Header.Get("X-Till-Request-Id")}
		if a.status != 200 {
			a.code = tillError(t, resp, body)
		}
		if a.id == "" {
			t.Errorf("response %d has no X-Till-Request-Id", a.status)
		}
		answers = append(answers, a)
		return a
	}
	ready := func() int { return readyz(t, admin) }

	for i := 0; i < 3; i++ {
		if a := get(); a.status != 200 {
			t.Fatalf("before the disk fills: got %d %s, want 200", a.status, a.code)
		}
	}

	// Fill the disk.
	filler, err := os.Create(filepath.Join(nsDir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	block := make([]byte, 4096)
	for {
		if _, err := filler.Write(block); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the tmpfs: %v", err)
			}
			break
		}
	}
	filler.Close()
	refusedAt := -1
	for i := 0; i < 50; i++ {
		if a := get(); a.status == 503 {
			if a.code != "audit_unavailable" {
				t.Fatalf("disk full: got 503 %s, want audit_unavailable", a.code)
			}
			refusedAt = len(answers) - 1
			break
		} else if a.status != 200 {
			t.Fatalf("disk full: got %d %s, want 200 until a record fails, then 503", a.status, a.code)
		}
	}
	if refusedAt < 0 {
		t.Fatal("50 requests with the audit disk full, and till never refused one")
	}
	for i := 0; i < 3; i++ {
		if a := get(); a.status != 503 || a.code != "audit_unavailable" {
			t.Fatalf("disk still full: got %d %s, want 503 audit_unavailable", a.status, a.code)
		}
	}
	if st := ready(); st != 503 {
		t.Errorf("/readyz with the audit disk full: got %d, want 503", st)
	}
	upstreamBefore := len(u.requests())

	// Free it: till must recover by itself, with no request to prompt it
	// (an unready pod gets none): it writes the records that failed, late,
	// and is ready again.
	if err := os.Remove(filepath.Join(nsDir, "filler")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Second); ready() != 200; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("/readyz: still 503 2s after the audit disk has room, with no request")
		}
	}
	recovered := len(answers)
	var statuses []int
	for i := 0; i < 5; i++ {
		statuses = append(statuses, get().status)
	}
	if !slices.Equal(statuses, []int{200, 200, 200, 200, 200}) {
		t.Errorf("after the disk has room again: got %v, want 200 ×5 without a restart", statuses)
	}
	if st := ready(); st != 200 {
		t.Errorf("/readyz after recovery: got %d, want 200", st)
	}
	if got := len(u.requests()) - upstreamBefore; got != 5 {
		t.Errorf("upstream got %d requests after recovery, want 5", got)
	}

	// Every line of the audit file is a whole record, and every request
	// has its record: in the file, or, when it could not be written there,
	// in the operational log. None is dropped silently.
	b, err := os.ReadFile(filepath.Join(nsDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	inFile := map[string]int{}
	for n, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		var r auditRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Errorf("audit.log line %d is not one JSON record (a record cut short by the full disk runs into the next): %q", n+1, line)
			// Keep the record appended to the torn one, if whole.
			if i := strings.LastIndex(line, `{"level":`); i > 0 && json.Unmarshal([]byte(line[i:]), &r) == nil {
				if r["event"] == "request" {
					inFile[r["id"].(string)]++
				}
			}
			continue
		}
		if r["event"] != "request" {
			continue
		}
		checkAuditFields(t, r)
		id, _ := r["id"].(string)
		inFile[id]++
	}
	tl.stop()
	inLog := map[string]int{}
	for _, line := range strings.Split(tl.stderr.String(), "\n") {
		var ev struct {
			Message string
			Record  struct{ ID string }
		}
		if json.Unmarshal([]byte(line), &ev) == nil && strings.Contains(ev.Message, "cannot write an audit record") {
			inLog[ev.Record.ID]++
		}
	}
	for i, a := range answers {
		switch {
		case inFile[a.id] > 1:
			t.Errorf("request %d (%d %s): %d records in the audit file", i, a.status, a.code, inFile[a.id])
		case inFile[a.id] == 0 && inLog[a.id] == 0:
			t.Errorf("request %d (%d %s, id %s): no record in the audit file nor in the log", i, a.status, a.code, a.id)
		case i >= recovered && inFile[a.id] != 1:
			t.Errorf("request %d after recovery (%d %s): its record is not in the audit file", i, a.status, a.code)
		case inFile[a.id] != 1:
			t.Errorf("request %d (%d %s): its record failed, and was not written late once the disk had room", i, a.status, a.code)
		}
	}
	t.Logf("%d requests: the disk filled after %d answered (the last records failed), refused from then on, %d failed records kept in the log and written late; after freeing space: %v",
		len(answers), refusedAt, len(inLog), statuses)
}

// TestSIGTERMUnderLoadLosesNoRecord stops till with SIGTERM while eight
// clients keep sending requests, fast ones and slow ones (300 ms upstream),
// on kept-alive and fresh connections: every response that reached a
// client has exactly one audit record, and till exits 0.
func TestSIGTERMUnderLoadLosesNoRecord(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	var slowInFlight atomic.Int64 // slow requests the upstream is answering
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/slow") {
			slowInFlight.Add(1)
			defer slowInFlight.Add(-1)
			time.Sleep(300 * time.Millisecond) // slow on purpose: in flight at SIGTERM
		}
		okHandler(w, r)
	}))
	tl := startTill(t, providerConfig(u, ""), providerSecrets, u.caFile)

	type answer struct {
		id     string
		status int
		slow   bool
		during bool // sent before SIGTERM, answered after it
	}
	var (
		mu       sync.Mutex
		answers  []answer
		termSent atomic.Bool
		wg       sync.WaitGroup
	)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Half the clients keep connections alive, half open one per request.
			client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: w%2 == 1}}
			defer client.CloseIdleConnections()
			for {
				slow := w < 3 // three slow clients, five fast ones
				path := "/openai/v1/fast"
				if slow {
					path = "/openai/v1/slow"
				}
				before := !termSent.Load()
				resp, err := client.Get(tl.url(path))
				if err != nil {
					select {
					case <-tl.done:
						return
					default:
					}
					if termSent.Load() {
						return // till stopped accepting
					}
					t.Errorf("before SIGTERM: %v", err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				answers = append(answers, answer{resp.Header.Get("X-Till-Request-Id"), resp.StatusCode, slow, before && termSent.Load()})
				mu.Unlock()
			}
		}()
	}
	// SIGTERM once enough requests were answered, while a slow one is in
	// flight (sent, not yet answered: it must be answered after SIGTERM).
	waitFor(t, 20*time.Second, "16 answers and a slow request in flight", func() bool {
		mu.Lock()
		n := len(answers)
		mu.Unlock()
		return n >= 16 && slowInFlight.Load() > 0
	})
	termSent.Store(true)
	if err := tl.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tl.done:
	case <-time.After(40 * time.Second):
		t.Fatal("till did not exit within 40s of SIGTERM")
	}
	wg.Wait()
	if tl.exit != nil {
		t.Errorf("till exited with %v after SIGTERM, want 0\n%s", tl.exit, tl.stderr.String())
	}

	records := map[string][]auditRecord{}
	for _, r := range tl.audit() {
		id, _ := r["id"].(string)
		records[id] = append(records[id], r)
	}
	var inFlight, non200 int
	for _, a := range answers {
		if a.id == "" {
			t.Errorf("a %d response has no X-Till-Request-Id", a.status)
			continue
		}
		recs := records[a.id]
		if len(recs) != 1 {
			t.Errorf("request %s (%d, slow %v, in flight at SIGTERM %v): %d audit records, want 1", a.id, a.status, a.slow, a.during, len(recs))
			continue
		}
		if st, _ := recs[0]["status"].(float64); int(st) != a.status {
			t.Errorf("request %s: audit status %v, response %d", a.id, recs[0]["status"], a.status)
		}
		if a.status != 200 {
			non200++
		}
		if a.during {
			inFlight++
		}
	}
	t.Logf("%d responses (%d not 200), %d audit records; %d requests in flight at SIGTERM answered after it",
		len(answers), non200, len(tl.audit()), inFlight)
	if len(answers) < 16 || inFlight == 0 {
		t.Errorf("%d responses, %d of them in flight at SIGTERM: the test proved nothing", len(answers), inFlight)
	}
}

// TestReloadFiftyChangesUnderLoad changes the config and the vault fifty
// times while clients keep sending: a route that exists throughout never
// fails, a route that comes and goes answers 200 or 404 only, and the
// upstream sees the last rotated key at the end.
func TestReloadFiftyChangesUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	// The upstream answers with the fingerprint of the Authorization it got,
	// so that each response says which key till attached.
	srv, caFile := newTLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, fingerprintOf(r.Header.Get("Authorization")))
	}))
	route := func(name string) string {
		return fmt.Sprintf("  - name: %s\n    preset: openai\n    upstream: %s\n    secret: openai\n", name, srv.URL)
	}
	base := "version: 1\nroutes:\n" + route("stable")
	dir := t.TempDir()
	writeConfig := func(cfg string) {
		t.Helper()
		tmp := filepath.Join(dir, ".till.yaml.tmp")
		if err := os.WriteFile(tmp, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "till.yaml")); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig(base)
	key := "sk-reload-00-0123456789abcdef"
	var keysMu sync.Mutex
	known := map[string]bool{fingerprintOf("Bearer " + key): true} // every key ever set
	setSecret(t, dir, "openai", key)
	tl := startTillIn(t, dir, caFile)

	var (
		stop               = make(chan struct{})
		wg                 sync.WaitGroup
		stableSent, extraN atomic.Int64
		failMu             sync.Mutex
		failures           []string
	)
	fail := func(format string, args ...any) {
		failMu.Lock()
		defer failMu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		} else {
			failures[19] = "… and more"
		}
	}
	load := func(path string, check func(status int, body string) string, sent *atomic.Int64) {
		defer wg.Done()
		client := &http.Client{Timeout: 10 * time.Second}
		defer client.CloseIdleConnections()
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := client.Get(tl.url(path))
			sent.Add(1)
			if err != nil {
				fail("%s: %v", path, err)
				continue
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				fail("%s: reading the body: %v", path, err)
			} else if msg := check(resp.StatusCode, string(body)); msg != "" {
				fail("%s: %s", path, msg)
			}
		}
	}
	stableOK := func(status int, body string) string {
		keysMu.Lock()
		defer keysMu.Unlock()
		if status != 200 || !known[body] {
			return fmt.Sprintf("got %d %q, want 200 and a key's fingerprint", status, body)
		}
		return ""
	}
	for range 4 {
		wg.Add(1)
		go load("/stable/v1/models", stableOK, &stableSent)
	}
	wg.Add(1)
	go load("/extra/v1/models", func(status int, body string) string {
		if status == 404 || status == 200 && stableOK(status, body) == "" {
			return ""
		}
		return fmt.Sprintf("got %d %q, want 200 (route present) or 404 (route absent)", status, body)
	}, &extraN)

	// waitFor polls path until check(status, body) holds.
	waitFor := func(what, path string, check func(status int, body string) bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			resp, body := do(t, newRequest(t, "GET", tl.url(path), nil))
			if check(resp.StatusCode, string(body)) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not in effect after 10s (last answer %d %q)\n%s", what, resp.StatusCode, body, tl.stderr.String())
			}
		}
	}
	began := time.Now()
	extra := false
	for i := 0; i < 50; i++ {
		if i%2 == 0 {
			// Add or remove a route; every other time, SIGHUP on top of the
			// file watch.
			extra = !extra
			cfg := base
			if extra {
				cfg += route("extra")
			}
			writeConfig(cfg)
			if i%4 == 0 {
				if err := tl.cmd.Process.Signal(syscall.SIGHUP); err != nil {
					t.Fatal(err)
				}
			}
			want := 404
			if extra {
				want = 200
			}
			waitFor(fmt.Sprintf("change %d (extra route present: %v)", i, extra), "/extra/v1/models",
				func(status int, _ string) bool { return status == want })
		} else {
			// Rotate the key through the CLI; the vault watch reloads.
			key = fmt.Sprintf("sk-reload-%02d-%016x", i, rand.Uint64())
			fp := fingerprintOf("Bearer " + key)
			keysMu.Lock()
			known[fp] = true
			keysMu.Unlock()
			setSecret(t, dir, "openai", key)
			waitFor(fmt.Sprintf("change %d (key rotated)", i), "/stable/v1/models",
				func(status int, body string) bool { return status == 200 && body == fp })
		}
	}
	close(stop)
	wg.Wait()
	elapsed := time.Since(began)

	failMu.Lock()
	for _, f := range failures {
		t.Errorf("failed request: %s", f)
	}
	failMu.Unlock()
	resp, body := do(t, newRequest(t, "GET", tl.url("/stable/v1/models"), nil))
	if resp.StatusCode != 200 || string(body) != fingerprintOf("Bearer "+key) {
		t.Errorf("after 50 changes the upstream saw %d %q, want the last rotated key's fingerprint %s", resp.StatusCode, body, fingerprintOf("Bearer "+key))
	}
	// The final request's own record: records of requests that began on an
	// earlier snapshot may be written after it.
	if rec := tl.auditByID(resp.Header.Get("X-Till-Request-Id")); rec["key_fp"] != fingerprintOf(key) {
		t.Errorf("the final request's audit record key_fp: got %v, want %s", rec["key_fp"], fingerprintOf(key))
	}
	reloads := strings.Count(tl.stderr.String(), `"message":"reloaded"`)
	t.Logf("50 changes in %v (%d reloads): %d requests on the stable route, %d on the changing one, %d failed",
		elapsed.Round(time.Millisecond), reloads, stableSent.Load(), extraN.Load(), len(failures))
	if stableSent.Load() < 100 {
		t.Errorf("only %d requests on the stable route: the load did not run", stableSent.Load())
	}
	tl.stop()
	tl.assertNoLeak([]string{key})
}

// TestTimerSlack: till serve runs with a 5 ms timer slack, which it gets
// by executing itself again in place: same PID, arguments and output.
func TestTimerSlack(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	cfg := fmt.Sprintf("version: 1\nroutes:\n  - name: openai\n    preset: openai\n    upstream: %s\n", u.URL)
	tl := startTill(t, cfg, map[string]string{"openai": openaiKey}, u.caFile)
	pid := tl.cmd.Process.Pid
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/timerslack_ns", pid))
	if err != nil {
		t.Skip("no /proc/PID/timerslack_ns:", err)
	}
	if got := strings.TrimSpace(string(b)); got != "5000000" {
		t.Errorf("timer slack: got %s ns, want 5000000", got)
	}
	if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); !strings.Contains(string(cmdline), "serve\x00--listen") {
		t.Errorf("arguments changed on the way: %q", cmdline)
	}
	if resp, _ := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil)); resp.StatusCode != 200 {
		t.Errorf("got %d after the re-execution", resp.StatusCode)
	}
}

// TestGCTarget: till serve leaves the collector at Go's default, which
// costs less CPU per request than a tighter target (GOGC=50 cost 2-3% at
// a steady rate and 10% saturated, for 2.7 MiB less peak RSS), and takes
// GOGC from the environment (as the Go collector's metric shows).
func TestGCTarget(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	for _, tc := range []struct{ env, want string }{{"", "100"}, {"GOGC=50", "50"}} {
		dir := t.TempDir()
		cfg := fmt.Sprintf("version: 1\nadmin: {listen: 127.0.0.1:0}\nroutes:\n  - {name: openai, preset: openai, upstream: %q}\n", u.URL)
		if err := os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		setSecret(t, dir, "openai", openaiKey)
		var env []string
		if tc.env != "" {
			env = append(env, tc.env)
		}
		tl := startTillIn(t, dir, u.caFile, env...)
		_, metrics := adminGet(t, tl.adminAddr(), "/metrics", "")
		if want := "\ngo_gc_gogc_percent " + tc.want + "\n"; !strings.Contains(metrics, want) {
			t.Errorf("env %q: want %q in the metrics", tc.env, strings.TrimSpace(want))
		}
		tl.stop()
	}
}
