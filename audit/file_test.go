package audit

import (
	"bytes"
	"io"
	"os"
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
	var sent bytes.Buffer
	if err := w.SetWriteDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Skip("pipes here take no deadline:", err)
	}
	big := bytes.Repeat([]byte("x"), 1<<20) // past any pipe buffer
	if err := af.append(big); err == nil {
		t.Fatal("a write past the pipe's buffer succeeded")
	}
	if af.size != 0 {
		t.Fatalf("after a cut record: size %d, want 0", af.size)
	}
	w.SetWriteDeadline(time.Time{})
	done := make(chan struct{})
	go func() { io.Copy(&sent, r); close(done) }()
	if err := af.append([]byte("{\"next\":1}\n")); err == nil {
		t.Error("a record was appended after a cut that could not be removed")
	}
	w.Close()
	<-done
	if bytes.Contains(sent.Bytes(), []byte("next")) {
		t.Error("the next record ran into the cut one")
	}
}
