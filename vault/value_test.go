package vault

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

func TestCleanValue(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    string
		wantErr string // substring; empty means no error
	}{
		{name: "plain", raw: "sk-test", want: "sk-test"},
		{name: "one newline trimmed", raw: "sk-test\n", want: "sk-test"},
		{name: "crlf trimmed", raw: "sk-test\r\n", want: "sk-test"},
		{name: "unicode kept", raw: "pässwörd\n", want: "pässwörd"},
		{name: "spaces kept", raw: " sk test ", want: " sk test "},
		{name: "two newlines", raw: "sk-test\n\n", wantErr: "secret value spans lines (a line break at byte 7); till trims one trailing newline only"},
		{name: "lone cr", raw: "sk-test\r", wantErr: "a line break at byte 7"},
		{name: "inner newline", raw: "sk\ntest", wantErr: "a line break at byte 2"},
		{name: "tab", raw: "sk-\ttest", wantErr: "control character at byte 3"},
		{name: "nul", raw: "sk-test\x00", wantErr: "control character at byte 7"},
		{name: "esc", raw: "\x1b[31msk-test", wantErr: "control character at byte 0"},
		{name: "del", raw: "sk-test\x7f", wantErr: "control character at byte 7"},
		{name: "invalid utf-8", raw: "sk-\xfftest", wantErr: "not valid UTF-8 at byte 3"},
		{name: "C1 control (NEL)", raw: "sk-\u0085test", wantErr: "control character at byte 3"},
		{name: "C1 control (CSI)", raw: "sk-\u009b31mtest", wantErr: "control character at byte 3"},
		{name: "byte order mark from a file", raw: "\ufeffsk-test\r\n", wantErr: "invisible character (U+FEFF) at byte 0"},
		{name: "zero width space", raw: "sk-test\u200b", wantErr: "invisible character (U+200B) at byte 7"},
		{name: "empty", raw: "", wantErr: "secret value is empty"},
		{name: "only newline", raw: "\n", wantErr: "secret value is empty"},
		{name: "at limit", raw: strings.Repeat("a", MaxValueSize) + "\n", want: strings.Repeat("a", MaxValueSize)},
		{name: "over limit", raw: strings.Repeat("a", MaxValueSize+1), wantErr: "the limit is 65536"},
		{name: "far over limit", raw: strings.Repeat("a", 3*MaxValueSize), wantErr: "the limit is 65536"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CleanValue([]byte(tt.raw))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CleanValue: unexpected error %q", err)
				}
				if got != tt.want {
					t.Errorf("got %q, want %q", got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("got %q, want error containing %q", got, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got error %q, want it to contain %q", err, tt.wantErr)
			}
			if v := strings.TrimSpace(tt.raw); len(v) >= 4 && strings.Contains(err.Error(), v) {
				t.Errorf("error %q contains the value", err)
			}
		})
	}
}

func TestCleanValueErrorHidesValue(t *testing.T) {
	const secret = "sk-live-51HxQ2eZvKYlo2C"
	for _, raw := range []string{secret + "\t", secret + "\n\n", "\x00" + secret, secret + "\xff"} {
		_, err := CleanValue([]byte(raw))
		if err == nil {
			t.Fatalf("CleanValue(%q): got no error, want one", raw)
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "51HxQ2") {
			t.Errorf("got error %q, want one without the value", err)
		}
	}
}

