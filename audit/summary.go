package audit

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/tillgw/till/config"
)

// SummaryFilter selects the request records a summary counts. A zero field
// selects everything; the fields that are set must all match.
type SummaryFilter struct {
	Since  time.Time // records at or after this time; zero: no bound
	Until  time.Time // records at or before this time; zero: no bound
	Secret string    // the secret's name, as audited
	KeyFP  string    // the key's fingerprint, sha256: and 16 hex digits
	Client string    // the client's name
	Route  string    // the route's name
}

// SummaryRow is what one client did with one key on one route: how many of
// its requests were forwarded, refused or failed, and when the first and
// the last were made. It is the answer to "who used this key, when, for
// what".
type SummaryRow struct {
	KeyFP     string `json:"key_fp"`    // "" for requests that got no key (most refusals)
	Secret    string `json:"secret"`    // the secret's name, as audited ("" when no route was found)
	Client    string `json:"client"`    // the client's name, as audited
	Route     string `json:"route"`     // the route's name ("" when none was found)
	Forwarded int    `json:"forwarded"` // requests sent upstream
	Denied    int    `json:"denied"`    // requests till refused
	Error     int    `json:"error"`     // requests that failed (outcomes summary does not know included)
	// Unfinished counts key uses (use records) whose request has no
	// request record of this row in the files read: till stopped after
	// the key went out (a crash, a kill), the request is still running,
	// its record is in a file not given, or the request ended with
	// another key of its pool (this key's token ask failed).
	Unfinished int       `json:"unfinished"`
	First      time.Time `json:"first"` // the earliest request's (or unfinished use's) time, UTC
	Last       time.Time `json:"last"`  // the latest one's time, UTC
}

// MaxSummaryRowBytes bounds the memory a summary's rows take, counted as
// their names' bytes and rowCost for each row. A trail till wrote has a
// row per key, secret, client and route its config allows, far fewer;
// a file with more (a gzip bomb of records each of its own client) is
// not summarised into an exhausted machine.
const MaxSummaryRowBytes = 64 << 20

// rowCost is what one row takes beside its names: the map entry, the row.
const rowCost = 256

// rowKey is what a summary row is per.
type rowKey struct{ keyFP, secret, client, route string }

// SummaryStats says how much a summary read and counted.
type SummaryStats struct {
	Files    int // files read
	Records  int // records read, of every event
	Requests int // request records counted: those the filter selected
	Cut      int // last lines left out: cut short (being written, or by a crash or a power loss)
	// Unfinished counts the use records the filter selected whose
	// request record was not read (SummaryRow.Unfinished), once Rows
	// has counted them.
	Unfinished int
}

// Summary counts request records, file after file, into rows. Only the
// rows are kept, so a trail of any size is summarised in the memory its
// distinct (key, secret, client, route) need.
type Summary struct {
	filter      SummaryFilter
	rows        map[rowKey]*SummaryRow
	rowBytes    int // of maxRowBytes
	maxRowBytes int // MaxSummaryRowBytes; less in tests
	stats       SummaryStats
	first       firstLines // of the files read
	// open holds, by request id, the key uses read whose request record
	// has not been: a request's record follows its uses in the trail.
	open map[string][]openUse
}

// openUse is a key use whose request record is not read yet.
type openUse struct {
	row  rowKey
	time time.Time
}

// NewSummary returns an empty summary that counts the records f selects.
func NewSummary(f SummaryFilter) *Summary {
	return &Summary{filter: f, rows: map[rowKey]*SummaryRow{}, maxRowBytes: MaxSummaryRowBytes, first: firstLines{}, open: map[string][]openUse{}}
}

// Summarize reads the audit files, in any order (gzip-compressed or not,
// see OpenFile; it reads them oldest first, see Chronological), and
// returns their rows (see Summary.Rows).
func Summarize(files []string, f SummaryFilter) ([]SummaryRow, error) {
	files, err := Chronological(files)
	if err != nil {
		return nil, err
	}
	s := NewSummary(f)
	for _, path := range files {
		if err := s.ReadFile(path); err != nil {
			return nil, err
		}
	}
	return s.Rows(), nil
}

// ReadFile counts the records of one audit file, decompressed when it is
// gzip (see OpenFile). A line that is not a record is an error that names
// the file and the line (*LineError).
func (s *Summary) ReadFile(path string) error {
	r, err := OpenFile(path)
	if err != nil {
		return err
	}
	defer r.Close()
	return s.Read(r, path)
}

