package main

import "strings"

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
