package test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Audit you can take to an incident, end to end and under load: the
// write-ahead use record survives kill -9 and a full disk, the hash chain
// survives restarts and every kind of rotation, and the CLI finds every
// edit, cut and removal, signed checkpoints included.

// incidentHandler answers like okHandler, except for a path whose last
// segment starts with "sse-": an event stream of about a second, flushed
// event by event, that ends early when till goes away.
func incidentHandler(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(path.Base(r.URL.Path), "sse-") {
		okHandler(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	f := w.(http.Flusher)
	for i := range 10 {
		fmt.Fprintf(w, "data: {\"n\":%d}\n\n", i)
		f.Flush()
		select {
		case <-r.Context().Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	io.WriteString(w, "data: [DONE]\n\n")
}

// keyedNames counts, by the last segment of the path, the requests u
// received with the openai key injected.
func keyedNames(u *upstream) map[string]int {
	keyed := map[string]int{}
	for _, s := range u.requests() {
		if s.Header.Get("Authorization") == "Bearer "+openaiKey {
			keyed[path.Base(s.Path)]++
		}
	}
	return keyed
}

// incidentAnswer is what one request of an incidentLoad got back.
type incidentAnswer struct {
	name   string // the last segment of its path, unique in the test
	status int    // 0: no answer (till gone, or the connection broke)
	code   string // X-Till-Error
	id     string // X-Till-Request-Id
	// afterRefusal: sent after some request of the load was answered
	// 503 audit_unavailable.
	afterRefusal bool
}

// incidentLoad sends GET /openai/v1/models/NAME through till from several
// workers, each NAME unique (every 20th an event stream, "sse-…"), until
// halted or until limit requests were sent, and keeps every answer.
type incidentLoad struct {
	addr, tag string
	limit     int64 // 0: until halted
	next      atomic.Int64
	stopc     chan struct{}
	wg        sync.WaitGroup
	client    *http.Client
	ok        atomic.Int64 // answers 200
	refused   atomic.Int64 // answers 503 audit_unavailable
	mu        sync.Mutex
	answers   []incidentAnswer
	dumps     strings.Builder // every response, for the suite's leak check
}

// startIncidentLoad starts workers sending requests to the till at addr,
// with names "TAG-N"; limit 0 sends until halt.
func startIncidentLoad(addr, tag string, workers, limit int) *incidentLoad {
	l := &incidentLoad{
		addr: addr, tag: tag, limit: int64(limit), stopc: make(chan struct{}),
		client: &http.Client{
			Timeout:   15 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: workers, DisableCompression: true},
		},
	}
	for range workers {
		l.wg.Go(l.work)
	}
	return l
}

// work sends requests one after the other until the load ends.
func (l *incidentLoad) work() {
	for {
		select {
		case <-l.stopc:
			return
		default:
		}
		n := l.next.Add(1)
		if l.limit > 0 && n > l.limit {
			return
		}
		name := fmt.Sprintf("%s-%d", l.tag, n)
		if n%20 == 0 {
			name = "sse-" + name
		}
		a := l.send(name)
		l.mu.Lock()
		l.answers = append(l.answers, a)
		l.mu.Unlock()
	}
}

// send sends one request and reads its response to the end.
func (l *incidentLoad) send(name string) incidentAnswer {
	a := incidentAnswer{name: name, afterRefusal: l.refused.Load() > 0}
	resp, err := l.client.Get("http://" + l.addr + "/openai/v1/models/" + name)
	if err != nil {
		return a
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return a // cut: counts as no answer
	}
	a.status, a.code, a.id = resp.StatusCode, resp.Header.Get("X-Till-Error"), resp.Header.Get("X-Till-Request-Id")
	switch {
	case a.status == 200:
		l.ok.Add(1)
	case a.status == 503 && a.code == "audit_unavailable":
		l.refused.Add(1)
	}
	l.mu.Lock()
	l.dumps.WriteString(dump(resp, body))
	l.mu.Unlock()
	return a
}

// halt stops the workers, waits for them and returns every answer.
func (l *incidentLoad) halt() []incidentAnswer {
	close(l.stopc)
	return l.wait()
}

// wait waits for the workers (of a load with a limit) to end and returns
// every answer.
func (l *incidentLoad) wait() []incidentAnswer {
	l.wg.Wait()
	l.client.CloseIdleConnections()
	l.mu.Lock()
	defer l.mu.Unlock()
	suiteLeaks.text("load "+l.tag+" responses", l.dumps.String())
	l.dumps.Reset()
	return slices.Clone(l.answers)
}

// answered returns how many requests got an answer so far.
func (l *incidentLoad) answered() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.answers)
}

// incidentRec is one record of an audit trail, with where it is.
type incidentRec struct {
	file string // base name
	line int
	rec  auditRecord
	raw  string
}

// name is the last segment of the record's path.
func (r incidentRec) name() string { return path.Base(fmt.Sprint(r.rec["path"])) }

// readIncidentTrail reads the audit files given, oldest first, and fails
// the test unless every line is one whole JSON record and every file ends
// with a newline (no record torn or split across files).
func readIncidentTrail(t *testing.T, files ...string) []incidentRec {
	t.Helper()
	var recs []incidentRec
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("read the audit file: %v", err)
		}
		suiteLeaks.text(f, string(b))
		if len(b) > 0 && b[len(b)-1] != '\n' {
			t.Errorf("%s does not end with a newline: its last record is cut", filepath.Base(f))
		}
		for i, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			if line == "" && len(b) == 0 {
				break
			}
			var r auditRecord
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Errorf("%s:%d is not one whole JSON record (torn or split): %.200q", filepath.Base(f), i+1, line)
				continue
			}
			recs = append(recs, incidentRec{file: filepath.Base(f), line: i + 1, rec: r, raw: line})
		}
	}
	return recs
}

