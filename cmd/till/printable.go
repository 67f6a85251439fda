package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
)

// printable is text from something that may not be till (an answer at
// the admin URL, an audit file anyone could have written), fit for a
// terminal: printable ASCII only (no escape sequence reaches it), at most
// n characters.
func printable(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, s)
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

// writeJSON prints v as indented JSON in ASCII only. What --json prints
// may quote an audit file or an admin answer, and encoding/json escapes
// control characters below U+0020 but writes DEL, C1 controls (U+009B is
// a CSI to some terminals) and bidi overrides as they are: every rune
// past ASCII is written as \uXXXX (a surrogate pair above U+FFFF), the
// same JSON to whatever reads it.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	var out strings.Builder
	out.Grow(len(b) + 1)
	// Marshal's output is valid UTF-8, and runes past ASCII are only ever
	// inside its strings, where an escape means the same rune.
	for _, r := range string(b) {
		switch {
		case r < 0x7f:
			out.WriteRune(r)
		case r > 0xffff:
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&out, `\u%04x\u%04x`, r1, r2)
		default:
			fmt.Fprintf(&out, `\u%04x`, r)
		}
	}
	out.WriteByte('\n')
	_, err = io.WriteString(w, out.String())
	return err
}