// summaryRecord holds the fields of a record that a summary reads.
type summaryRecord struct {
	Time    string `json:"time"`
	Event   string `json:"event"`
	ID      string `json:"id"`
	Client  string `json:"client"`
	Route   string `json:"route"`
	Secret  string `json:"secret"`
	KeyFP   string `json:"key_fp"`
	Outcome string `json:"outcome"`
}

// Read counts the records read from r, an uncompressed audit trail named
// name in errors. Records of events other than request (use, checkpoint,
// and any later one) are read and not counted; empty lines are skipped,
// and so is a last line cut short (counted in Stats). A file that starts
// with the line another file read started with is an error: its records
// would be counted twice.
func (s *Summary) Read(r io.Reader, name string) error {
	s.stats.Files++
	end := &lastByte{r: r}
	// A line that is no JSON is an error, unless it is the last and has
	// no newline: a record being written (a live file) or cut by a crash.
	var cut *LineError
	first := true
	err := ReadLines(end, name, func(num int, line []byte) error {
		if cut != nil {
			return cut
		}
		switch t := bytes.TrimSpace(line); {
		case len(t) == 0:
			return nil
		case t[0] == 0 && isTornRecord(t):
			// NULs where a record's data did not reach the disk (a
			// power loss): a record cut short, if it is the last line.
			cut = &LineError{File: name, Line: num, Err: errors.New("not an audit record (NUL bytes: data lost by the disk)")}
			return nil
		case t[0] != '{':
			return errors.New("not an audit record (want a JSON object)")
		case first:
			first = false
			if err := s.first.check(name, t); err != nil {
				return err
			}
		}
		var rec summaryRecord
		if err := json.Unmarshal(line, &rec); err != nil {
			cut = &LineError{File: name, Line: num, Err: recordError(err)}
			return nil
		}
		if rec.Event == "" {
			return ErrNoEvent
		}
		s.stats.Records++
		if rec.Event != "request" && rec.Event != "use" {
			return nil
		}
		// RFC3339Nano parses times with or without fractional seconds.
		t, err := time.Parse(time.RFC3339Nano, rec.Time)
		if err != nil {
			return fmt.Errorf(`%s record: "time" is not an RFC 3339 time`, rec.Event)
		}
		if rec.Event == "use" {
			return s.use(&rec, t.UTC())
		}
		s.finish(&rec)
		return s.add(&rec, t.UTC())
	})
	switch {
	case err != nil:
		return err
	case cut != nil && end.b == '\n':
		return cut
	case cut != nil:
		s.stats.Cut++
	}
	return nil
}

// lastByte is a reader that remembers the last byte it read.
type lastByte struct {
	r io.Reader
	b byte
}

func (l *lastByte) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if n > 0 {
		l.b = p[n-1]
	}
	return n, err
}

// recordError says why a line is not a record, without quoting it: a file
// given by mistake (a vault, an env file) could hold a key.
func recordError(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Errorf("not a JSON record (invalid JSON at byte %d)", syntax.Offset)
	case errors.As(err, &typ) && typ.Field != "":
		// Field is one of summaryRecord's names, never the line's.
		return fmt.Errorf("not an audit record (%q is a JSON %s, want a string)", typ.Field, typ.Value)
	}
	return errors.New("not an audit record (want a JSON object)")
}

// selects reports whether f selects rec, a record of time t.
func (f *SummaryFilter) selects(rec *summaryRecord, t time.Time) bool {
	return (f.Since.IsZero() || !t.Before(f.Since)) &&
		(f.Until.IsZero() || !t.After(f.Until)) &&
		(f.Secret == "" || rec.Secret == f.Secret) &&
		(f.KeyFP == "" || rec.KeyFP == f.KeyFP) &&
		(f.Client == "" || rec.Client == f.Client) &&
		(f.Route == "" || rec.Route == f.Route)
}

// use holds a use record, if the filter selects it, until its request's
// record is read.
func (s *Summary) use(rec *summaryRecord, t time.Time) error {
	if !s.filter.selects(rec, t) || rec.ID == "" {
		return nil
	}
	k := rowKey{rec.KeyFP, rec.Secret, rec.Client, rec.Route}
	if err := s.grow(useCost(rec.ID, k)); err != nil {
		return err
	}
	s.open[rec.ID] = append(s.open[rec.ID], openUse{k, t})
	return nil
}

