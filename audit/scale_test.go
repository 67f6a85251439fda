package audit

import (
	"compress/gzip"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scaleTrail is a trail written by the sink as till writes one: use and
// request records for several keys, clients and routes, rotated by size,
// restarted half-way, rotated from outside (renamed, then reopened as on
// SIGUSR1) three quarters in, its old files gzipped, and signed.
type scaleTrail struct {
	files []string // oldest first
	pub   ed25519.PublicKey
	want  map[rowKey]*SummaryRow
	uses  int // request pairs written
	start time.Time
	keyOf []int // of each request, its index in scaleSecrets
}

// scaleSecrets are the keys of the generated trail.
var scaleSecrets = []struct{ secret, fp string }{
	{"openai", "sha256:aaaaaaaaaaaaaaaa"},
	{"openai", "sha256:bbbbbbbbbbbbbbbb"},
	{"anthropic", "sha256:cccccccccccccccc"},
}

// scaleRecord is a use or request record as proxy writes it, at time at.
func scaleRecord(event string, i int, at time.Time, secret, fp, client, route, outcome string) []byte {
	b := fmt.Appendf(nil, `{"level":"info","time":%q,"event":%q,"id":"r%08d","mode":"reverse","client":%q,"route":%q,"secret":%q,"key_fp":%q,"method":"POST","host":"api.example.com","path":"/v1/chat/completions"`,
		at.Format(time.RFC3339Nano), event, i, client, route, secret, fp)
	if event == "request" {
		reason := ""
		if outcome != "forwarded" {
			reason = "upstream_error"
		}
		b = fmt.Appendf(b, `,"status":200,"bytes_in":120,"bytes_out":2048,"duration_ms":812.4,"outcome":%q,"reason":%q,"attempt":1,"model":"gpt-4o","tokens_in":100,"tokens_out":200,"cost_usd":0.0012,"credential":"static"`, outcome, reason)
	}
	return append(b, "}\n"...)
}

// writeScaleTrail writes a trail of n request pairs (2n records, and the
// checkpoints) in dir, one second apart from start.
func writeScaleTrail(tb testing.TB, dir string, n int) *scaleTrail {
	tb.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(dir, "audit.log")
	o := Options{Path: path, Fsync: FsyncNone, MaxSize: 1 << 20, MaxFiles: 10000, Signer: priv,
		OnError: func(err error, _ []byte) { tb.Errorf("audit write failed: %v", err) }}
	tr := &scaleTrail{pub: pub, want: map[rowKey]*SummaryRow{}, uses: n,
		start: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)}
	s, err := Open(o)
	if err != nil {
		tb.Fatal(err)
	}
	var outside []string // the files rotated from outside, oldest first
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range n {
		switch i {
		case n / 2: // a restart
			if err := s.Close(); err != nil {
				tb.Fatal(err)
			}
			if s, err = Open(o); err != nil {
				tb.Fatal(err)
			}
		case 3 * n / 4: // logrotate: rename, then SIGUSR1
			moved := fmt.Sprintf("%s-%d", path, i)
			if err := os.Rename(path, moved); err != nil {
				tb.Fatal(err)
			}
			if err := s.Reopen(); err != nil {
				tb.Fatal(err)
			}
			outside = append(outside, moved)
		}
		ki := rnd.IntN(len(scaleSecrets))
		k := scaleSecrets[ki]
		tr.keyOf = append(tr.keyOf, ki)
		client, route := fmt.Sprintf("app%d", rnd.IntN(5)), "r-"+k.secret
		outcome := "forwarded"
		if rnd.IntN(50) == 0 {
			outcome = "error"
		}
		at := tr.start.Add(time.Duration(i) * time.Second)
		s.Write(scaleRecord("use", i, at, k.secret, k.fp, client, route, ""))
		s.Write(scaleRecord("request", i, at, k.secret, k.fp, client, route, outcome))
		key := rowKey{k.fp, k.secret, client, route}
		row := tr.want[key]
		if row == nil {
			row = &SummaryRow{KeyFP: k.fp, Secret: k.secret, Client: client, Route: route, First: at}
			tr.want[key] = row
		}
		row.Last = at
		if outcome == "forwarded" {
			row.Forwarded++
		} else {
			row.Error++
		}
	}
	if err := s.Close(); err != nil {
		tb.Fatal(err)
	}
	// Oldest first: the files rotated before the outside rotation, then
	// it, then those rotated after it, then the current one.
	rotated, _ := filepath.Glob(path + ".*")
	slices.SortFunc(rotated, func(a, b string) int { return rotatedIndex(b) - rotatedIndex(a) })
	var before, after []string
	for _, f := range rotated {
		if chainsAfter(tb, f, outside[0]) {
			after = append(after, f)
		} else {
			before = append(before, f)
		}
	}
	tr.files = slices.Concat(before, outside, after, []string{path})
	// Every other old file gzipped, as logrotate's compress leaves them.
	for i, f := range tr.files[:len(tr.files)-1] {
		if i%2 == 0 {
			tr.files[i] = gzipFile(tb, f)
		}
	}
	return tr
}

