// Package vault stores till's provider secrets in an age-encrypted file.
//
// A [Secret] keeps its value behind an unexported pointer, and prints, marshals
// and logs itself as a redaction: only [Secret.Value] and [Secret.Field]
// reveal it. A [File] is the encrypted vault; [File.Update] changes it under an
// exclusive lock and replaces it atomically, so a crash never loses it.
package vault

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Secret is one named provider key: either a single value or a set of named
// fields (twilio: {"sid": "...", "token": "..."}).
type Secret struct {
	// Name is the secret's name in the vault and in config.
	Name string
	// Created is when the secret was first stored.
	Created time.Time
	// Updated is the last rotation; it equals Created until the first one.
	Updated time.Time
	// Expires is when the provider key stops working; zero means no expiry.
	Expires time.Time

	// v is a pointer to a pointer because fmt, reaching an unexported Secret
	// field by reflection, cannot call String; it then prints only addresses,
	// except that at top level (a bad verb such as %s reprints there) it
	// expands a pointer to a struct or map. One more indirection keeps even
	// that to an address.
	v  **sealed
	fp string
}

// open returns the sealed value, or nil for a zero Secret.
func (s Secret) open() *sealed {
	if s.v == nil {
		return nil
	}
	return *s.v
}

func seal(x *sealed) **sealed { return &x }

type sealed struct {
	value  string
	fields map[string]string
}

var (
	_ fmt.Stringer               = Secret{}
	_ fmt.GoStringer             = Secret{}
	_ json.Marshaler             = Secret{}
	_ zerolog.LogObjectMarshaler = Secret{}
)

// NewSecret returns a single-value secret created at now.
// The name and value are checked when the secret is written.
func NewSecret(name, value string, now time.Time) Secret {
	now = now.Round(0)
	return Secret{Name: name, Created: now, Updated: now, v: seal(&sealed{value: value}), fp: fingerprint([]byte(value))}
}

// NewFieldSecret returns a multi-field secret created at now. It copies fields.
func NewFieldSecret(name string, fields map[string]string, now time.Time) Secret {
	now = now.Round(0)
	fields = cloneFields(fields)
	return Secret{Name: name, Created: now, Updated: now, v: seal(&sealed{fields: fields}), fp: fingerprint(canonicalFields(fields))}
}

// Value returns a single-value secret's value; false for a multi-field secret.
func (s Secret) Value() (string, bool) {
	v := s.open()
	if v == nil || v.fields != nil {
		return "", false
	}
	return v.value, true
}

// Field returns one field of a multi-field secret.
func (s Secret) Field(name string) (string, bool) {
	v := s.open()
	if v == nil || v.fields == nil {
		return "", false
	}
	f, ok := v.fields[name]
	return f, ok
}

