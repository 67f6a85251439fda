package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"unicode/utf8"

	"github.com/tillgw/till/audit"
)

// hostile is text an attacker puts where till prints: a terminal escape
// that retitles the window and clears the screen, a carriage return and
// a newline that forge a line of till's own, and a bidi override.
const hostile = "\x1b]0;pwned\x07\x1b[2J\rtill: ok\nFORGED\u202e"

// terminalRuns returns what in out a terminal would act on rather than
// print (an escape, a bell, a carriage return, a bidi override, a C1
// control, invalid UTF-8), or a line the text forged; "" when none.
func terminalRuns(out string) string {
	if !utf8.ValidString(out) {
		return "invalid UTF-8"
	}
	for _, r := range out {
		if r < 0x20 && r != '\n' && r != '\t' || r >= 0x7f && r <= 0x9f || r == '\u202e' {
			return "control " + string(rune('0'+r%10))
		}
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "FORGED") {
			return "forged line"
		}
	}
	return ""
}

// TestReportEscapesErrors: an error may quote what another party wrote
// (a secret source's message, a record of an audit file); till: error:
// prints it with no escape sequence, carriage return or bidi override,
// keeping the lines errors.Join made.
func TestReportEscapesErrors(t *testing.T) {
	var buf strings.Builder
	report(errors.Join(errors.New("a: "+hostile[:len(hostile)-len("\nFORGED\u202e")]), errors.New("b")), &buf)
	if got, want := buf.String(), "till: error: a: \\x1b]0;pwned\\a\\x1b[2J\\rtill: ok\nb\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestAuditVerifyEscapesTheCheckpointGiven: --checkpoint names a file
// kept elsewhere, which anyone who can write there wrote; the time of its
// checkpoint, printed when the trail lacks it, once ran escape sequences
// on the operator's terminal and forged lines.
func TestAuditVerifyEscapesTheCheckpointGiven(t *testing.T) {
	c := newCLI(t)
	s, err := audit.Open(audit.Options{Path: "audit.log"})
	if err != nil {
		t.Fatal(err)
	}
	s.Write(auditRecord("a", "2026-12-02T10:00:00Z"))
	s.Close()
	ckpt, _ := json.Marshal(map[string]any{"event": "checkpoint", "seq": 7, "prev": "00", "time": hostile})
	if err := os.WriteFile("ckpt.json", append(ckpt, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := c.run("", "audit", "verify", "--checkpoint", "ckpt.json", "audit.log")
	if code != 1 || !strings.Contains(errOut, "the trail ends without the checkpoint given") {
		t.Fatalf("exit %d: %q %q", code, out, errOut)
	}
	if what := terminalRuns(out + errOut); what != "" {
		t.Errorf("verify printed %s from the checkpoint file: %q", what, errOut)
	}
}

// TestSourceErrorsEscaped: a secret source's answer (a Vault error
// message, the names of an entry's fields; an AWS error message is the
// same) reaches till check's error and till secret list's table, once
// with its escape sequences and the newlines that forge lines.
func TestSourceErrorsEscaped(t *testing.T) {
	c := newCLI(t)
	vault := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.Contains(r.URL.Path, "/sys/internal/ui/mounts"):
			w.Write([]byte(`{"data":{"type":"kv","path":"secret/","options":{"version":"2"}}}`))
		case strings.Contains(r.URL.Path, "denied"):
			w.WriteHeader(http.StatusForbidden)
			json.NewEncoder(w).Encode(map[string]any{"errors": []string{"denied " + hostile}})
		default:
			json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{
				"data":     map[string]string{"a" + hostile: "x", "b": "y"},
				"metadata": map[string]any{"version": 1, "created_time": "2026-12-01T00:00:00Z"},
			}})
		}
	}))
	defer vault.Close()
	if err := os.WriteFile("token", []byte("hvs.test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	y := "version: 1\nsources:\n  - {name: v, type: vault, address: \"" + vault.URL + "\", auth: {token_file: token}}\nroutes:\n" +
		"  - {name: api, upstream: https://api.example.com, secret: \"v:secret/two\", inject: {header: X-Api-Key}}\n" +
		"  - {name: api2, upstream: https://api.example.com, secret: \"v:secret/denied\", inject: {header: X-Api-Key}}\n"
	if err := os.WriteFile("till.yaml", []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check"}, {"secret", "list"}, {"secret", "list", "--json"}} {
		out, errOut, _ := c.run("", args...)
		if !strings.Contains(out+errOut, "fields") || !strings.Contains(out+errOut, "denied") {
			t.Fatalf("till %v: not the source's errors: %q %q", args, out, errOut)
		}
		if what := terminalRuns(out + errOut); what != "" {
			t.Errorf("till %v printed %s from the source: %q %q", args, what, out, errOut)
		}
	}
}

// TestJSONOutputIsASCII: --json output quotes what an audit file or an
// admin answer holds; JSON's own escaping leaves bidi overrides and C1
// controls (U+009B is a CSI to some terminals) as they are, so every
// rune past ASCII is written as \uXXXX, the same JSON to a reader.
func TestJSONOutputIsASCII(t *testing.T) {
	c := newCLI(t)
	const odd = "web\u202e\u009b31m\u2028é😀"
	rec := strings.Replace(string(auditRecord("a", "2026-12-02T10:00:00Z")), `"client":"web"`, `"client":"`+odd+`"`, 1)
	if err := os.WriteFile("audit.log", []byte(rec), 0o600); err != nil {
		t.Fatal(err)
	}
	out := c.must("", "audit", "summary", "--json", "audit.log")
	var rows []audit.SummaryRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 1 || rows[0].Client != odd {
		t.Fatalf("summary --json: %v %+v", err, rows)
	}
	if what := terminalRuns(out); what != "" || strings.ContainsFunc(out, func(r rune) bool { return r > 0x7e }) {
		t.Errorf("summary --json printed %s: %q", what, out)
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`[{"budget":"daily","counter":"` + odd + `","kind":"requests","limit":5,"used":1,"remaining":4,"reset":null}]`))
	}))
	defer srv.Close()
	os.WriteFile("till.yaml", []byte("version: 1\nroutes: []\nbudgets: [{name: daily, window: day, requests: 5}]\n"), 0o644)
	out = c.must("", "usage", "--json", "--url", srv.URL)
	if !strings.Contains(out, `\u202e`) || strings.ContainsFunc(out, func(r rune) bool { return r > 0x7e }) {
		t.Errorf("usage --json printed runes past ASCII: %q", out)
	}
}