func TestParseFields(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    map[string]string
		wantErr string
	}{
		{name: "two fields", raw: `{"sid": "AC123", "token": "tok-456"}` + "\n", want: map[string]string{"sid": "AC123", "token": "tok-456"}},
		{name: "one field", raw: `{"key":"v"}`, want: map[string]string{"key": "v"}},
		{name: "escaped unicode", raw: `{"user":"\u00e9t\u00e9"}`, want: map[string]string{"user": "été"}},
		{name: "not an object", raw: `["sk-secretvalue"]`, wantErr: "must be a JSON object"},
		{name: "string", raw: `"sk-secretvalue"`, wantErr: "must be a JSON object"},
		{name: "empty object", raw: `{}`, wantErr: "no fields"},
		{name: "empty input", raw: ``, wantErr: "ends too early"},
		{name: "number value", raw: `{"pin": 98765432}`, wantErr: `field "pin" must be a JSON string`},
		{name: "object value", raw: `{"pin": {"a": "sk-secretvalue"}}`, wantErr: `field "pin" must be a JSON string`},
		{name: "bad field name", raw: `{"Token": "sk-secretvalue"}`, wantErr: `field 1: invalid name (5 bytes)`},
		{name: "long field name", raw: `{"` + strings.Repeat("a", 65) + `": "x"}`, wantErr: "field 1: invalid name (65 bytes)"},
		{name: "empty field name", raw: `{"": "sk-secretvalue"}`, wantErr: "field 1: invalid name (0 bytes)"},
		// A member without its key: the value is read as a name, and
		// must not be echoed.
		{name: "value in a name's place", raw: `{"sid": "AC1", "sk-proj-secretvalue-0123456789"}`, wantErr: "field 2: invalid name (30 bytes)"},
		{name: "duplicate", raw: `{"a": "sk-secretvalue", "a": "sk-othervalue"}`, wantErr: `field "a" appears twice`},
		{name: "newline in value", raw: `{"a": "line one\nline two"}`, want: map[string]string{"a": "line one\nline two"}},
		{name: "tab in value", raw: `{"a": "sk-secret\tvalue"}`, wantErr: `field "a": secret value contains a control character at byte 9`},
		{name: "empty value", raw: `{"a": ""}`, wantErr: `field "a": secret value is empty`},
		{name: "trailing data", raw: `{"a": "sk-secretvalue"} {"b": "x"}`, wantErr: "data after the JSON object"},
		{name: "syntax error", raw: `{"a": "sk-secretvalue" "b"}`, wantErr: "invalid JSON at byte"},
		{name: "truncated", raw: `{"a": "sk-secretvalue"`, wantErr: "ends too early"},
		{name: "bare word", raw: `sk-secretvalue`, wantErr: "invalid JSON at byte"},
		{name: "latin-1", raw: "{\"pw\": \"sk-caf\xe9-secretvalue\"}", wantErr: "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFields([]byte(tt.raw))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseFields: unexpected error %q", err)
				}
				if len(got) != len(tt.want) {
					t.Fatalf("got %d fields, want %d", len(got), len(tt.want))
				}
				for k, v := range tt.want {
					if got[k] != v {
						t.Errorf("field %q: got %q, want %q", k, got[k], v)
					}
				}
				return
			}
			if err == nil {
				t.Fatalf("got %v, want error containing %q", got, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got error %q, want it to contain %q", err, tt.wantErr)
			}
			for _, leak := range []string{"secretvalue", "othervalue", "98765432"} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("error %q contains the value %q", err, leak)
				}
			}
		})
	}
}

// TestParseSourceFields: a source's document is read as the fields a
// route can use, and a field it cannot (another kind of name, a value
// that is no usable string) is left out rather than failing the whole
// document; what is left out is never named, and no error holds a value.
func TestParseSourceFields(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    map[string]string
		wantErr string
	}{
		{name: "metadata beside the credential",
			raw:  `{"client_id": "app", "client_secret": "sk-secretvalue", "Owner": "team-a", "rotated_at": 1700000000, "tags": {"env": "prod"}, "list": ["sk-othervalue"], "disabled": false, "expires": null}`,
			want: map[string]string{"client_id": "app", "client_secret": "sk-secretvalue", "Owner": "team-a"}},
		{name: "names a ref can give", raw: `{"API-Key.v2": "sk-secretvalue", "access_key_id": "AKID"}`,
			want: map[string]string{"API-Key.v2": "sk-secretvalue", "access_key_id": "AKID"}},
		{name: "names no ref can give", raw: `{"a b": "sk-secretvalue", "clé": "sk-othervalue", "` + strings.Repeat("a", 65) + `": "x", "": "y", "ok": "v"}`,
			want: map[string]string{"ok": "v"}},
		{name: "unusable strings", raw: `{"note": "", "tabbed": "sk-secret\tvalue", "ok": "v"}`, want: map[string]string{"ok": "v"}},
		{name: "multi-line field", raw: `{"private_key": "line one\nline two"}`, want: map[string]string{"private_key": "line one\nline two"}},
		{name: "nothing usable", raw: `{"rotated_at": 98765432, "Owner Name": "sk-secretvalue"}`, wantErr: "no field a route can read"},
		{name: "not an object", raw: `["sk-secretvalue"]`, wantErr: "must be a JSON object"},
		{name: "duplicate", raw: `{"a": "sk-secretvalue", "a": "sk-othervalue"}`, wantErr: `field "a" appears twice`},
		{name: "syntax error in an ignored value", raw: `{"a": "v", "n": [1, "sk-secretvalue" 2]}`, wantErr: "invalid JSON at byte"},
		{name: "trailing data", raw: `{"a": "sk-secretvalue"} {"b": "x"}`, wantErr: "data after the JSON object"},
		{name: "latin-1", raw: "{\"pw\": \"sk-caf\xe9-secretvalue\"}", wantErr: "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSourceFields([]byte(tt.raw))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseSourceFields: unexpected error %q", err)
				}
				if len(got) != len(tt.want) {
					t.Errorf("got fields %q, want %q", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(tt.want)))
				}
				for k, v := range tt.want {
					if got[k] != v {
						t.Errorf("field %q: got %q, want %q", k, got[k], v)
					}
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got error %v, want it to contain %q", err, tt.wantErr)
			}
			for _, leak := range []string{"secretvalue", "othervalue", "98765432"} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("the error holds the value %q", leak)
				}
			}
		})
	}
	// The strict reading of till secret set --json is unchanged.
	if _, err := ParseFields([]byte(`{"client_id": "app", "Owner": "team-a"}`)); err == nil {
		t.Error("ParseFields took a field name it refuses")
	}
}

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"simple", "openai", true},
		{"digits first", "1password", true},
		{"punctuation", "twilio.prod_eu-1", true},
		{"max length", strings.Repeat("a", 64), true},
		{"too long", strings.Repeat("a", 65), false},
		{"empty", "", false},
		{"upper case", "OpenAI", false},
		{"leading dot", ".hidden", false},
		{"leading dash", "-x", false},
		{"slash", "a/b", false},
		{"space", "a b", false},
		{"unicode", "clé", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidName(tt.in)
			if got := err == nil; got != tt.ok {
				t.Fatalf("ValidName(%q) = %v, want ok=%v", tt.in, err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "a-z, 0-9") {
				t.Errorf("got error %q, want it to explain the rule", err)
			}
		})
	}
}

