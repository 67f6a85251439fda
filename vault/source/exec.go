package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
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
	killGroup(cmd)
	// A helper's child that keeps stdout open must not hold the fetch
	// past the kill.
	cmd.WaitDelay = time.Second
	var stdout, stderr capped
	stdout.max, stderr.max = maxRaw, maxStderr
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if s := strings.TrimSpace(stderr.buf.String()); s != "" {
		if v := strings.TrimSpace(stdout.buf.String()); v != "" {
			s = strings.ReplaceAll(s, v, "REDACTED")
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