// TestUsageSendsTheAdminTokenNowhereElse: what answers at the admin URL
// may redirect till usage to a host of its choosing; TILL_ADMIN_TOKEN
// must not follow it there.
func TestUsageSendsTheAdminTokenNowhereElse(t *testing.T) {
	var asked atomic.Bool
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Store(true)
		w.Write([]byte(`[]`))
	}))
	defer other.Close()
	admin := httptest.NewServer(http.RedirectHandler(other.URL+"/admin/usage", http.StatusTemporaryRedirect))
	defer admin.Close()
	c := newCLI(t)
	c.env["TILL_ADMIN_TOKEN"] = "admin-token-0123456789"
	os.WriteFile("till.yaml", []byte("version: 1\nroutes: []\nbudgets: [{name: daily, window: day, requests: 5}]\n"), 0o644)
	_, errOut, code := c.run("", "usage", "--url", admin.URL)
	if code != 1 || asked.Load() {
		t.Errorf("usage followed a redirect (exit %d, other host asked: %v): %q", code, asked.Load(), errOut)
	}
}

// TestAuditFileNamesForgeNoLine: a file put among the trail's, given by
// a glob (till audit summary audit.log*), is named by whoever can write
// the folder; the errors of audit summary and verify quote a file's name,
// and one holding a newline forged a line of till's output, an "ok" of
// verify's own.
func TestAuditFileNamesForgeNoLine(t *testing.T) {
	c := newCLI(t)
	planted := "audit.log.9" + hostile
	if err := os.WriteFile(planted, []byte("not a record\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"summary", "verify"} {
		out, errOut, code := c.run("", "audit", cmd, planted)
		if code == 0 {
			t.Errorf("audit %s of a file named with control characters: exit 0", cmd)
		}
		if bad := terminalRuns(out + errOut); bad != "" {
			t.Errorf("audit %s: %s in its output:\n%s%s", cmd, bad, out, errOut)
		}
	}
	// A long name, printable, is an audit file like any other.
	long := strings.Repeat("a", 240) + ".log"
	if err := os.WriteFile(long, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"summary", "verify"} {
		if _, errOut, _ := c.run("", "audit", cmd, long); strings.Contains(errOut, "control or invisible") {
			t.Errorf("audit %s of a long printable file name: %s", cmd, errOut)
		}
	}
}
