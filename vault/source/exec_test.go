package source

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestExecEnv: the helper gets the environment Exec names and nothing of
// till's own (the vault passphrase) beyond it.
func TestExecEnv(t *testing.T) {
	t.Setenv("TILL_PASSPHRASE", "correct horse battery staple")
	script := `printf '%s/%s' "${TILL_PASSPHRASE:-unset}" "${HELPER_SETTING:-unset}"`
	for _, tt := range []struct {
		env  []string
		want string
	}{
		{nil, "unset/unset"},
		{[]string{"HELPER_SETTING=on"}, "unset/on"},
	} {
		e := Exec{Name: "op", Command: []string{"sh", "-c", script, "helper"}, Timeout: 5 * time.Second, Env: tt.env}
		out, _, err := e.Fetch(context.Background(), "x")
		if err != nil || string(out) != tt.want {
			t.Errorf("env %q: helper saw %q (%v), want %q", tt.env, out, err, tt.want)
		}
	}
}

// TestExecStderrCutAfterRedaction: a value that crosses the point where
// the logged stderr is cut is still removed whole: none of it is logged.
func TestExecStderrCutAfterRedaction(t *testing.T) {
	value := "sk-proj-" + strings.Repeat("A1b2C3d4", 12)
	var logs bytes.Buffer
	script := `head -c 4050 /dev/zero | tr '\0' x >&2; printf 'token=%s\n' "$V" >&2; printf '%s\n' "$V"`
	e := Exec{Name: "op", Command: []string{"sh", "-c", script, "helper"}, Timeout: 5 * time.Second,
		Log: zerolog.New(&logs), Env: []string{"V=" + value, "PATH=" + os.Getenv("PATH")}}
	out, _, err := e.Fetch(context.Background(), "x")
	if err != nil || strings.TrimSpace(string(out)) != value {
		t.Fatalf("fetch: %q %v", out, err)
	}
	if !strings.Contains(logs.String(), "credential helper wrote to stderr") {
		t.Fatalf("stderr not logged: %s", logs.String())
	}
	if strings.Contains(logs.String(), value[:8]+"A1b2") {
		t.Errorf("the log holds part of the value: %s", logs.String()[4000:])
	}
}

// TestExecStderrHidesEncodedValue: a helper that quotes the value on its
// stderr in another form (base64, as a debug dump or inside an
// Authorization header it logs; hex; JSON-escaped; percent-escaped; cut
// across lines by base64's or fold's wrapping) has none of it logged.
// Only the value as printed, and each line of it, used to be removed, so
// these forms went into till's log whole.
func TestExecStderrHidesEncodedValue(t *testing.T) {
	value := "sk-proj-" + strings.Repeat("Zq9/Xw+7", 5)
	long := "sk-proj-" + strings.Repeat("Lm4/Np+2", 12)
	b64 := base64.StdEncoding.EncodeToString
	tests := []struct {
		name, value, script string
		betray              []string // what the stderr held, that must not be logged
	}{
		{"base64", value, `printf %s "$V" | base64 >&2`, []string{b64([]byte(value))}},
		{"base64 url", value, `printf 'dump %s\n' "$B" >&2`, []string{base64.RawURLEncoding.EncodeToString([]byte(value))}},
		{"base64 at an offset", value, `printf 'Authorization: Basic %s\n' "$(printf 'user:%s' "$V" | base64 | tr -d '\n')" >&2`,
			[]string{b64([]byte("user:" + value))[8:56]}},
		{"hex", value, `printf %s "$V" | od -An -v -tx1 | tr -d ' \n' >&2`, []string{hex.EncodeToString([]byte(value))}},
		{"json escaped", value, `printf '{"token":"%s"}\n' "$(printf %s "$V" | sed 's#/#\\/#g')" >&2`, []string{strings.ReplaceAll(value, "/", `\/`)}},
		{"percent escaped", value, `printf 'GET /v1?key=%s\n' "$Q" >&2`, []string{url.QueryEscape(value)}},
		{"split across lines", value, `printf %s "$V" | fold -w 16 >&2`, []string{value}},
		{"base64 wrapped", long, `printf %s "$V" | base64 >&2`, []string{b64([]byte(long))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			e := Exec{Name: "op", Command: []string{"sh", "-c", tt.script + `; printf '%s\n' "$V"`, "helper"}, Timeout: 5 * time.Second,
				Log: zerolog.New(&logs), Env: []string{"V=" + tt.value, "B=" + base64.RawURLEncoding.EncodeToString([]byte(tt.value)),
					"Q=" + url.QueryEscape(tt.value), "PATH=" + os.Getenv("PATH")}}
			out, _, err := e.Fetch(context.Background(), "x")
			if err != nil || strings.TrimSpace(string(out)) != tt.value {
				t.Fatalf("fetch: %q %v", out, err)
			}
			var line struct{ Stderr string }
			if err := json.Unmarshal(logs.Bytes(), &line); err != nil || line.Stderr == "" {
				t.Fatalf("stderr not logged: %s (%v)", logs.String(), err)
			}
			folded := strings.Join(strings.Fields(line.Stderr), "")
			for _, b := range tt.betray {
				if strings.Contains(folded, b) {
					t.Errorf("the log holds the value as %q: %q", b, line.Stderr)
				}
			}
		})
	}
}
