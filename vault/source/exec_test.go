package source

import (
	"bytes"
	"context"
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
