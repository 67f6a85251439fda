package source

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
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

// TestExecStderrKeptIsBounded: a helper that writes megabytes of short
// lines to stderr has only their start kept (keptStderr), so removing
// the values from it costs no more than for 8 KiB. The fetch fails as the
// helper did, and the log has the start of its stderr, the value out of
// it, cut to maxStderr. What comes past the kept start (the value folded
// across lines, a megabyte in) has no say in it: the whole stderr, up to
// a megabyte, used to be kept and searched, and so withheld.
func TestExecStderrKeptIsBounded(t *testing.T) {
	value := "sk-proj-" + strings.Repeat("Zq9/Xw+7", 5)
	script := `printf 'token=%s\n' "$V" >&2; yes a | head -c 1000000 >&2; printf %s "$V" | fold -w 16 >&2
yes a | head -c 7000000 >&2; printf '%s\n' "$V"; exit 1`
	var logs bytes.Buffer
	e := Exec{Name: "op", Command: []string{"sh", "-c", script, "helper"}, Timeout: 30 * time.Second,
		Log: zerolog.New(&logs), Env: []string{"V=" + value, "PATH=" + os.Getenv("PATH")}}
	if _, _, err := e.Fetch(context.Background(), "x"); err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("got %v, want the helper's failure", err)
	}
	var line struct{ Stderr string }
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatalf("stderr not logged: %.200s (%v)", logs.String(), err)
	}
	if !strings.HasPrefix(line.Stderr, "token=REDACTED\na\na\n") || !strings.HasSuffix(line.Stderr, "…") || len(line.Stderr) > maxStderr+len("…") {
		t.Errorf("logged %d bytes: %.40q…%q, want the start of stderr, the value out of it, cut to %d bytes", len(line.Stderr), line.Stderr, line.Stderr[max(0, len(line.Stderr)-20):], maxStderr)
	}
	if strings.Contains(line.Stderr, value[:12]) {
		t.Errorf("the log holds the value: %q", line.Stderr)
	}
	// What is kept of stderr, however much the helper writes.
	stderr := capped{max: keptStderr}
	for range 8 << 10 {
		_, _ = stderr.Write([]byte(strings.Repeat("a\n", 512)))
	}
	if n := stderr.buf.Len(); n > 2*maxStderr || !stderr.over {
		t.Errorf("kept %d bytes of 8 MiB, want at most %d, cut", n, 2*maxStderr)
	}
	// Withheld whole (a short value in it), it is not marked cut.
	if got := loggedStderr(&stderr, []byte("a\n")); got != withheld {
		t.Errorf("a short value in a cut stderr: logged %q, want %q", got, withheld)
	}
}

// TestExecStderrCutKeepsNoPartialValue: where a helper's stderr is cut
// to what is kept, a value that ran on past the cut is dropped whole,
// not logged in part: as it is, with white space inside it (folded
// across lines), or in another form (base64), after values replaced
// before it left the logged text short of maxStderr.
func TestExecStderrCutKeepsNoPartialValue(t *testing.T) {
	value := "sk-proj-" + strings.Repeat("Q7w9E3r5", 12)
	b64 := base64.StdEncoding.EncodeToString([]byte(value))
	for name, tail := range map[string]string{
		"as it is":    value,
		"folded":      regexp.MustCompile(`.{10}`).ReplaceAllString(value, "$0\n"),
		"base64":      b64,
		"folded b64":  regexp.MustCompile(`.{7}`).ReplaceAllString(b64, "$0 \n "),
		"JSON string": `{"token": "` + value + `"}`,
	} {
		for _, left := range []int{1, 7, 30, 70} {
			// Values replaced (each by REDACTED) up to the cut, where
			// left bytes of the tail are kept.
			head := strings.Repeat(value+"\n", (keptStderr-left-41)/(len(value)+1))
			head = strings.Repeat("x", keptStderr-left-len(head)-1) + "\n" + head
			stderr := capped{max: keptStderr}
			_, _ = stderr.Write([]byte(head + tail + "\nmore\n"))
			got := loggedStderr(&stderr, []byte(value+"\n"))
			if !strings.HasPrefix(got, strings.Repeat("x", 40)) || !strings.HasSuffix(got, "…") || len(got) > maxStderr+len("…") {
				t.Errorf("%s, %d bytes kept: logged %.60q, want the start of stderr, cut", name, left, got)
				continue
			}
			folded := strings.Join(strings.Fields(got), "")
			for _, part := range []string{value[:min(left, 6)], b64[:min(left, 6)]} {
				if strings.Contains(folded, part) {
					t.Errorf("%s, %d bytes kept: the log holds %q of the value: …%q", name, left, part, got[max(0, len(got)-120):])
				}
			}
		}
	}
}

