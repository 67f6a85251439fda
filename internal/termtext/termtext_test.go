package termtext

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestEscapeLeavesNothingATerminalRuns: text from outside till keeps no
// control character, invisible rune or invalid UTF-8, and no more than
// the bytes asked for, while a printable line is unchanged.
func TestEscapeLeavesNothingATerminalRuns(t *testing.T) {
	long := strings.Repeat("a", 3000)
	for _, tt := range []struct {
		name, in string
		max      int
		want     string
	}{
		{"printable", `route "openai": 401 C:\x`, 0, `route "openai": 401 C:\x`},
		{"unicode", "name: café.example", 0, "name: café.example"},
		{"newline", "a\nb\r\n", 0, `a\nb\r\n`},
		{"escape", "x\x1b[2Jy\x7f\u0085\x9b", 0, `x\x1b[2Jy\x7f\u0085\x9b`},
		{"osc", "\x1b]8;;http://evil\x07", 0, `\x1b]8;;http://evil\a`},
		{"bidi", "evil\u202etxt.exe\u2028", 0, `evil\u202etxt.exe\u2028`},
		{"invalid utf-8", "a\xffb\xc3", 0, `a\xffb\xc3`},
		{"long", long, 1024, long[:1024] + "…"},
		{"long, no cut", long, 0, long},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Escape(tt.in, tt.max); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestLinesKeepsOnlyNewlines: a message of several lines keeps its lines,
// and nothing else a terminal would act on.
func TestLinesKeepsOnlyNewlines(t *testing.T) {
	got := Lines("a: \x1b[2Jx\nb: \rok", 0)
	if want := "a: \\x1b[2Jx\nb: \\rok"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestJSONLeavesNothingATerminalRuns: a JSON line holds no rune a
// terminal acts on once through JSON, and means what it meant: the same
// value to a JSON parser. A line with none is returned as it is.
func TestJSONLeavesNothingATerminalRuns(t *testing.T) {
	for _, tt := range []struct{ name, value, want string }{
		{"printable", `GET /v1/models café 漢 "q" \`, `"GET /v1/models café 漢 \"q\" \\"`},
		{"c1", "\u009b2J\u009d0;x\u009c\u0085", `"\u009b2J\u009d0;x\u009c\u0085"`},
		{"del", "a\x7fb", `"a\u007fb"`},
		{"bidi and separators", "a\u202eb\u2066c\u2028d\u2029\u200b\ufeff", `"a\u202eb\u2066c\u2028d\u2029\u200b\ufeff"`},
		{"past U+FFFF", "\U000e0041\U0001f600", `"\udb40\udc41` + "\U0001f600" + `"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			raw, _ := json.Marshal(tt.value) // escapes C0 controls only
			got := JSON(raw)
			if string(got) != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
			var back string
			if err := json.Unmarshal(got, &back); err != nil || back != tt.value {
				t.Errorf("reads back as %q (%v), want %q", back, err, tt.value)
			}
			if tt.name == "printable" && &got[0] != &raw[0] {
				t.Error("a line with nothing to escape was copied")
			}
		})
	}
	if got, want := string(JSON([]byte("\"a\xffb\xc3\""))), `"a\ufffdb\ufffd"`; got != want {
		t.Errorf("invalid UTF-8: got %s, want %s", got, want)
	}
}
