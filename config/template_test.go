package config

import (
	"fmt"
	"reflect"
	"testing"
)

func TestTemplate(t *testing.T) {
	secret := map[string]string{"": "KEY", "sid": "AC1", "token": "TOK"}
	lookup := func(f string) (string, bool) { v, ok := secret[f]; return v, ok }
	tests := []struct {
		name    string
		format  string
		want    string
		fields  []string
		wantErr string
	}{
		{"secret alone", "{secret}", "KEY", []string{""}, ""},
		{"bearer", "Bearer {secret}", "Bearer KEY", []string{""}, ""},
		{"fields", "{secret.sid}:{secret.token}", "AC1:TOK", []string{"sid", "token"}, ""},
		{"field used twice", "{secret.sid}/{secret.sid}", "AC1/AC1", []string{"sid"}, ""},
		{"literal around", "a {secret} b", "a KEY b", []string{""}, ""},
		{"printf directives are literal text", "%s %d {secret} %v", "%s %d KEY %v", []string{""}, ""},
		{"no placeholder", "static", "static", nil, ""},
		{"empty", "", "", nil, ""},
		{"missing field", "{secret.user}", "", []string{"user"}, `secret has no field "user"`},
		{"unterminated", "Bearer {secret", "", nil, "unterminated placeholder (use {secret} or {secret.FIELD})"},
		{"double brace is not an escape", "{{secret}}", "", nil, "unknown placeholder (only {secret} and {secret.FIELD} are allowed)"},
		{"env placeholder", "{env.HOME}", "", nil, "unknown placeholder (only {secret} and {secret.FIELD} are allowed)"},
		{"empty placeholder", "{}", "", nil, "unknown placeholder (only {secret} and {secret.FIELD} are allowed)"},
		{"empty field", "{secret.}", "", nil, "unknown placeholder (only {secret} and {secret.FIELD} are allowed)"},
		{"nested field", "{secret.a.b}", "", nil, "unknown placeholder (only {secret} and {secret.FIELD} are allowed)"},
		{"spaces", "{ secret }", "", nil, "unknown placeholder (only {secret} and {secret.FIELD} are allowed)"},
		{"stray close", "a}b", "", nil, `unmatched "}" (braces are only for {secret} and {secret.FIELD})`},
		{"CR LF", "Bearer {secret}\r\nX-Evil: 1", "", nil, "must not contain control characters such as CR or LF"},
		{"NUL", "a\x00b", "", nil, "must not contain control characters such as CR or LF"},
		{"tab", "a\tb", "", nil, "must not contain control characters such as CR or LF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := ParseTemplate(tt.format)
			if err == nil {
				if got := tmpl.Fields(); !reflect.DeepEqual(got, tt.fields) {
					t.Errorf("Fields: got %q, want %q", got, tt.fields)
				}
				var got string
				got, err = tmpl.Render(lookup)
				if err == nil && got != tt.want {
					t.Errorf("got %q, want %q", got, tt.want)
				}
			}
			if got := errString(err); tt.wantErr != "" && got != tt.wantErr || tt.wantErr == "" && err != nil {
				t.Errorf("error: got %q, want %q", got, tt.wantErr)
			}
		})
	}
}

// TestRenderControl checks that a secret value cannot split a header, and
// that the error does not show the value.
func TestRenderControl(t *testing.T) {
	tmpl, err := ParseTemplate("Bearer {secret}")
	if err != nil {
		t.Fatal(err)
	}
	_, err = tmpl.Render(func(string) (string, bool) { return "sk-1\r\nX-Evil: 1", true })
	if got, want := errString(err), "secret value contains a control character"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestAppendRender(t *testing.T) {
	tmpl, err := ParseTemplate("Bearer {secret}")
	if err != nil {
		t.Fatal(err)
	}
	lookup := func(string) (string, bool) { return "KEY", true }
	buf := make([]byte, 0, 64)
	allocs := testing.AllocsPerRun(100, func() {
		buf, _ = tmpl.AppendRender(buf[:0], lookup)
	})
	if got, want := string(buf), "Bearer KEY"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if allocs != 0 {
		t.Errorf("AppendRender allocated %v times, want 0", allocs)
	}
	var zero Template
	if s, err := zero.Render(lookup); s != "" || err != nil || !zero.IsZero() {
		t.Errorf("zero template: got %q %v", s, err)
	}
}

func ExampleParseTemplate() {
	// Formats know only {secret} and {secret.FIELD}; everything else,
	// "%s" included, is literal text.
	tmpl, err := ParseTemplate("Basic {secret.user}:{secret.pass}")
	if err != nil {
		fmt.Println(err)
		return
	}
	fields := map[string]string{"user": "alice", "pass": "s3cret"}
	out, err := tmpl.Render(func(field string) (string, bool) {
		v, ok := fields[field]
		return v, ok
	})
	fmt.Println(tmpl.Fields(), out, err)

	_, err = ParseTemplate("Bearer {env.TOKEN}")
	fmt.Println(err)
	// Output:
	// [user pass] Basic alice:s3cret <nil>
	// unknown placeholder (only {secret} and {secret.FIELD} are allowed)
}
