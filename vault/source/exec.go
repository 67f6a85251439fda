package source

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/internal/termtext"
)

// Exec runs a credential helper (op read, gcloud secrets versions access,
// pass, a company script): Command with the ref's path appended, without a
// shell. Its stdout is the value; its stderr is logged at warn with any
// form of the value removed, and of the credentials its environment holds
// (credentialVars). The value is never put in an argument or the
// environment of anything till runs.
type Exec struct {
	// Name is the source's name, for the log.
	Name string
	// Command is the argv; the path is appended.
	Command []string
	// Timeout bounds a run; the helper's process group is killed after it.
	Timeout time.Duration
	// Log receives the helper's stderr.
	Log zerolog.Logger
	// Hides, when set, reports whether text looks like it holds a key
	// (config.TextHoldsKey): a failing helper's trace may show the key it
	// read, which a till that never had it from the helper cannot take
	// out by value. Such a stderr is withheld whole.
	Hides func(text string) bool
	// Env is the helper's environment ("NAME=value" each); nil gives it
	// none. It should hold what the helper needs and none of till's own
	// secrets (the vault passphrase).
	Env []string
}

var _ Source = Exec{}

var _ bounded = Exec{}

var _ knowing = Exec{}

// bound is how long a fetch may take: the helper's timeout, and the
// time its output is waited for once it is killed.
func (e Exec) bound() time.Duration {
	if e.Timeout <= 0 {
		return 0
	}
	return e.Timeout + waitDelay
}

// waitDelay is how long a helper's output is waited for once it has
// ended or been killed: a child it left may hold it open.
const waitDelay = time.Second

// maxStderr caps the stderr logged.
const maxStderr = 4 << 10

// keptStderr caps the stderr kept: what is logged, with room for the
// values removed from it. The rest is read and dropped, so a helper that
// writes megabytes costs no more redaction than one that writes 8 KiB.
const keptStderr = 2 * maxStderr

// Fetch runs the helper for path.
func (e Exec) Fetch(ctx context.Context, path string) ([]byte, Meta, error) {
	return e.fetchKnowing(ctx, path, nil)
}

// fetchKnowing runs the helper for path, and takes known (the values the
// ref had) out of its stderr too.
func (e Exec) fetchKnowing(ctx context.Context, path string, known []string) ([]byte, Meta, error) {
	if len(e.Command) == 0 {
		return nil, Meta{}, errors.New("exec source has no command")
	}
	if e.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, e.Timeout)
		defer cancel()
	}
	args := append(append([]string(nil), e.Command[1:]...), path)
	cmd := exec.CommandContext(ctx, e.Command[0], args...)
	cmd.Env = e.Env
	if cmd.Env == nil {
		cmd.Env = []string{} // not till's
	}
	killGroup(cmd)
	// A helper's child that keeps stdout open must not hold the fetch
	// past the kill.
	cmd.WaitDelay = waitDelay
	stdout, stderr := capped{max: maxRaw}, capped{max: keptStderr}
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	endGroup(cmd) // a helper's children do not outlive it
	if errors.Is(err, exec.ErrWaitDelay) {
		// It succeeded, and a child it left held its output open: what
		// it wrote before it ended is all there is.
		err = nil
	}
	said := loggedStderr(&stderr, stdout.buf.Bytes(), append(credentialVars(cmd.Env), known...)...)
	if said != "" && e.Hides != nil && e.Hides(said) {
		said = withheld
	}
	if said != "" {
		e.Log.Warn().Str("source", e.Name).Str("ref_path", path).Str("stderr", said).Msg("credential helper wrote to stderr")
	}
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		return nil, Meta{}, fmt.Errorf("credential helper %q did not finish within %s%s", e.Command[0], e.Timeout, helperSaid(said))
	case err != nil:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, Meta{}, fmt.Errorf("credential helper %q failed: %s%s", e.Command[0], ee.ProcessState.String(), helperSaid(said))
		}
		return nil, Meta{}, fmt.Errorf("credential helper %q: %w", e.Command[0], err)
	case stdout.over:
		return nil, Meta{}, fmt.Errorf("credential helper %q wrote more than %d bytes", e.Command[0], maxRaw)
	}
	return stdout.buf.Bytes(), Meta{}, nil
}