// rotatedIndex is N of FILE.N.
func rotatedIndex(name string) int {
	n, _ := strconv.Atoi(name[strings.LastIndexByte(name, '.')+1:])
	return n
}

// chainsAfter reports whether the rotated file f was written after the
// file moved (its chain starts later): the first record's time is later.
func chainsAfter(tb testing.TB, f, moved string) bool {
	tb.Helper()
	a, err := firstTime(f)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := firstTime(moved)
	if err != nil {
		tb.Fatal(err)
	}
	return a.After(b)
}

// gzipFile replaces f with f.gz and returns its name.
func gzipFile(tb testing.TB, f string) string {
	tb.Helper()
	in, err := os.Open(f)
	if err != nil {
		tb.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(f + ".gz")
	if err != nil {
		tb.Fatal(err)
	}
	zw := gzip.NewWriter(out)
	if _, err := io.Copy(zw, in); err != nil {
		tb.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := out.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := os.Remove(f); err != nil {
		tb.Fatal(err)
	}
	return f + ".gz"
}

// wantRows is the summary the trail was written to give.
func (tr *scaleTrail) wantRows() []SummaryRow {
	s := &Summary{rows: tr.want}
	return s.Rows()
}

// peakRSS is the process's peak resident memory (VmHWM), in KiB.
func peakRSS(tb testing.TB) int {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return -1
}

func TestScaleTrail(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a large trail")
	}
	tr := writeScaleTrail(t, t.TempDir(), 20000)
	r := mustVerify(t, VerifyOptions{PublicKey: tr.pub}, tr.files...)
	if r.Records < 2*tr.uses || r.Files != len(tr.files) || r.StartsAfter != "" {
		t.Errorf("verify: %+v, want %d records and more in %d files", r, 2*tr.uses, len(tr.files))
	}
	t.Logf("%d files, %d records, %d checkpoints", r.Files, r.Records, r.Checkpoints)
	// summary takes the files in any order.
	shuffled := slices.Clone(tr.files)
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	rows, err := Summarize(shuffled, SummaryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if want := tr.wantRows(); !slices.Equal(rows, want) {
		t.Errorf("summary:\n got %+v\nwant %+v", rows, want)
	}
}

// TestScaleTrailGivenTwice: a file given twice (audit.log* and then
// audit.log, or a rotated file beside its gzip copy) was counted twice
// by summary, doubling the uses an incident report showed; verify
// blamed a missing file. Both now name the two files.
func TestScaleTrailGivenTwice(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a large trail")
	}
	tr := writeScaleTrail(t, t.TempDir(), 5000)
	gz := tr.files[0]
	plain := strings.TrimSuffix(gz, ".gz")
	copyGunzip(t, gz, plain)
	for name, files := range map[string][]string{
		"twice":     append(slices.Clone(tr.files), tr.files[len(tr.files)-1]),
		"gzip copy": append([]string{plain}, tr.files...),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Summarize(files, SummaryFilter{})
			if err == nil || !strings.Contains(err.Error(), "same records") {
				t.Errorf("summary: got %v, want an error naming the same records", err)
			}
			_, err = Verify(files, VerifyOptions{})
			if err == nil || !strings.Contains(err.Error(), "same records") {
				t.Errorf("verify: got %v, want an error naming the same records", err)
			}
		})
	}
}