// byEvent returns the records of the event.
func byEvent(recs []incidentRec, event string) []incidentRec {
	var out []incidentRec
	for _, r := range recs {
		if r.rec["event"] == event {
			out = append(out, r)
		}
	}
	return out
}

// auditVerify runs till audit verify with args in dir.
func auditVerify(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runTill(t, dir, "", nil, append([]string{"audit", "verify"}, args...)...)
}

// tillDir returns a new folder holding config as till.yaml and
// providerSecrets in its vault, ready for till serve.
func tillDir(t *testing.T, config string) string {
	t.Helper()
	dir := t.TempDir()
	tillDirIn(t, dir, config)
	return dir
}

// tillDirIn writes config as dir's till.yaml and stores providerSecrets
// in dir's vault, as startTill does.
func tillDirIn(t *testing.T, dir, config string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "till.yaml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, value := range providerSecrets {
		if strings.HasPrefix(value, "{") {
			setSecret(t, dir, name, value, "--json")
		} else {
			setSecret(t, dir, name, value)
		}
	}
}

// killTill kills till with SIGKILL, waits for it to be gone and hands what
// it printed to the suite's leak check (its audit file is read, and
// checked, by the test).
func killTill(t *testing.T, tl *till) {
	t.Helper()
	if err := tl.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-tl.done
	suiteLeaks.text(t.Name()+" stdout", tl.stdout.String())
	suiteLeaks.text(t.Name()+" stderr", tl.stderr.String())
	tl.recorded = true
}

// checkSeqs fails the test unless the records of each file are numbered
// 1, 2, … in order: the chain went on across restarts, with no record
// lost or repeated.
func checkSeqs(t *testing.T, recs []incidentRec) {
	t.Helper()
	for _, r := range recs {
		if seq, _ := r.rec["seq"].(float64); int(seq) != r.line {
			t.Errorf("%s:%d has seq %v, want %d", r.file, r.line, r.rec["seq"], r.line)
			return
		}
	}
}

// TestKill9LosesNoKeyUse kills till with SIGKILL under load, 20 times,
// each time restarting it on the same audit file: every key the upstream
// received has its use record, written before the key left, no line of
// the file is torn, and the chain goes on across every restart.
func TestKill9LosesNoKeyUse(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: 20 tills killed under load")
	}
	const rounds, workers = 20, 8
	u := newUpstream(t, http.HandlerFunc(incidentHandler))
	dir := tillDir(t, providerConfig(u, "audit: {file: audit.log}\n"))
	answered, cut := 0, 0
	for round := range rounds {
		tl := startTillIn(t, dir, u.caFile)
		load := startIncidentLoad(tl.addr, fmt.Sprintf("r%d", round), workers, 0)
		time.Sleep(time.Duration(100+rand.IntN(300)) * time.Millisecond)
		killTill(t, tl)
		for _, a := range load.halt() {
			if a.status != 0 {
				answered++
			} else {
				cut++
			}
		}
	}

	recs := readIncidentTrail(t, filepath.Join(dir, "audit.log"))
	checkSeqs(t, recs)
	uses, requests := byEvent(recs, "use"), byEvent(recs, "request")
	used := map[string]int{}
	for _, r := range uses {
		used[r.name()]++
	}
	keyed := keyedNames(u)
	keys, missing := 0, 0
	for name, n := range keyed {
		keys += n
		if used[name] < n {
			missing++
			if missing <= 5 {
				t.Errorf("the upstream received the key %d times for %s, and the audit file has %d use records of it", n, name, used[name])
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d paths received with the key lack their use record", missing, len(keyed))
	}
	if len(keyed) == 0 {
		t.Fatal("the upstream received no key: the test proved nothing")
	}
	unsent := 0 // recorded, then killed before the key went
	for name, n := range used {
		unsent += max(n-keyed[name], 0)
	}
	t.Logf("%d rounds: the upstream received the key %d times (%d paths); the audit file holds %d use records (%d for sends the kill stopped) and %d request records, %d lines; clients got %d answers, and none for %d requests (cut by the kill, or sent after it)",
		rounds, keys, len(keyed), len(uses), unsent, len(requests), len(recs), answered, cut)

	out, errOut, code := auditVerify(t, dir, "audit.log")
	if code != 0 || !strings.Contains(out, "ok: ") {
		t.Errorf("till audit verify audit.log after %d kills: exit %d\n%s%s", rounds, code, out, errOut)
	}
}

// TestKill9ThenRotatedBeforeRestart kills till with SIGKILL and leaves
// its audit file ending in a record cut short (the kill stopped its
// write), then renames the file as logrotate does (at boot after a
// crash, say) before till starts again: the new file must chain to the
// rotated one (prev_file), the cut record must be removed from it as it
// would have been at the path, and till audit verify must pass. Before,
// the new file started a chain of its own and verify stopped at the cut
// record.
func TestKill9ThenRotatedBeforeRestart(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(incidentHandler))
	dir := tillDir(t, providerConfig(u, "audit: {file: audit.log}\n"))
	get := func(tl *till, name string) {
		t.Helper()
		if resp, _ := do(t, newRequest(t, "GET", tl.url("/openai/v1/models/"+name), nil)); resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d", name, resp.StatusCode)
		}
	}
	tl := startTillIn(t, dir, u.caFile)
	get(tl, "before-1")
	get(tl, "before-2")
	killTill(t, tl)
	path := filepath.Join(dir, "audit.log")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A use record whose write the kill stopped halfway.
	use, _, _ := strings.Cut(string(b), "\n")
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(use[:len(use)/2])
	f.Close()
	rotated := "audit.log-20261206"
	if err := os.Rename(path, filepath.Join(dir, rotated)); err != nil {
		t.Fatal(err)
	}

	tl = startTillIn(t, dir, u.caFile)
	get(tl, "after")
	tl.stop()
	if !strings.Contains(tl.stderr.String(), "removed a record cut short by a crash") {
		t.Errorf("the repair of %s is not in the log:\n%s", rotated, tl.stderr.String())
	}
	recs := readIncidentTrail(t, path)
	if len(recs) == 0 || recs[0].rec["prev_file"] != rotated {
		t.Errorf("the new file's first record: %v, want prev_file %s", recs, rotated)
	}
	out, errOut, code := auditVerify(t, dir, rotated, "audit.log")
	if code != 0 {
		t.Errorf("till audit verify %s audit.log: exit %d\n%s%s", rotated, code, out, errOut)
	}
}

