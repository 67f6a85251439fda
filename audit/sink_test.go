package audit

import (
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// record is a request record as zerolog writes it.
func record(id string) []byte {
	return fmt.Appendf(nil, `{"level":"info","time":"2026-12-02T10:00:00Z","event":"request","id":%q}`+"\n", id)
}

// lines reads the records of the file at path.
func lines(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for line := range strings.Lines(string(b)) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%s: line %q: %v", path, line, err)
		}
		out = append(out, m)
	}
	return out
}

// ids lists the ids of the records at path, space-separated.
func ids(t *testing.T, path string) string {
	var out []string
	for _, m := range lines(t, path) {
		out = append(out, fmt.Sprint(m["id"]))
	}
	return strings.Join(out, " ")
}

func openTest(t *testing.T, o Options) (*Sink, string) {
	t.Helper()
	if o.Path == "" {
		o.Path = filepath.Join(t.TempDir(), "audit.log")
	}
	o.OnError = func(err error, _ []byte) { t.Errorf("audit write failed: %v", err) }
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, o.Path
}

func mustVerify(t *testing.T, o VerifyOptions, files ...string) Report {
	t.Helper()
	r, err := Verify(files, o)
	if err != nil {
		t.Fatalf("verify %v: %v", files, err)
	}
	return r
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

// TestChainAcrossRestart writes records, reopens the file as a restarted
// till does, and writes more: seq goes on, and the chain verifies.
func TestChainAcrossRestart(t *testing.T) {
	s, path := openTest(t, Options{})
	s.Write(record("1"))
	s.Write(record("2"))
	s.Close()
	s2, _ := openTest(t, Options{Path: path})
	s2.Write(record("3"))
	recs := lines(t, path)
	if len(recs) != 3 {
		t.Fatalf("%d records", len(recs))
	}
	for i, r := range recs {
		if r["seq"] != float64(i+1) {
			t.Errorf("record %d: seq %v", i+1, r["seq"])
		}
	}
	if recs[0]["prev"] != "" || recs[1]["prev"] == "" {
		t.Errorf("prev: first %q, second %q", recs[0]["prev"], recs[1]["prev"])
	}
	if r := mustVerify(t, VerifyOptions{}, path); r.Records != 3 || r.StartsAfter != "" {
		t.Errorf("report %+v", r)
	}
	checkMode(t, path)
}

// TestRotationKeepsEveryRecord writes concurrently with a small max_size:
// every record is in exactly one file, whole, and the files chain.
func TestRotationKeepsEveryRecord(t *testing.T) {
	s, path := openTest(t, Options{MaxSize: 4 << 10, MaxFiles: 100})
	const n = 400
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range n / 4 {
				s.Write(record(fmt.Sprintf("%d-%d", w, i)))
			}
		})
	}
	wg.Wait()
	s.Close()
	var files []string
	for i := 100; i >= 1; i-- {
		if _, err := os.Stat(fmt.Sprintf("%s.%d", path, i)); err == nil {
			files = append(files, fmt.Sprintf("%s.%d", path, i))
		}
	}
	files = append(files, path)
	if len(files) < 5 {
		t.Fatalf("only %d files after %d records at 4KB each", len(files), n)
	}
	seen := map[any]bool{}
	for i, f := range files {
		st, _ := os.Stat(f)
		if st.Size() > 4<<10 {
			t.Errorf("%s: %d bytes, over max_size", f, st.Size())
		}
		recs := lines(t, f)
		for _, r := range recs {
			if seen[r["id"]] {
				t.Errorf("record %v twice", r["id"])
			}
			seen[r["id"]] = true
		}
		if i > 0 && recs[0]["prev_file"] != filepath.Base(path)+".1" {
			t.Errorf("%s: prev_file %v", f, recs[0]["prev_file"])
		}
	}
	if len(seen) != n {
		t.Errorf("%d records in the files, want %d", len(seen), n)
	}
	mustVerify(t, VerifyOptions{}, files...)
	// A restart after rotation chains to the newest rotated file.
	os.Rename(path, path+".0")
	s2, _ := openTest(t, Options{Path: path})
	s2.Write(record("after"))
	if recs := lines(t, path); recs[0]["seq"] != 1.0 || recs[0]["prev"] == "" {
		t.Errorf("first record after restart: %v", recs[0])
	}
}

// TestRotationDropsOldest keeps max_files rotated files.
func TestRotationDropsOldest(t *testing.T) {
	s, path := openTest(t, Options{MaxSize: 4 << 10, MaxFiles: 2})
	for i := range 200 {
		s.Write(record(fmt.Sprint(i)))
	}
	for _, f := range []string{path, path + ".1", path + ".2"} {
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}
	if _, err := os.Stat(path + ".3"); err == nil {
		t.Error("a third rotated file is kept with max_files 2")
	}
	mustVerify(t, VerifyOptions{}, path+".2", path+".1", path)
}

