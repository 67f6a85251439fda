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

// Audit writes one JSON line per request to its sink, synchronously (and
// one per resend of a key, see writeUse), and knows whether the sink can
// be written. While it cannot, the gateway
// refuses new requests (invariant 8): a key use without its record is worse
// than no key use.
type Audit struct {
	w   *auditWriter
	log zerolog.Logger
}

// maxPending bounds the records kept for a late write while the sink
// fails; each is in the operational log too (see NewAudit).
const maxPending = 1024

// auditRetryInterval is how often the records kept while the sink fails
// are tried again: the sink, and so readiness, comes back by itself once
// it can be written, without a request to prompt it. A variable for tests.
var auditRetryInterval = 250 * time.Millisecond

// auditWriter serialises writes (one Write per record, never interleaved),
// keeps the records it could not write and retries them in the background,
// oldest first, until the sink takes them.
type auditWriter struct {
	mu       sync.Mutex
	w        io.Writer
	every    time.Duration // auditRetryInterval, when it was made
	pending  [][]byte      // records not written yet, oldest first
	retrying bool          // the retry loop runs
	closed   bool
	healthy  atomic.Bool // nothing is pending
	failures atomic.Uint64
	onError  func(err error, record []byte)
}

func (a *auditWriter) Write(p []byte) (int, error) {
	a.mu.Lock()
	// Records kept from a failure go first, so the sink keeps their order.
	err := a.flush()
	if err == nil {
		err = a.put(p)
	}
	if err == nil {
		a.healthy.Store(true)
		a.mu.Unlock()
		return len(p), nil
	}
	a.healthy.Store(false)
	a.failures.Add(1)
	if len(a.pending) < maxPending {
		a.pending = append(a.pending, bytes.Clone(p)) // zerolog reuses p
	}
	if !a.retrying && !a.closed {
		a.retrying = true
		go a.retry()
	}
	a.mu.Unlock()
	if a.onError != nil {
		a.onError(err, bytes.TrimSpace(p))
	}
	// The failure is reported through onError and Healthy; returning nil
	// keeps zerolog from printing its own copy to stderr.
	return len(p), nil
}

// put writes one record to the sink.
func (a *auditWriter) put(p []byte) error {
	n, err := a.w.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	return err
}

// flush writes the pending records, and stops at the first that fails.
func (a *auditWriter) flush() error {
	for len(a.pending) > 0 {
		if err := a.put(a.pending[0]); err != nil {
			return err
		}
		a.pending[0] = nil
		a.pending = a.pending[1:]
	}
	a.pending = nil
	return nil
}

// retry writes the pending records every auditRetryInterval until they are
// all written, which makes the sink healthy again.
func (a *auditWriter) retry() {
	t := time.NewTicker(a.every)
	defer t.Stop()
	for range t.C {
		a.mu.Lock()
		done := a.closed || a.flush() == nil
		if done {
			a.retrying = false
			if !a.closed {
				a.healthy.Store(true)
			}
		}
		a.mu.Unlock()
		if done {
			return
		}
	}
}

// NewAudit writes records to w. onError, when set, is told of each failed
// write and given the record (which holds no secret) so that the
// operational log can keep it; it must not block. Up to maxPending failed
// records are also kept and written late, in order, once w takes writes
// again.
func NewAudit(w io.Writer, onError func(err error, record []byte)) *Audit {
	aw := &auditWriter{w: w, every: auditRetryInterval, onError: onError}
	aw.healthy.Store(true)
	return &Audit{w: aw, log: zerolog.New(aw)}
}