// FieldNames returns a multi-field secret's field names, sorted; nil for a
// single value.
func (s Secret) FieldNames() []string {
	v := s.open()
	if v == nil || v.fields == nil {
		return nil
	}
	names := make([]string, 0, len(v.fields))
	for n := range v.fields {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Values returns every string the secret can reveal (the value, or each field
// value in field name order), so callers can scrub them from output.
func (s Secret) Values() []string {
	v := s.open()
	if v == nil {
		return nil
	}
	if v.fields == nil {
		return []string{v.value}
	}
	var vs []string
	for _, n := range s.FieldNames() {
		vs = append(vs, v.fields[n])
	}
	return vs
}

// Fingerprint identifies the value without revealing it: "sha256:" and the
// first 16 hex digits of SHA-256 of the value or, for a multi-field secret, of
// the fields as JSON with sorted keys and no HTML escaping. It is empty for a
// zero Secret.
func (s Secret) Fingerprint() string { return s.fp }

// String prints the name and fingerprint, never the value.
func (s Secret) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "vault.Secret{name=%s fp=%s", s.Name, s.fp)
	if names := s.FieldNames(); names != nil {
		fmt.Fprintf(&b, " fields=%s", strings.Join(names, ","))
	}
	b.WriteString(" value=REDACTED}")
	return b.String()
}

// GoString makes %#v print a redaction too.
func (s Secret) GoString() string {
	return fmt.Sprintf("vault.Secret{Name:%q, Fingerprint:%q, value:REDACTED}", s.Name, s.fp)
}

// MarshalJSON writes the metadata only: name, fingerprint, created, updated
// and expires (null when none).
func (s Secret) MarshalJSON() ([]byte, error) {
	var expires *time.Time
	if !s.Expires.IsZero() {
		expires = &s.Expires
	}
	return json.Marshal(struct {
		Name        string     `json:"name"`
		Fingerprint string     `json:"fingerprint"`
		Created     time.Time  `json:"created"`
		Updated     time.Time  `json:"updated"`
		Expires     *time.Time `json:"expires"`
	}{s.Name, s.fp, s.Created, s.Updated, expires})
}

// MarshalZerologObject logs the metadata only, like MarshalJSON.
func (s Secret) MarshalZerologObject(e *zerolog.Event) {
	e.Str("name", s.Name).Str("fingerprint", s.fp).Time("created", s.Created).Time("updated", s.Updated)
	if !s.Expires.IsZero() {
		e.Time("expires", s.Expires)
	}
}

// Status is the state of a secret at a point in time.
type Status string

// Statuses reported by [Secret.Status].
const (
	StatusOK       Status = "ok"
	StatusExpiring Status = "expiring" // expires within ExpiringWindow
	StatusExpired  Status = "expired"
)

// ExpiringWindow is how long before expiry a secret counts as expiring.
const ExpiringWindow = 14 * 24 * time.Hour

// Status reports whether the secret is ok, expiring within [ExpiringWindow] or
// expired at now, given a max age counted from Updated (0 means none).
func (s Secret) Status(now time.Time, maxAge time.Duration) Status {
	at := s.ExpiresAt(maxAge)
	switch {
	case at.IsZero():
		return StatusOK
	case !now.Before(at):
		return StatusExpired
	case at.Sub(now) <= ExpiringWindow:
		return StatusExpiring
	}
	return StatusOK
}

// ExpiresAt returns the earliest of Expires and Updated+maxAge (when maxAge
// is positive); zero if neither applies.
func (s Secret) ExpiresAt(maxAge time.Duration) time.Time {
	at := s.Expires
	if maxAge > 0 {
		base := s.Updated
		if base.IsZero() {
			base = s.Created
		}
		if aged := base.Add(maxAge); !base.IsZero() && (at.IsZero() || aged.Before(at)) {
			at = aged
		}
	}
	return at
}

// validate checks what the vault file requires of a secret stored under key.
func (s Secret) validate(key string) error {
	v := s.open()
	if s.Name != key {
		return fmt.Errorf("secret %q is stored under name %q", s.Name, key)
	}
	if err := ValidName(s.Name); err != nil {
		return err
	}
	if v == nil {
		return fmt.Errorf("secret %q has no value", s.Name)
	}
	if s.Created.IsZero() || s.Updated.IsZero() {
		return fmt.Errorf("secret %q has no created or updated time", s.Name)
	}
	for _, t := range []time.Time{s.Created, s.Updated, s.Expires} {
		if y := t.Year(); y < 1 || y > 9999 {
			return fmt.Errorf("secret %q has a time outside years 1 to 9999", s.Name)
		}
	}
	if v.fields == nil {
		if err := checkKeyMaterial(v.value); err != nil {
			return fmt.Errorf("secret %q: %w", s.Name, err)
		}
		return nil
	}
	if len(v.fields) == 0 {
		return fmt.Errorf("secret %q has no fields", s.Name)
	}
	for _, n := range s.FieldNames() {
		if err := validFieldName(n); err != nil {
			return fmt.Errorf("secret %q: %w", s.Name, err)
		}
		if err := checkKeyMaterial(v.fields[n]); err != nil {
			return fmt.Errorf("secret %q: field %q: %w", s.Name, n, err)
		}
	}
	return nil
}

func fingerprint(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// canonicalFields is the JSON of fields with sorted keys and no HTML escaping.
func canonicalFields(fields map[string]string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(fields) // a map[string]string always encodes
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func cloneFields(fields map[string]string) map[string]string {
	c := make(map[string]string, len(fields))
	for k, v := range fields {
		c[k] = v
	}
	return c
}
