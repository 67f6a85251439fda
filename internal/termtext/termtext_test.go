package termtext

import (
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
