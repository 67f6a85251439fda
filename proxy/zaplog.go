package proxy

import (
	"slices"
	"strings"

	"github.com/rs/zerolog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// NewZapLogger returns a zap logger that writes into log, for the libraries
// that log through zap: certmagic, and the ACME client under it, whose
// issuance, renewal and ACME errors an operator needs to see in till's log.
// level, when not nil, is the least level passed on, read at each entry so
// that a reload can change it; nil means log's own level. Those libraries
// log names, dates and storage paths, never key material; the entries go
// to the operational log, never to the audit sink.
func NewZapLogger(log zerolog.Logger, level func() zerolog.Level) *zap.Logger {
	return zap.New(&zapCore{log: log, level: level})
}

// zapCore is a zapcore.Core that writes each entry as a zerolog event.
type zapCore struct {
	log    zerolog.Logger
	level  func() zerolog.Level
	fields []zapcore.Field // from With
}

var _ zapcore.Core = (*zapCore)(nil)

// zerologLevel maps a zap level to zerolog's. DPanic, Panic and Fatal are
// logged as errors: whether they panic or exit is zap's to decide, after
// the write.
func zerologLevel(l zapcore.Level) zerolog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return zerolog.DebugLevel
	case l == zapcore.InfoLevel:
		return zerolog.InfoLevel
	case l == zapcore.WarnLevel:
		return zerolog.WarnLevel
	}
	return zerolog.ErrorLevel
}

func (c *zapCore) Enabled(l zapcore.Level) bool {
	min := max(c.log.GetLevel(), zerolog.GlobalLevel())
	if c.level != nil {
		min = max(min, c.level())
	}
	return zerologLevel(l) >= min
}

func (c *zapCore) With(fields []zapcore.Field) zapcore.Core {
	return &zapCore{log: c.log, level: c.level, fields: append(slices.Clip(c.fields), fields...)}
}

func (c *zapCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *zapCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	ev := c.log.WithLevel(zerologLevel(e.Level))
	// A child of an unnamed logger is named ".child" (zapslog).
	if name := strings.TrimPrefix(e.LoggerName, "."); name != "" {
		ev = ev.Str("logger", name)
	}
	ev.Fields(enc.Fields).Msg(foreignText(e.Message))
	return nil
}

func (c *zapCore) Sync() error { return nil }
