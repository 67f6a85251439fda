package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// TestHelp: till help CMD, till CMD --help and till CMD -h print the same
// usage, with examples and flags, on stdout, and exit 0.
func TestHelp(t *testing.T) {
	c := newCLI(t)
	for name, h := range commandHelp {
		t.Run(name, func(t *testing.T) {
			words := strings.Fields(name)
			want, errOut, code := c.run("", append([]string{"help"}, words...)...)
			if code != 0 || errOut != "" {
				t.Fatalf("till help %s: exit %d: %s", name, code, errOut)
			}
			if !strings.HasPrefix(want, "Usage: "+h.synopsis+"\n") || !strings.Contains(want, "\nExamples:\n  ") {
				t.Errorf("till help %s:\n%s", name, want)
			}
			for _, ex := range h.examples {
				if name != "help" && !strings.Contains(ex, "till "+words[0]) {
					t.Errorf("an example of till %s runs another command: %s", name, ex)
				}
			}
			if name != "help" && (!strings.Contains(want, "\nFlags:\n  -") || !strings.Contains(want, "\n  -c file\n")) {
				t.Errorf("till help %s lists no flags:\n%s", name, want)
			}
			if name == "help" {
				for _, flag := range []string{"--help", "-h"} {
					if out, errOut, code := c.run("", "help", flag); code != 0 || out != want {
						t.Errorf("till help %s: exit %d, stderr %q; stdout differs from till help help:\n%s", flag, code, errOut, out)
					}
				}
				return
			}
			// Every flag is in the synopsis (-c as -c, the others as
			// --NAME: a word of it, not a part of one, as --c is of
			// --client), which till help lists without [-c FILE].
			synopsis := strings.FieldsFunc(h.synopsis, func(r rune) bool { return strings.ContainsRune(" []|", r) })
			_, flags, _ := strings.Cut(want, "\nFlags:\n")
			for _, line := range strings.Split(flags, "\n") {
				if f, ok := strings.CutPrefix(line, "  -"); ok {
					f = strings.Fields(f)[0]
					if !slices.Contains(synopsis, "--"+f) && (f != "c" || !slices.Contains(synopsis, "-c")) {
						t.Errorf("the synopsis of till %s lacks its flag -%s: %s", name, f, h.synopsis)
					}
				}
			}
			for _, flag := range []string{"--help", "-h"} {
				out, errOut, code := c.run("", append(words, flag)...)
				if code != 0 || errOut != "" || out != want {
					t.Errorf("till %s %s: exit %d, stderr %q; stdout differs from till help %s:\n%s", name, flag, code, errOut, name, out)
				}
			}
			// Arguments before the flag do not matter.
			if out, _, code := c.run("", append(words, "x", "--help")...); code != 0 || out != want {
				t.Errorf("till %s x --help: exit %d:\n%s", name, code, out)
			}
		})
	}
	for group, subs := range commandGroups {
		for _, args := range [][]string{{group, "--help"}, {group, "-h"}, {"help", group}, {group, "nope", "--help"}} {
			out, errOut, code := c.run("", args...)
			if code != 0 || errOut != "" || !strings.HasPrefix(out, "Usage: till "+group+" "+strings.Join(subs, "|")) || !strings.Contains(out, "Examples:") {
				t.Errorf("till %s: exit %d: %s\n%s", strings.Join(args, " "), code, errOut, out)
			}
		}
	}
}

// TestHelpCoversEveryCommand: every command run dispatches (the case
// labels of its switch) has its help, so that a new command cannot ship
// without one.
func TestHelpCoversEveryCommand(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "main.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	ast.Inspect(f, func(n ast.Node) bool {
		if fn, ok := n.(*ast.FuncDecl); ok && fn.Name.Name != "run" {
			return false
		}
		if cc, ok := n.(*ast.CaseClause); ok {
			for _, e := range cc.List {
				if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					s, _ := strconv.Unquote(lit.Value)
					cmds = append(cmds, s)
				}
			}
		}
		return true
	})
	if !slices.Contains(cmds, "serve") {
		t.Fatalf("found no commands in run: %q", cmds)
	}
	for _, cmd := range cmds {
		if strings.HasPrefix(cmd, "-") {
			continue // --version, -h, --help
		}
		_, leaf := commandHelp[cmd]
		_, group := commandGroups[cmd]
		if !leaf && !group {
			t.Errorf("command %q has no entry in commandHelp", cmd)
		}
	}
	for group, subs := range commandGroups {
		for _, sub := range subs {
			if _, ok := commandHelp[group+" "+sub]; !ok {
				t.Errorf("command %q has no entry in commandHelp", group+" "+sub)
			}
		}
	}
	for name, h := range commandHelp {
		if !slices.Contains(commandOrder, name) || h.short == "" {
			t.Errorf("till help does not list command %q with what it does", name)
		}
	}
	if len(commandOrder) != len(commandHelp) {
		t.Errorf("commandOrder lists %d commands, commandHelp has %d", len(commandOrder), len(commandHelp))
	}
}

