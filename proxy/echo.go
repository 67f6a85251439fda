package proxy

import (
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// minEchoForm is the shortest form of a key, as it is or encoded, that is
// looked for: a shorter run of characters would match innocent headers by
// chance (a one-character key, every header that holds its letter).
const minEchoForm = 8

// MinEchoLength is the shortest key value that till removes from the
// upstream's responses when they echo it (invariant 2). A shorter value is
// not looked for on its own, only inside a longer form (the header as
// injected, "Bearer KEY"); `till secret set` and `serve` warn of one.
const MinEchoLength = minEchoForm

// echoForms returns the strings that betray one of values (a key, the
// fields of a key, an injected header value) when an upstream sends them
// back (invariant 2):
//
//   - the value itself, and its core: the value without a provider prefix
//     such as "sk-proj-" or "ghp_", so that the key's secret part is found
//     on its own too (a value shorter than minEchoForm has no forms);
//   - the core in hex, lower and upper case;
//   - the core percent-escaped as a query or a path carries it, and that
//     in hex and base64 too; with "/" written "\/" as JSON may;
//   - the core in base64, standard and URL alphabets, at each of the three
//     byte alignments it can have inside a longer encoded string (the
//     characters that depend on the core's bytes alone), so that
//     base64('{"auth":"Bearer KEY"}') is found at any offset, padded or not.
//
// Percent-encoding in any mix is handled by echoes, which decodes before
// it compares.
func echoForms(values []string) []string {
	var forms []string
	for _, v := range values {
		if len(v) < minEchoForm {
			continue // found by chance in unrelated headers: not a form
		}
		core := keyCore(v) // v, or 16 characters of it or more
		forms = append(forms, v)
		forms = append(forms, encodedForms(core)...)
		// As sent in a query (inject.query) or a path, and quoted back
		// (in an error, or encoded in a redirect's state): a key with
		// "+", "/" or "=" is escaped there; a JSON writer may escape "/".
		for _, esc := range []string{url.QueryEscape(core), url.PathEscape(core)} {
			if esc != core {
				forms = append(forms, encodedForms(esc)...)
			}
		}
		if strings.Contains(core, "/") {
			forms = append(forms, strings.ReplaceAll(core, "/", `\/`))
		}
	}
	slices.Sort(forms)
	forms = slices.Compact(forms)
	// A form that contains another is found through the shorter one.
	return slices.DeleteFunc(forms, func(f string) bool {
		return slices.ContainsFunc(forms, func(g string) bool { return len(g) < len(f) && strings.Contains(f, g) })
	})
}

// encodedForms returns s with its hex (lower and upper case) and base64
// (standard and URL alphabets, at each alignment) forms.
func encodedForms(s string) []string {
	b := []byte(s)
	forms := []string{s, hex.EncodeToString(b), strings.ToUpper(hex.EncodeToString(b))}
	forms = append(forms, base64Cores(base64.StdEncoding, b)...)
	return append(forms, base64Cores(base64.URLEncoding, b)...)
}

// keyCore strips a provider prefix from a key: leading segments of letters
// (and trailing digits) that end in '-' or '_', such as "sk-", "proj-",
// "ant-api03-", "ghp_" or "github_pat_", as long as 16 characters of the
// key remain. What remains is a substring of the key, so finding it finds
// the whole key too.
func keyCore(v string) string {
	core := v
	for {
		i := 0
		for i < len(core) && isLetter(core[i]) {
			i++
		}
		if i == 0 {
			return core
		}
		for i < len(core) && core[i] >= '0' && core[i] <= '9' {
			i++
		}
		if i >= len(core) || core[i] != '-' && core[i] != '_' || len(core)-i-1 < 16 {
			return core
		}
		core = core[i+1:]
	}
}

func isLetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

// base64Cores returns, for each byte alignment of b inside a longer
// string, the characters of its encoding that depend only on b's bits.
func base64Cores(enc *base64.Encoding, b []byte) []string {
	var out []string
	for align := range 3 {
		buf := make([]byte, align+len(b))
		copy(buf[align:], b)
		s := enc.EncodeToString(buf)
		// Character i holds bits [6i, 6i+6); b holds [8·align, 8·(align+len(b))).
		first := (8*align + 5) / 6
		last := 8 * (align + len(b)) / 6
		if last-first >= minEchoForm {
			out = append(out, s[first:last])
		}
	}
	return out
}

// foldedHolds reports whether v holds f once the spaces and tabs of both
// are dropped: a key split by white space, as a folded line (obs-fold)
// joined with a space is. It compares in place, byte by byte, from each
// place where v has f's first byte.
func foldedHolds(v, f string) bool {
	f = strings.Trim(f, " \t")
	if f == "" {
		return false
	}
	for i := strings.IndexByte(v, f[0]); i >= 0; {
		j, k := i, 0
		for j < len(v) && k < len(f) {
			switch {
			case isSpace(v[j]):
				j++
			case isSpace(f[k]):
				k++
			case v[j] == f[k]:
				j, k = j+1, k+1
			default:
				j = len(v) + 1 // no match here
			}
		}
		if k == len(f) && j <= len(v) {
			return true
		}
		n := strings.IndexByte(v[i+1:], f[0])
		if n < 0 {
			return false
		}
		i += 1 + n
	}
	return false
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

// scrubEchoes removes every header whose value, or name, betrays one of
// the forms of the key, and returns how many it removed.
func scrubEchoes(h http.Header, forms []string) int {
	n := 0
	for name, values := range h {
		if echoes(values, forms) || nameEchoes(name, forms) {
			delete(h, name)
			n++
		}
	}
	return n
}

// echoes reports whether any of values holds one of forms, as it is or
// once percent-decoded, in whatever mix of encoded and plain characters,
// up to three times over (a double-encoded key is still the key).
func echoes(values, forms []string) bool {
	for _, v := range values {
		if containsAny(v, forms) {
			return true
		}
		if len(v) > minEchoForm && strings.ContainsAny(v, " \t") && slices.ContainsFunc(forms, func(f string) bool { return foldedHolds(v, f) }) {
			return true // split by white space: a folded line (obs-fold) joined with a space
		}
		for range 3 {
			if strings.IndexByte(v, '%') < 0 {
				break
			}
			d := percentDecode(v)
			if d == v {
				break
			}
			if containsAny(d, forms) {
				return true
			}
			v = d
		}
	}
	return false
}

// nameEchoes reports whether a header's name holds one of forms, in any
// case: net/http changes the case of names it receives.
func nameEchoes(name string, forms []string) bool {
	for _, f := range forms {
		for i := 0; i+len(f) <= len(name); i++ {
			if strings.EqualFold(name[i:i+len(f)], f) {
				return true
			}
		}
	}
	return false
}

// quotesPart reports whether s holds a run of minEchoForm characters of
// one of forms: part of a secret, as a token endpoint quotes it that
// shows the first or last characters of the client secret it refused.
// Only for a secret that is random throughout: a form's runs are looked
// for wherever they are, and a key's provider prefix is left out of its
// forms (keyCore), but a PEM key's armour is not.
func quotesPart(s string, forms []string) bool {
	for _, f := range forms {
		for i := 0; i+minEchoForm <= len(f); i++ {
			if strings.Contains(s, f[i:i+minEchoForm]) {
				return true
			}
		}
	}
	return false
}

func containsAny(v string, forms []string) bool {
	for _, f := range forms {
		if strings.Contains(v, f) {
			return true
		}
	}
	return false
}

// percentDecode decodes every valid %XX escape of s once (decodedAt), and
// leaves anything else as it is: unlike url.PathUnescape, a stray '%'
// does not stop it.
func percentDecode(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		var c byte
		c, i = decodedAt(s, i)
		b = append(b, c)
	}
	return string(b)
}
