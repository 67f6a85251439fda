package proxy

import "strings"

// checkPath refuses request paths that could move a request past a route's
// prefix or allow rules once some other component decodes or normalises
// them: dot segments, encoded slashes and backslashes, backslashes, control
// characters and invalid percent-encoding. raw is the path as sent (escaped),
// decoded is its decoded form. It returns the reason for the refusal, or ""
// when the path is acceptable; decoded can then be matched as is.
func checkPath(raw, decoded string) string {
	if len(decoded) == 0 || decoded[0] != '/' {
		return "the request path must start with /"
	}
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; c {
		case '\\':
			return "the request path must not contain a backslash"
		case '%':
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				return "the request path has an invalid percent-encoding"
			}
			if hi, lo := raw[i+1], lower(raw[i+2]); hi == '2' && lo == 'f' || hi == '5' && lo == 'c' {
				return "the request path must not contain an encoded slash or backslash"
			}
			i += 2
		}
	}
	for i := 0; i < len(decoded); i++ {
		if c := decoded[i]; c < 0x20 || c == 0x7f {
			return "the request path must not contain control characters"
		}
		if decoded[i] == '\\' {
			return "the request path must not contain a backslash"
		}
	}
	if hasDotSegment(decoded) {
		return "the request path must not contain . or .. segments"
	}
	return ""
}

// hasDotSegment reports whether p has a "." or ".." segment (RFC 3986,
// section 3.3), which servers and clients remove with different rules.
func hasDotSegment(p string) bool {
	for p != "" {
		var seg string
		seg, p, _ = strings.Cut(p, "/")
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}