// TestUnknownCommand: a mistyped command gets the command meant, a key
// pasted in its place gets nothing of itself back.
func TestUnknownCommand(t *testing.T) {
	c := newCLI(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"serv"}, `till: error: unknown command (did you mean "serve"?)`},
		{[]string{"chekc"}, `till: error: unknown command (did you mean "check"?)`},
		{[]string{"scret", "set", "openai"}, `till: error: unknown command (did you mean "secret"?)`},
		{[]string{"clinet", "add", "web"}, `till: error: unknown command (did you mean "client"?)`},
		{[]string{"verison"}, `till: error: unknown command (did you mean "version"?)`},
		{[]string{"halp"}, `till: error: unknown command (did you mean "help"?)`},
		{[]string{"serv", "--help"}, `till: error: unknown command (did you mean "serve"?)`},
		{[]string{"help", "tset"}, `till: error: unknown command (did you mean "test"?)`},
		{[]string{"frobnicate"}, "till: error: unknown command (see till help)"},
		{[]string{"x"}, "till: error: unknown command (see till help)"},
		{[]string{"Serve"}, "till: error: unknown command (see till help)"},
		{[]string{"sk-serve"}, "till: error: unknown command (see till help)"},
		{[]string{"secret", "lst"}, `till: error: unknown secret command (did you mean "list"?)`},
		{[]string{"client", "ad", "web"}, `till: error: unknown client command (did you mean "add"?)`},
		{[]string{"ca", "exprot"}, `till: error: unknown ca command (did you mean "export"?)`},
		{[]string{"audit", "verfy"}, `till: error: unknown audit command (did you mean "verify"?)`},
		{[]string{"secret", "frobnicate"}, "till: error: unknown secret command (want set, list or rm)"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, errOut, code := c.run("", tt.args...)
			if code != 2 || out != "" || strings.TrimSpace(errOut) != tt.want {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 2 and %q", code, out, errOut, tt.want)
			}
		})
	}
}

func TestSuggest(t *testing.T) {
	cands := []string{"serve", "secret", "check", "test"}
	tests := []struct{ word, want string }{
		{"serve", "serve"},
		{"srve", "serve"},
		{"servee", "serve"},
		{"sevre", "serve"},
		{"secrte", "secret"},
		{"tst", "test"},
		{"ts", ""},     // two edits on a short word: a guess
		{"xyzzy", ""},  // nothing near
		{"sk-abc", ""}, // a key's prefix is not a name
		{"SERVE", ""},  // nor upper case
		{"serve1", ""}, // nor digits
		{"servesecret", ""},
		{strings.Repeat("s", 17), ""},
	}
	for _, tt := range tests {
		if got := suggest(tt.word, cands); got != tt.want {
			t.Errorf("suggest(%q): got %q, want %q", tt.word, got, tt.want)
		}
	}
	for _, tt := range []struct {
		a, b string
		want int
	}{{"", "abc", 3}, {"abc", "abc", 0}, {"abc", "acb", 1}, {"kitten", "sitting", 3}, {"ca", "ac", 1}} {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q): got %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// TestSynopsesNameFrom: --from, the source address a client's cidrs are
// checked against, is in till test's synopsis and in till's usage.
func TestSynopsesNameFrom(t *testing.T) {
	c := newCLI(t)
	out, _, _ := c.run("", "help")
	if !strings.Contains(out, "till test [--client NAME] [--from ADDR] [--model NAME] [--mint] [--json] METHOD URL\n") {
		t.Errorf("till help lacks --from:\n%s", out)
	}
	out, _, _ = c.run("", "test", "--help")
	if !strings.HasPrefix(out, "Usage: till test [-c FILE] [--client NAME] [--from ADDR] [--model NAME] [--mint] [--json] METHOD URL\n") || !strings.Contains(out, "-from address") {
		t.Errorf("till test --help:\n%s", out)
	}
	if _, errOut, code := c.run("", "test", "GET"); code != 2 || !strings.Contains(errOut, "[--from ADDR]") {
		t.Errorf("till test GET: exit %d: %s", code, errOut)
	}
}

// TestReadmeListsEveryCommand: the CLI block of README.md's reference
// names every command till help lists, on a line of its group ("till
// client list | rotate NAME | rm NAME"), so that a new command is in the
// README a user reads first.
func TestReadmeListsEveryCommand(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(b), "### CLI\n\n```\n")
	block, _, _ = strings.Cut(block, "```")
	if !ok || block == "" {
		t.Fatal("README.md has no CLI block under ### CLI")
	}
	word := func(r rune) bool { return !unicode.IsLetter(r) }
	for _, name := range commandOrder {
		group, sub, _ := strings.Cut(name, " ")
		found := false
		for line := range strings.SplitSeq(block, "\n") {
			words := strings.FieldsFunc(line, word)
			if len(words) > 1 && words[0] == "till" && words[1] == group && (sub == "" || slices.Contains(words[2:], sub)) {
				found = true
			}
		}
		if !found {
			t.Errorf("README.md's CLI block lacks till %s", name)
		}
	}
}