// OpenAudit opens the audit sink named in the config: "-" is stdout,
// anything else a file opened for appending (created with mode 0600, in a
// folder created with mode 0700 when missing), which is followed when it
// is removed or renamed (see auditFile).
func OpenAudit(path string, onError func(err error, record []byte)) (*Audit, error) {
	if path == "" || path == "-" {
		return NewAudit(stdout{}, onError), nil
	}
	af := &auditFile{path: path}
	if err := af.open(); err != nil {
		return nil, err
	}
	return NewAudit(af, onError), nil
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

// auditFile is the audit file at path, written through f. After each
// record it checks, with one stat, that the path still names f: a file
// that was removed (rm) is replaced by a new one at the path, into which
// the record is written again, since nobody can read the old one; a record
// written into a file that was renamed (logrotate) stays there, where it
// can be read, and the next go to a new file at the path.
type auditFile struct {
	path string
	f    *os.File
	id   os.FileInfo // f's, for os.SameFile
}

// open opens a file at the path in place of f, which it closes; on error
// f stays open.
func (af *auditFile) open() error {
	if err := os.MkdirAll(filepath.Dir(af.path), 0o700); err != nil {
		return fmt.Errorf("create audit folder: %w", err)
	}
	f, err := os.OpenFile(af.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open audit file: %w", err)
	}
	id, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open audit file: %w", err)
	}
	if af.f != nil {
		af.f.Close()
	}
	af.f, af.id = f, id
	return nil
}

func (af *auditFile) Write(p []byte) (int, error) {
	if err := af.append(p); err != nil {
		return 0, err
	}
	if st, err := os.Stat(af.path); err == nil && os.SameFile(st, af.id) {
		return len(p), nil
	}
	removed := unlinked(af.f)
	if err := af.open(); err != nil || !removed {
		// A renamed file holds the record; the next write tries the
		// path again. A removed one does not: the write failed.
		if removed {
			return 0, err
		}
		return len(p), nil
	}
	if err := af.append(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// append writes one record to f. A record cut short (a full disk) would
// run into the next one: its start is taken back out.
func (af *auditFile) append(p []byte) error {
	n, err := af.f.Write(p)
	if err != nil && n > 0 {
		if st, serr := af.f.Stat(); serr == nil {
			_ = af.f.Truncate(st.Size() - int64(n))
		}
	}
	return err
}

func (af *auditFile) Sync() error  { return af.f.Sync() }
func (af *auditFile) Close() error { return af.f.Close() }

// Reopen opens the audit file at its path anew, for rotation schemes that
// move the file and then signal (SIGUSR1): the next record goes to the new
// file. On error the file open so far stays in use. Reopen does nothing
// when the sink is not a file.
func (a *Audit) Reopen() error {
	a.w.mu.Lock()
	defer a.w.mu.Unlock()
	if af, ok := a.w.w.(*auditFile); ok {
		return af.open()
	}
	return nil
}

// Healthy reports whether the sink takes records: the last write
// succeeded, and no failed record waits to be written.
func (a *Audit) Healthy() bool { return a.w.healthy.Load() }

// Failures counts the records that could not be written when due.
func (a *Audit) Failures() uint64 { return a.w.failures.Load() }

// Close makes a last try at the pending records, flushes the sink to
// stable storage and closes it.
func (a *Audit) Close() error {
	a.w.mu.Lock()
	defer a.w.mu.Unlock()
	a.w.closed = true
	_ = a.w.flush() // what fails here is in the operational log already
	var errs []error
	if s, ok := a.w.w.(interface{ Sync() error }); ok {
		if err := s.Sync(); err != nil && !isNotSyncable(err) {
			errs = append(errs, fmt.Errorf("sync audit sink: %w", err))
		}
	}
	if c, ok := a.w.w.(io.Closer); ok {
		if err := c.Close(); err != nil {
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
		Func(r.keyUse).
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

// keyUse adds the fields that say who used which key for what: they are
// in both kinds of record, request and use.
func (r *record) keyUse(e *zerolog.Event) {
	e.Str(fieldClient, r.client).
		Str(fieldRoute, r.route).
		Str(fieldSecret, r.secret).
		Str(fieldKeyFP, r.keyFP).
		Str(fieldMethod, r.method).
		Str(fieldHost, r.host).
		Str(fieldPath, r.path)
}
