package audit

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// distinctClients is a trail of n request records, each of its own
// client, generated as it is read.
type distinctClients struct {
	n, i  int
	buf   []byte
	event string // "request" unless set
}

func (d *distinctClients) Read(p []byte) (int, error) {
	for len(d.buf) == 0 {
		if d.i == d.n {
			return 0, io.EOF
		}
		d.i++
		d.buf = fmt.Appendf(nil, `{"time":"2026-12-02T10:00:00Z","event":%q,"id":"i%09d","client":"c%09d","route":"r","secret":"s","key_fp":"","outcome":"denied"}`+"\n", cmp.Or(d.event, "request"), d.i, d.i)
	}
	n := copy(p, d.buf)
	d.buf = d.buf[n:]
	return n, nil
}

// TestSummaryMemoryBounded: a summary keeps one row per distinct key,
// secret, client and route, which a trail till wrote bounds by its
// config; a hostile file (a gzip bomb of records each of its own client)
// once grew the table until the CLI ran out of memory. Past its bound
// (MaxSummaryRowBytes; 1 MiB here) it stops, naming the line.
func TestSummaryMemoryBounded(t *testing.T) {
	s := NewSummary(SummaryFilter{})
	s.maxRowBytes = 1 << 20
	err := s.Read(&distinctClients{n: s.maxRowBytes / rowCost}, "bomb.log.gz")
	var le *LineError
	if !errors.As(err, &le) || le.File != "bomb.log.gz" || !strings.Contains(err.Error(), "distinct") {
		t.Fatalf("got %v, want a line error about distinct rows", err)
	}
	if rows := len(s.Rows()); rows*rowCost > s.maxRowBytes {
		t.Errorf("kept %d rows", rows)
	}
	// Uses whose requests never come are held as rows would be.
	s = NewSummary(SummaryFilter{})
	s.maxRowBytes = 1 << 20
	err = s.Read(&distinctClients{n: s.maxRowBytes / rowCost, event: "use"}, "uses.log")
	if !errors.As(err, &le) || le.File != "uses.log" || !strings.Contains(err.Error(), "distinct") {
		t.Fatalf("uses: got %v, want a line error about distinct rows", err)
	}
	if rows := s.Rows(); len(rows)*rowCost > s.maxRowBytes || s.rowBytes > s.maxRowBytes+rowCost {
		t.Errorf("uses: kept %d rows, %d bytes", len(rows), s.rowBytes)
	}
	if MaxSummaryRowBytes < 16<<20 {
		t.Errorf("MaxSummaryRowBytes is %d: too few rows for a large config's trail", MaxSummaryRowBytes)
	}
}
