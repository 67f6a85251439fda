package test

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// till audit summary: the uses of each key per client and route, read
// back from a rotated, partly compressed trail.

// summaryRow is one row of till audit summary --json.
type summaryRow struct {
	KeyFP      string    `json:"key_fp"`
	Secret     string    `json:"secret"`
	Client     string    `json:"client"`
	Route      string    `json:"route"`
	Forwarded  int       `json:"forwarded"`
	Denied     int       `json:"denied"`
	Error      int       `json:"error"`
	Unfinished int       `json:"unfinished"`
	First      time.Time `json:"first"`
	Last       time.Time `json:"last"`
}

// summaryJSON runs till audit summary --json with args in dir and decodes
// its rows, checking that each has exactly the contract's keys.
func summaryJSON(t *testing.T, dir string, args ...string) []summaryRow {
	t.Helper()
	out, errOut, code := runTill(t, dir, "", nil, append([]string{"audit", "summary", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("till audit summary --json %v: exit %d\n%s", args, code, errOut)
	}
	var raw []map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("summary --json is not a JSON array: %v\n%s", err, out)
	}
	wantKeys := []string{"client", "denied", "error", "first", "forwarded", "key_fp", "last", "route", "secret", "unfinished"}
	for _, r := range raw {
		var keys []string
		for k := range r {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, wantKeys) {
			t.Errorf("row keys: got %v, want %v", keys, wantKeys)
		}
	}
	var rows []summaryRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatal(err)
	}
	return rows
}

func checkSummary(t *testing.T, got, want []summaryRow) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		var b strings.Builder
		for _, r := range got {
			fmt.Fprintf(&b, "  %+v\n", r)
		}
		b.WriteString("want:\n")
		for _, r := range want {
			fmt.Fprintf(&b, "  %+v\n", r)
		}
		t.Errorf("got %d rows:\n%s", len(got), b.String())
	}
}

// trailLine is a record as till writes it, every field present. Its id
// is its time's: a use and its request's record share one.
func trailLine(seq int, at time.Time, event, keyFP, secret, client, route, outcome string) string {
	reason := ""
	if outcome == "denied" {
		reason = "route_not_found"
	}
	b, _ := json.Marshal(map[string]any{
		"level": "info", "time": at.Format(time.RFC3339Nano), "event": event, "id": fmt.Sprintf("r%d", at.Unix()),
		"mode": "reverse", "client": client, "route": route, "secret": secret, "key_fp": keyFP,
		"method": "POST", "host": "api.example.com", "path": "/v1/chat/completions", "status": 200,
		"bytes_in": 10, "bytes_out": 20, "duration_ms": 1.5, "outcome": outcome, "reason": reason,
		"attempt": 1, "seq": seq, "prev": strings.Repeat("0f", 32),
	})
	return string(b) + "\n"
}