// TestFollowsRemovedFile removes the audit file while till writes to it:
// the records after that are in a new file at the path, not in the
// unlinked one that nobody can read, and that file starts a chain.
func TestFollowsRemovedFile(t *testing.T) {
	s, path := openTest(t, Options{})
	s.Write(record("1"))
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	s.Write(record("2"))
	s.Write(record("3"))
	if got := ids(t, path); got != "2 3" {
		t.Errorf("records at the path after rm: got %q, want %q", got, "2 3")
	}
	recs := lines(t, path)
	if recs[0]["seq"] != 1.0 || recs[0]["prev_file"] != "audit.log" {
		t.Errorf("first record after rm: %v", recs[0])
	}
	checkMode(t, path)
	if !s.Healthy() {
		t.Error("unhealthy after following the file")
	}
}

// TestFollowsRenamedFile renames the audit file (logrotate without
// copytruncate): the record written into the renamed file stays there,
// the next ones go to a new file at the path, and the two chain.
func TestFollowsRenamedFile(t *testing.T) {
	s, path := openTest(t, Options{})
	s.Write(record("1"))
	if err := os.Rename(path, path+"-20261202"); err != nil {
		t.Fatal(err)
	}
	s.Write(record("2"))
	s.Write(record("3"))
	old, cur := ids(t, path+"-20261202"), ids(t, path)
	if old != "1 2" || cur != "3" {
		t.Errorf("after mv: got %q in the renamed file and %q at the path", old, cur)
	}
	if f := lines(t, path)[0]["prev_file"]; f != "audit.log-20261202" {
		t.Errorf("prev_file %v, want the renamed file's name", f)
	}
	mustVerify(t, VerifyOptions{}, path+"-20261202", path)
	checkMode(t, path)
}

// TestChainAcrossOutsideRotationAndRestart: till stopped, logrotate moved
// the file to a name of its own (dateext, compress) and left an empty one
// at the path; the restarted till chains its first record to the newest
// file beside it that holds records, gzip or not, not to an older one
// (a path.1 till's own rotation left earlier included) nor to a file
// without records.
func TestChainAcrossOutsideRotationAndRestart(t *testing.T) {
	for _, moved := range []string{"audit.log-20261204", "audit.log.1.gz", "audit.log-20261204.gz"} {
		t.Run(moved, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "audit.log")
			older, _ := openTest(t, Options{Path: filepath.Join(dir, "other", "audit.log")})
			older.Write(record("0"))
			older.Close()
			if err := os.Rename(filepath.Join(dir, "other", "audit.log"), path+"-20261101"); err != nil {
				t.Fatal(err)
			}
			yesterday := time.Now().Add(-24 * time.Hour)
			os.Chtimes(path+"-20261101", yesterday, yesterday)
			// till's own rotation left a path.1 long ago: older than the
			// file logrotate moves.
			if moved != "audit.log.1.gz" {
				os.WriteFile(path+".1", record("old"), 0o600)
				os.Chtimes(path+".1", yesterday, yesterday)
			}

			s, _ := openTest(t, Options{Path: path})
			s.Write(record("1"))
			s.Write(record("2"))
			s.Close()
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasSuffix(moved, ".gz") {
				var b bytes.Buffer
				zw := gzip.NewWriter(&b)
				zw.Write(data)
				zw.Close()
				data = b.Bytes()
			}
			if err := os.WriteFile(filepath.Join(dir, moved), data, 0o600); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(path, nil, 0o600)                    // logrotate's create
			os.WriteFile(path+".lock", nil, 0o600)            // newer, and no records
			os.WriteFile(path+"-notes", []byte("x\n"), 0o600) // newer, and no records

			s2, _ := openTest(t, Options{Path: path})
			s2.Write(record("3"))
			s2.Close()
			if f := lines(t, path)[0]["prev_file"]; f != moved {
				t.Errorf("prev_file %v, want %s", f, moved)
			}
			mustVerify(t, VerifyOptions{}, filepath.Join(dir, moved), path)
		})
	}
}

