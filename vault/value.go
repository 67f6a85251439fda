package vault

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	// MaxValueSize is the largest secret value (or field value) in bytes.
	MaxValueSize   = 64 << 10
	maxFieldsInput = 1 << 20
	maxNameLen     = 64
)

// CleanValue turns raw input (stdin or a file) into a secret value. It trims
// exactly one trailing "\n" or "\r\n", because editors and echo add one, and
// refuses empty values, values over [MaxValueSize], invalid UTF-8, any other
// control character (tab included) and invisible format characters (a byte
// order mark, a zero-width space): a stray byte in an API key fails later in
// a way that is hard to trace. Errors report positions, never the value.
func CleanValue(raw []byte) (string, error) {
	if len(raw) > MaxValueSize+2 {
		return "", fmt.Errorf("secret value is %d bytes; the limit is %d", len(raw), MaxValueSize)
	}
	switch {
	case bytes.HasSuffix(raw, []byte("\r\n")):
		raw = raw[:len(raw)-2]
	case bytes.HasSuffix(raw, []byte("\n")):
		raw = raw[:len(raw)-1]
	}
	if err := checkValue(string(raw)); err != nil {
		return "", fmt.Errorf("%w; till trims one trailing newline only", err)
	}
	return string(raw), nil
}

// CleanPEM turns raw input into a multi-line secret value: PEM blocks
// (a private key), with line ends made LF and trailing white space
// trimmed. It refuses input with no PEM block and any control character
// but the line break. Errors never echo the value.
func CleanPEM(raw []byte) (string, error) {
	v := strings.TrimRight(strings.ReplaceAll(string(raw), "\r\n", "\n"), " \t\n")
	if block, _ := pem.Decode([]byte(v)); block == nil {
		return "", errors.New("the input is not PEM (-----BEGIN ...-----)")
	}
	if err := checkKeyMaterial(v); err != nil {
		return "", err
	}
	return v, nil
}

// checkKeyMaterial is checkValue for values that may span lines (a PEM
// key, a field of a JSON key): line breaks are allowed, other control
// characters are not. Such a value is refused in a header or a query.
func checkKeyMaterial(v string) error {
	return checkValue(strings.ReplaceAll(v, "\n", " "))
}

// ErrLineBreak refuses a value that spans lines where one line is wanted
// (an API key): a PEM key or a JSON document is read as such instead.
var ErrLineBreak = errors.New("secret value spans lines")

// checkValue reports why v cannot be a secret value, without echoing it.
func checkValue(v string) error {
	if v == "" {
		return errors.New("secret value is empty")
	}
	if len(v) > MaxValueSize {
		return fmt.Errorf("secret value is %d bytes; the limit is %d", len(v), MaxValueSize)
	}
	for i := 0; i < len(v); {
		c := v[i]
		if c == '\n' || c == '\r' {
			return fmt.Errorf("%w (a line break at byte %d)", ErrLineBreak, i)
		}
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("secret value contains a control character at byte %d", i)
		}
		if c < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(v[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			return fmt.Errorf("secret value is not valid UTF-8 at byte %d", i)
		case unicode.IsControl(r):
			return fmt.Errorf("secret value contains a control character at byte %d", i)
		case unicode.Is(unicode.Cf, r):
			// A byte order mark or a zero-width space an editor or a
			// copy from a web page added: invisible, and never a key's.
			return fmt.Errorf("secret value contains an invisible character (U+%04X) at byte %d", r, i)
		}
		i += size
	}
	return nil
}

// ParseFields parses the input of `till secret set --json`: a JSON object of
// string fields such as {"sid": "...", "token": "..."}. Field names are
// [a-z0-9_]{1,64}; each value is checked like [CleanValue] (nothing is
// trimmed inside JSON). Errors name fields and byte offsets, never values.
func ParseFields(raw []byte) (map[string]string, error) { return parseFields(raw, true) }

// ParseSourceFields reads a document fetched from a secret source (a Vault
// KV entry, an AWS SecretString, a JSON file) as fields. Unlike
// [ParseFields], which checks what an operator stores, it ignores a field
// it cannot use, rather than refuse the document: such entries carry more
// than the credential (an "Owner", a "rotated_at": 1700000000). A field is
// kept when [ValidSourceField] accepts its name and its value is a string
// [CleanValue] would take (line breaks allowed); a field a route needs and
// that was ignored is then missing where the route reads it. The document
// itself must still be a JSON object with one usable field at least.
// Errors name fields and byte offsets, never values.
func ParseSourceFields(raw []byte) (map[string]string, error) { return parseFields(raw, false) }

// ValidSourceField reports whether name can name a field of a source's
// document: 1 to 64 letters, digits, "_", "." and "-". A ref's #FIELD is
// one of these, and ParseSourceFields keeps these alone, so that whatever
// a config can name is read.
func ValidSourceField(name string) bool {
	ok := name != "" && len(name) <= maxNameLen
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = isLowerOrDigit(c) || 'A' <= c && c <= 'Z' || c == '_' || c == '.' || c == '-'
	}
	return ok
}

