package vault

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// formatVersion is the version of the plaintext JSON inside the age file.
const formatVersion = 1

// plainFile is the plaintext inside the age encryption:
// {"version":1,"secrets":{"NAME":{"value":"...","created":"...","updated":"..."}}}.
type plainFile struct {
	Version *int                    `json:"version"`
	Secrets map[string]*plainSecret `json:"secrets"`
}

type plainSecret struct {
	Value   *string           `json:"value,omitempty"`
	Fields  map[string]string `json:"fields,omitempty"`
	Created time.Time         `json:"created"`
	Updated time.Time         `json:"updated"`
	Expires time.Time         `json:"expires,omitzero"`
}

// errVersion marks a vault written by a newer (or unknown) till.
var errVersion = errors.New("unsupported vault version")

// decode parses and validates the plaintext of a vault. Its errors never
// contain a secret value.
func decode(data []byte) (map[string]Secret, error) {
	// The version first, leniently: a newer till's vault may hold fields
	// this one does not know, and is to be named as newer, not corrupted.
	var v struct{ Version *int }
	if json.Unmarshal(data, &v) == nil && v.Version != nil && *v.Version != formatVersion {
		return nil, fmt.Errorf("%w %d (this till reads version %d); upgrade till", errVersion, *v.Version, formatVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var pf plainFile
	if err := dec.Decode(&pf); err != nil {
		if msg, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return nil, fmt.Errorf("unknown field %s", msg) // a key, not a value
		}
		return nil, jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON object")
	}
	if pf.Version == nil {
		return nil, errors.New("no version")
	}
	if *pf.Version != formatVersion {
		return nil, fmt.Errorf("%w %d (this till reads version %d); upgrade till", errVersion, *pf.Version, formatVersion)
	}
	secrets := make(map[string]Secret, len(pf.Secrets))
	for name, ps := range pf.Secrets {
		if ps == nil {
			return nil, fmt.Errorf("secret %q is null", name)
		}
		s := Secret{Name: name, Created: ps.Created, Updated: ps.Updated, Expires: ps.Expires}
		switch {
		case ps.Value != nil && ps.Fields != nil:
			return nil, fmt.Errorf("secret %q has both a value and fields", name)
		case ps.Value != nil:
			s.v = seal(&sealed{value: *ps.Value})
			s.fp = fingerprint([]byte(*ps.Value))
		case ps.Fields != nil:
			s.v = seal(&sealed{fields: ps.Fields})
			s.fp = fingerprint(canonicalFields(ps.Fields))
		}
		if err := s.validate(name); err != nil {
			return nil, err
		}
		secrets[name] = s
	}
	return secrets, nil
}

// encode validates secrets and returns the plaintext of a vault.
func encode(secrets map[string]Secret) ([]byte, error) {
	pf := plainFile{Secrets: make(map[string]*plainSecret, len(secrets))}
	v := formatVersion
	pf.Version = &v
	for name, s := range secrets {
		if err := s.validate(name); err != nil {
			return nil, err
		}
		ps := &plainSecret{Created: s.Created.UTC(), Updated: s.Updated.UTC()}
		if !s.Expires.IsZero() {
			ps.Expires = s.Expires.UTC()
		}
		if v := s.open(); v.fields != nil {
			ps.Fields = v.fields
		} else {
			value := s.open().value
			ps.Value = &value
		}
		pf.Secrets[name] = ps
	}
	data, err := json.Marshal(pf)
	if err != nil {
		return nil, errors.New("cannot encode the vault") // never echo what failed
	}
	return data, nil
}