// helperSaid is what a failed helper said on stderr (as logged: its values
// out), as the end of its error: on one line, cut at maxMessage, for the
// commands that fetch a ref once and log nothing (check, secret list,
// test), where "exit status 1" alone would leave the cause unsaid.
func helperSaid(said string) string {
	if said == "" {
		return ""
	}
	return ": " + termtext.Escape(strings.Join(strings.Fields(said), " "), maxMessage)
}

// capped keeps the first max bytes written to it, and notes any more.
type capped struct {
	buf  bytes.Buffer
	max  int
	over bool
}

func (c *capped) Write(p []byte) (int, error) {
	room := c.max - c.buf.Len()
	if len(p) > room {
		c.over = true
		if room > 0 {
			c.buf.Write(p[:room])
		}
		return len(p), nil
	}
	return c.buf.Write(p)
}

// minRedacted is the shortest value withoutValues replaces in place; a
// shorter one would shred the message, and withholds it whole.
const minRedacted = 6

// loggedStderr is what is logged of a helper's stderr: its start, with
// every value stdout holds removed (withoutValues), and every one of
// creds, cut to maxStderr. It is cut only once the values are out of it:
// a value across the cut would no longer be found, and half of it logged.
func loggedStderr(stderr *capped, stdout []byte, creds ...string) string {
	s := strings.TrimSpace(stderr.buf.String())
	if s == "" {
		return ""
	}
	s = withoutValues(s, stdout, stderr.over, creds...)
	if len(s) > maxStderr {
		return strings.ToValidUTF8(s[:maxStderr], "") + "…"
	}
	if stderr.over && s != withheld {
		s += "…"
	}
	return s
}

// withoutValues removes from a helper's stderr s every value its stdout
// holds: the whole output, each of its lines, and each string of a JSON
// document (a ref's #FIELD, or the fields a route reads), in each form a
// helper's debug output may quote it in (see valueForms). A stderr that
// still holds one once its white space is dropped (a value cut across
// lines, as base64 and fold wrap them) is withheld whole. When s is the
// start of a longer stderr (cut), an end of it that may begin a value
// (one that went on past the cut) is dropped too. creds are removed as
// the values are.
func withoutValues(s string, stdout []byte, cut bool, creds ...string) string {
	values := append([]string{strings.TrimSpace(string(stdout))}, creds...)
	for line := range strings.Lines(string(stdout)) {
		values = append(values, strings.TrimSpace(line))
	}
	var doc any
	if json.Unmarshal(stdout, &doc) == nil {
		values = appendStrings(values, doc)
	}
	slices.Sort(values)
	values = slices.Compact(values)
	var forms, short []string
	for _, v := range values {
		if v == "" {
			continue
		}
		if len(v) < minRedacted {
			if strings.Contains(s, v) {
				return withheld
			}
			short = append(short, v)
			continue
		}
		forms = append(forms, valueForms(v)...)
	}
	if cut {
		s = s[:beforePartial(s, append(short, forms...))]
	}
	// Longest first: a value inside another is replaced with it.
	slices.SortFunc(forms, func(a, b string) int { return len(b) - len(a) })
	for _, f := range forms {
		s = strings.ReplaceAll(s, f, "REDACTED")
	}
	folded := strings.Join(strings.Fields(s), "")
	for _, f := range forms {
		if strings.Contains(folded, f) {
			return withheld
		}
	}
	return s
}

// beforePartial returns where the end of s that may begin one of forms
// starts: the longest end of s that is the start of a form, as s is or
// with its white space dropped (a value folded across lines); len(s)
// when none is. A value that ran on past a cut at len(s) is dropped from
// there whole, with whatever it overlaps.
func beforePartial(s string, forms []string) int {
	end := partialAt(s, forms)
	// As strings.Fields drops white space: bytes not valid UTF-8 stay.
	var folded []byte
	var at []int // where each byte of folded starts a rune in s
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if !unicode.IsSpace(r) {
			folded = append(folded, s[i:i+n]...)
			for range n {
				at = append(at, i)
			}
		}
		i += n
	}
	if i := partialAt(string(folded), forms); i < len(folded) {
		end = min(end, at[i])
	}
	return end
}

