package audit

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAppendAfterUnremovableCut: a record cut short (a full disk) that
// cannot be taken back out (an append-only file) must not have the next
// record run into it: append refuses until it can remove the cut. A pipe
// stands in for such a file: a write past its buffer stops part way at
// its deadline, and it cannot be truncated.
func TestAppendAfterUnremovableCut(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	af := &file{f: w}
	if err := w.SetWriteDeadline(time.Time{}); err != nil {
		t.Skip("pipes here take no deadline:", err)
	}
	// The reader takes the cut record's first bytes, then cuts the write
	// short with a deadline: some of the record is written, whatever the
	// machine's load, and the rest is not.
	var sent bytes.Buffer
	resume, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		head := make([]byte, 1000)
		n, _ := io.ReadFull(r, head)
		sent.Write(head[:n])
		w.SetWriteDeadline(time.Now())
		<-resume
		io.Copy(&sent, r)
	}()
	big := bytes.Repeat([]byte("x"), 1<<20) // past any pipe buffer
	if err := af.append(big); err == nil {
		t.Fatal("a write past the pipe's buffer succeeded")
	}
	if af.size != 0 {
		t.Fatalf("after a cut record: size %d, want 0", af.size)
	}
	w.SetWriteDeadline(time.Time{})
	close(resume)
	if err := af.append([]byte("{\"next\":1}\n")); err == nil {
		t.Error("a record was appended after a cut that could not be removed")
	}
	w.Close()
	<-done
	if bytes.Contains(sent.Bytes(), []byte("next")) {
		t.Error("the next record ran into the cut one")
	}
}

// TestCheckAgreesWithOpen: Check refuses exactly the audit files Open
// refuses, and changes none of them (Open makes a missing file and its
// folder, and cuts a torn last record; Check does none of that).
func TestCheckAgreesWithOpen(t *testing.T) {
	write := func(data string) func(string) error {
		return func(path string) error { return os.WriteFile(path, []byte(data), 0o600) }
	}
	for _, tt := range []struct {
		name, file string
		setup      func(path string) error
	}{
		{"missing", "audit.jsonl", func(string) error { return nil }},
		{"missing folder", "logs/audit.jsonl", func(string) error { return nil }},
		{"empty", "audit.jsonl", write("")},
		{"records", "audit.jsonl", write("{\"seq\":1}\n")},
		{"torn record", "audit.jsonl", write("{\"seq\":1}\n{\"se")},
		{"not an audit file", "audit.jsonl", write("a\nb")},
		{"text ending in a line break", "audit.jsonl", write("a\nb\n")},
		{"folder", "audit.jsonl", func(path string) error { return os.Mkdir(path, 0o700) }},
		{"symbolic link", "audit.jsonl", func(path string) error {
			if err := os.WriteFile(path+".real", nil, 0o600); err != nil {
				return err
			}
			return os.Symlink(path+".real", path)
		}},
		{"dangling link", "audit.jsonl", func(path string) error { return os.Symlink(path+".gone", path) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), tt.file)
			if err := tt.setup(path); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(path)
			_, statErr := os.Lstat(path)
			checkErr := Check(path)
			after, _ := os.ReadFile(path)
			if _, err := os.Lstat(path); !bytes.Equal(before, after) || (err == nil) != (statErr == nil) {
				t.Errorf("Check changed the file: %q, then %q", before, after)
			}
			s, openErr := Open(Options{Path: path, Fsync: FsyncNone})
			if openErr == nil {
				s.Close()
			}
			if (checkErr == nil) != (openErr == nil) || checkErr != nil && checkErr.Error() != openErr.Error() {
				t.Errorf("Check: %v; Open: %v", checkErr, openErr)
			}
		})
	}
}

// TestOpenLeavesOtherJSONFiles: a JSON file named as audit.file by
// mistake (an app's settings, written without a final newline as most
// JSON writers do, or another program's JSON lines) was taken for a
// trail whose last record a crash cut short: serve cut that "record"
// off, the whole file when it is one line, and appended records to what
// was left, while check said ok. A file whose last line is whole JSON
// but no record (no "event"), or that ends in no record, is no trail:
// Open and Check refuse it and leave it as it is.
func TestOpenLeavesOtherJSONFiles(t *testing.T) {
	for _, tt := range []struct{ name, data string }{
		{"settings, no final newline", `{"db":"postgres://db/app","replicas":3}`},
		{"settings", "{\"db\":\"postgres://db/app\",\"replicas\":3}\n"},
		{"an app's JSON lines, the last without its newline", "{\"msg\":\"started\"}\n{\"msg\":\"stopped\"}"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "settings.json")
			if err := os.WriteFile(path, []byte(tt.data), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := Check(path); err == nil {
				t.Error("Check took it for an audit trail")
			}
			if s, err := Open(Options{Path: path, Fsync: FsyncNone}); err == nil {
				s.Write(record("1"))
				s.Close()
				t.Error("Open took it for an audit trail")
			}
			if got, _ := os.ReadFile(path); string(got) != tt.data {
				t.Errorf("the file was changed: %q, then %q", tt.data, got)
			}
		})
	}
	// A trail's last record cut short, even just before its newline, is
	// still cut off.
	for _, cut := range []string{`{"level":"info","time":"2026-`, strings.TrimSuffix(string(record("2")), "\n")} {
		path := filepath.Join(t.TempDir(), "audit.log")
		if err := os.WriteFile(path, append(record("1"), cut...), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(Options{Path: path, Fsync: FsyncNone})
		if err != nil {
			t.Fatalf("a trail whose last record was cut short (%q): %v", cut, err)
		}
		s.Close()
		if got, _ := os.ReadFile(path); !bytes.Equal(got, record("1")) {
			t.Errorf("a trail whose last record was cut short (%q): the cut stayed:\n%s", cut, got)
		}
	}
}
