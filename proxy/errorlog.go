package proxy

import (
	"log"
	"strings"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/internal/termtext"
)

// NewErrorLog returns the error log for an HTTP server or a ReverseProxy
// (their ErrorLog): each line is one event of logger, with the component,
// levelled so that --log-level applies to it: a failed TLS handshake
// (every TCP probe or port scan of a TLS listener makes one) at debug,
// anything else at warn. The lines are net/http's, not till's, and quote
// what a network peer sent (a TLS server name, an HTTP/2 preface): the
// message is made safe first (see foreignText).
func NewErrorLog(logger zerolog.Logger, component string) *log.Logger {
	return log.New(leveledLines{logger.With().Str("component", component).Logger()}, "", 0)
}

// leveledLines logs each line written to it as one event.
type leveledLines struct{ log zerolog.Logger }

func (l leveledLines) Write(p []byte) (int, error) {
	msg := strings.TrimSuffix(string(p), "\n")
	ev := l.log.Warn()
	if strings.HasPrefix(msg, "http: TLS handshake error") {
		ev = l.log.Debug()
	}
	ev.Msg(foreignText(msg))
	return len(p), nil
}

// maxForeignText caps a message from another library's log: a TLS
// server name alone may be 64 KiB.
const maxForeignText = 1024

// foreignText makes a message that is not till's own (a library's log
// line, which may quote a network peer) safe as a log line's message in
// every format: zerolog escapes it in JSON, but its console writer prints
// the message as it is, so a newline would forge a line and an escape
// sequence would run on the operator's terminal. Control characters,
// other invisible runes (bidi overrides, line separators), backslashes
// and invalid UTF-8 are written as Go escapes (\n, \x1b, \u202e, \\), so
// a printable message is unchanged; the result is cut at maxForeignText
// bytes, marked with "…".
func foreignText(s string) string {
	return termtext.Escape(strings.ReplaceAll(s, `\`, `\\`), maxForeignText)
}