func TestAuditSummaryOfAGeneratedTrail(t *testing.T) {
	const (
		fpOld = "sha256:1111111111111111"
		fpNew = "sha256:2222222222222222"
		fpGH  = "sha256:3333333333333333"
	)
	t0 := time.Date(2026, 11, 30, 8, 0, 0, 250000000, time.UTC)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	dir := t.TempDir()

	// Oldest first: audit.log.2.gz (compressed by logrotate), audit.log.1,
	// audit.log. Checkpoints are read, not counted; a use counts as
	// UNFINISHED when no request record has its id.
	var old bytes.Buffer
	old.WriteString(trailLine(1, at(0), "use", fpOld, "openai", "web", "openai", ""))
	old.WriteString(trailLine(2, at(0), "request", fpOld, "openai", "web", "openai", "forwarded"))
	old.WriteString(trailLine(3, at(1), "use", fpOld, "openai", "web", "openai", ""))
	old.WriteString(trailLine(4, at(1), "request", fpOld, "openai", "web", "openai", "error"))
	old.WriteString(trailLine(5, at(2), "request", "", "", "web", "", "denied"))
	old.WriteString(`{"level":"info","time":"2026-11-30T08:03:00Z","event":"checkpoint","seq":6,"prev":"ab","sig":"c2ln"}` + "\n")
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(old.Bytes())
	zw.Close()
	files := map[string]string{
		"audit.log.2.gz": z.String(),
		"audit.log.1": trailLine(1, at(10), "request", fpOld, "openai", "batch", "openai", "forwarded") +
			trailLine(2, at(11), "request", fpGH, "github", "batch", "github", "forwarded") +
			trailLine(3, at(12), "request", "", "openai", "batch", "openai", "denied") +
			trailLine(4, at(13), "use", fpGH, "github", "batch", "github", ""), // its request ends in audit.log
		"audit.log": trailLine(1, at(13), "request", fpGH, "github", "batch", "github", "forwarded") +
			trailLine(2, at(20), "use", fpNew, "openai", "web", "openai", "") +
			trailLine(3, at(20), "request", fpNew, "openai", "web", "openai", "forwarded") +
			trailLine(4, at(21), "request", fpNew, "openai", "web", "openai", "forwarded") +
			trailLine(5, at(22), "request", fpGH, "github", "batch", "github", "forwarded") +
			trailLine(6, at(23), "use", fpNew, "openai", "web", "openai", ""), // till stopped here
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	trail := []string{"audit.log.2.gz", "audit.log.1", "audit.log"}

	checkSummary(t, summaryJSON(t, dir, trail...), []summaryRow{
		{Client: "web", Denied: 1, First: at(2), Last: at(2)},
		{Secret: "openai", Client: "batch", Route: "openai", Denied: 1, First: at(12), Last: at(12)},
		{KeyFP: fpOld, Secret: "openai", Client: "batch", Route: "openai", Forwarded: 1, First: at(10), Last: at(10)},
		{KeyFP: fpOld, Secret: "openai", Client: "web", Route: "openai", Forwarded: 1, Error: 1, First: at(0), Last: at(1)},
		{KeyFP: fpNew, Secret: "openai", Client: "web", Route: "openai", Forwarded: 2, Unfinished: 1, First: at(20), Last: at(23)},
		{KeyFP: fpGH, Secret: "github", Client: "batch", Route: "github", Forwarded: 3, First: at(11), Last: at(22)},
	})

	// In the order a shell's glob gives them (audit.log*), newest first:
	// the same rows, the uses matched to their requests.
	glob := slices.Clone(trail)
	slices.Reverse(glob)
	if got, want := summaryJSON(t, dir, glob...), summaryJSON(t, dir, trail...); !reflect.DeepEqual(got, want) {
		t.Errorf("newest first: got %+v, want %+v", got, want)
	}

	// Flags after the files, as everywhere in till.
	checkSummary(t, summaryJSON(t, dir, append(trail, "--key-fp", fpOld, "--since", at(1).Format(time.RFC3339Nano))...), []summaryRow{
		{KeyFP: fpOld, Secret: "openai", Client: "batch", Route: "openai", Forwarded: 1, First: at(10), Last: at(10)},
		{KeyFP: fpOld, Secret: "openai", Client: "web", Route: "openai", Error: 1, First: at(1), Last: at(1)},
	})
	checkSummary(t, summaryJSON(t, dir, append(trail, "--secret", "openai", "--client", "web", "--until", at(20).Add(-time.Second).Format(time.RFC3339))...), []summaryRow{
		{KeyFP: fpOld, Secret: "openai", Client: "web", Route: "openai", Forwarded: 1, Error: 1, First: at(0), Last: at(1)},
	})
	// A time to the second, as the table prints LAST, covers its second:
	// at(20) is 0.25 s into it.
	checkSummary(t, summaryJSON(t, dir, append(trail, "--secret", "openai", "--client", "web", "--until", at(20).Format(time.RFC3339))...), []summaryRow{
		{KeyFP: fpOld, Secret: "openai", Client: "web", Route: "openai", Forwarded: 1, Error: 1, First: at(0), Last: at(1)},
		{KeyFP: fpNew, Secret: "openai", Client: "web", Route: "openai", Forwarded: 1, First: at(20), Last: at(20)},
	})
	if out, _, code := runTill(t, dir, "", nil, append([]string{"audit", "summary", "--json", "--route", "none"}, trail...)...); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("no match: exit %d, got %q, want []", code, out)
	}
	// The trail is from 2026-11-30: not in the last hour, unless this
	// test runs on that day.
	if rows := summaryJSON(t, dir, append(trail, "--since", "1h", "--route", "github")...); time.Since(at(22)) > time.Hour && len(rows) != 0 {
		t.Errorf("--since 1h: got %d rows, want none", len(rows))
	}

	t.Run("table", func(t *testing.T) {
		out, errOut, code := runTill(t, dir, "", nil, append([]string{"audit", "summary"}, trail...)...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if got := strings.Fields(lines[0]); !slices.Equal(got, []string{"KEY_FP", "SECRET", "CLIENT", "ROUTE", "FORWARDED", "DENIED", "ERROR", "UNFINISHED", "FIRST", "LAST"}) {
			t.Errorf("header: got %q", lines[0])
		}
		if len(lines) != 7 {
			t.Fatalf("got %d lines, want a header and 6 rows:\n%s", len(lines), out)
		}
		wantRow := []string{fpNew, "openai", "web", "openai", "2", "0", "0", "1", "2026-11-30T08:20:00Z", "2026-11-30T08:23:00Z"}
		if got := strings.Fields(lines[5]); !slices.Equal(got, wantRow) {
			t.Errorf("row: got %q, want %q", got, wantRow)
		}
		if got := strings.Fields(lines[1]); got[0] != "-" || got[2] != "web" {
			t.Errorf("a refusal without a key: got %q, want - for its empty fields", got)
		}
		if !strings.Contains(errOut, "16 records read from 3 files; 10 requests counted") ||
			!strings.Contains(errOut, "1 key use without its request's record (UNFINISHED)") {
			t.Errorf("stderr: got %q, want the records and files read, and the unfinished use", errOut)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		const pasted = "sk-proj-Xk3vT9qLw2RbN7mYc4ZpHd8sJf1GaVe6"
		bad := filepath.Join(dir, "audit.log.0")
		record := trailLine(1, at(30), "request", fpNew, "openai", "web", "openai", "forwarded")
		if err := os.WriteFile(bad, []byte(record+"OPENAI_API_KEY="+pasted+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name string
			args []string // after till audit
			code int
			want string
		}{
			{"--secret with --key-fp", []string{"summary", "--secret", "x", "--key-fp", "y", "audit.log"}, 2, "exclude each other"},
			{"no file", []string{"summary"}, 2, "FILE"},
			{"a missing file", []string{"summary", "audit.log", "audit.log.9"}, 1, "audit.log.9"},
			{"a line that is not a record", []string{"summary", "audit.log", bad}, 1, bad + ":2: "},
			{"a bad --since", []string{"summary", "--since", pasted, "audit.log"}, 2, "--since"},
			{"a bad --until", []string{"summary", "--until", "24h", "audit.log"}, 2, "--until"},
			{"a bad --key-fp", []string{"summary", "--key-fp", pasted, "audit.log"}, 2, "--key-fp"},
			{"a bad --client", []string{"summary", "--client", pasted, "audit.log"}, 2, "--client"},
			{"unknown subcommand", []string{pasted}, 2, "want summary, verify or pubkey"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				out, errOut, code := runTill(t, dir, "", nil, append([]string{"audit"}, tt.args...)...)
				if code != tt.code || !strings.Contains(errOut, tt.want) {
					t.Errorf("exit %d, want %d; stderr: %q, want it to mention %q", code, tt.code, errOut, tt.want)
				}
				if strings.Contains(out+errOut, pasted[:12]) {
					t.Errorf("an argument or a line was printed back: %q", out+errOut)
				}
			})
		}
		if _, _, code := runTill(t, dir, "", nil, "audit", "summary", "--help"); code != 0 {
			t.Errorf("--help: exit %d, want 0", code)
		}
	})
}

// TestAuditSummaryOfRealRecords summarises what till itself wrote, so that
// the writer and the reader cannot drift apart unseen.
func TestAuditSummaryOfRealRecords(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	tl := startTill(t, providerConfig(u, ""), providerSecrets, u.caFile)
	for range 3 {
		if resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil)); resp.StatusCode != 200 {
			t.Fatalf("forwarded: got %d, want 200: %s", resp.StatusCode, body)
		}
	}
	if resp, body := do(t, newRequest(t, "GET", tl.url("/nope/v1"), nil)); resp.StatusCode != 404 {
		t.Fatalf("unknown route: got %d, want 404: %s", resp.StatusCode, body)
	}
	var times []time.Time
	waitFor(t, 10*time.Second, "4 request records", func() bool {
		times = times[:0]
		for _, r := range tl.audit() {
			if r["event"] == "request" {
				ts, _ := time.Parse(time.RFC3339Nano, r["time"].(string))
				times = append(times, ts)
			}
		}
		return len(times) == 4
	})
	path := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(path, []byte(tl.stdout.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(openaiKey))
	checkSummary(t, summaryJSON(t, t.TempDir(), path), []summaryRow{
		{Denied: 1, First: times[3], Last: times[3]},
		{KeyFP: "sha256:" + hex.EncodeToString(sum[:8]), Secret: "openai", Client: "anonymous", Route: "openai", Forwarded: 3, First: times[0], Last: times[2]},
	})
}
