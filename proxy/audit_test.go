package proxy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeRecord writes a record with the given id.
func writeRecord(a *Audit, id string) {
	a.write(&record{start: time.Now(), id: id, mode: modeReverse, outcome: outcomeForwarded, status: 200}, time.Now())
}

// fileIDs returns the ids of the records in the audit file at path, in
// order; none when it does not exist.
func fileIDs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if line == "" {
			continue
		}
		var r struct{ ID string }
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%s: line %q: %v", path, line, err)
		}
		ids = append(ids, r.ID)
	}
	return ids
}

func openTestAudit(t *testing.T) (*Audit, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.log")
	a, err := OpenAudit(path, func(err error, _ []byte) { t.Errorf("audit write failed: %v", err) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a, path
}

func checkMode(t *testing.T, path string) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, want 0600", path, st.Mode().Perm())
	}
}

// TestAuditFollowsRemovedFile removes the audit file while till writes to
// it: the records after that must be in a new file at the path, not in the
// unlinked one that nobody can read.
func TestAuditFollowsRemovedFile(t *testing.T) {
	a, path := openTestAudit(t)
	writeRecord(a, "1")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	writeRecord(a, "2")
	writeRecord(a, "3")
	if got := strings.Join(fileIDs(t, path), " "); got != "2 3" {
		t.Errorf("records at the path after rm: got %q, want %q", got, "2 3")
	}
	checkMode(t, path)
	if !a.Healthy() {
		t.Error("the audit sink is unhealthy after following the file")
	}
}

// TestAuditFollowsRenamedFile renames the audit file (logrotate without
// copytruncate): the record written into the renamed file stays there,
// where it can be read, and the next ones go to a new file at the path.
func TestAuditFollowsRenamedFile(t *testing.T) {
	a, path := openTestAudit(t)
	writeRecord(a, "1")
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	writeRecord(a, "2")
	writeRecord(a, "3")
	old, cur := strings.Join(fileIDs(t, path+".1"), " "), strings.Join(fileIDs(t, path), " ")
	if old != "1 2" || cur != "3" {
		t.Errorf("after mv: got %q in the renamed file and %q at the path, want %q and %q", old, cur, "1 2", "3")
	}
	checkMode(t, path)
}

// TestAuditReopen renames the audit file and asks for a reopen (SIGUSR1),
// as logrotate does with a postrotate signal: the next record is in a new
// file at the path.
func TestAuditReopen(t *testing.T) {
	a, path := openTestAudit(t)
	writeRecord(a, "1")
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Reopen(); err != nil {
		t.Fatal(err)
	}
	writeRecord(a, "2")
	old, cur := strings.Join(fileIDs(t, path+".1"), " "), strings.Join(fileIDs(t, path), " ")
	if old != "1" || cur != "2" {
		t.Errorf("after mv and Reopen: got %q in the renamed file and %q at the path, want %q and %q", old, cur, "1", "2")
	}
	checkMode(t, path)
}

// TestAuditRecoversWhileIdle fails a record, then lets the sink work
// again: with no other record to prove it, the sink must become healthy by
// itself (readiness follows it), by writing the failed record late.
func TestAuditRecoversWhileIdle(t *testing.T) {
	sink := &failingWriter{fail: true}
	a := NewAudit(sink, nil)
	defer a.Close()
	writeRecord(a, "lost")
	if a.Healthy() {
		t.Fatal("healthy after a failed write")
	}
	sink.mu.Lock()
	sink.fail = false
	sink.mu.Unlock()
	for deadline := time.Now().Add(2 * time.Second); !a.Healthy(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the sink works again, and the audit is still unhealthy 2s later")
		}
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if got := strings.Count(sink.buf.String(), `"id":"lost"`); got != 1 {
		t.Errorf("the failed record is in the sink %d times, want once: %q", got, sink.buf.String())
	}
}