// TestReopen renames the audit file and asks for a reopen (SIGUSR1), as
// logrotate does with a postrotate signal.
func TestReopen(t *testing.T) {
	s, path := openTest(t, Options{})
	s.Write(record("1"))
	if err := s.Reopen(); err != nil { // nothing moved: nothing changes
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Reopen(); err != nil {
		t.Fatal(err)
	}
	s.Write(record("2"))
	if old, cur := ids(t, path+".1"), ids(t, path); old != "1" || cur != "2" {
		t.Errorf("after mv and Reopen: got %q and %q", old, cur)
	}
	mustVerify(t, VerifyOptions{}, path+".1", path)
}

// TestTornRecordRemoved opens a file whose last record a crash cut short
// (kill -9 can stop a write between two pages): that record is removed
// and said so, and the chain goes on from the last whole one.
func TestTornRecordRemoved(t *testing.T) {
	s, path := openTest(t, Options{})
	s.Write(record("1"))
	s.Write(record("2"))
	s.Close()
	b, _ := os.ReadFile(path)
	os.WriteFile(path, b[:len(b)-10], 0o600)
	var said []string
	s2, err := Open(Options{Path: path, Log: func(msg string) { said = append(said, msg) }})
	if err != nil {
		t.Fatal(err)
	}
	s2.Write(record("3"))
	s2.Close()
	if got := ids(t, path); got != "1 3" {
		t.Errorf("records after the repair: %q, want %q", got, "1 3")
	}
	if len(said) != 1 || !strings.Contains(said[0], "cut short") {
		t.Errorf("the repair was not told: %q", said)
	}
	mustVerify(t, VerifyOptions{}, path)
	// A file that is no trail (no line end in its last MiB) is refused,
	// not cut.
	junk := filepath.Join(t.TempDir(), "junk.log")
	os.WriteFile(junk, bytes.Repeat([]byte("x"), MaxLineSize+10), 0o600)
	if _, err := Open(Options{Path: junk}); err == nil {
		t.Error("opened a file with no line end in its last MiB")
	}
	if st, _ := os.Stat(junk); st.Size() != MaxLineSize+10 {
		t.Errorf("the file that is no trail was changed: %d bytes", st.Size())
	}
	// Nor is a file whose last line, or the line before it, is not a
	// record: a config named as audit.file by mistake keeps its end.
	for _, other := range []string{"version: 1\nroutes: []", "{\"seq\":1}\nroutes: []", "version: 1\n{\"seq\":", "version: 1\nroutes: []\n", "{\"seq\":1}\nan app's log line\n", "\n"} {
		junk := filepath.Join(t.TempDir(), "till.yaml")
		os.WriteFile(junk, []byte(other), 0o600)
		if _, err := Open(Options{Path: junk}); err == nil || !strings.Contains(err.Error(), "not an audit file") {
			t.Errorf("opened %q: %v, want not an audit file", other, err)
		}
		if b, _ := os.ReadFile(junk); string(b) != other {
			t.Errorf("the file that is no trail was changed to %q", b)
		}
	}
}

// TestTornRecordInRotatedFile: till killed in the middle of a record,
// and its file rotated (logrotate renames it, at boot after a power loss
// say) before till starts again on a new one: the record cut short is
// removed from the rotated file as it would have been from the file at
// the path, and the new file chains to the last whole record, so that
// the trail verifies. Before, the new file started a chain of its own
// (prev "", no prev_file) and verify stopped at the cut record.
func TestTornRecordInRotatedFile(t *testing.T) {
	for _, tail := range []string{"cut", "zeros"} {
		t.Run(tail, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "audit.log")
			s, _ := openTest(t, Options{Path: path})
			s.Write(record("1"))
			s.Write(record("2"))
			s.Close()
			b, _ := os.ReadFile(path)
			whole := b[:bytes.IndexByte(b, '\n')+1]
			b = b[:len(b)-10]
			if tail == "zeros" {
				b = append(whole, bytes.Repeat([]byte{0}, 137)...)
			}
			moved := path + "-20261206"
			os.WriteFile(moved, b, 0o600)
			os.Remove(path)

			var said []string
			s2, err := Open(Options{Path: path, Log: func(msg string) { said = append(said, msg) }})
			if err != nil {
				t.Fatal(err)
			}
			s2.Write(record("3"))
			s2.Close()
			if f := lines(t, path)[0]["prev_file"]; f != "audit.log-20261206" {
				t.Errorf("prev_file %v, want audit.log-20261206", f)
			}
			if got, _ := os.ReadFile(moved); !bytes.Equal(got, whole) {
				t.Errorf("the rotated file holds %q, want its whole record only", got)
			}
			if len(said) != 1 || !strings.Contains(said[0], "cut short") || !strings.Contains(said[0], "audit.log-20261206") {
				t.Errorf("the repair was not told: %q", said)
			}
			mustVerify(t, VerifyOptions{}, moved, path)
		})
	}
}

