// Package termtext makes text that till did not write itself (an audit
// file, a server's answer, a secret source's error) safe to print on an
// operator's terminal or as one log line: such text may hold escape
// sequences that a terminal runs, newlines and carriage returns that
// forge lines, bidi overrides that reorder what is read, invalid UTF-8,
// or megabytes of any of them.
package termtext

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Escape returns s with every rune a terminal does not simply print
// written as a Go escape: control characters (newline, tab and ESC
// included: \n, \t, \x1b), other invisible runes (bidi overrides, line
// separators: \u202e, \u2028) and bytes of invalid UTF-8 (\xff). A
// printable string is returned as it is, other Unicode letters included.
// With max > 0, the result is cut after max bytes, marked with "…".
//
// Backslashes are left alone: the result is safe, not unambiguous. A
// caller that must tell an escape from text that looked like one escapes
// backslashes first.
func Escape(s string, max int) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean && (max <= 0 || len(s) <= max) {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		if max > 0 && b.Len() >= max {
			return b.String() + "…"
		}
		switch {
		case r == utf8.RuneError:
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				b.WriteString(`\x` + strconv.FormatUint(uint64(s[i]), 16))
				continue
			}
			b.WriteRune(r)
		case !unicode.IsPrint(r):
			q := strconv.QuoteRuneToASCII(r) // 'x' with Go's escape inside
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Lines is Escape for a message of several lines, such as the errors
// errors.Join puts together: each line is escaped and cut at max bytes
// on its own, and the newlines between them are kept. Only text whose
// newlines are its writer's own belongs here; foreign text inside it must
// have been escaped with Escape first, or its newlines forge lines.
func Lines(s string, max int) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = Escape(l, max)
	}
	return strings.Join(lines, "\n")
}
