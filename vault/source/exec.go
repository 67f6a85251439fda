package source

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Exec runs a credential helper (op read, gcloud secrets versions access,
// pass, a company script): Command with the ref's path appended, without a
// shell. Its stdout is the value; its stderr is logged at warn with any
// form of the value removed. The value is never put in an argument or the
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
	// Env is the helper's environment ("NAME=value" each); nil gives it
	// none. It should hold what the helper needs and none of till's own
	// secrets (the vault passphrase).
	Env []string
}

var _ Source = Exec{}

// maxStderr caps the stderr kept for the log.
const maxStderr = 4 << 10

// Fetch runs the helper for path.
func (e Exec) Fetch(ctx context.Context, path string) ([]byte, Meta, error) {
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
	cmd.WaitDelay = time.Second
	var stdout, stderr capped
	// stderr is cut to maxStderr only once the values are out of it: a
	// value across the cut would no longer be found, and half of it
	// logged.
	stdout.max, stderr.max = maxRaw, maxStderr+maxRaw
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	endGroup(cmd) // a helper's children do not outlive it
	if errors.Is(err, exec.ErrWaitDelay) {
		// It succeeded, and a child it left held its output open: what
		// it wrote before it ended is all there is.
		err = nil
	}
	if s := strings.TrimSpace(stderr.buf.String()); s != "" {
		s = withoutValues(s, stdout.buf.Bytes())
		if len(s) > maxStderr {
			s = strings.ToValidUTF8(s[:maxStderr], "") + "…"
		}
		e.Log.Warn().Str("source", e.Name).Str("ref_path", path).Str("stderr", s).Msg("credential helper wrote to stderr")
	}
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		return nil, Meta{}, fmt.Errorf("credential helper %q did not finish within %s", e.Command[0], e.Timeout)
	case err != nil:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, Meta{}, fmt.Errorf("credential helper %q failed: %s", e.Command[0], ee.ProcessState.String())
		}
		return nil, Meta{}, fmt.Errorf("credential helper %q: %w", e.Command[0], err)
	case stdout.over:
		return nil, Meta{}, fmt.Errorf("credential helper %q wrote more than %d bytes", e.Command[0], maxRaw)
	}
	return stdout.buf.Bytes(), Meta{}, nil
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

// withoutValues removes from a helper's stderr s every value its stdout
// holds: the whole output, each of its lines, and each string of a JSON
// document (a ref's #FIELD, or the fields a route reads).
func withoutValues(s string, stdout []byte) string {
	values := []string{strings.TrimSpace(string(stdout))}
	for line := range strings.Lines(string(stdout)) {
		values = append(values, strings.TrimSpace(line))
	}
	var doc any
	if json.Unmarshal(stdout, &doc) == nil {
		values = appendStrings(values, doc)
	}
	// Longest first: a value inside another is replaced with it.
	slices.SortFunc(values, func(a, b string) int { return len(b) - len(a) })
	for _, v := range values {
		if v == "" || !strings.Contains(s, v) {
			continue
		}
		if len(v) < minRedacted {
			return "(withheld: it quotes the helper's output)"
		}
		s = strings.ReplaceAll(s, v, "REDACTED")
	}
	return s
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