// TestTornRecordSaysWhatItWas: the repair of a record a crash cut short
// says whether a key went. A use record cut short means its key was
// never sent, when each record is flushed before its key goes (fsync:
// always); otherwise a power loss can cut one whose key went, written
// but not yet flushed, and the log must not tell an incident's reader
// that it never went. A request record cut short had its key sent, with
// its use record before it: saying "never sent" of it, as the log did,
// sends that reader after the wrong conclusion.
func TestTornRecordSaysWhatItWas(t *testing.T) {
	use := []byte(`{"level":"info","time":"2026-12-02T10:00:00Z","event":"use","id":"1"}` + "\n")
	for _, tt := range []struct {
		name, fsync, want, not string
		rec                    []byte
	}{
		{"use, fsync always", FsyncAlways, "its key was never sent", "unless", use},
		{"use, fsync interval", FsyncInterval, "its key was not sent, unless the machine lost power", "never sent", use},
		{"use, fsync none", FsyncNone, "its key was not sent, unless the machine lost power", "never sent", use},
		{"request", "", "the use record of its key stands before it", "never sent", record("1")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, path := openTest(t, Options{})
			s.Write(use)
			s.Write(tt.rec)
			s.Close()
			b, _ := os.ReadFile(path)
			os.WriteFile(path, b[:len(b)-10], 0o600)
			var said []string
			s2, err := Open(Options{Path: path, Fsync: tt.fsync, Log: func(msg string) { said = append(said, msg) }})
			if err != nil {
				t.Fatal(err)
			}
			s2.Close()
			if len(said) != 1 || !strings.Contains(said[0], tt.want) || strings.Contains(said[0], tt.not) {
				t.Errorf("got %q, want one line saying %q", said, tt.want)
			}
		})
	}
}

// failing fails while fail is set.
type failing struct {
	mu   sync.Mutex
	fail bool
	buf  bytes.Buffer
}

func (f *failing) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return 0, errors.New("disk full")
	}
	return f.buf.Write(p)
}

// TestWriteNowKeepsNothing fails a write-ahead record: it is reported,
// and not written later (its key was not used), while a request record
// is kept and written once the sink works, in order and chained.
func TestWriteNowKeepsNothing(t *testing.T) {
	w := &failing{fail: true}
	var reported int
	s := New(w, Options{OnError: func(error, []byte) { reported++ }})
	defer s.Close()
	if s.WriteNow(record("use")) {
		t.Fatal("WriteNow reported a failed write as written")
	}
	s.Write(record("request"))
	if s.Healthy() || reported != 2 || s.Failures() != 2 {
		t.Fatalf("healthy %v, %d reported, %d failures", s.Healthy(), reported, s.Failures())
	}
	w.mu.Lock()
	w.fail = false
	w.mu.Unlock()
	waitUntil(t, settle, "healthy once the sink works again", s.Healthy)
	if !s.WriteNow(record("use2")) {
		t.Fatal("WriteNow failed on a working sink")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	got := w.buf.String()
	if strings.Contains(got, `"id":"use"`) || !strings.Contains(got, `"id":"request","seq":1,"prev":""}`) || !strings.Contains(got, `"id":"use2","seq":2,`) {
		t.Errorf("sink holds:\n%s", got)
	}
}

// unsyncable is failing whose fsyncs fail while failSync is set.
type unsyncable struct {
	failing
	failSync bool
}

func (u *unsyncable) Sync() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.failSync {
		return errors.New("input/output error")
	}
	return nil
}

// With fsync: always, a kept record written again while fsyncs fail is
// written once, not kept again, and the record that wrote it is kept in
// turn: the trail ends with every record, once, in order.
func TestUnsyncedKeptRecordWrittenOnce(t *testing.T) {
	w := &unsyncable{failing: failing{fail: true}}
	s := New(w, Options{Fsync: FsyncAlways})
	s.Write(record("r1")) // not written: kept
	w.mu.Lock()
	w.fail, w.failSync = false, true
	w.mu.Unlock()
	s.Write(record("r2")) // r1 written, not flushed: r2 must be kept
	w.mu.Lock()
	w.failSync = false
	w.mu.Unlock()
	s.Write(record("r3"))
	s.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	var ids []string
	for line := range strings.Lines(w.buf.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, fmt.Sprint(m["id"]))
	}
	if fmt.Sprint(ids) != "[r1 r2 r3]" {
		t.Errorf("the trail holds %v, want [r1 r2 r3]", ids)
	}
}

// syncCounter counts fsyncs.
type syncCounter struct {
	bytes.Buffer
	syncs int
}

func (s *syncCounter) Sync() error { s.syncs++; return nil }

func TestFsyncAlways(t *testing.T) {
	w := &syncCounter{}
	s := New(w, Options{Fsync: FsyncAlways})
	s.Write(record("1"))
	s.WriteNow(record("2"))
	if w.syncs != 2 {
		t.Errorf("%d fsyncs for 2 records, want 2", w.syncs)
	}
	s.Close()
}

func TestFsyncInterval(t *testing.T) {
	defer func(d time.Duration) { tickInterval = d }(tickInterval)
	tickInterval = 10 * time.Millisecond
	s, path := openTest(t, Options{Fsync: FsyncInterval})
	_ = path
	s.Write(record("1"))
	waitUntil(t, settle, "flushed", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return !s.dirty
	})
}

