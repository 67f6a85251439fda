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
	"unicode/utf16"
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

// JSON returns raw, JSON text, with every rune a terminal acts on rather
// than prints written as a JSON \u escape: DEL, the C1 controls (U+009B
// is a CSI, U+009D an OSC, to terminals such as VTE's and screen), bidi
// overrides, line separators and other invisible runes, and invalid UTF-8
// (as U+FFFD). JSON encoders (encoding/json, zerolog) escape the C0
// controls of a string but write the rest as they are, and a JSON line
// may be read on a terminal: an audit record or a log line that holds
// what a request sent. Outside JSON strings there is nothing but ASCII,
// so the escapes change how the text reads, never what it means. raw is
// returned as it is when it holds no such rune.
func JSON(raw []byte) []byte {
	var dst []byte
	start := 0
	for i := 0; i < len(raw); {
		if raw[i] < utf8.RuneSelf-1 { // ASCII but DEL
			i++
			continue
		}
		r, size := utf8.DecodeRune(raw[i:])
		if r != utf8.RuneError && unicode.IsPrint(r) {
			i += size
			continue
		}
		if dst == nil {
			dst = make([]byte, 0, len(raw)+16)
		}
		dst = appendRuneEscape(append(dst, raw[start:i]...), r)
		i += size
		start = i
	}
	if dst == nil {
		return raw
	}
	return append(dst, raw[start:]...)
}

// appendRuneEscape appends r as JSON escapes it: \uXXXX, or a surrogate
// pair above U+FFFF.
func appendRuneEscape(dst []byte, r rune) []byte {
	if r > 0xffff {
		r1, r2 := utf16.EncodeRune(r)
		return appendRuneEscape(appendRuneEscape(dst, r1), r2)
	}
	const hex = "0123456789abcdef"
	return append(dst, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
}