// partialAt returns where the longest end of s that is the start of one
// of forms starts, or len(s) when none is.
func partialAt(s string, forms []string) int {
	end := len(s)
	for _, f := range forms {
		for i := max(0, len(s)-len(f)); i < end; i++ {
			if s[i] == f[0] && strings.HasPrefix(f, s[i:]) {
				end = i
				break
			}
		}
	}
	return end
}

// withheld stands for a helper's stderr that quotes its output, or a
// credential of its own, in a way that cannot be cut out of it, or what
// looks like a key to Exec.Hides.
const withheld = "(withheld: it quotes the helper's output, its credentials or what looks like a key)"

// credentialWords are the words that name a variable holding a
// credential: VAULT_TOKEN, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
// OP_SERVICE_ACCOUNT_TOKEN, PGPASSWORD, BW_SESSION, GITHUB_AUTH.
var credentialWords = []string{"TOKEN", "SECRET", "PASS", "KEY", "CREDENTIAL", "SESSION", "AUTH", "COOKIE"}

// minCredentialVar is the shortest value of a credential variable looked
// for in a helper's stderr: a shorter one (a flag, "1") would match by
// chance, and withhold the stderr whole.
const minCredentialVar = 8

// credentialVars returns the values of env ("NAME=value" each) whose
// names hold one of credentialWords: a helper's own credentials, which
// its debug output (set -x, curl -v, aws --debug) quotes as it sends them.
func credentialVars(env []string) []string {
	var creds []string
	for _, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		upper := strings.ToUpper(name)
		if len(value) >= minCredentialVar && slices.ContainsFunc(credentialWords, func(w string) bool { return strings.Contains(upper, w) }) {
			creds = append(creds, value)
		}
	}
	return creds
}

// valueForms returns v and the forms a helper may print it in on its
// stderr: hex (lower and upper case); base64, standard and URL alphabets,
// at each byte alignment inside a longer encoded string (an Authorization:
// Basic header, a JSON document dumped as base64), of which only the
// characters that depend on v alone; percent-escaped (as a query or a path
// carries it); JSON- and Go-escaped, with "/" written "\/" too. Forms
// shorter than minRedacted are left out: they would match by chance.
func valueForms(v string) []string {
	b := []byte(v)
	forms := []string{v, hex.EncodeToString(b), strings.ToUpper(hex.EncodeToString(b)),
		url.QueryEscape(v), url.PathEscape(v), strings.ReplaceAll(v, "/", `\/`)}
	if j, err := json.Marshal(v); err == nil {
		forms = append(forms, string(j[1:len(j)-1]), strings.ReplaceAll(string(j[1:len(j)-1]), "/", `\/`))
	}
	q := strconv.Quote(v)
	forms = append(forms, q[1:len(q)-1])
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for align := range 3 {
			buf := make([]byte, align+len(b))
			copy(buf[align:], b)
			e := enc.EncodeToString(buf)
			// Character i holds bits [6i, 6i+6); v holds [8·align, 8·(align+len(v))).
			forms = append(forms, e[(8*align+5)/6:8*(align+len(b))/6])
		}
	}
	slices.Sort(forms)
	forms = slices.Compact(forms)
	return slices.DeleteFunc(forms, func(f string) bool { return len(f) < minRedacted })
}

// appendStrings appends the strings found in a decoded JSON value.
func appendStrings(out []string, v any) []string {
	switch v := v.(type) {
	case string:
		out = append(out, v)
	case []any:
		for _, e := range v {
			out = appendStrings(out, e)
		}
	case map[string]any:
		for _, e := range v {
			out = appendStrings(out, e)
		}
	}
	return out
}