// TestFsyncIntervalFailureRefusesKeys: with fsync: interval, an fsync
// that fails (a failing disk, a thin pool or a network file system out of
// room) may have lost the records it was to flush. The sink is unhealthy
// and takes no write-ahead record (so no key is used) until an fsync
// succeeds again; a request record is kept meanwhile and written then.
func TestFsyncIntervalFailureRefusesKeys(t *testing.T) {
	defer func(d time.Duration) { tickInterval = d }(tickInterval)
	tickInterval = 10 * time.Millisecond
	w := &unsyncable{failSync: true}
	var reported atomic.Int32
	s := New(w, Options{Fsync: FsyncInterval, OnError: func(error, []byte) { reported.Add(1) }})
	defer s.Close()
	s.Write(record("r1"))
	waitUntil(t, settle, "the failed fsync reported", func() bool { return reported.Load() > 0 })
	if s.Healthy() {
		t.Error("healthy after an fsync failed")
	}
	if s.WriteNow(record("use")) {
		t.Error("a write-ahead record taken while fsyncs fail: its key would be used")
	}
	s.Write(record("r2"))
	w.mu.Lock()
	w.failSync = false
	w.mu.Unlock()
	waitUntil(t, settle, "healthy once an fsync succeeds", s.Healthy)
	if !s.WriteNow(record("use2")) {
		t.Fatal("WriteNow failed once fsyncs work")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var got []string
	for line := range strings.Lines(w.buf.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprint(m["id"]))
	}
	if fmt.Sprint(got) != "[r1 r2 use2]" {
		t.Errorf("the trail holds %v, want [r1 r2 use2]", got)
	}
}