// finish gives up the held uses that rec, a request record, accounts
// for: those of its request with its row (key, secret, client, route).
// A use of another key under the same id stays held, and counts as
// Unfinished: a pool's next key whose token was asked for, after which
// the request ended with the key before (the ask failed, or a reload
// refused the request), has no request record of its own, and a summary
// by that key must still show that it went.
func (s *Summary) finish(rec *summaryRecord) {
	uses, ok := s.open[rec.ID]
	if !ok {
		return
	}
	k := rowKey{rec.KeyFP, rec.Secret, rec.Client, rec.Route}
	kept := uses[:0]
	for _, u := range uses {
		if u.row == k {
			s.rowBytes -= useCost(rec.ID, u.row) // finished with its request
			continue
		}
		kept = append(kept, u)
	}
	if len(kept) == 0 {
		delete(s.open, rec.ID)
		return
	}
	s.open[rec.ID] = kept
}

// useCost is the memory an open use of request id takes (see grow).
func useCost(id string, k rowKey) int { return len(id) + k.cost() }

// cost is the memory a row of k takes (see grow).
func (k rowKey) cost() int {
	return rowCost + len(k.keyFP) + len(k.secret) + len(k.client) + len(k.route)
}

// grow counts n more bytes of memory held, unless that would pass
// maxRowBytes: then it is an error, and nothing is counted.
func (s *Summary) grow(n int) error {
	if s.rowBytes+n > s.maxRowBytes {
		return fmt.Errorf("more distinct keys, secrets, clients and routes than %d KiB holds: not a trail till wrote", s.maxRowBytes>>10)
	}
	s.rowBytes += n
	return nil
}

// row returns the row of k, made with the time t if there is none.
func (s *Summary) row(k rowKey, t time.Time) (*SummaryRow, error) {
	row := s.rows[k]
	if row == nil {
		if err := s.grow(k.cost()); err != nil {
			return nil, err
		}
		row = &SummaryRow{KeyFP: k.keyFP, Secret: k.secret, Client: k.client, Route: k.route, First: t, Last: t}
		s.rows[k] = row
	}
	if t.Before(row.First) {
		row.First = t
	}
	if t.After(row.Last) {
		row.Last = t
	}
	return row, nil
}

// add counts one request record, if the filter selects it.
func (s *Summary) add(rec *summaryRecord, t time.Time) error {
	if !s.filter.selects(rec, t) {
		return nil
	}
	row, err := s.row(rowKey{rec.KeyFP, rec.Secret, rec.Client, rec.Route}, t)
	if err != nil {
		return err
	}
	s.stats.Requests++
	switch rec.Outcome {
	case "forwarded":
		row.Forwarded++
	case "denied":
		row.Denied++
	default:
		// "error", and any outcome a later till may write: counted, so
		// that no request of the trail goes missing from its summary.
		row.Error++
	}
	return nil
}

// Rows returns the rows counted so far, sorted by key fingerprint, secret,
// client and route, so that a summary prints the same whatever the order
// of its files. With nothing counted it is empty, not nil. The uses read
// without their request's record count as Unfinished: read the files
// oldest first (Chronological), or a request whose record a later file
// holds is counted so.
func (s *Summary) Rows() []SummaryRow {
	for id, uses := range s.open {
		for _, u := range uses {
			// The use's bytes are given back first: its row fits in them,
			// so row cannot fail.
			s.rowBytes -= useCost(id, u.row)
			row, _ := s.row(u.row, u.time)
			row.Unfinished++
			s.stats.Unfinished++
		}
		delete(s.open, id)
	}
	rows := make([]SummaryRow, 0, len(s.rows))
	for _, r := range s.rows {
		rows = append(rows, *r)
	}
	slices.SortFunc(rows, func(a, b SummaryRow) int {
		return cmp.Or(
			cmp.Compare(a.KeyFP, b.KeyFP),
			cmp.Compare(a.Secret, b.Secret),
			cmp.Compare(a.Client, b.Client),
			cmp.Compare(a.Route, b.Route),
		)
	})
	return rows
}

// Stats says how many files and records were read so far, and how many
// request records counted.
func (s *Summary) Stats() SummaryStats { return s.stats }

// ParseSince reads when a summary starts: a duration before now ("24h",
// "7d", "90m", "1d12h") or an RFC 3339 time. Its error never quotes s.
func ParseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := config.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, errors.New("want a duration (24h, 7d, 90m) or an RFC 3339 time (2026-12-01T00:00:00Z)")
}
