package audit_test

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tillgw/till/audit"
)

// Key fingerprints of the generated trail: two keys of secret openai (one
// rotated in for the other) and one of anthropic.
const (
	fpA = "sha256:aaaaaaaaaaaaaaaa"
	fpB = "sha256:bbbbbbbbbbbbbbbb"
	fpC = "sha256:cccccccccccccccc"
)

// t0 is when the generated trail starts.
var t0 = time.Date(2026, 12, 2, 10, 0, 0, 123456000, time.UTC)

// rec is one line of a generated trail.
type rec struct {
	at                           time.Duration // after t0
	event                        string
	id                           string // the request's; by default one of its own
	keyFP, secret, client, route string
	outcome, reason              string
}

// line writes r the way till does: every field present, the ones summary
// ignores included.
func (r rec) line(seq int) string {
	m := map[string]any{
		"level": "info", "time": t0.Add(r.at).Format(time.RFC3339Nano), "event": r.event,
		"id": cmp.Or(r.id, fmt.Sprintf("r%d", r.at.Milliseconds())), "mode": "reverse", "client": r.client, "route": r.route,
		"secret": r.secret, "key_fp": r.keyFP, "method": "POST", "host": "api.example.com",
		"path": "/v1/chat/completions", "seq": seq, "prev": strings.Repeat("ab", 32),
	}
	if r.event == "request" {
		m["status"], m["bytes_in"], m["bytes_out"], m["duration_ms"] = 200, 10, 20, 1.5
		m["outcome"], m["reason"], m["attempt"] = r.outcome, r.reason, 1
	}
	if r.event == "checkpoint" {
		m = map[string]any{"level": "info", "time": t0.Add(r.at).Format(time.RFC3339Nano), "event": "checkpoint",
			"seq": seq, "prev": strings.Repeat("cd", 32), "sig": "c2lnbmF0dXJl"}
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// trailFiles is a trail rotated twice, oldest first: audit.log.2 was
// compressed (and renamed without .gz, so that only its bytes say so).
var trailFiles = []struct {
	name string
	gzip bool
	recs []rec
}{
	{"audit.log.2", true, []rec{
		{at: 0, event: "use", id: "a1", keyFP: fpA, secret: "openai", client: "web", route: "openai"},
		{at: 500 * time.Millisecond, event: "request", id: "a1", keyFP: fpA, secret: "openai", client: "web", route: "openai", outcome: "forwarded"},
		{at: time.Minute, event: "use", id: "a2", keyFP: fpA, secret: "openai", client: "web", route: "openai"},
		{at: time.Minute + time.Millisecond, event: "request", id: "a2", keyFP: fpA, secret: "openai", client: "web", route: "openai", outcome: "forwarded"},
		{at: 2 * time.Minute, event: "request", client: "web", outcome: "denied", reason: "route_not_found"},
		{at: 3 * time.Minute, event: "checkpoint"},
	}},
	{"audit.log.1", false, []rec{
		{at: 10 * time.Minute, event: "use", id: "b1", keyFP: fpA, secret: "openai", client: "batch", route: "openai"},
		{at: 10*time.Minute + time.Second, event: "request", id: "b1", keyFP: fpA, secret: "openai", client: "batch", route: "openai", outcome: "error", reason: "upstream_timeout"},
		{at: 11 * time.Minute, event: "request", secret: "openai", client: "batch", route: "openai", outcome: "denied", reason: "client_not_allowed"},
		{at: 11*time.Minute + time.Second, event: "reload", client: "batch"}, // an event summary does not know
		{at: 12 * time.Minute, event: "use", id: "b2", keyFP: fpB, secret: "openai", client: "web", route: "openai"},
		// A request sent twice (a reused connection failed under it), its
		// record in the next file.
		{at: 12*time.Minute + time.Second, event: "use", id: "b3", keyFP: fpB, secret: "openai", client: "web", route: "openai"},
		{at: 12*time.Minute + 2*time.Second, event: "use", id: "b3", keyFP: fpB, secret: "openai", client: "web", route: "openai"},
		{at: 12*time.Minute + 3*time.Second, event: "request", id: "b2", keyFP: fpB, secret: "openai", client: "web", route: "openai", outcome: "forwarded"},
	}},
	{"audit.log", false, []rec{
		{at: 20 * time.Minute, event: "request", keyFP: fpC, secret: "anthropic", client: "web", route: "anthropic", outcome: "forwarded"},
		{at: 21 * time.Minute, event: "request", keyFP: fpC, secret: "anthropic", client: "web", route: "anthropic", outcome: "forwarded"},
		{at: 22 * time.Minute, event: "request", id: "b3", keyFP: fpB, secret: "openai", client: "web", route: "openai", outcome: "forwarded"},
		{at: 23 * time.Minute, event: "request", outcome: "denied", reason: "route_not_found"},
		{at: 24 * time.Minute, event: "checkpoint"},
		// till stopped between the key's use and the request's end: an
		// unfinished use.
		{at: 25 * time.Minute, event: "use", id: "c1", keyFP: fpB, secret: "openai", client: "web", route: "openai"},
	}},
}

// writeTrail writes trailFiles into a new folder and returns their paths,
// oldest first.
func writeTrail(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for _, f := range trailFiles {
		var b bytes.Buffer
		for i, r := range f.recs {
			b.WriteString(r.line(i+1) + "\n")
		}
		data := b.Bytes()
		if f.gzip {
			data = gzipped(t, data)
		}
		path := filepath.Join(dir, f.name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, path)
	}
	return paths
}

func gzipped(t *testing.T, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func at(d time.Duration) time.Time { return t0.Add(d) }

// The rows of the whole trail, as the contract orders them.
var (
	rowNoRoute     = audit.SummaryRow{Denied: 1, First: at(23 * time.Minute), Last: at(23 * time.Minute)}
	rowWebNoRoute  = audit.SummaryRow{Client: "web", Denied: 1, First: at(2 * time.Minute), Last: at(2 * time.Minute)}
	rowBatchDenied = audit.SummaryRow{Secret: "openai", Client: "batch", Route: "openai", Denied: 1,
		First: at(11 * time.Minute), Last: at(11 * time.Minute)}
	rowABatch = audit.SummaryRow{KeyFP: fpA, Secret: "openai", Client: "batch", Route: "openai", Error: 1,
		First: at(10*time.Minute + time.Second), Last: at(10*time.Minute + time.Second)}
	rowAWeb = audit.SummaryRow{KeyFP: fpA, Secret: "openai", Client: "web", Route: "openai", Forwarded: 2,
		First: at(500 * time.Millisecond), Last: at(time.Minute + time.Millisecond)}
	rowBWeb = audit.SummaryRow{KeyFP: fpB, Secret: "openai", Client: "web", Route: "openai", Forwarded: 2, Unfinished: 1,
		First: at(12*time.Minute + 3*time.Second), Last: at(25 * time.Minute)}
	rowCWeb = audit.SummaryRow{KeyFP: fpC, Secret: "anthropic", Client: "web", Route: "anthropic", Forwarded: 2,
		First: at(20 * time.Minute), Last: at(21 * time.Minute)}
)

func TestSummaryOfARotatedTrail(t *testing.T) {
	paths := writeTrail(t)
	want := []audit.SummaryRow{rowNoRoute, rowWebNoRoute, rowBatchDenied, rowABatch, rowAWeb, rowBWeb, rowCWeb}

	s := audit.NewSummary(audit.SummaryFilter{})
	for _, p := range paths {
		if err := s.ReadFile(p); err != nil {
			t.Fatal(err)
		}
	}
	checkRows(t, s.Rows(), want)
	if got, want := s.Stats(), (audit.SummaryStats{Files: 3, Records: 20, Requests: 10, Unfinished: 1}); got != want {
		t.Errorf("stats: got %+v, want %+v", got, want)
	}

	// The files' order does not matter: newest first gives the same rows.
	reversed := slices.Clone(paths)
	slices.Reverse(reversed)
	got, err := audit.Summarize(reversed, audit.SummaryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	checkRows(t, got, want)
}

func TestSummaryFilters(t *testing.T) {
	paths := writeTrail(t)
	tests := []struct {
		name   string
		filter audit.SummaryFilter
		want   []audit.SummaryRow
	}{
		{"since", audit.SummaryFilter{Since: at(11 * time.Minute)}, []audit.SummaryRow{rowNoRoute, rowBatchDenied, rowBWeb, rowCWeb}},
		{"since cuts a row", audit.SummaryFilter{Since: at(13 * time.Minute)}, []audit.SummaryRow{rowNoRoute,
			{KeyFP: fpB, Secret: "openai", Client: "web", Route: "openai", Forwarded: 1, Unfinished: 1, First: at(22 * time.Minute), Last: at(25 * time.Minute)}, rowCWeb}},
		{"until leaves out the unfinished use", audit.SummaryFilter{Until: at(24 * time.Minute), KeyFP: fpB}, []audit.SummaryRow{
			{KeyFP: fpB, Secret: "openai", Client: "web", Route: "openai", Forwarded: 2, First: at(12*time.Minute + 3*time.Second), Last: at(22 * time.Minute)}}},
		{"until, inclusive", audit.SummaryFilter{Until: at(10*time.Minute + time.Second)}, []audit.SummaryRow{rowWebNoRoute, rowABatch, rowAWeb}},
		{"since and until", audit.SummaryFilter{Since: at(time.Minute), Until: at(11 * time.Minute)}, []audit.SummaryRow{rowWebNoRoute, rowBatchDenied, rowABatch,
			{KeyFP: fpA, Secret: "openai", Client: "web", Route: "openai", Forwarded: 1, First: at(time.Minute + time.Millisecond), Last: at(time.Minute + time.Millisecond)}}},
		{"secret", audit.SummaryFilter{Secret: "openai"}, []audit.SummaryRow{rowBatchDenied, rowABatch, rowAWeb, rowBWeb}},
		{"key fingerprint", audit.SummaryFilter{KeyFP: fpB}, []audit.SummaryRow{rowBWeb}},
		{"client", audit.SummaryFilter{Client: "batch"}, []audit.SummaryRow{rowBatchDenied, rowABatch}},
		{"route", audit.SummaryFilter{Route: "anthropic"}, []audit.SummaryRow{rowCWeb}},
		{"secret and client", audit.SummaryFilter{Secret: "openai", Client: "web"}, []audit.SummaryRow{rowAWeb, rowBWeb}},
		{"nothing matches", audit.SummaryFilter{Secret: "github"}, []audit.SummaryRow{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := audit.Summarize(paths, tt.filter)
			if err != nil {
				t.Fatal(err)
			}
			checkRows(t, got, tt.want)
		})
	}
}

// TestSummaryRowJSON holds the JSON shape the contract gives: exactly
// these keys (the contract's, and unfinished), counts as numbers, times
// in RFC 3339, [] when empty.
func TestSummaryRowJSON(t *testing.T) {
	b, err := json.Marshal([]audit.SummaryRow{rowAWeb})
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"key_fp":"sha256:aaaaaaaaaaaaaaaa","secret":"openai","client":"web","route":"openai",` +
		`"forwarded":2,"denied":0,"error":0,"unfinished":0,"first":"2026-12-02T10:00:00.623456Z","last":"2026-12-02T10:01:00.124456Z"}]`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	rows, err := audit.Summarize(nil, audit.SummaryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(rows); string(b) != "[]" {
		t.Errorf("no rows: got %s, want []", b)
	}
}

func checkRows(t *testing.T, got, want []audit.SummaryRow) {
	t.Helper()
	if got == nil {
		t.Error("rows are nil, want a slice (printed as [], not null)")
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %d rows:\n%s\nwant %d:\n%s", len(got), showRows(got), len(want), showRows(want))
	}
}

func showRows(rows []audit.SummaryRow) string {
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "  %+v\n", r)
	}
	return b.String()
}

// TestSummaryBadLines: a line that is not a record stops the summary with
// an error naming the file and the line, which never quotes the line.
func TestSummaryBadLines(t *testing.T) {
	good := rec{event: "request", keyFP: fpA, secret: "openai", client: "web", route: "openai", outcome: "forwarded"}.line(1)
	const key = "sk-proj-Xk3vT9qLw2RbN7mYc4ZpHd8s"
	tests := []struct {
		name string
		line string
		want string
	}{
		{"cut short", `{"event":"request","time":"2026-12-02T10:00:00Z",`, "not a JSON record"},
		{"an env file", "OPENAI_API_KEY=" + key, "not an audit record"},
		{"a JSON string", `"` + key + `"`, "not an audit record"},
		{"null", "null", "not an audit record"},
		{"a field of the wrong type", `{"event":"request","time":"2026-12-02T10:00:00Z","key_fp":12}`, `"key_fp" is a JSON number`},
		{"a request without a time", `{"event":"request","key_fp":"` + key + `"}`, `"time" is not an RFC 3339 time`},
		{"a request with a bad time", `{"event":"request","time":"` + key + `"}`, `"time" is not an RFC 3339 time`},
		{"a use with a bad time", `{"event":"use","id":"x","time":"` + key + `"}`, `use record: "time" is not an RFC 3339 time`},
		{"a JSON error after the key", `{"secret":"` + key + `",}`, "not a JSON record"},
		{"till's own log", `{"level":"info","secret":"openai","time":"2026-12-02T10:00:00Z","message":"route"}`, `not an audit record (no "event")`},
		{"an object without an event", `{"key_fp":"` + key + `"}`, `not an audit record (no "event"`},
	}
	for _, tt := range tests {
		for _, compress := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/gzip=%v", tt.name, compress), func(t *testing.T) {
				data := []byte(good + "\n" + good + "\n\n" + tt.line + "\n" + good + "\n")
				if compress {
					data = gzipped(t, data)
				}
				path := filepath.Join(t.TempDir(), "audit.log")
				if err := os.WriteFile(path, data, 0o600); err != nil {
					t.Fatal(err)
				}
				_, err := audit.Summarize([]string{path}, audit.SummaryFilter{})
				var le *audit.LineError
				if !errors.As(err, &le) || le.File != path || le.Line != 4 {
					t.Fatalf("got %v, want a *LineError at %s:4", err, path)
				}
				msg := err.Error()
				if !strings.HasPrefix(msg, path+":4: ") || !strings.Contains(msg, tt.want) {
					t.Errorf("got %q, want %q and %q", msg, path+":4: …", tt.want)
				}
				if strings.Contains(msg, key[:12]) {
					t.Errorf("the error quotes the line: %q", msg)
				}
			})
		}
	}
}

// A record of an event summary does not count needs no time: it is
// skipped as it is.
func TestSummarySkipsOtherEvents(t *testing.T) {
	trail := `{"event":"checkpoint","seq":9,"sig":"x"}` + "\n" + `{"event":"reload","time":"soon"}` + "\n"
	s := audit.NewSummary(audit.SummaryFilter{})
	if err := s.Read(strings.NewReader(trail), "audit.log"); err != nil {
		t.Fatal(err)
	}
	if rows, st := s.Rows(), s.Stats(); len(rows) != 0 || st != (audit.SummaryStats{Files: 1, Records: 2}) {
		t.Errorf("got %v and %+v, want no rows from 2 records", rows, st)
	}
}

func TestSummaryMissingFile(t *testing.T) {
	good := writeTrail(t)
	missing := filepath.Join(t.TempDir(), "audit.log.7")
	_, err := audit.Summarize(append(good, missing), audit.SummaryFilter{})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("got %v, want an error naming %s", err, missing)
	}
}

// An outcome a later till may write is counted as an error, not lost.
func TestSummaryUnknownOutcome(t *testing.T) {
	r := rec{event: "request", keyFP: fpA, secret: "openai", client: "web", route: "openai", outcome: "shed"}
	s := audit.NewSummary(audit.SummaryFilter{})
	if err := s.Read(strings.NewReader(r.line(1)), "audit.log"); err != nil {
		t.Fatal(err)
	}
	if rows := s.Rows(); len(rows) != 1 || rows[0].Error != 1 {
		t.Errorf("got %+v, want one row with error 1", rows)
	}
}

func TestSummaryParseSince(t *testing.T) {
	now := time.Date(2026, 12, 9, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
	}{
		{"24h", now.Add(-24 * time.Hour)},
		{"7d", now.Add(-7 * 24 * time.Hour)},
		{"90m", now.Add(-90 * time.Minute)},
		{"1d12h", now.Add(-36 * time.Hour)},
		{"30s", now.Add(-30 * time.Second)},
		{"2026-12-01T00:00:00Z", time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
		{"2026-12-01T00:00:00.5Z", time.Date(2026, 12, 1, 0, 0, 0, 5e8, time.UTC)},
		{"2026-12-01T01:00:00+01:00", time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := audit.ParseSince(tt.in, now)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	for _, bad := range []string{"", "yesterday", "-1h", "0s", "1.5d", "7 d", "d", "2026-12-01", "sk-proj-Xk3vT9qLw2RbN7mYc4Zp"} {
		t.Run("bad "+bad, func(t *testing.T) {
			_, err := audit.ParseSince(bad, now)
			if err == nil {
				t.Fatal("no error")
			}
			if strings.HasPrefix(bad, "sk-") && strings.Contains(err.Error(), bad[:10]) {
				t.Errorf("the error quotes its input: %q", err)
			}
		})
	}
}

// FuzzSummaryRead: whatever a file holds, reading it neither panics nor
// loses count: the rows add up to the requests counted.
func FuzzSummaryRead(f *testing.F) {
	for _, tf := range trailFiles {
		var b strings.Builder
		for i, r := range tf.recs {
			b.WriteString(r.line(i+1) + "\n")
		}
		f.Add(b.String())
	}
	f.Add("{}\n\n{\"event\":\"request\",\"time\":\"2026-12-02T10:00:00Z\"}\r\n")
	f.Add("not json\n")
	f.Fuzz(func(t *testing.T, trail string) {
		s := audit.NewSummary(audit.SummaryFilter{})
		err := s.Read(strings.NewReader(trail), "audit.log")
		var le *audit.LineError
		if err != nil && !errors.As(err, &le) {
			t.Fatalf("got %v, want a *LineError", err)
		}
		n, open := 0, 0
		for _, r := range s.Rows() {
			n += r.Forwarded + r.Denied + r.Error
			open += r.Unfinished
			if r.First.After(r.Last) {
				t.Errorf("first %v after last %v", r.First, r.Last)
			}
		}
		st := s.Stats()
		if n != st.Requests || open != st.Unfinished || n+open > st.Records {
			t.Errorf("rows count %d requests and %d unfinished uses, stats %+v", n, open, st)
		}
	})
}

// A summary read from memory: the uses of the key of secret openai.
func ExampleSummary() {
	const trail = `{"time":"2026-12-02T10:00:00.1Z","event":"use","client":"web","route":"openai","secret":"openai","key_fp":"sha256:0123456789abcdef"}
{"time":"2026-12-02T10:00:00.5Z","event":"request","client":"web","route":"openai","secret":"openai","key_fp":"sha256:0123456789abcdef","outcome":"forwarded"}
{"time":"2026-12-02T10:05:00Z","event":"request","client":"batch","route":"openai","secret":"openai","key_fp":"","outcome":"denied","reason":"client_not_allowed"}
{"time":"2026-12-02T10:06:00Z","event":"request","client":"web","route":"github","secret":"github","key_fp":"sha256:fedcba9876543210","outcome":"forwarded"}
`
	s := audit.NewSummary(audit.SummaryFilter{Secret: "openai"})
	if err := s.Read(strings.NewReader(trail), "audit.log"); err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range s.Rows() {
		fmt.Printf("%q %s %s: %d forwarded, %d denied, %d error(s), last %s\n",
			r.KeyFP, r.Client, r.Route, r.Forwarded, r.Denied, r.Error, r.Last.Format(time.RFC3339))
	}
	// Output:
	// "" batch openai: 0 forwarded, 1 denied, 0 error(s), last 2026-12-02T10:05:00Z
	// "sha256:0123456789abcdef" web openai: 1 forwarded, 0 denied, 0 error(s), last 2026-12-02T10:00:00Z
}

// TestSummaryCutLastLine: a last line cut short (a live file read while
// till writes it, or a crash) is left out and counted, not an error; the
// same line with its newline, or followed by others, still is one.
func TestSummaryCutLastLine(t *testing.T) {
	good := rec{event: "request", keyFP: fpA, secret: "openai", client: "web", route: "openai", outcome: "forwarded"}.line(1)
	const cut = `{"event":"request","time":"2026-12-02T10:00:00Z",`
	s := audit.NewSummary(audit.SummaryFilter{})
	if err := s.Read(strings.NewReader(good+"\n"+good+"\n"+cut), "audit.log"); err != nil {
		t.Fatalf("a cut last line: %v", err)
	}
	if st := s.Stats(); st.Requests != 2 || st.Cut != 1 {
		t.Errorf("stats %+v, want 2 requests and 1 cut line", st)
	}
	for _, trail := range []string{good + "\n" + cut + "\n", cut + "\n" + good + "\n", cut + good + "\n"} {
		if err := audit.NewSummary(audit.SummaryFilter{}).Read(strings.NewReader(trail), "audit.log"); err == nil {
			t.Errorf("a bad line that is not a cut last one was taken: %q", trail)
		}
	}
}

// A request's use records are accounted for by its request records of
// the same key. A pool that retried with key B (whose token ask came
// before key A's record) has none unfinished; one whose ask for key B
// failed, the request ending with key A, leaves B's use unfinished, so
// that a summary by B still shows it went.
func TestSummaryMatchesUsesByKey(t *testing.T) {
	use := func(at time.Duration, fp string) rec {
		return rec{at: at, event: "use", id: "p1", keyFP: fp, secret: "openai", client: "web", route: "openai"}
	}
	req := func(at time.Duration, fp, outcome string) rec {
		return rec{at: at, event: "request", id: "p1", keyFP: fp, secret: "openai", client: "web", route: "openai", outcome: outcome}
	}
	tests := []struct {
		name string
		recs []rec
		want map[string]int // unfinished uses by key
	}{
		{"retried with B", []rec{use(0, fpA), use(1, fpB), req(2, fpA, "error"), use(3, fpB), req(4, fpB, "forwarded")}, map[string]int{}},
		{"B's ask failed", []rec{use(0, fpA), use(1, fpB), req(2, fpA, "error")}, map[string]int{fpB: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			for i, r := range tt.recs {
				b.WriteString(r.line(i+1) + "\n")
			}
			s := audit.NewSummary(audit.SummaryFilter{})
			if err := s.Read(strings.NewReader(b.String()), "audit.log"); err != nil {
				t.Fatal(err)
			}
			got := map[string]int{}
			for _, r := range s.Rows() {
				if r.Unfinished > 0 {
					got[r.KeyFP] = r.Unfinished
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got unfinished %v, want %v", got, tt.want)
			}
		})
	}
}

// A request record's time is when the request began, and it is written
// when the request ends: a long one (a stream) can be the first record
// of a file started after the file its use record is in. Read in the
// order of their first records' times, the newer file would come first,
// its request record before its use, which a summary then counts as a
// key use without its request's record, though that record is read.
func TestSummaryOrdersFilesByWhenWritten(t *testing.T) {
	use := `{"level":"info","time":"2026-12-02T10:00:00.2Z","event":"use","id":"long","client":"web","route":"openai","secret":"openai","key_fp":"` + fpA + `","seq":1,"prev":""}`
	short := `{"level":"info","time":"2026-12-02T10:00:01Z","event":"request","id":"short","client":"web","route":"openai","secret":"","key_fp":"","duration_ms":0.5,"outcome":"denied","seq":2,"prev":""}`
	long := `{"level":"info","time":"2026-12-02T10:00:00.1Z","event":"request","id":"long","client":"web","route":"openai","secret":"openai","key_fp":"` + fpA + `","duration_ms":600000.25,"outcome":"forwarded","seq":1,"prev":""}`
	older := writeFile(t, "audit.log.1", []byte(use+"\n"+short+"\n"))
	newer := writeFile(t, "audit.log", []byte(long+"\n"))
	for _, files := range [][]string{{older, newer}, {newer, older}} {
		sorted, err := audit.Chronological(files)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(sorted, []string{older, newer}) {
			t.Errorf("Chronological(%v) = %v, want the file written first first", files, sorted)
		}
		rows, err := audit.Summarize(files, audit.SummaryFilter{KeyFP: fpA})
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 1 || rows[0].Forwarded != 1 || rows[0].Unfinished != 0 {
			t.Errorf("summary of %v: %s, want 1 forwarded and none unfinished", files, showRows(rows))
		}
	}
}

// TestSummaryPowerLossTail: after a power loss a file can end in NUL
// bytes where the last record's data did not reach the disk (till removes
// them when it starts again, see isTornRecord). A summary of the file as
// found, before till restarts, leaves that last line out as cut short,
// as it does a record cut by a crash, instead of refusing the whole
// trail; NULs before a newline are still no record.
func TestSummaryPowerLossTail(t *testing.T) {
	good := rec{event: "request", keyFP: fpA, secret: "openai", client: "web", route: "openai", outcome: "forwarded"}.line(1)
	for _, tail := range []string{strings.Repeat("\x00", 4096), "\x00\x00" + `{"level":"info","ti`} {
		s := audit.NewSummary(audit.SummaryFilter{})
		if err := s.Read(strings.NewReader(good+"\n"+tail), "audit.log"); err != nil {
			t.Errorf("a last line of NULs (%d bytes): %v", len(tail), err)
			continue
		}
		if st := s.Stats(); st.Requests != 1 || st.Cut != 1 {
			t.Errorf("stats %+v, want 1 request and 1 cut line", st)
		}
	}
	if err := audit.NewSummary(audit.SummaryFilter{}).Read(strings.NewReader(good+"\n\x00\x00\n"+good+"\n"), "audit.log"); err == nil {
		t.Error("NULs inside the trail were taken")
	}
}
