package main

import (
	"cmp"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/internal/termtext"
)

// logFlags are the global flags --log-level and --log-format; "" when not
// given.
type logFlags struct{ level, format string }

// globalFlags takes the global flags --log-level and --log-format out of
// args, wherever they stand before a "--" (till --log-level debug serve,
// till serve --log-level debug), and returns the other arguments in order.
// Either spelling is taken: -log-level or --log-level, with the value
// after "=" or in the next argument.
func globalFlags(args []string) ([]string, logFlags, error) {
	var lf logFlags
	rest := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(rest, args[i:]...), lf, nil
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		var allowed []string
		var dst *string
		switch {
		case !strings.HasPrefix(a, "-"):
		case name == "log-level":
			allowed, dst = config.LogLevels, &lf.level
		case name == "log-format":
			allowed, dst = config.LogFormats, &lf.format
		}
		if dst == nil {
			rest = append(rest, a)
			continue
		}
		want := strings.Join(allowed[:len(allowed)-1], ", ") + " or " + allowed[len(allowed)-1]
		if !hasValue {
			if i+1 == len(args) {
				return nil, lf, usageError{fmt.Sprintf("--%s needs a value: %s", name, want)}
			}
			i++
			value = args[i]
		}
		if !slices.Contains(allowed, value) {
			// The value is not echoed: it could be a key pasted in the
			// wrong place.
			return nil, lf, usageError{fmt.Sprintf("--%s must be %s", name, want)}
		}
		*dst = value
	}
	return rest, lf, nil
}

// logOutput is the operational log's writer: stderr, as JSON lines or as
// readable console lines, from a least level on. The audit records never
// go through it. Level and format can change while till runs (a reload
// applies the config's log:), so the logger itself logs every level and
// logOutput drops what is below the level: an event below it is encoded
// before it is dropped, which is why the request path logs nothing at
// debug level.
type logOutput struct {
	flags    logFlags // win over the config
	terminal bool     // stderr is a terminal
	json     io.Writer
	console  io.Writer
	level    atomic.Int32 // a zerolog.Level
	pretty   atomic.Bool  // write console lines
}

// newLogOutput returns the log writer on e.stderr, set from the global
// flags and, until apply is called with a config's, the default settings.
// Console lines are coloured only on a terminal, and never when NO_COLOR
// is set to anything (https://no-color.org).
func newLogOutput(e *env) *logOutput {
	o := &logOutput{flags: e.log, terminal: isTerminal(e.stderr), json: e.stderr}
	timeFormat := time.RFC3339
	if o.terminal {
		timeFormat = time.TimeOnly
	}
	o.console = zerolog.ConsoleWriter{
		Out:        escapedLines{e.stderr},
		NoColor:    !o.terminal || e.getenv("NO_COLOR") != "",
		TimeFormat: timeFormat,
	}
	o.apply(config.Log{})
	return o
}

// apply takes the level and format from c where no flag set them. An
// empty format is console on a terminal, JSON otherwise.
func (o *logOutput) apply(c config.Log) {
	level, err := zerolog.ParseLevel(cmp.Or(o.flags.level, c.Level, config.DefaultLogLevel))
	if err != nil {
		level = zerolog.InfoLevel // the flags and the config are checked already
	}
	o.level.Store(int32(level))
	format := cmp.Or(o.flags.format, c.Format)
	o.pretty.Store(format == "console" || format == "" && o.terminal)
}

// Level is the least level written.
func (o *logOutput) Level() zerolog.Level { return zerolog.Level(o.level.Load()) }

// Write writes an event without a level, whatever the level. till's
// loggers give every event one (net/http's error logs go through
// proxy.NewErrorLog), so that the level applies to all. A JSON line may
// quote what a request sent (the host a proxied one asked for, in a
// lookup error too), and zerolog writes C1 controls and bidi overrides
// as they are: they are escaped (console lines by escapedLines).
func (o *logOutput) Write(p []byte) (int, error) {
	if o.pretty.Load() {
		return o.console.Write(p)
	}
	if _, err := o.json.Write(termtext.JSON(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// escapedLines writes console lines with every rune a terminal acts on
// rather than prints (DEL, C1 controls, bidi overrides) as a \uXXXX
// escape. The console writer quotes a string field itself, but decodes a
// nested value (the record a failing audit sink could not take, a list
// certmagic logs) and encodes it again as JSON, which writes those runes
// as they are, the escapes the record was written with undone.
type escapedLines struct{ w io.Writer }

func (e escapedLines) Write(p []byte) (int, error) {
	if _, err := e.w.Write(termtext.JSON(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteLevel writes an event of level l unless l is below the level.
func (o *logOutput) WriteLevel(l zerolog.Level, p []byte) (int, error) {
	if l != zerolog.NoLevel && l < o.Level() {
		return len(p), nil
	}
	return o.Write(p)
}

// logger returns a logger that writes through o.
func (o *logOutput) logger() zerolog.Logger {
	return zerolog.New(o).Level(zerolog.DebugLevel).With().Timestamp().Logger()
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