// TestSecondTillOnSameAuditFileRefused starts a second till serve on the
// audit file a running till writes, as an operator trying something out
// would, on the running till's address: it fails to listen, but it had
// opened the file first and, with audit.sign, written its own checkpoint
// to it, so that the running till's next record repeated its seq and
// the signed trail no longer verified. The second till must refuse the
// file before it writes a byte to it.
func TestSecondTillOnSameAuditFileRefused(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(incidentHandler))
	dir := tillDir(t, providerConfig(u, "audit: {file: audit.log, sign: true}\n"))
	tl := startTillIn(t, dir, u.caFile)
	get := func(name string) {
		t.Helper()
		if resp, _ := do(t, newRequest(t, "GET", tl.url("/openai/v1/models/"+name), nil)); resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d", name, resp.StatusCode)
		}
	}
	get("before")
	_, errOut, code := runTill(t, dir, "", []string{"SSL_CERT_FILE=" + u.caFile}, "serve", "--listen", tl.addr)
	if code != 1 || !strings.Contains(errOut, "another till") {
		t.Errorf("a second till serve on the same audit file: exit %d, want 1 naming the other till\n%s", code, errOut)
	}
	// One hint, the one that helps: the config is not at fault.
	if strings.Count(errOut, "hint") != 1 || !strings.Contains(errOut, "till: hint: stop that till first, or give each till its own audit.file") {
		t.Errorf("a second till serve on the same audit file: want one hint, to stop the other till\n%s", errOut)
	}
	get("after")
	tl.stop()
	pub, errOut, code := runTill(t, dir, "", nil, "audit", "pubkey")
	if code != 0 {
		t.Fatalf("till audit pubkey: exit %d\n%s", code, errOut)
	}
	if err := os.WriteFile(filepath.Join(dir, "pub.txt"), []byte(pub), 0o644); err != nil {
		t.Fatal(err)
	}
	checkSeqs(t, readIncidentTrail(t, filepath.Join(dir, "audit.log")))
	if out, errOut, code := auditVerify(t, dir, "--pubkey", "pub.txt", "audit.log"); code != 0 {
		t.Errorf("till audit verify --pubkey after a second till tried the file: exit %d\n%s%s", code, out, errOut)
	}
}