// parseFields is ParseFields when strict, else ParseSourceFields.
func parseFields(raw []byte, strict bool) (map[string]string, error) {
	if len(raw) > maxFieldsInput {
		return nil, fmt.Errorf("fields input is %d bytes; the limit is %d", len(raw), maxFieldsInput)
	}
	if !utf8.Valid(raw) {
		// encoding/json would put U+FFFD in its place: another key.
		return nil, errors.New("fields input is not valid UTF-8 (is the file in another encoding?)")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("fields input: %w", jsonError(err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New(`fields input must be a JSON object of string fields, like {"sid": "...", "token": "..."}`)
	}
	fields := map[string]string{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("fields input: %w", jsonError(err))
		}
		name, _ := tok.(string) // object keys are always strings
		if !strict {
			// The value whole, whatever it is: an ignored field may
			// hold an object or a list.
			var value json.RawMessage
			if err := dec.Decode(&value); err != nil {
				return nil, fmt.Errorf("fields input: %w", jsonError(err))
			}
			var v string
			if !ValidSourceField(name) || value[0] != '"' || LoneSurrogate(value) || json.Unmarshal(value, &v) != nil || checkKeyMaterial(v) != nil {
				continue // not a field a route can read: not named here either
			}
			if _, dup := fields[name]; dup {
				return nil, fmt.Errorf("field %q appears twice", name)
			}
			fields[name] = v
			continue
		}
		if err := validFieldName(name); err != nil {
			// Not echoed: a value (a member without its key) is read here.
			return nil, fmt.Errorf(`fields input: field %d: invalid name (%d bytes): use 1 to 64 characters of a-z, 0-9 and "_"`, len(fields)+1, len(name))
		}
		if _, dup := fields[name]; dup {
			return nil, fmt.Errorf("field %q appears twice", name)
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, fmt.Errorf("fields input: %w", jsonError(err))
		}
		var v string
		if value[0] != '"' || json.Unmarshal(value, &v) != nil {
			return nil, fmt.Errorf("field %q must be a JSON string", name)
		}
		if LoneSurrogate(value) {
			return nil, fmt.Errorf(`field %q: a \ud800 to \udfff escape without the other half of its pair, which JSON reads as U+FFFD, not as written: give the pair whole, or the character itself`, name)
		}
		// A field of a JSON key (a service account's private_key) may
		// span lines; headers refuse it then.
		if err := checkKeyMaterial(v); err != nil {
			return nil, fmt.Errorf("field %q: %w", name, err)
		}
		fields[name] = v
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, fmt.Errorf("fields input: %w", jsonError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("fields input has data after the JSON object")
	}
	switch {
	case len(fields) == 0 && strict:
		return nil, errors.New("fields input has no fields")
	case len(fields) == 0:
		return nil, errors.New(`fields input has no field a route can read (a string named with letters, digits, "_", "." and "-")`)
	}
	return fields, nil
}

// LoneSurrogate reports whether the JSON string s holds a \u escape of
// half a UTF-16 surrogate pair without its other half, which
// encoding/json reads as U+FFFD: a value other than the one written.
func LoneSurrogate(s []byte) bool {
	pending := false // a pair's first half was the last character
	for i := 0; i < len(s); i++ {
		r := rune(-1) // a character that is no \u escape
		if s[i] == '\\' && i+1 < len(s) {
			i++
			if s[i] == 'u' && i+4 < len(s) {
				n, _ := strconv.ParseUint(string(s[i+1:i+5]), 16, 32)
				r, i = rune(n), i+4
			}
		}
		if second := 0xdc00 <= r && r < 0xe000; pending != second {
			return true
		}
		pending = 0xd800 <= r && r < 0xdc00
	}
	return pending
}

// ValidName reports whether name can name a secret: 1 to 64 characters of
// a-z, 0-9, "_", "." and "-", starting with a letter or digit. Names appear in
// config, logs and audit records, so they are kept plain.
func ValidName(name string) error {
	ok := name != "" && len(name) <= maxNameLen && isLowerOrDigit(name[0])
	for i := 1; ok && i < len(name); i++ {
		c := name[i]
		ok = isLowerOrDigit(c) || c == '_' || c == '.' || c == '-'
	}
	if !ok {
		// The name is not echoed: a key pasted in its place would land in
		// a terminal or a CI log.
		return fmt.Errorf(`invalid secret name (%d characters): use 1 to 64 characters of a-z, 0-9, "_", "." and "-", starting with a letter or digit`, len(name))
	}
	return nil
}

func validFieldName(name string) error {
	ok := name != "" && len(name) <= maxNameLen
	for i := 0; ok && i < len(name); i++ {
		ok = isLowerOrDigit(name[i]) || name[i] == '_'
	}
	if !ok {
		return fmt.Errorf(`invalid field name %q: use 1 to 64 characters of a-z, 0-9 and "_"`, name)
	}
	return nil
}

func isLowerOrDigit(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9'
}

// jsonError rewrites an encoding/json error so that it carries no input:
// json's own messages can quote a number or a character of the document,
// which may be part of a secret.
func jsonError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Errorf("invalid JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Errorf("%s: wrong JSON type, want %s", typ.Field, typ.Type)
		}
		return fmt.Errorf("wrong JSON type at byte %d, want %s", typ.Offset, typ.Type)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("JSON ends too early")
	}
	return errors.New("invalid JSON")
}