func TestCleanPEM(t *testing.T) {
	key := "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA\n-----END PRIVATE KEY-----"
	got, err := CleanPEM([]byte(strings.ReplaceAll(key, "\n", "\r\n") + "\r\n\n"))
	if err != nil || got != key {
		t.Errorf("got %q, %v", got, err)
	}
	for _, bad := range []string{"sk-not-pem-0123456789", key + "\x07"} {
		if _, err := CleanPEM([]byte(bad)); err == nil || strings.Contains(err.Error(), "sk-not") {
			t.Errorf("CleanPEM(%q): %v", bad, err)
		}
	}
}

// FuzzParseSourceFields: a source's document never panics the reader;
// what it keeps is a field a ref can name holding a usable value, and a
// document ParseFields takes reads the same either way.
func FuzzParseSourceFields(f *testing.F) {
	for _, s := range []string{
		`{"client_id":"app","client_secret":"s","Owner":"t","rotated_at":1,"tags":{"a":[1,"x"]},"n":null}`,
		`{"Api-Key.v2":"v","a b":"w","":"x"}`, `{"a":"v","a":"w"}`, `{"a":"line\nline"}`, `[]`, `{`, `{"a":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := ParseSourceFields(raw)
		if err == nil {
			if len(got) == 0 {
				t.Fatal("no error and no fields")
			}
			for name, v := range got {
				if !ValidSourceField(name) || checkKeyMaterial(v) != nil {
					t.Fatalf("kept a field no route can read (name %q)", name)
				}
			}
		}
		strict, err := ParseFields(raw)
		if err != nil {
			return
		}
		if !maps.Equal(strict, got) {
			t.Fatalf("ParseFields read %d fields, ParseSourceFields %d", len(strict), len(got))
		}
	})
}

// TestFieldsKeepTheValueWritten: encoding/json reads a \u escape of half
// a UTF-16 surrogate pair, without its other half, as U+FFFD, so secret
// set --json stored a value other than the one written, and said nothing
// (the input is valid UTF-8, which is all that was checked). Such a field
// is refused by secret set and left out of a source's document; a whole
// pair, and an escaped backslash before a "u", are read as written.
func TestFieldsKeepTheValueWritten(t *testing.T) {
	for _, raw := range []string{`{"a": "sk-secret\ud800value"}`, `{"a": "sk-secret\uDE00value"}`, `{"a": "sk-secret\ud83d\u0041value"}`, `{"a": "sk-secretvalue\ud83d"}`} {
		if got, err := ParseFields([]byte(raw)); err == nil || !strings.Contains(err.Error(), `field "a"`) || strings.Contains(err.Error(), "secretvalue") {
			t.Errorf("ParseFields(%s) = %q, %v; want field \"a\" refused", raw, got["a"], err)
		}
		if got, err := ParseSourceFields([]byte(`{"ok": "v", ` + raw[1:])); err != nil || len(got) != 1 {
			t.Errorf("ParseSourceFields(%s) = %q, %v; want field \"a\" left out", raw, got, err)
		}
	}
	for raw, want := range map[string]string{
		`{"a": "sk-\ud83d\ude00-value"}`:   "sk-\U0001F600-value",
		`{"a": "sk-\\ud800-value"}`:        `sk-\ud800-value`,
		`{"a": "sk-\ufffd-value"}`:         "sk-\ufffd-value",
		`{"a": "sk-\u00e9\\\ud83d\ude00"}`: "sk-é\\\U0001F600",
	} {
		for _, parse := range []func([]byte) (map[string]string, error){ParseFields, ParseSourceFields} {
			if got, err := parse([]byte(raw)); err != nil || got["a"] != want {
				t.Errorf("%s: got %q, %v; want %q", raw, got["a"], err, want)
			}
		}
	}
}