// TestUnwritableAuditSinkSendsNoKey fills the disk under the audit file
// while eight clients send requests: no key may reach the upstream
// without its use record, requests get 503 audit_unavailable from the
// first record that fails, and once the disk has room again requests
// succeed. The audit file lives on a tmpfs mounted only in till's mount
// namespace, as in TestAuditSinkRecovers.
func TestUnwritableAuditSinkSendsNoKey(t *testing.T) {
	needTmpfsNamespace(t)
	u := newUpstream(t, http.HandlerFunc(incidentHandler))
	dir := t.TempDir()
	tillDirIn(t, dir, providerConfig(u, "admin: {listen: 127.0.0.1:0}\naudit: {file: audit/audit.log}\n"))
	tl, nsDir := startTillOnSmallDisk(t, dir, u.caFile, "8m")
	admin := tl.adminAddr()
	ready := func() int { return readyz(t, admin) }

	// Load, then a full disk under it.
	load := startIncidentLoad(tl.addr, "full", 8, 0)
	waitFor(t, 20*time.Second, "200 answers before the disk fills", func() bool { return load.ok.Load() >= 200 })
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
	waitFor(t, 20*time.Second, "a 503 audit_unavailable with the disk full", func() bool { return load.refused.Load() > 0 })
	atRefusal := load.answered()
	waitFor(t, 20*time.Second, "100 answers after the first refusal", func() bool { return load.answered() >= atRefusal+100 })
	fullPhase := load.halt()

	// Still full: every request is refused, and the key stays in till.
	probe503 := func() string {
		t.Helper()
		resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models/probe-full"), nil))
		if resp.StatusCode != 503 {
			return fmt.Sprintf("%d", resp.StatusCode)
		}
		return "503 " + tillError(t, resp, body)
	}
	for range 5 {
		if got := probe503(); got != "503 audit_unavailable" {
			t.Fatalf("disk still full, load stopped: got %s, want 503 audit_unavailable", got)
		}
	}
	if st := ready(); st != 503 {
		t.Errorf("/readyz with the audit disk full: got %d, want 503", st)
	}
	keyedWhileFull := keyedNames(u)

	// Room again: till recovers by itself, and serves.
	if err := os.Remove(filepath.Join(nsDir, "filler")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "/readyz 200 once the audit disk has room", func() bool { return ready() == 200 })
	var statuses []int
	for range 5 {
		resp, _ := do(t, newRequest(t, "GET", tl.url("/openai/v1/models/probe-free"), nil))
		statuses = append(statuses, resp.StatusCode)
	}
	if !slices.Equal(statuses, []int{200, 200, 200, 200, 200}) {
		t.Errorf("after the disk has room again: got %v, want 200 ×5", statuses)
	}
	after := startIncidentLoad(tl.addr, "free", 8, 200).wait()
	for _, a := range after {
		if a.status != 200 {
			t.Errorf("after recovery, %s: got %d %s, want 200", a.name, a.status, a.code)
		}
	}

	// The records of every request answered after recovery are written
	// when it ends, maybe just after the app read its response.
	auditPath := filepath.Join(nsDir, "audit.log")
	waitFor(t, 10*time.Second, "the request records of the requests after recovery", func() bool {
		b, err := os.ReadFile(auditPath)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range after {
			if !bytes.Contains(b, []byte(`"id":"`+a.id+`"`)) {
				return false
			}
		}
		return true
	})
	recs := readIncidentTrail(t, auditPath)
	keyed := keyedNames(u)
	tl.stop()

	used := map[string]int{}
	for _, r := range byEvent(recs, "use") {
		used[r.name()]++
	}
	keys, withoutUse := 0, 0
	for name, n := range keyed {
		keys += n
		if used[name] < n {
			withoutUse++
			t.Errorf("the upstream received the key for %s %d times; the audit file has %d use records of it", name, n, used[name])
		}
	}
	refused, okAfterRefusal := 0, 0
	for _, a := range fullPhase {
		switch {
		case a.status == 503 && a.code == "audit_unavailable":
			refused++
			if keyedWhileFull[a.name] > 0 {
				t.Errorf("%s was refused (503 audit_unavailable), yet the upstream received the key for it", a.name)
			}
		case a.status == 200:
			if a.afterRefusal {
				okAfterRefusal++ // a record that still fit: it must have its use record (above)
			}
		default:
			t.Errorf("%s while the disk filled: got %d %q, want 200 or 503 audit_unavailable", a.name, a.status, a.code)
		}
	}
	// Every answered request has its request record, once: in the file,
	// or (past the records kept for a late write) in the operational log.
	inFile := map[string]int{}
	for _, r := range byEvent(recs, "request") {
		inFile[fmt.Sprint(r.rec["id"])]++
	}
	inLog := map[string]bool{}
	for _, line := range strings.Split(tl.stderr.String(), "\n") {
		var ev struct {
			Message string
			Record  struct{ ID string }
		}
		if json.Unmarshal([]byte(line), &ev) == nil && strings.Contains(ev.Message, "cannot write an audit record") {
			inLog[ev.Record.ID] = true
		}
	}
	lost, onlyInLog := 0, 0
	for _, a := range slices.Concat(fullPhase, after) {
		if a.id == "" {
			continue
		}
		if inFile[a.id] == 0 && inLog[a.id] {
			onlyInLog++
		}
		if inFile[a.id] > 1 {
			t.Errorf("%s (%d): %d request records in the audit file", a.name, a.status, inFile[a.id])
		}
		if inFile[a.id] == 0 && !inLog[a.id] {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d answered requests have no request record, in the audit file nor in the log", lost)
	}
	t.Logf("the upstream received the key %d times (%d before the disk had room again), %d of them without a use record; %d requests during the fill: %d refused 503 audit_unavailable, %d answered 200 though sent after the first refusal (their records still fit); %d failed request records in the log, %d of them only there (past those kept for a late write); after recovery %v and %d×200",
		keys, len(keyedWhileFull), withoutUse, len(fullPhase), refused, okAfterRefusal, len(inLog), onlyInLog, statuses, len(after))
}

// rotatedFiles returns the audit files of base in dir, oldest first:
// base.K … base.1, then base.
func rotatedFiles(t *testing.T, dir, base string) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(dir, base+".*"))
	if err != nil {
		t.Fatal(err)
	}
	type rotated struct {
		k    int
		path string
	}
	var rs []rotated
	for _, m := range matches {
		if k, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(m), base+".")); err == nil {
			rs = append(rs, rotated{k, m})
		}
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].k > rs[j].k })
	var files []string
	for _, r := range rs {
		files = append(files, r.path)
	}
	return append(files, filepath.Join(dir, base))
}

