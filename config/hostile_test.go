package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Hostile config files get an error, quickly, and never a crash.
func TestParseHostile(t *testing.T) {
	laughs := "version: 1\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
	prev := "a"
	for i := range 8 {
		name := string(rune('b' + i))
		laughs += name + ": &" + name + " [" + strings.Repeat("*"+prev+",", 8) + "*" + prev + "]\n"
		prev = name
	}
	tests := []struct {
		name, doc, want string
	}{
		{"alias bomb", laughs, "till.yaml:2"},
		{"alias bomb under a known key", laughs + "routes: *i\n", "yaml aliases are not supported"},
		{"deep nesting", "version: 1\nroutes: " + strings.Repeat("[", 200_000) + strings.Repeat("]", 200_000) + "\n", "till.yaml"},
		{"ten-megabyte string", "version: 1\nlisten: \"" + strings.Repeat("x", 10<<20) + "\"\n", "larger than 1 MiB"},
		{"binary", "\x00\x01\x02\xff\xfe", "till.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			_, err := Parse("till.yaml", []byte(tt.doc), t.TempDir())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tt.want)
			}
			if len(err.Error()) > 4096 {
				t.Errorf("the error is %d bytes: it should name the problem, not echo the file", len(err.Error()))
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

// A file with thousands of problems (here: a route naming 2,000 clients
// that do not exist, each one a near miss of one of 500 that do) gets the
// first maxErrors of them and a count of the rest, not a message per
// problem at every reload.
func TestParseCapsProblems(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: 1\nclients:\n")
	for i := range 500 {
		fmt.Fprintf(&b, "  - {name: client%05d, token_sha256: %064x}\n", i, i+1)
	}
	b.WriteString("routes:\n  - name: r\n    preset: openai\n    clients: [")
	for i := range 2000 {
		fmt.Fprintf(&b, "zlient%05d,", i)
	}
	b.WriteString("]\n")
	_, err := Parse("till.yaml", []byte(b.String()), t.TempDir())
	if err == nil {
		t.Fatal("parsed")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != maxErrors+1 {
		t.Fatalf("got %d lines, want %d:\n%v", len(lines), maxErrors+1, err)
	}
	if want := fmt.Sprintf("till.yaml: %d more problems not shown", 2000-maxErrors); !strings.HasPrefix(lines[maxErrors], want) {
		t.Errorf("got %q, want %q…", lines[maxErrors], want)
	}
	if !strings.Contains(lines[0], `unknown client "zlient00000" (did you mean "client00000"?)`) {
		t.Errorf("got %q, want the first unknown client with a suggestion", lines[0])
	}
}

// Once no more problems are shown, no suggestion is looked for: its cost
// grows with the names known.
func TestSuggestStopsWhenFull(t *testing.T) {
	d := &decoder{file: "till.yaml"}
	if got := d.suggest("clent", []string{"client"}); got != "client" {
		t.Fatalf("got %q, want %q", got, "client")
	}
	for range maxErrors {
		d.errorf(nil, "", "a problem")
	}
	if got := d.suggest("clent", []string{"client"}); got != "" {
		t.Errorf("got %q once full, want none", got)
	}
}

// A byte YAML does not allow (a NUL, Latin-1 text, an escape) is named
// with its line: yaml.v3 reports it without one, which left a long file
// to be searched by hand.
func TestBadTextHasItsLine(t *testing.T) {
	for _, tt := range []struct{ name, doc, want string }{
		{"NUL", "version: 1\nroutes: []\nlisten: \"127.0.0.1:80\x0080\"\n", "till.yaml:3: holds a control character (U+0000)"},
		{"Latin-1", "version: 1\n# caf\xe9\nroutes: []\n", "till.yaml:2: holds a byte that is not UTF-8"},
		{"escape", "version: 1\nroutes: []\n\n# \x1b[2J\n", "till.yaml:4: holds a control character (U+001B)"},
		{"CR line breaks", "version: 1\rroutes: []\r\r# \x00\r", "till.yaml:4: holds a control character (U+0000)"},
		{"CRLF line breaks", "version: 1\r\nroutes: []\r\n# \x7f\r\n", "till.yaml:3: holds a control character (U+007F)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("till.yaml", []byte(tt.doc), t.TempDir())
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) || !strings.Contains(err.Error(), "hint: save the file as UTF-8 text") {
				t.Errorf("got %v, want %q and a hint", err, tt.want)
			}
		})
	}
}

// A long list in a config of up to 1 MiB is read in time proportional to
// it: each entry is checked against those before it (or against the names
// it may refer to) in a set, not by a scan. Scans made a file of a few
// hundred kilobytes hold till check, or a reload, for minutes. Each list
// of distinct names is timed against a list of the same size that repeats
// one name, which a scan gets through at once: the two must take about as
// long, however fast the machine.
func TestParseLongLists(t *testing.T) {
	const n = 40_000
	list := func(format string, name func(i int) string) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, format, name(i))
		}
		return b.String()
	}
	distinct := func(i int) string { return fmt.Sprintf("x%05d", i) }
	same := func(int) string { return "x00000" }
	var routes strings.Builder
	for i := range 8_000 {
		fmt.Fprintf(&routes, "  - {name: r%04d, preset: openai, prefix: /p%d}\n", i, i)
	}
	last := func(int) string { return "r7999" }
	first := func(int) string { return "r0000" }
	route := "version: 1\nroutes:\n  - name: r\n    preset: openai\n"
	tests := []struct {
		name string
		doc  func(name func(i int) string) string
		hard func(i int) string // the names a scan is slow on
		easy func(i int) string // the names a scan is quick on
	}{
		{"strip", func(name func(int) string) string { return route + "    strip: [" + list("%s,", name) + "]\n" }, distinct, same},
		{"strip_query", func(name func(int) string) string { return route + "    strip_query: [" + list("%s,", name) + "]\n" }, distinct, same},
		{"inject format", func(name func(int) string) string {
			return "version: 1\nroutes:\n  - {name: r, prefix: /r, upstream: \"https://a.example\", secret: s, inject: {header: X-Key, format: \"" + list("{secret.%s}", name) + "\"}}\n"
		}, distinct, same},
		{"budget routes", func(name func(int) string) string {
			return "version: 1\nroutes:\n" + routes.String() + "budgets:\n  - {name: b, window: 1d, requests: 1, routes: [" + list("%s,", name) + "]}\n"
		}, last, first},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			easy, hard := parseTime(t, tt.doc(tt.easy)), parseTime(t, tt.doc(tt.hard))
			if hard > 4*easy+time.Second {
				t.Errorf("took %v, and %v for a list of the same size that repeats one name", hard, easy)
			}
		})
	}
}

// parseTime is how long Parse takes to accept doc.
func parseTime(t *testing.T, doc string) time.Duration {
	t.Helper()
	if len(doc) > MaxSize {
		t.Fatalf("the test's config is %d bytes, past MaxSize", len(doc))
	}
	start := time.Now()
	if _, err := Parse("till.yaml", []byte(doc), t.TempDir()); err != nil {
		t.Fatalf("got %v, want it parsed", err)
	}
	return time.Since(start)
}
