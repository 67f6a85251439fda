package test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// auditGet sends one keyed request and returns its status and till error
// code ("" for 200).
func auditGet(t *testing.T, tl *till, name string) (int, string) {
	t.Helper()
	resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models/"+name), nil))
	if resp.StatusCode == 200 {
		return 200, ""
	}
	return resp.StatusCode, tillError(t, resp, body)
}

// TestFullAuditFileRemovedIsReplaced: the audit file itself fills its
// disk (a 32 KiB tmpfs in till's mount namespace), and the operator copies
// it away and removes it. The sink, retrying the records it kept, follows
// the path as it does between records: a new file there takes them, the
// removed one is closed (its space comes back), and till serves again.
func TestFullAuditFileRemovedIsReplaced(t *testing.T) {
	needTmpfsNamespace(t)
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := t.TempDir()
	tillDirIn(t, dir, providerConfig(u, "admin: {listen: 127.0.0.1:0}\naudit: {file: audit/audit.log}\n"))
	tl, nsDir := startTillOnSmallDisk(t, dir, u.caFile, "32k")
	defer tl.stop()
	admin := tl.adminAddr()

	refused := false
	for i := range 400 {
		st, code := auditGet(t, tl, fmt.Sprintf("fill-%d", i))
		if st == 503 && code == "audit_unavailable" {
			refused = true
			break
		}
		if st != 200 {
			t.Fatalf("while the audit file grows: got %d %s", st, code)
		}
	}
	if !refused {
		t.Fatal("400 requests, and the audit file never filled its 32 KiB disk")
	}
	if st := readyz(t, admin); st != 503 {
		t.Fatalf("/readyz with the audit disk full: %d, want 503", st)
	}

	// The operator keeps a copy, and removes the full file.
	full := filepath.Join(nsDir, "audit.log")
	b, err := os.ReadFile(full)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "audit.log.saved"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(full); err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(5 * time.Second)
	for readyz(t, admin) != 200 {
		if time.Now().After(deadline) {
			_, serr := os.Stat(full)
			t.Fatalf("/readyz still 503 5 s after the full audit file was removed (a new file at the path: %v); "+
				"till keeps retrying the removed file, whose blocks it holds:\n%s", serr == nil, lastLines(tl.stderr.String(), 3))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st, code := auditGet(t, tl, "after-remove"); st != 200 {
		t.Errorf("after the full audit file was removed: got %d %s, want 200", st, code)
	}
}

// TestRenamedOversizeAuditFileFollowed: till runs under a file size limit
// (RLIMIT_FSIZE, systemd's LimitFSIZE=); the audit file reaches it and
// writes fail (EFBIG). The operator rotates by rename, as logrotate does
// without postrotate: the records kept for a late write go to a new file
// at the path, and the two files verify as one trail.
func TestRenamedOversizeAuditFileFollowed(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := t.TempDir()
	tillDirIn(t, dir, providerConfig(u, "admin: {listen: 127.0.0.1:0}\naudit: {file: audit.log}\n"))
	wrapper := []string{"sh", "-c", `ulimit -f 16 && exec "$@"`, "sh"} // 16 × 512 bytes
	tl := startTillCmd(t, dir, u.caFile, wrapper, nil, "serve", "--listen", "127.0.0.1:0")
	defer tl.stop()
	admin := tl.adminAddr()

	refused := false
	for i := range 400 {
		st, code := auditGet(t, tl, fmt.Sprintf("grow-%d", i))
		if st == 503 && code == "audit_unavailable" {
			refused = true
			break
		}
		if st != 200 {
			t.Fatalf("while the audit file grows: got %d %s", st, code)
		}
	}
	if !refused {
		t.Fatal("400 requests, and the audit file never reached the 8 KiB file size limit")
	}
	if err := os.Rename(filepath.Join(dir, "audit.log"), filepath.Join(dir, "audit.log.1")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for readyz(t, admin) != 200 {
		if time.Now().After(deadline) {
			_, serr := os.Stat(filepath.Join(dir, "audit.log"))
			t.Fatalf("/readyz still 503 5 s after the full audit file was renamed away (a new file at the path: %v):\n%s",
				serr == nil, lastLines(tl.stderr.String(), 3))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st, code := auditGet(t, tl, "after-rename"); st != 200 {
		t.Errorf("after the full audit file was renamed away: got %d %s, want 200", st, code)
	}
	out, errOut, code := auditVerify(t, dir, "audit.log.1", "audit.log")
	if code != 0 {
		t.Errorf("verify audit.log.1 audit.log: exit %d\n%s%s", code, out, errOut)
	}
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(l[max(len(l)-n, 0):], "\n")
}

// TestKill9DuringRotationSignedTrail kills till with SIGKILL under load
// while it rotates every 4 KB and signs, and restarts it on the same
// trail: every key the upstream received has its use record in one of
// the files, and the whole trail verifies with --pubkey.
func TestKill9DuringRotationSignedTrail(t *testing.T) {
	const rounds, workers = 10, 6
	u := newUpstream(t, http.HandlerFunc(incidentHandler))
	dir := tillDir(t, providerConfig(u, "audit: {file: audit.log, max_size: 4KB, max_files: 1000, sign: true}\n"))
	for round := range rounds {
		tl := startTillIn(t, dir, u.caFile)
		load := startIncidentLoad(tl.addr, fmt.Sprintf("k%d", round), workers, 0)
		waitFor(t, 20*time.Second, "some answers", func() bool { return load.ok.Load() >= int64(20+round*7) })
		killTill(t, tl)
		load.halt()
	}
	tl := startTillIn(t, dir, u.caFile)
	tl.stop()
	pub, errOut, code := runTill(t, dir, "", nil, "audit", "pubkey")
	if code != 0 {
		t.Fatalf("audit pubkey: %d %s", code, errOut)
	}
	if err := os.WriteFile(filepath.Join(dir, "pub.txt"), []byte(pub), 0o644); err != nil {
		t.Fatal(err)
	}
	files := rotatedFiles(t, dir, "audit.log")
	recs := readIncidentTrail(t, files...)
	used := map[string]int{}
	for _, r := range byEvent(recs, "use") {
		used[r.name()]++
	}
	for name, n := range keyedNames(u) {
		if used[name] < n {
			t.Errorf("upstream got the key %d times for %s; %d use records", n, name, used[name])
		}
	}
	args := []string{"--pubkey", "pub.txt"}
	for _, f := range files {
		args = append(args, filepath.Base(f))
	}
	out, errOut, code := auditVerify(t, dir, args...)
	if code != 0 {
		t.Errorf("verify --pubkey over %d files after %d kills: exit %d\n%s%s", len(files), rounds, code, out, errOut)
	}
	t.Logf("%d files, %d records; verify: %s", len(files), len(recs), strings.TrimSpace(out))
}

// TestAuditDiskFullAtStartNotReady: the audit file's disk is already full
// when till starts. /readyz must say so at once, before a request finds
// out by a record that cannot be written: a load balancer trusting
// readiness would otherwise send traffic to a till that refuses all of
// it. Once the disk has room, till is ready again and serves, without a
// restart.
func TestAuditDiskFullAtStartNotReady(t *testing.T) {
	needTmpfsNamespace(t)
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := t.TempDir()
	tillDirIn(t, dir, providerConfig(u, "admin: {listen: 127.0.0.1:0}\naudit: {file: audit/audit.log}\n"))
	tl, nsDir := startTillOnDisk(t, dir, u.caFile, "32k", `head -c 64k /dev/zero > "$0/filler" 2>/dev/null`)
	defer tl.stop()
	admin := tl.adminAddr()

	if st := readyz(t, admin); st != 503 {
		t.Errorf("/readyz with the audit disk full since start: got %d, want 503", st)
	}
	if st, code := auditGet(t, tl, "full-at-start"); st != 503 || code != "audit_unavailable" {
		t.Errorf("a request with the audit disk full: got %d %s, want 503 audit_unavailable", st, code)
	}
	if n := len(u.requests()); n != 0 {
		t.Errorf("upstream got %d requests with the audit disk full, want 0", n)
	}

	if err := os.Remove(filepath.Join(nsDir, "filler")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for readyz(t, admin) != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still 503 5 s after the audit disk has room:\n%s", lastLines(tl.stderr.String(), 3))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st, code := auditGet(t, tl, "after-room"); st != 200 {
		t.Errorf("after the audit disk has room: got %d %s, want 200", st, code)
	}
}