// copyTrail copies the files into a new folder and returns it.
func copyTrail(t *testing.T, files []string) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// editLines rewrites the file by passing its lines (without newlines) to
// edit, and ends it with a newline.
func editLines(t *testing.T, file string, edit func([]string) []string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := edit(strings.Split(strings.TrimSuffix(string(b), "\n"), "\n"))
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestAuditRotationUnderLoad has till rotate its audit file by size
// (64KB) under load from eight clients: every request and key use is in
// exactly one record, no file is over the size, no line is split, the
// rotated files chain, and till audit verify finds an edit, a removed
// line, two swapped lines and a cut file.
func TestAuditRotationUnderLoad(t *testing.T) {
	const n, maxSize = 2000, 64000 // 64KB: powers of 1000
	u := newUpstream(t, http.HandlerFunc(okHandler))
	tl := startTill(t, providerConfig(u, "audit: {file: audit.log, max_size: 64KB, max_files: 50}\n"), providerSecrets, u.caFile)
	start := time.Now()
	answers := startIncidentLoad(tl.addr, "rot", 8, n).wait()
	took := time.Since(start)
	tl.stop()
	for _, a := range answers {
		if a.status != 200 {
			t.Fatalf("%s: got %d %s, want 200", a.name, a.status, a.code)
		}
	}

	files := rotatedFiles(t, tl.dir, "audit.log")
	if len(files) < 3 {
		t.Fatalf("%d audit files after %d requests with max_size 64KB, want at least 3 (2 rotations)", len(files), n)
	}
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > maxSize {
			t.Errorf("%s: %d bytes, over max_size (%d)", filepath.Base(f), st.Size(), maxSize)
		}
	}
	recs := readIncidentTrail(t, files...)
	checkSeqs(t, recs)
	requests, uses := byEvent(recs, "request"), byEvent(recs, "use")
	ids := map[string]int{}
	for _, r := range requests {
		ids[fmt.Sprint(r.rec["id"])]++
	}
	for _, a := range answers {
		if ids[a.id] != 1 {
			t.Errorf("request %s (%s): %d request records, want 1", a.name, a.id, ids[a.id])
		}
	}
	used := map[string]int{}
	for _, r := range uses {
		used[r.name()]++
	}
	for name, k := range keyedNames(u) {
		if used[name] != k {
			t.Errorf("the upstream received the key %d times for %s; %d use records", k, name, used[name])
		}
	}
	if len(requests) != n || len(uses) != n {
		t.Errorf("%d requests: %d request records and %d use records in %d files, want %d of each", n, len(requests), len(uses), len(files), n)
	}
	// Each rotated file starts a chain that names the file before it by
	// the name it had then: audit.log.1.
	for _, f := range files[1:] {
		first := recs[slices.IndexFunc(recs, func(r incidentRec) bool { return r.file == filepath.Base(f) })]
		if first.line != 1 || first.rec["prev_file"] != "audit.log.1" {
			t.Errorf("%s:%d prev_file: got %v, want audit.log.1", first.file, first.line, first.rec["prev_file"])
		}
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	out, errOut, code := auditVerify(t, tl.dir, names...)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("ok: %d records in %d files", len(recs), len(files))) {
		t.Errorf("till audit verify %s: exit %d\n%s%s", strings.Join(names, " "), code, out, errOut)
	}
	t.Logf("%d requests in %v: %d files (max_size 64KB), %d records (%d request, %d use); verify: %s",
		n, took.Round(time.Millisecond), len(files), len(recs), len(requests), len(uses), strings.TrimSpace(out))

	// Tampering, on copies: verify names the first line that is not as
	// till wrote it.
	middle := names[len(names)/2]
	var lineCount int
	for _, r := range recs {
		if r.file == middle {
			lineCount = r.line
		}
	}
	if lineCount < 10 {
		t.Fatalf("%s has %d lines, too few to tamper with", middle, lineCount)
	}
	last := names[len(names)-1]
	lastLines := 0
	for _, r := range recs {
		if r.file == last {
			lastLines = r.line
		}
	}
	tampers := []struct {
		name string
		file string
		edit func([]string) []string
		want string // in stderr
	}{
		{"a field edited", middle, func(l []string) []string {
			// The first request record from line 5 on; it is not the
			// file's last, so the record after it no longer chains.
			i := 4
			for !strings.Contains(l[i], `"event":"request"`) {
				i++
			}
			edited := strings.Replace(l[i], `"status":200`, `"status":201`, 1)
			if edited == l[i] {
				t.Fatalf("no status in %q", l[i])
			}
			l[i] = edited
			return l
		}, ""}, // the line is found below
		{"a line removed", middle, func(l []string) []string { return slices.Delete(l, 4, 5) }, middle + ":5: "},
		{"two lines swapped", middle, func(l []string) []string { l[4], l[5] = l[5], l[4]; return l }, middle + ":5: "},
	}
	for _, tc := range tampers {
		dir := copyTrail(t, files)
		var editedLine int
		editLines(t, filepath.Join(dir, tc.file), func(l []string) []string {
			before := slices.Clone(l)
			l = tc.edit(l)
			for i := range min(len(l), len(before)) {
				if l[i] != before[i] {
					editedLine = i + 1
					break
				}
			}
			return l
		})
		want := tc.want
		if want == "" {
			want = fmt.Sprintf("%s:%d: ", tc.file, editedLine)
		}
		out, errOut, code := auditVerify(t, dir, names...)
		if code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("%s in %s: till audit verify: exit %d, want 1 and %q on stderr\n%s%s", tc.name, tc.file, code, want, out, errOut)
		} else {
			t.Logf("%s: %s", tc.name, strings.SplitN(errOut, "\n", 2)[0])
		}
	}
	// The last file cut in the middle of its last line.
	dir := copyTrail(t, files)
	b, err := os.ReadFile(filepath.Join(dir, last))
	if err != nil {
		t.Fatal(err)
	}
	lastLine := b[bytes.LastIndexByte(b[:len(b)-1], '\n')+1:]
	if err := os.Truncate(filepath.Join(dir, last), int64(len(b)-len(lastLine)/2)); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%s:%d: ", last, lastLines)
	out, errOut, code = auditVerify(t, dir, names...)
	if code != 1 || !strings.Contains(errOut, want) {
		t.Errorf("the last file cut mid-line: till audit verify: exit %d, want 1 and %q on stderr\n%s%s", code, want, out, errOut)
	} else {
		t.Logf("cut: %s", strings.SplitN(errOut, "\n", 2)[0])
	}
}

