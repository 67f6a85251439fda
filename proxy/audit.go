package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// Audit record field names: part of the interface contract.
const (
	fieldTime     = "time"
	fieldEvent    = "event"
	fieldID       = "id"
	fieldMode     = "mode"
	fieldClient   = "client"
	fieldRoute    = "route"
	fieldSecret   = "secret"
	fieldKeyFP    = "key_fp"
	fieldMethod   = "method"
	fieldHost     = "host"
	fieldPath     = "path"
	fieldStatus   = "status"
	fieldBytesIn  = "bytes_in"
	fieldBytesOut = "bytes_out"
	fieldDuration = "duration_ms"
	fieldOutcome  = "outcome"
	fieldReason   = "reason"
)

// Outcomes of a request, as audited.
const (
	outcomeForwarded = "forwarded"
	outcomeDenied    = "denied"
	outcomeError     = "error"
)

// Audit writes one JSON line per request to its sink, synchronously, and
// knows whether the sink can be written. While it cannot, the gateway
// refuses new requests (invariant 8): a key use without its record is worse
// than no key use.
type Audit struct {
	w      *auditWriter
	log    zerolog.Logger
	closer io.Closer
	syncer interface{ Sync() error }
}

// auditWriter serialises writes (one Write per record, never interleaved)
// and records whether the last write succeeded.
type auditWriter struct {
	mu       sync.Mutex
	w        io.Writer
	healthy  atomic.Bool
	failures atomic.Uint64
	onError  func(err error, record []byte)
}

func (a *auditWriter) Write(p []byte) (int, error) {
	a.mu.Lock()
	n, err := a.w.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil && n > 0 {
		// A record cut short (a full disk) would run into the next one:
		// take its start back out of a file sink.
		if f, ok := a.w.(*os.File); ok {
			if st, serr := f.Stat(); serr == nil && st.Mode().IsRegular() {
				_ = f.Truncate(st.Size() - int64(n))
			}
		}
	}
	a.mu.Unlock()
	if err != nil {
		a.healthy.Store(false)
		a.failures.Add(1)
		if a.onError != nil {
			a.onError(err, bytes.TrimSpace(p))
		}
		// The failure is reported through onError and Healthy; returning
		// nil keeps zerolog from printing its own copy to stderr.
		return len(p), nil
	}
	a.healthy.Store(true)
	return n, nil
}

// NewAudit writes records to w. onError, when set, is told of each failed
// write and given the record (which holds no secret) so that the
// operational log can keep it; it must not block.
func NewAudit(w io.Writer, onError func(err error, record []byte)) *Audit {
	aw := &auditWriter{w: w, onError: onError}
	aw.healthy.Store(true)
	a := &Audit{w: aw, log: zerolog.New(aw)}
	if c, ok := w.(io.Closer); ok {
		a.closer = c
	}
	if s, ok := w.(interface{ Sync() error }); ok {
		a.syncer = s
	}
	return a
}

// OpenAudit opens the audit sink named in the config: "-" is stdout,
// anything else a file opened for appending (created with mode 0600, in a
// folder created with mode 0700 when missing).
func OpenAudit(path string, onError func(err error, record []byte)) (*Audit, error) {
	if path == "" || path == "-" {
		return NewAudit(stdout{}, onError), nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create audit folder: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit file: %w", err)
	}
	return NewAudit(f, onError), nil
}

// stdout writes to os.Stdout without closing it at shutdown.
type stdout struct{}

func (stdout) Write(p []byte) (int, error) { return os.Stdout.Write(p) }
func (stdout) Sync() error {
	err := os.Stdout.Sync()
	if errors.Is(err, os.ErrInvalid) || isNotSyncable(err) {
		return nil // a pipe or terminal has nothing to flush
	}
	return err
}

// Healthy reports whether the last record was written.
func (a *Audit) Healthy() bool { return a.w.healthy.Load() }

// Failures counts the records that could not be written.
func (a *Audit) Failures() uint64 { return a.w.failures.Load() }

// Close flushes the sink to stable storage and closes it.
func (a *Audit) Close() error {
	var errs []error
	if a.syncer != nil {
		if err := a.syncer.Sync(); err != nil && !isNotSyncable(err) {
			errs = append(errs, fmt.Errorf("sync audit sink: %w", err))
		}
	}
	if a.closer != nil {
		if err := a.closer.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close audit sink: %w", err))
		}
	}
	return errors.Join(errs...)
}

// record is what one request leaves in the audit log.
type record struct {
	start    time.Time
	id       string
	mode     string
	client   string
	route    string
	secret   string
	keyFP    string
	method   string
	host     string
	path     string
	status   int
	bytesIn  int64
	bytesOut int64
	outcome  string
	reason   string
}

// write emits the record as one JSON line, every field present.
func (a *Audit) write(r *record, end time.Time) {
	var e *zerolog.Event
	switch r.outcome {
	case outcomeForwarded:
		e = a.log.Info()
	case outcomeDenied:
		e = a.log.Warn()
	default:
		e = a.log.Error()
	}
	var tb [40]byte
	e.Bytes(fieldTime, r.start.UTC().AppendFormat(tb[:0], time.RFC3339Nano)).
		Str(fieldEvent, "request").
		Str(fieldID, r.id).
		Str(fieldMode, r.mode).
		Str(fieldClient, r.client).
		Str(fieldRoute, r.route).
		Str(fieldSecret, r.secret).
		Str(fieldKeyFP, r.keyFP).
		Str(fieldMethod, r.method).
		Str(fieldHost, r.host).
		Str(fieldPath, r.path).
		Int(fieldStatus, r.status).
		Int64(fieldBytesIn, r.bytesIn).
		Int64(fieldBytesOut, r.bytesOut).
		Float64(fieldDuration, float64(end.Sub(r.start).Microseconds())/1000).
		Str(fieldOutcome, r.outcome).
		Str(fieldReason, r.reason).
		Send()
}

// isNotSyncable reports whether err says the file (a pipe, a terminal,
// /dev/stdout) cannot be fsynced, which is not a failure of the sink.
func isNotSyncable(err error) bool {
	return errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP)
}