// TestExecStderrHidesItsOwnCredentials: a helper that quotes on its
// stderr a credential of its own from the environment it was given (a
// shell's set -x, curl -v, aws --debug printing the headers it sends) has
// none of it logged, in any form the value is looked for in; the values
// of variables whose names say nothing of a credential stay, as do short
// ones (pass's PASSWORD_STORE_CLIP_TIME=45), which would match by chance.
func TestExecStderrHidesItsOwnCredentials(t *testing.T) {
	creds := map[string]string{
		"VAULT_TOKEN":              "hvs.CAESIHelperOwnToken0123456789",
		"AWS_SESSION_TOKEN":        "IQoJb3JpZ2luX2VjHelper/Session+Token==",
		"OP_SERVICE_ACCOUNT_TOKEN": "ops_eyJhbGciOiJFUzI1NiJ9helper",
		"PGPASSWORD":               "helper-database-password",
		"BW_SESSION":               "helper-bitwarden-session-key",
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HELPER_REGION=eu-west-1-helper-region", "PASSWORD_STORE_CLIP_TIME=45"}
	for name, v := range creds {
		env = append(env, name+"="+v)
	}
	script := `set -x
: curl -H "X-Vault-Token: $VAULT_TOKEN" -H "X-Amz-Security-Token: $AWS_SESSION_TOKEN" --region "$HELPER_REGION" --clip "$PASSWORD_STORE_CLIP_TIME"
printf 'Authorization: Basic %s\n' "$(printf 'user:%s' "$OP_SERVICE_ACCOUNT_TOKEN" | base64 | tr -d '\n')" >&2
printf '%s' "$PGPASSWORD" | od -An -v -tx1 | tr -d ' \n' >&2
printf '\nsession %s\n' "$BW_SESSION" >&2
set +x
echo sk-helper-value-0123456789`
	var logs bytes.Buffer
	e := Exec{Name: "op", Command: []string{"sh", "-c", script, "helper"}, Timeout: 5 * time.Second, Log: zerolog.New(&logs), Env: env}
	out, _, err := e.Fetch(context.Background(), "x")
	if err != nil || strings.TrimSpace(string(out)) != "sk-helper-value-0123456789" {
		t.Fatalf("fetch: %q %v", out, err)
	}
	var line struct{ Stderr string }
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil || !strings.Contains(line.Stderr, "eu-west-1-helper-region --clip 45") {
		t.Fatalf("stderr not logged, or without the helper's other settings: %s (%v)", logs.String(), err)
	}
	folded := strings.Join(strings.Fields(line.Stderr), "")
	for name, v := range creds {
		for _, f := range valueForms(v) {
			if strings.Contains(folded, f) {
				t.Errorf("the log holds %s as %q: %q", name, f, line.Stderr)
			}
		}
	}
}

// TestExecFailureHidesTheLastValue: a helper that fails after its trace
// showed the value it read (set -x: "+ key=sk-...", then a check of the
// key against its provider that fails for a moment) writes nothing to
// stdout, so nothing of this run tells the value: the value the cache
// holds for the ref, fetched before, is taken out of the logged stderr.
func TestExecFailureHidesTheLastValue(t *testing.T) {
	const value = "sk-helper-last-good-0123456789"
	mode := filepath.Join(t.TempDir(), "mode")
	if err := os.WriteFile(mode, []byte("ok"), 0o600); err != nil {
		t.Fatal(err)
	}
	script := `set -x
key=` + value + `
[ "$(cat ` + mode + `)" = ok ] || { echo "the provider refused $key" >&2; exit 1; }
set +x
echo "$key"`
	var logs bytes.Buffer
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	e := Exec{Name: "op", Command: []string{"sh", "-c", script, "helper"}, Timeout: 5 * time.Second,
		Log: zerolog.New(&logs), Env: []string{"PATH=" + os.Getenv("PATH")}}
	c := NewCache(map[string]Spec{"op": {Source: e, TTL: time.Minute, FailureTTL: time.Hour}}, Options{Now: clk.now, Log: zerolog.Nop()})
	if r, err := c.Get(context.Background(), "op:item"); err != nil {
		t.Fatal(err)
	} else if v, _ := r.Secret.Value(); v != value {
		t.Fatalf("got %q", v)
	}
	if err := os.WriteFile(mode, []byte("fail"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs.Reset()
	clk.add(2 * time.Minute)
	if r, err := c.Get(context.Background(), "op:item"); err != nil || !r.Stale {
		t.Fatalf("helper failing: got %v stale=%v, want the last value, stale", err, r.Stale)
	}
	if !strings.Contains(logs.String(), "the provider refused") {
		t.Fatalf("the failing helper's stderr was not logged: %s", logs.String())
	}
	if strings.Contains(logs.String(), value[3:11]) {
		t.Errorf("the log holds the value: %s", logs.String())
	}
}