// TestLogrotateRenameAndSIGUSR1UnderLoad rotates the audit file as
// logrotate does (rename, then SIGUSR1), three times, under load: every
// answered request has one request record, every key the upstream
// received its use record, each in exactly one file, no line is split,
// and the files chain, each naming the one before.
func TestLogrotateRenameAndSIGUSR1UnderLoad(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(incidentHandler))
	tl := startTill(t, providerConfig(u, "audit: {file: audit.log}\n"), providerSecrets, u.caFile)
	current := filepath.Join(tl.dir, "audit.log")
	load := startIncidentLoad(tl.addr, "lr", 8, 0)
	var names []string
	for i := 1; i <= 3; i++ {
		mark := load.answered()
		waitFor(t, 20*time.Second, "200 more answers", func() bool { return load.answered() >= mark+200 })
		name := fmt.Sprintf("audit.log-%d", i) // dateext-style names, oldest first
		waitFor(t, 10*time.Second, "an audit.log to rename", func() bool {
			return os.Rename(current, filepath.Join(tl.dir, name)) == nil
		})
		names = append(names, name)
		if err := tl.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the reopen logged", func() bool {
			return strings.Count(tl.stderr.String(), "reopened the audit file") >= i
		})
	}
	mark := load.answered()
	waitFor(t, 20*time.Second, "200 more answers", func() bool { return load.answered() >= mark+200 })
	answers := load.halt()
	tl.stop()
	names = append(names, "audit.log")

	var files []string
	for _, n := range names {
		files = append(files, filepath.Join(tl.dir, n))
	}
	recs := readIncidentTrail(t, files...)
	checkSeqs(t, recs)
	perFile := map[string]int{}
	requestsOf := map[string][]string{} // id → files
	usesOf := map[string][]string{}     // path name → files
	sends := map[string]int{}           // "id attempt" → records
	for _, r := range recs {
		perFile[r.file]++
		switch r.rec["event"] {
		case "request":
			id := fmt.Sprint(r.rec["id"])
			requestsOf[id] = append(requestsOf[id], r.file)
		case "use":
			usesOf[r.name()] = append(usesOf[r.name()], r.file)
			sends[fmt.Sprint(r.rec["id"], " ", r.rec["attempt"])]++
		}
	}
	for i, n := range names {
		if perFile[n] == 0 {
			t.Errorf("%s holds no record", n)
			continue
		}
		if i == 0 {
			continue
		}
		first := recs[slices.IndexFunc(recs, func(r incidentRec) bool { return r.file == n })]
		if first.rec["prev_file"] != names[i-1] {
			t.Errorf("%s:1 prev_file: got %v, want %s", n, first.rec["prev_file"], names[i-1])
		}
	}
	for _, a := range answers {
		if a.status != 200 {
			t.Errorf("%s: got %d %s, want 200", a.name, a.status, a.code)
			continue
		}
		if got := requestsOf[a.id]; len(got) != 1 {
			t.Errorf("%s (%s): request records in %v, want one", a.name, a.id, got)
		}
	}
	keyed := keyedNames(u)
	keys := 0
	for name, k := range keyed {
		keys += k
		if got := usesOf[name]; len(got) < k {
			t.Errorf("the upstream received the key %d times for %s; use records in %v", k, name, got)
		}
	}
	for send, k := range sends {
		if k != 1 {
			t.Errorf("send %s has %d use records, want 1", send, k)
		}
	}
	out, errOut, code := auditVerify(t, tl.dir, names...)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("ok: %d records in 4 files", len(recs))) {
		t.Errorf("till audit verify %s: exit %d\n%s%s", strings.Join(names, " "), code, out, errOut)
	}
	t.Logf("%d answers, %d keys received; records per file %v; verify: %s", len(answers), keys, perFile, strings.TrimSpace(out))
}