// renamedUnflushable opens a sink (no tick: the test stands in for it)
// on a new audit file, writes a record and renames the file under it, as
// logrotate does. Every flush of the renamed file fails from then on
// (tries counts them), for t.
func renamedUnflushable(t *testing.T, fsync string) (s *Sink, path string, tries *atomic.Int32) {
	oldSync, oldTick := syncOut, tickInterval
	t.Cleanup(func() { syncOut, tickInterval = oldSync, oldTick })
	tickInterval = time.Hour
	path = filepath.Join(t.TempDir(), "audit.log")
	s, err := Open(Options{Path: path, Fsync: fsync})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.Write(record("r1"))
	renamed, tries := s.file.f, new(atomic.Int32)
	syncOut = func(f syncer) error {
		if f == syncer(renamed) {
			tries.Add(1)
			return errors.New("input/output error")
		}
		return f.Sync()
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	return s, path, tries
}

// TestRenamedFileFlushedBeforeKey: with fsync: always, a write-ahead
// record that lands in a file renamed under till (logrotate without
// copytruncate) is flushed there before the key goes; when that flush
// fails, the record is not taken as written and its key is not used.
func TestRenamedFileFlushedBeforeKey(t *testing.T) {
	s, path, _ := renamedUnflushable(t, FsyncAlways)
	if s.WriteNow(record("use")) {
		t.Error("a write-ahead record in the renamed file taken as written though it could not be flushed")
	}
	syncOut = func(f syncer) error { return f.Sync() }
	if !s.WriteNow(record("use2")) {
		t.Fatal("WriteNow failed once fsyncs work")
	}
	s.Write(record("r2"))
	mustVerify(t, VerifyOptions{}, path+".1", path)
}

// TestRenamedFileFlushedBetweenRecords: with fsync: interval, a file
// renamed between records is flushed as the sink leaves it for a new one
// (probe); when that fails, no key is used until a flush succeeds.
func TestRenamedFileFlushedBetweenRecords(t *testing.T) {
	s, _, _ := renamedUnflushable(t, FsyncInterval)
	s.mu.Lock()
	lost := s.probe()
	s.mu.Unlock()
	if lost == nil || s.Healthy() {
		t.Errorf("probe reported %v, healthy %v: the renamed file's failed flush went unseen", lost, s.Healthy())
	}
	if s.WriteNow(record("use")) {
		t.Error("a write-ahead record taken after the renamed file's records failed to reach the disk")
	}
}

// TestRenamedFileFlushedWhenFollowed: with fsync: interval, a file
// renamed under till is flushed before the sink leaves it on SIGUSR1
// (Reopen) and in the retry after a failed flush, as it is at a record
// and between records: a flush of the new file at the path says nothing
// of the records in the renamed one. While that fails, no key is used.
func TestRenamedFileFlushedWhenFollowed(t *testing.T) {
	for _, how := range []string{"reopen", "retry"} {
		t.Run(how, func(t *testing.T) {
			s, _, tries := renamedUnflushable(t, FsyncInterval)
			if how == "reopen" {
				if err := s.Reopen(); err == nil {
					t.Error("Reopen left the renamed file though its records could not be flushed")
				}
			} else {
				s.mu.Lock()
				s.probe()
				s.mu.Unlock()
				// The retry (every 250 ms) tries the renamed file again,
				// or takes the new one for flushed.
				waitUntil(t, settle, "the renamed file tried again", func() bool { return s.Healthy() || tries.Load() >= 4 })
			}
			if s.Healthy() {
				t.Error("healthy though the renamed file's records never reached the disk")
			}
			if s.WriteNow(record("use")) {
				t.Error("a write-ahead record taken though the renamed file's records never reached the disk")
			}
		})
	}
}

// TestRenamedFileFlushedWhileTickFlushes: with fsync: interval, the tick
// takes the file for flushed and flushes it outside the lock; a file
// renamed and followed (SIGUSR1) in that time was closed unflushed, and
// the tick's fsync of the closed file failed unseen. The sink flushes
// the renamed file itself, and a failure stops keys.
func TestRenamedFileFlushedWhileTickFlushes(t *testing.T) {
	s, _, _ := renamedUnflushable(t, FsyncInterval)
	s.mu.Lock()
	ticking := s.toSync() // the tick's fsync has not run yet
	s.mu.Unlock()
	if ticking == nil {
		t.Fatal("the tick would flush nothing, though a record was written")
	}
	if err := s.Reopen(); err == nil {
		t.Error("Reopen left the renamed file unflushed while the tick's fsync had not run")
	}
	if s.WriteNow(record("use")) {
		t.Error("a write-ahead record taken though the renamed file's records never reached the disk")
	}
}

// TestCheckpoints signs every 10 records and at close; verify checks the
// signatures, and a checkpoint kept elsewhere catches the removal of the
// newest records.
func TestCheckpoints(t *testing.T) {
	defer func(n int) { CheckpointRecords = n }(CheckpointRecords)
	CheckpointRecords = 10
	pub, priv, _ := ed25519.GenerateKey(nil)
	s, path := openTest(t, Options{Signer: priv})
	for i := range 35 {
		s.Write(record(fmt.Sprint(i)))
	}
	s.Close()
	r := mustVerify(t, VerifyOptions{PublicKey: pub}, path)
	if r.Checkpoints != 4 || r.Records != 39 || r.Unsigned != 0 {
		t.Errorf("report %+v, want 4 checkpoints in 39 records", r)
	}
	b, _ := os.ReadFile(path)
	all := strings.SplitAfter(string(b), "\n")
	all = all[:len(all)-1]
	last := all[len(all)-1]
	if !strings.Contains(last, `"event":"checkpoint"`) {
		t.Fatalf("last line is not a checkpoint: %s", last)
	}
	if _, err := Verify([]string{path}, VerifyOptions{Checkpoint: []byte(last), PublicKey: pub}); err != nil {
		t.Errorf("verify against its own last checkpoint: %v", err)
	}
	// Another key: every checkpoint fails.
	other, _, _ := ed25519.GenerateKey(nil)
	if _, err := Verify([]string{path}, VerifyOptions{PublicKey: other}); err == nil || !strings.Contains(err.Error(), "signature") {
		t.Errorf("verify with another key: %v", err)
	}
	// The newest records removed, with the last checkpoint: the chain
	// alone cannot tell, the checkpoint kept elsewhere does.
	cut := strings.Join(all[:25], "")
	os.WriteFile(path, []byte(cut), 0o600)
	mustVerify(t, VerifyOptions{PublicKey: pub}, path)
	_, err := Verify([]string{path}, VerifyOptions{Checkpoint: []byte(last), PublicKey: pub})
	var br *Break
	if !errors.As(err, &br) || !strings.Contains(br.Reason, "without the checkpoint") {
		t.Errorf("verify against the removed checkpoint: %v", err)
	}
	// A forged checkpoint (another key signed it) is refused as given.
	forged := strings.Replace(last, `"sig":"`, `"sig":"A`, 1)
	if _, err := Verify([]string{path}, VerifyOptions{Checkpoint: []byte(forged), PublicKey: pub}); err == nil {
		t.Error("a checkpoint with a bad signature was accepted")
	}
	// No checkpoint at all, with a key: refused.
	os.WriteFile(path, []byte(strings.Join(all[:9], "")), 0o600)
	if _, err := Verify([]string{path}, VerifyOptions{PublicKey: pub}); err == nil {
		t.Error("a trail without checkpoints verified against a key")
	}
}

func TestKeyRoundTrip(t *testing.T) {
	pemKey, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParseKey(pemKey)
	if err != nil {
		t.Fatal(err)
	}
	ak := AuthorizedKey(k)
	if !strings.HasPrefix(ak, "ssh-ed25519 AAAA") {
		t.Errorf("authorized key %q", ak)
	}
	pub, err := ParseAuthorizedKey([]byte(ak))
	if err != nil || !pub.Equal(k.Public()) {
		t.Errorf("parse back: %v", err)
	}
	if _, err := ParseKey("not a key"); err == nil {
		t.Error("ParseKey took garbage")
	}
}

// TestCheckpointAfterInterval signs records that wait CheckpointInterval
// for a checkpoint, without more records to prompt it.
func TestCheckpointAfterInterval(t *testing.T) {
	defer func(d, i time.Duration) { CheckpointInterval, tickInterval = d, i }(CheckpointInterval, tickInterval)
	CheckpointInterval, tickInterval = 50*time.Millisecond, 10*time.Millisecond
	pub, priv, _ := ed25519.GenerateKey(nil)
	s, path := openTest(t, Options{Signer: priv})
	s.Write(record("1"))
	waitUntil(t, settle, "a checkpoint after the record", func() bool {
		recs := lines(t, path)
		return len(recs) == 2 && recs[1]["event"] == "checkpoint"
	})
	if r := mustVerify(t, VerifyOptions{PublicKey: pub}, path); r.Checkpoints != 1 || r.Unsigned != 0 {
		t.Errorf("report %+v", r)
	}
}

// TestCopyTruncate: a rotation that copies the file and empties it in
// place (logrotate's copytruncate, with or without SIGUSR1) starts a new
// file of the chain: the copy and the file verify as one trail, the
// first record after the cut with seq 1.
func TestCopyTruncate(t *testing.T) {
	for _, signal := range []bool{true, false} {
		s, path := openTest(t, Options{})
		for _, id := range []string{"1", "2", "3"} {
			s.Write(record(id))
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path+".1", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
		if signal {
			if err := s.Reopen(); err != nil {
				t.Fatal(err)
			}
		}
		s.Write(record("4"))
		s.Write(record("5"))
		s.Close()
		if got := ids(t, path); got != "4 5" {
			t.Errorf("signal %v: records after the cut: %q, want \"4 5\"", signal, got)
		}
		if r, err := Verify([]string{path + ".1", path}, VerifyOptions{}); err != nil || r.Records != 5 {
			t.Errorf("signal %v: the copy and the file do not verify as one trail: %v (%+v)", signal, err, r)
		}
	}
}

// TestZeroFilledTailAfterCrash: after a power loss, a file system can
// leave the end of an appended file as NUL bytes (its size reached the
// disk, its data did not): a record a crash cut, removed like one.
func TestZeroFilledTailAfterCrash(t *testing.T) {
	s, path := openTest(t, Options{})
	s.Write(record("1"))
	s.Write(record("2"))
	s.Close()
	good, _ := os.ReadFile(path)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(bytes.Repeat([]byte{0}, 137)) // the crashed record's block
	f.Close()
	s2, err := Open(Options{Path: path})
	if err != nil {
		t.Fatalf("a trail whose last record a crash left as NULs does not open: %v", err)
	}
	s2.Write(record("3"))
	s2.Close()
	if got := ids(t, path); got != "1 2 3" {
		t.Errorf("records %q, want \"1 2 3\"", got)
	}
	if b, _ := os.ReadFile(path); !bytes.HasPrefix(b, good) {
		t.Errorf("the good records changed")
	}
}

// TestProbeBetweenRecords: a file moved away between records is followed
// within a tick, before any record comes; while nothing can be opened at
// the path the sink is unhealthy (so readiness says so before a request
// finds out), said once, and healthy again once a file can be.
func TestProbeBetweenRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	var mu sync.Mutex
	var reported []error
	s, err := Open(Options{Path: path, Fsync: FsyncNone, OnError: func(err error, _ []byte) {
		mu.Lock()
		defer mu.Unlock()
		reported = append(reported, err)
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		waitUntil(t, settle, what, ok)
	}
	s.Write(record("1"))
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	waitFor("following the move", func() bool { _, err := os.Stat(path); return err == nil })
	if got := ids(t, path); got != "" || !s.Healthy() {
		t.Fatalf("after the move: %q at the path, healthy %v; want a new empty file", got, s.Healthy())
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o700); err != nil { // no file can be opened there
		t.Fatal(err)
	}
	waitFor("unhealthy", func() bool { return !s.Healthy() })
	time.Sleep(2 * tickInterval) // more ticks fail: said once only
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	waitFor("healthy again", s.Healthy)
	if _, err := os.Stat(path); err != nil {
		t.Errorf("no new file at the path before a record: %v", err)
	}
	mu.Lock()
	if len(reported) != 1 || s.Failures() != 1 {
		t.Errorf("reported %v, %d failures; want the one failure", reported, s.Failures())
	}
	mu.Unlock()
	s.Write(record("2"))
	if old, cur := ids(t, path+".1"), ids(t, path); old != "1" || cur != "2" {
		t.Errorf("got %q in the moved file and %q at the path, want %q and %q", old, cur, "1", "2")
	}
	mustVerify(t, VerifyOptions{}, path+".1", path)
}

// TestProbeImmutableFile: a file made immutable between records (chattr
// +i), which refuses every write, makes the sink unhealthy within a tick,
// before any record comes, said once; healthy again once it takes writes.
func TestProbeImmutableFile(t *testing.T) {
	defer func(d time.Duration) { tickInterval = d }(tickInterval)
	tickInterval = 10 * time.Millisecond
	path := filepath.Join(t.TempDir(), "audit.log")
	var reported atomic.Int32
	s, err := Open(Options{Path: path, Fsync: FsyncNone, OnError: func(error, []byte) { reported.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Write(record("1"))
	if out, err := exec.Command("chattr", "+i", path).CombinedOutput(); err != nil {
		t.Skipf("chattr +i: %v %s (needs root and a file system that has the flag)", err, out)
	}
	defer exec.Command("chattr", "-i", path).Run()
	waitUntil(t, settle, "unhealthy", func() bool { return !s.Healthy() })
	time.Sleep(3 * tickInterval) // more ticks fail: said once only
	if n := reported.Load(); n != 1 || s.Failures() != 1 {
		t.Errorf("reported %d times, %d failures; want the one failure", n, s.Failures())
	}
	if err := exec.Command("chattr", "-i", path).Run(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, settle, "healthy again", s.Healthy)
	s.Write(record("2"))
	if got := ids(t, path); got != "1 2" {
		t.Errorf("got records %q, want %q", got, "1 2")
	}
	mustVerify(t, VerifyOptions{}, path)
}

// TestFullDiskAtOpenUnhealthy: a disk already full when the sink opens
// makes it unhealthy at once, before any record finds out, said once. A
// record that still fits on the last bytes does not make it healthy; the
// probe does, once the disk has room again.
func TestFullDiskAtOpenUnhealthy(t *testing.T) {
	defer func(d time.Duration) { tickInterval = d }(tickInterval)
	tickInterval = 10 * time.Millisecond
	var full atomic.Bool
	full.Store(true)
	defer func(f func(*os.File, int64, int64) error) { reserveRoom = f }(reserveRoom)
	reserveRoom = func(*os.File, int64, int64) error {
		if full.Load() {
			return syscall.ENOSPC
		}
		return nil
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	var mu sync.Mutex
	var reported []error
	s, err := Open(Options{Path: path, Fsync: FsyncNone, OnError: func(err error, _ []byte) {
		mu.Lock()
		reported = append(reported, err)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Healthy() {
		t.Fatal("healthy on a full disk, before any record")
	}
	s.Write(record("1"))
	if s.Healthy() {
		t.Error("healthy after a record on the last bytes of a full disk")
	}
	mu.Lock()
	if len(reported) != 1 || !errors.Is(reported[0], syscall.ENOSPC) {
		t.Errorf("reported %v, want one ENOSPC", reported)
	}
	mu.Unlock()
	full.Store(false)
	waitUntil(t, settle, "healthy once the disk has room", s.Healthy)
	if got := ids(t, path); got != "1" {
		t.Errorf("got records %q, want %q", got, "1")
	}
}

// settle bounds a wait for what the sink's tick does. It only catches a
// sink that never does it: a tick comes every tickInterval, but a loaded
// machine (CI under -race, the end-to-end tests beside it) can keep the
// sink's goroutine from running for longer than ten of them.
const settle = 10 * time.Second

// waitUntil polls ok until it holds, or fails the test after d.
func waitUntil(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !ok(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not %s after %v", what, d)
		}
	}
}

// TestFsyncAlwaysOnStdoutPipeSaysSo: fsync: always with the records on
// stdout flushes nothing when stdout is a pipe: the sink says so at
// start, and says nothing when stdout is a file, which it flushes.
func TestFsyncAlwaysOnStdoutPipeSaysSo(t *testing.T) {
	saved := os.Stdout
	t.Cleanup(func() { os.Stdout = saved })
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	file, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	for _, c := range []struct {
		out   *os.File
		fsync string
		warns bool
	}{{w, FsyncAlways, true}, {file, FsyncAlways, false}, {w, FsyncInterval, false}} {
		os.Stdout = c.out
		var logged []string
		s, err := Open(Options{Path: "-", Fsync: c.fsync, Log: func(msg string) { logged = append(logged, msg) }})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		os.Stdout = saved
		warned := len(logged) == 1 && strings.Contains(logged[0], "cannot flush stdout")
		if warned != c.warns || len(logged) > 1 {
			t.Errorf("stdout a %s, fsync %s: logged %q, want a warning: %v", map[bool]string{true: "pipe", false: "file"}[c.out == w], c.fsync, logged, c.warns)
		}
	}
}