// copyGunzip writes the decompressed gz to plain.
func copyGunzip(tb testing.TB, gz, plain string) {
	tb.Helper()
	r, err := OpenFile(gz)
	if err != nil {
		tb.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(plain, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkScaleTrail measures verify and summary on a trail of 300,000
// records and more in some 150 files, half of them gzipped: time per
// record, and the process's peak memory (VmHWM, KiB), which a streamed
// read keeps flat whatever the trail's size. SCALE_PAIRS sets the size.
func BenchmarkScaleTrail(b *testing.B) {
	pairs := 150000
	if v, err := strconv.Atoi(os.Getenv("SCALE_PAIRS")); err == nil {
		pairs = v
	}
	tr := writeScaleTrail(b, b.TempDir(), pairs)
	b.Run("verify", func(b *testing.B) {
		var r Report
		for b.Loop() {
			var err error
			if r, err = Verify(tr.files, VerifyOptions{PublicKey: tr.pub}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*r.Records), "ns/record")
		b.ReportMetric(float64(r.Records), "records")
		b.ReportMetric(float64(r.Files), "files")
		b.ReportMetric(float64(peakRSS(b)), "peak-KiB")
	})
	b.Run("summary", func(b *testing.B) {
		var st SummaryStats
		for b.Loop() {
			s := NewSummary(SummaryFilter{})
			for _, f := range tr.files {
				if err := s.ReadFile(f); err != nil {
					b.Fatal(err)
				}
			}
			st = s.Stats()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*st.Records), "ns/record")
		b.ReportMetric(float64(peakRSS(b)), "peak-KiB")
	})
}

// TestScaleTrailFilters: --since, --until, --secret and --key-fp select
// exactly the requests they name across rotation, restart and gzip,
// times given in any zone, a request at a bound included.
func TestScaleTrailFilters(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a large trail")
	}
	tr := writeScaleTrail(t, t.TempDir(), 6000)
	from, to := 1234, 5321 // requests i, one second apart from tr.start
	since, err := ParseSince(tr.start.Add(time.Duration(from)*time.Second).In(time.FixedZone("", 5*3600+1800)).Format(time.RFC3339), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	until := tr.start.Add(time.Duration(to) * time.Second).In(time.FixedZone("", -7*3600))
	for _, f := range []SummaryFilter{
		{Since: since, Until: until},
		{Since: since, Secret: "openai"},
		{Until: until, KeyFP: scaleSecrets[2].fp},
		{Since: since, Until: until, KeyFP: scaleSecrets[1].fp},
	} {
		want := 0
		for i, ki := range tr.keyOf {
			if (f.Since.IsZero() || i >= from) && (f.Until.IsZero() || i <= to) &&
				(f.Secret == "" || f.Secret == scaleSecrets[ki].secret) && (f.KeyFP == "" || f.KeyFP == scaleSecrets[ki].fp) {
				want++
			}
		}
		s := NewSummary(f)
		for _, name := range slices.Backward(tr.files) {
			if err := s.ReadFile(name); err != nil {
				t.Fatal(err)
			}
		}
		if got := s.Stats().Requests; got != want {
			t.Errorf("%+v: counted %d requests, want %d", f, got, want)
		}
	}
}

// TestScaleTrailDamage: verify names the file and line where a large
// trail given out of order, without a middle file, or with a file a
// crash cut mid-line, stops being as till wrote it; summary reads past
// the cut line and says so.
func TestScaleTrailDamage(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a large trail")
	}
	tr := writeScaleTrail(t, t.TempDir(), 6000)
	mid := len(tr.files) / 2
	if strings.HasSuffix(tr.files[mid], ".gz") {
		mid++
	}
	_, err := Verify(slices.Concat(tr.files[:mid], tr.files[mid+1:]), VerifyOptions{})
	if want := tr.files[mid+1] + ":1: does not chain"; err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "missing") {
		t.Errorf("without a middle file: got %v, want %s…missing", err, want)
	}
	_, err = Verify(slices.Concat(tr.files[mid:], tr.files[:mid]), VerifyOptions{})
	if want := tr.files[0] + ":1: "; err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "out of order") {
		t.Errorf("out of order: got %v, want %s…out of order", err, want)
	}

	// A crash cut the middle file in the middle of its last line.
	b, err := os.ReadFile(tr.files[mid])
	if err != nil {
		t.Fatal(err)
	}
	n := strings.Count(string(b), "\n")
	if err := os.WriteFile(tr.files[mid], b[:len(b)-30], 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Verify(tr.files, VerifyOptions{})
	if want := fmt.Sprintf("%s:%d: the last record has no end of line", tr.files[mid], n); err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("cut: got %v, want %s", err, want)
	}
	s := NewSummary(SummaryFilter{})
	for _, f := range tr.files {
		if err := s.ReadFile(f); err != nil {
			t.Fatalf("summary of a trail with a cut file: %v", err)
		}
	}
	if st := s.Stats(); st.Cut != 1 {
		t.Errorf("summary: %+v, want 1 line cut", st)
	}
}

// TestScaleTrailCutGzip: a gzip file cut short (a compression or copy
// that did not finish, a full disk) was reported as "read FILE:
// unexpected EOF" by verify, naming no line, and "FILE:LINE: unexpected
// EOF" by summary, saying nothing of what happened to the file.
func TestScaleTrailCutGzip(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a large trail")
	}
	tr := writeScaleTrail(t, t.TempDir(), 3000)
	gz := tr.files[0]
	b, err := os.ReadFile(gz)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gz, b[:len(b)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	_, verr := Verify(tr.files, VerifyOptions{})
	_, serr := Summarize(tr.files, SummaryFilter{})
	for _, err := range []error{verr, serr} {
		var le *LineError
		var br *Break
		if !errors.As(err, &le) && !errors.As(err, &br) || !strings.HasPrefix(err.Error(), gz+":") || !strings.Contains(err.Error(), "compressed file is cut short") {
			t.Errorf("got %v, want FILE:LINE: …compressed file is cut short", err)
		}
	}
}
