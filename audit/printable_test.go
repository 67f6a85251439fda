package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/rs/zerolog"
)

// hostilePath is what an app can put in a record's path or model: C1
// controls that VTE and screen run (CSI 2J clears the screen; OSC 0
// retitles the window, ended by ST), DEL, a bidi override, a line
// separator, a zero-width space, a rune past U+FFFF that prints nothing
// (a tag), invalid UTF-8, and text that prints, which stays as it is.
const hostilePath = "/v1/\u009b2J\u009d0;pwned\u009c\x7f\u202eabc\u2028\u200b\U000e0041é漢\xff"

// TestRecordsHoldNoTerminalControls: zerolog escapes the C0 controls of
// a record's strings but writes C1 controls, bidi overrides and line
// separators as they are, and the trail is read on terminals (till serve
// writes it to stdout by default). Every line the sink writes, and every
// record it hands to OnError, is printable ASCII or printable Unicode,
// and means what zerolog wrote: the same values, and a chain that
// verifies.
func TestRecordsHoldNoTerminalControls(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	s, err := Open(Options{Path: path, OnError: func(err error, _ []byte) { t.Errorf("audit write failed: %v", err) }})
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(s)
	log.Info().Str("event", "request").Str("path", hostilePath).Send()
	log.Info().Str("event", "request").Str("path", "/v1/models").Send()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	recs := lines(t, path)
	if len(recs) != 2 {
		t.Fatalf("got %d records, want 2", len(recs))
	}
	want := string(bytes.ToValidUTF8([]byte(hostilePath), []byte("\ufffd")))
	if got := recs[0]["path"]; got != want {
		t.Errorf("path: got %q, want %q", got, want)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if what := terminalRune(b); what != "" {
		t.Errorf("the trail holds %s: %q", what, b)
	}
	if _, err := Verify([]string{path}, VerifyOptions{}); err != nil {
		t.Errorf("verify: %v", err)
	}

	var reported []byte
	failed := New(&failing{fail: true}, Options{OnError: func(_ error, record []byte) { reported = bytes.Clone(record) }})
	defer failed.Close()
	flog := zerolog.New(failed)
	flog.Info().Str("path", hostilePath).Send()
	if what := terminalRune(reported); what != "" {
		t.Errorf("the record given to OnError holds %s: %q", what, reported)
	}
	var r struct{ Path string }
	if err := json.Unmarshal(reported, &r); err != nil || r.Path != want {
		t.Errorf("the record given to OnError: path %q (%v), want %q", r.Path, err, want)
	}
}

// terminalRune names the first rune in b, other than a newline, that a
// terminal would not simply print; "" when there is none.
func terminalRune(b []byte) string {
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && size == 1:
			return "invalid UTF-8"
		case r != '\n' && !unicode.IsPrint(r):
			return fmt.Sprintf("the control %U", r)
		}
		b = b[size:]
	}
	return ""
}
