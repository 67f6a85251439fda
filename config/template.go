package config

import (
	"errors"
	"fmt"
	"strings"
)

// Template is a parsed inject format: literal text plus {secret} and
// {secret.FIELD} placeholders, and nothing else. There are no printf
// directives ("%s" is literal text) and no expression language, so a
// format can never reach anything but the route's own secret. Any other
// "{" or "}" is an error ("{{" is not an escape), as are control
// characters (CR, LF, NUL, …) in the literal text, which could split a
// header.
//
// The zero Template renders as "".
type Template struct {
	parts []part
}

// part is literal text, or a placeholder when placeholder is set.
type part struct {
	lit         string
	field       string // "" for {secret}
	placeholder bool
}

// ParseTemplate parses an inject format such as "Bearer {secret}". Its
// errors never quote the format, which may hold a hard-coded credential.
func ParseTemplate(s string) (Template, error) {
	var t Template
	lit := 0 // start of the pending literal
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c == 0x7f:
			return Template{}, errors.New("must not contain control characters such as CR or LF")
		case c == '}':
			return Template{}, errors.New(`unmatched "}" (braces are only for {secret} and {secret.FIELD})`)
		case c == '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return Template{}, errors.New("unterminated placeholder (use {secret} or {secret.FIELD})")
			}
			name := s[i+1 : i+end]
			field, ok := placeholderField(name)
			if !ok {
				return Template{}, errors.New("unknown placeholder (only {secret} and {secret.FIELD} are allowed)")
			}
			if i > lit {
				t.parts = append(t.parts, part{lit: s[lit:i]})
			}
			t.parts = append(t.parts, part{field: field, placeholder: true})
			i += end
			lit = i + 1
		}
	}
	if lit < len(s) {
		t.parts = append(t.parts, part{lit: s[lit:]})
	}
	return t, nil
}

// placeholderField returns the field of "secret" ("") or "secret.FIELD".
func placeholderField(name string) (string, bool) {
	if name == "secret" {
		return "", true
	}
	field, ok := strings.CutPrefix(name, "secret.")
	if !ok || field == "" || len(field) > 64 {
		return "", false
	}
	for i := 0; i < len(field); i++ {
		c := field[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return "", false
		}
	}
	return field, true
}

// IsZero reports whether the template is empty.
func (t Template) IsZero() bool { return len(t.parts) == 0 }

// Fields returns the secret fields the template uses, each once, in order
// of first use: "" for {secret}, "FIELD" for {secret.FIELD}.
func (t Template) Fields() []string {
	var out []string
	add := adder(&out)
	for _, p := range t.parts {
		if p.placeholder {
			add(p.field)
		}
	}
	return out
}

// literal returns the template's literal text, for checks at parse time.
func (t Template) literal() string {
	var b strings.Builder
	for _, p := range t.parts {
		b.WriteString(p.lit)
	}
	return b.String()
}

// hasLiteralKey reports whether a literal run of the template looks like a
// key (see looksLikeKey). Runs are checked one by one: the text on either
// side of a placeholder is never one value.
func (t Template) hasLiteralKey() bool {
	for _, p := range t.parts {
		if !p.placeholder && looksLikeKey(p.lit) {
			return true
		}
	}
	return false
}

// Render fills the template: lookup("") for {secret}, lookup("FIELD") for
// {secret.FIELD}. It fails if lookup reports a value missing or a value
// holds a control character (which could split a header); the error names
// the field, never the value.
func (t Template) Render(lookup func(field string) (string, bool)) (string, error) {
	b, err := t.AppendRender(nil, lookup)
	return string(b), err
}

// AppendRender is Render appending to dst, so the hot path can reuse a
// buffer.
func (t Template) AppendRender(dst []byte, lookup func(field string) (string, bool)) ([]byte, error) {
	for _, p := range t.parts {
		if !p.placeholder {
			dst = append(dst, p.lit...)
			continue
		}
		v, ok := lookup(p.field)
		if !ok {
			if p.field == "" {
				return dst, errors.New("secret has no value")
			}
			return dst, fmt.Errorf("secret has no field %q", p.field)
		}
		for i := 0; i < len(v); i++ {
			if c := v[i]; c < 0x20 || c == 0x7f {
				return dst, errors.New("secret value contains a control character")
			}
		}
		dst = append(dst, v...)
	}
	return dst, nil
}