// TestSignedCheckpoints signs the trail (audit.sign): till creates its
// signing key in the vault, till audit pubkey prints it, checkpoints
// follow every 1,000 records and the last record at shutdown, and
// verify --pubkey checks them: records removed after a checkpoint kept
// elsewhere, and an edited signature, are found. No route may inject
// the signing key.
func TestSignedCheckpoints(t *testing.T) {
	const n = 1100 // 2,200 records: two checkpoints by count, one at shutdown
	u := newUpstream(t, http.HandlerFunc(okHandler))

	// No route may send the signing key: config-level, whatever the
	// vault holds.
	t.Run("route cannot inject till-audit", func(t *testing.T) {
		dir := t.TempDir()
		setSecret(t, dir, "openai", openaiKey)
		bad := fmt.Sprintf("version: 1\nroutes:\n  - name: leak\n    upstream: %s\n    secret: till-audit\n    inject: {header: Authorization, format: \"Bearer {secret}\"}\n", u.URL)
		if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, errOut, code := runTill(t, dir, "", nil, "check", "-c", "bad.yaml"); code != 1 || !strings.Contains(errOut, `"till-audit" holds till's audit signing key`) {
			t.Errorf("till check of a route with secret till-audit: exit %d, want 1 naming till-audit\n%s%s", code, out, errOut)
		}
		bt, err := tryStartTillCmd(t, dir, u.caFile, nil, nil, "serve", "-c", "bad.yaml", "--listen", "127.0.0.1:0")
		switch {
		case !errors.Is(err, errExited):
			t.Errorf("till serve with a route whose secret is till-audit: it started (%v)", err)
			if bt != nil {
				bt.stop()
			}
		case !strings.Contains(err.Error(), `"till-audit" holds till's audit signing key`):
			t.Errorf("till serve refused a route with secret till-audit without naming it: %v", err)
		}
	})

	dir := tillDir(t, providerConfig(u, "audit: {file: audit.log, sign: true}\n"))
	tl, err := tryStartTillCmd(t, dir, u.caFile, nil, nil, "serve", "--listen", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("till serve with audit.sign: true on a new vault does not start: %v", err)
	}
	if !tl.waitLog("created the audit signing key in the vault") {
		t.Fatalf("no log of the signing key's creation:\n%s", tl.stderr.String())
	}
	pub, errOut, code := runTill(t, tl.dir, "", nil, "audit", "pubkey")
	if code != 0 || !strings.HasPrefix(pub, "ssh-ed25519 ") {
		t.Fatalf("till audit pubkey: exit %d, want ssh-ed25519 …\n%s%s", code, pub, errOut)
	}
	if err := os.WriteFile(filepath.Join(tl.dir, "pub.txt"), []byte(pub), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, a := range startIncidentLoad(tl.addr, "sig", 8, n).wait() {
		if a.status != 200 {
			t.Fatalf("%s: got %d %s, want 200", a.name, a.status, a.code)
		}
	}
	tl.stop() // signs the records after the last checkpoint

	path := filepath.Join(tl.dir, "audit.log")
	recs := readIncidentTrail(t, path)
	checkSeqs(t, recs)
	ckpts := byEvent(recs, "checkpoint")
	if len(ckpts) < 3 {
		t.Fatalf("%d checkpoints in %d records, want 3 (after 1,000 and 2,000 records, at shutdown)", len(ckpts), len(recs))
	}
	if ckpts[0].line != 1001 {
		t.Errorf("the first checkpoint is line %d, want 1001 (after 1,000 records)", ckpts[0].line)
	}
	lastCkpt := ckpts[len(ckpts)-1]
	if lastCkpt.line != len(recs) {
		t.Errorf("the last record is %v, want the checkpoint written at shutdown", recs[len(recs)-1].rec["event"])
	}
	out, errOut, code := auditVerify(t, tl.dir, "--pubkey", "pub.txt", "audit.log")
	if code != 0 || !strings.Contains(out, fmt.Sprintf("%d checkpoints signed, 0 records after the last", len(ckpts))) {
		t.Fatalf("till audit verify --pubkey: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("%d records, checkpoints at lines %v; verify: %s", len(recs), func() []int {
		var ls []int
		for _, c := range ckpts {
			ls = append(ls, c.line)
		}
		return ls
	}(), strings.TrimSpace(out))

	// A checkpoint kept elsewhere, then the newest records removed: the
	// chain alone cannot tell, the checkpoint can.
	cut := t.TempDir()
	if err := os.WriteFile(filepath.Join(cut, "kept.json"), []byte(lastCkpt.raw+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cut, "pub.txt"), []byte(pub), 0o644); err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, r := range recs[:lastCkpt.line-11] { // the checkpoint and the 10 records before it go
		kept = append(kept, r.raw)
	}
	if err := os.WriteFile(filepath.Join(cut, "audit.log"), []byte(strings.Join(kept, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := auditVerify(t, cut, "audit.log"); code != 0 {
		t.Errorf("the trail cut back to a whole record, with no checkpoint to hold it to: verify exit %d, want 0 (the chain alone cannot tell)\n%s%s", code, out, errOut)
	}
	out, errOut, code = auditVerify(t, cut, "--pubkey", "pub.txt", "--checkpoint", "kept.json", "audit.log")
	if code != 1 || !strings.Contains(errOut, "audit.log:") {
		t.Errorf("the trail cut back before the checkpoint kept: verify --checkpoint: exit %d, want 1 naming audit.log\n%s%s", code, out, errOut)
	} else {
		t.Logf("records removed: %s", strings.SplitN(errOut, "\n", 2)[0])
	}
	// The kept checkpoint is in the whole trail.
	if out, errOut, code := auditVerify(t, tl.dir, "--pubkey", "pub.txt", "--checkpoint", filepath.Join(cut, "kept.json"), "audit.log"); code != 0 {
		t.Errorf("verify --checkpoint of the whole trail: exit %d, want 0\n%s%s", code, out, errOut)
	}

	// The signature of the last checkpoint edited: the chain still
	// holds (nothing follows it), the signature does not.
	edited := copyTrail(t, []string{path, filepath.Join(tl.dir, "pub.txt")})
	editLines(t, filepath.Join(edited, "audit.log"), func(l []string) []string {
		var c struct{ Sig string }
		if err := json.Unmarshal([]byte(l[len(l)-1]), &c); err != nil || c.Sig == "" {
			t.Fatalf("the last line is not a signed checkpoint: %v %.200q", err, l[len(l)-1])
		}
		sig := []byte(c.Sig)
		i := len(sig) / 2
		if sig[i] == 'A' {
			sig[i] = 'B'
		} else {
			sig[i] = 'A'
		}
		l[len(l)-1] = strings.Replace(l[len(l)-1], c.Sig, string(sig), 1)
		return l
	})
	if out, errOut, code := auditVerify(t, edited, "audit.log"); code != 0 {
		t.Errorf("a checkpoint's signature edited, without --pubkey: exit %d, want 0 (only the signature changed)\n%s%s", code, out, errOut)
	}
	out, errOut, code = auditVerify(t, edited, "--pubkey", "pub.txt", "audit.log")
	if want := fmt.Sprintf("audit.log:%d: ", len(recs)); code != 1 || !strings.Contains(errOut, want) || !strings.Contains(errOut, "signature") {
		t.Errorf("a checkpoint's signature edited: verify --pubkey: exit %d, want 1 and %q about the signature\n%s%s", code, want, out, errOut)
	} else {
		t.Logf("signature edited: %s", strings.SplitN(errOut, "\n", 2)[0])
	}
}

// TestSigningKeyMadeWithoutReload: the vault serve writes itself at
// start (the audit signing key, on first use) is not an edit for the
// reload watch. It was: the watch, starting from the vault's state
// before serve read it, reloaded once right after start and logged a
// "reloaded" no one had asked for.
func TestSigningKeyMadeWithoutReload(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := tillDir(t, providerConfig(u, "audit: {file: audit.log, sign: true}\n"))
	tl := startTillIn(t, dir, u.caFile)
	if !tl.waitLog("created the audit signing key in the vault") {
		t.Fatalf("no log of the signing key's creation:\n%s", tl.stderr.String())
	}
	time.Sleep(1500 * time.Millisecond) // the watch polls every 250ms
	if strings.Contains(tl.stderr.String(), `"message":"reloaded"`) {
		t.Errorf("till reloaded after writing its own signing key:\n%s", tl.stderr.String())
	}
	// The watch still sees an edit.
	f, err := os.OpenFile(filepath.Join(dir, "till.yaml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString("# edited\n")
	if err := errors.Join(err, f.Close()); err != nil {
		t.Fatal(err)
	}
	if !tl.waitLog(`"message":"reloaded"`) {
		t.Errorf("an edit of till.yaml was not reloaded:\n%s", tl.stderr.String())
	}
}
