package audit

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tillgw/till/internal/termtext"
)

// Fsync settings: when records are flushed to stable storage.
const (
	// FsyncNone leaves it to the system (a power loss can lose what its
	// cache held, tens of seconds).
	FsyncNone = "none"
	// FsyncInterval flushes once a second: at most a second of records is
	// at risk on power loss.
	FsyncInterval = "interval"
	// FsyncAlways flushes after every record, before the key it records
	// is used.
	FsyncAlways = "always"
)

// Options configure a Sink.
type Options struct {
	// Path is the audit file; "" or "-" is stdout.
	Path string
	// Fsync is FsyncNone, FsyncInterval (the default when "") or
	// FsyncAlways.
	Fsync string
	// MaxSize, when positive, rotates the file before a record would make
	// it larger: it becomes Path.1, Path.1 becomes Path.2, and so on.
	MaxSize int64
	// MaxFiles is how many rotated files are kept (the oldest beyond are
	// removed); at least 1 when MaxSize is set.
	MaxFiles int
	// Signer, when set, signs a checkpoint record every
	// CheckpointRecords records or CheckpointInterval.
	Signer ed25519.PrivateKey
	// OnError, when set, is told of each record that could not be
	// written, with the record (which holds no secret; escaped as the
	// trail's lines are, see termtext.JSON), so that the operational
	// log can keep it. It must not block.
	OnError func(err error, record []byte)
	// Log, when set, is told what the sink repaired on its own, and of
	// a setting it cannot honour.
	Log func(msg string)
}

// Checkpoint frequency: a checkpoint follows this many records, or this
// much time after a record that none covers yet. Variables for tests.
var (
	CheckpointRecords  = 1000
	CheckpointInterval = 60 * time.Second
)

// maxPending bounds the records kept for a late write while the sink
// fails; each is in the operational log too (see Options.OnError).
const maxPending = 1024

// Timing of the background work. Variables for tests.
var (
	retryInterval = 250 * time.Millisecond // records kept after a failure are tried again
	tickInterval  = time.Second            // interval fsync, checkpoint timer
)

// Sink writes audit records, one JSON line each, in order, never
// interleaved, each stamped with the hash chain (seq, prev) of the file
// it lands in. It knows whether it can be written: while it cannot, the
// gateway uses no key, since a key use without its record is worse than
// no key use.
type Sink struct {
	mu       sync.Mutex
	w        io.Writer
	file     *file // w, when the sink is a file
	opts     Options
	chain    chain
	line     []byte   // the record being written, stamped
	pending  [][]byte // records kept from a failure, oldest first
	retrying bool     // the retry loop runs
	refusing bool     // probe found the file refusing writes or its disk full: unhealthy until probe finds otherwise
	closed   bool
	dirty    bool // written since the last fsync
	unsynced bool // an fsync failed (fsync: interval): no record is taken until one succeeds
	unsigned int  // records since the last checkpoint
	lastSign time.Time
	healthy  atomic.Bool // nothing is pending
	failures atomic.Uint64
	stop     chan struct{}
	stopped  chan struct{}
	stopOnce sync.Once
}

// Open opens the sink named in o.Path: stdout, or a file opened for
// appending (created with mode 0600, in a folder created with mode 0700),
// whose chain goes on from its last record, or from the last one of the
// newest rotated file when it is new. The file is followed: one removed
// or renamed under till is replaced by a new one at the path.
func Open(o Options) (*Sink, error) {
	if o.Path == "" || o.Path == "-" {
		if o.Fsync == FsyncAlways && o.Log != nil {
			if st, err := os.Stdout.Stat(); err == nil && !st.Mode().IsRegular() {
				o.Log("audit.fsync: always cannot flush stdout to disk (a pipe, socket or terminal): records are as durable as whatever reads them makes them; set audit.file to keep them on till's own disk")
			}
		}
		return New(stdout{}, o), nil
	}
	af := &file{path: o.Path, maxSize: o.MaxSize, maxFiles: max(o.MaxFiles, 1), syncFolder: o.Fsync == FsyncAlways}
	last, cut, err := af.open()
	if err != nil {
		return nil, err
	}
	s := &Sink{file: af}
	s.start(o)
	s.repaired(af.path, cut)
	if last != nil {
		s.chain.resume(last)
	} else if name, prev, cut := af.predecessor(); prev != nil {
		s.repaired(filepath.Join(filepath.Dir(af.path), name), cut)
		s.chain.link(prev)
		s.chain.restart(name)
		last = prev
	}
	if o.Signer != nil && last != nil && !isCheckpoint(last) {
		// Records a crash left after the last checkpoint are signed
		// first: no more than CheckpointRecords ever wait for one. So
		// are any others found there (a till that did not sign wrote
		// them, or whoever removed the checkpoints after them rewrote
		// them): Verify refuses a checkpoint that follows more records
		// than till leaves unsigned.
		s.mu.Lock()
		s.signNow()
		s.mu.Unlock()
	}
	// A disk full before till started makes the sink unhealthy now, so
	// that readiness says so before a request finds out.
	s.mu.Lock()
	refused := s.probeWrite()
	s.mu.Unlock()
	if refused != nil && s.opts.OnError != nil {
		s.opts.OnError(refused, nil)
	}
	return s, nil
}

// isCheckpoint reports whether line is a checkpoint record.
func isCheckpoint(line []byte) bool {
	var r chained
	return json.Unmarshal(line, &r) == nil && r.Event == "checkpoint"
}

// New returns a sink that writes records to w, as a stream whose chain
// starts with the first record.
func New(w io.Writer, o Options) *Sink {
	s := &Sink{w: w}
	s.start(o)
	return s
}

// start readies a new sink, and its background work when it has any.
func (s *Sink) start(o Options) {
	if o.Fsync == "" {
		o.Fsync = FsyncInterval
	}
	s.opts, s.lastSign = o, time.Now()
	s.healthy.Store(true)
	if s.file != nil || o.Fsync == FsyncInterval && s.syncer() != nil || o.Signer != nil {
		s.stop, s.stopped = make(chan struct{}), make(chan struct{})
		// The intervals are read here, once: a sink keeps those it
		// opened with.
		go s.tick(tickInterval, CheckpointInterval)
	}
}

// Write writes the record p (one JSON object and a newline). A record
// that cannot be written is reported (OnError, Healthy) and kept, to be
// written later, in order, once the sink takes writes again: it records
// something that happened. Write never returns an error, which keeps
// zerolog from printing its own copy.
func (s *Sink) Write(p []byte) (int, error) {
	s.append(p, true)
	return len(p), nil
}

// WriteNow writes the record p now, or not at all, and reports which: it
// records a key use that is about to happen, and happens only if it was
// written.
func (s *Sink) WriteNow(p []byte) bool { return s.append(p, false) }

func (s *Sink) append(p []byte, keep bool) bool {
	s.mu.Lock()
	// Records kept from a failure go first, so the sink keeps their order.
	err := s.flush()
	if err == nil {
		err = s.put(p)
	}
	if err == nil {
		s.recovered()
		s.mu.Unlock()
		return true
	}
	s.healthy.Store(false)
	s.failures.Add(1)
	if keep && len(s.pending) < maxPending && !errors.Is(err, errUnsynced) {
		s.pending = append(s.pending, bytes.Clone(p)) // zerolog reuses p
	}
	if !s.retrying && !s.closed {
		s.retrying = true
		go s.retry()
	}
	s.mu.Unlock()
	if s.opts.OnError != nil {
		s.opts.OnError(err, termtext.JSON(bytes.TrimSpace(p)))
	}
	return false
}

// errUnsynced says a record was written but could not be flushed to
// stable storage (fsync: always): it is not written again.
var errUnsynced = errors.New("audit record written but not flushed to disk")

// errEarlierUnsynced is the errUnsynced of a record written before the
// record at hand (a kept record, or the checkpoint that ends a file
// before it is rotated): the record at hand was not written, and is kept
// in turn.
type errEarlierUnsynced struct{ err error }

func (e errEarlierUnsynced) Error() string { return e.err.Error() }

// put writes one record (nil: a checkpoint) and moves the chain past it.
func (s *Sink) put(raw []byte) error {
	for removed := 0; ; removed++ {
		rec := raw
		if rec == nil {
			rec = s.checkpoint()
		}
		s.line = s.chain.stamp(s.line[:0], rec)
		// A checkpoint never waits for a new file: it signs the records
		// of the one they are in, which may grow past max_size by it.
		if raw != nil && s.file != nil && s.file.full(len(s.line)) {
			if s.opts.Signer != nil && s.unsigned > 0 {
				// A signed file ends in a checkpoint before it is
				// rotated, so that it verifies on its own. One written
				// but not flushed is not written again; raw, not written
				// at all, is kept (errEarlierUnsynced), not taken for
				// written.
				err := s.put(nil)
				if err == nil || errors.Is(err, errUnsynced) {
					s.unsigned, s.lastSign = 0, time.Now()
				}
				if errors.Is(err, errUnsynced) {
					return errEarlierUnsynced{err}
				}
				if err != nil {
					return err
				}
				continue
			}
			if err := s.file.rotate(); err != nil {
				return err
			}
			s.chain.restart(filepath.Base(s.file.rotated(1)))
			continue
		}
		if err := s.write(s.line); err != nil {
			return err
		}
		if s.file == nil {
			s.chain.commit(s.line)
			break
		}
		st := s.file.check()
		if st.cut {
			// Emptied in place: what it held is in a copy, which the
			// record just written chains to; it is taken back out and
			// written again as the first of a new file.
			if err := s.file.takeBack(st.size, len(s.line)); err != nil {
				return err
			}
			s.chain.restart("")
			if removed > 0 {
				return errors.New("the audit file was emptied again while a record was written")
			}
			continue
		}
		moved, gone := st.moved, st.removed
		if !gone {
			s.chain.commit(s.line)
		}
		if !moved {
			break
		}
		if !gone && s.opts.Fsync != FsyncNone {
			// The record is in the renamed file, which is left: it is
			// flushed there first, as a file till rotates is, and as
			// the file at the path would be (before its key goes, with
			// fsync: always).
			if err := s.sync(); err != nil {
				s.unsynced = s.opts.Fsync == FsyncInterval
				return fmt.Errorf("%w: %w", errUnsynced, err)
			}
		}
		// A renamed file holds the record, and the next go to a new
		// file at the path; a removed one does not: it is written again
		// there, as the first of its chain.
		name := s.file.name()
		if err := s.reopen(name); err != nil || !gone {
			if gone {
				return err
			}
			break
		}
		if removed > 0 {
			return errors.New("the audit file was removed again while a record was written")
		}
	}
	s.dirty = true
	if raw != nil && s.opts.Signer != nil {
		s.unsigned++
	}
	if s.opts.Fsync == FsyncAlways {
		if err := s.sync(); err != nil {
			return fmt.Errorf("%w: %w", errUnsynced, err)
		}
	}
	if raw != nil && s.opts.Signer != nil && s.unsigned >= CheckpointRecords {
		s.signNow()
	}
	return nil
}

// write writes one stamped line.
func (s *Sink) write(line []byte) error {
	if s.file != nil {
		return s.file.append(line)
	}
	n, err := s.w.Write(line)
	if err == nil && n < len(line) {
		err = io.ErrShortWrite
	}
	return err
}

// reopen opens the file at the path anew, after the one named prevName.
func (s *Sink) reopen(prevName string) error {
	last, cut, err := s.file.open()
	if err != nil {
		return err
	}
	s.repaired(s.file.path, cut)
	switch {
	case last == nil:
		s.chain.restart(prevName)
	case s.chain.hasPrev && !s.chain.follows(last):
		// A file put at the path with records till did not write last
		// (a copy rewritten and swapped in, so that till's next
		// checkpoint would sign it): till knows the record it wrote
		// last, and goes on from it, not from the file, so that verify
		// shows where the two meet.
		s.chain.renumber(last)
		if s.opts.Log != nil {
			s.opts.Log(fmt.Sprintf("the audit file now at %s does not end in the record till wrote last (it was replaced): "+
				"till's records chain on from its own, and verify will show where they meet the file's", s.file.path))
		}
	default:
		s.chain.resume(last)
	}
	return nil
}

// repaired reports cut, what was removed from the end of the file at
// path: a record a crash cut short, which is no record. Whether its key
// went depends on the record's event, when what is left names it.
func (s *Sink) repaired(path string, cut []byte) {
	if len(cut) == 0 || s.opts.Log == nil {
		return
	}
	msg := fmt.Sprintf("removed a record cut short by a crash (%d bytes) from the end of %s", len(cut), path)
	switch {
	case bytes.Contains(cut, []byte(`"event":"use"`)) && s.opts.Fsync == FsyncAlways:
		msg += "; a use record: its key was never sent (a key goes only once its use record is written and flushed)"
	case bytes.Contains(cut, []byte(`"event":"use"`)):
		// A key goes once its use record is written, before it is
		// flushed: a power loss can cut one whose key went.
		msg += "; a use record: its key was not sent, unless the machine lost power (audit.fsync: " + s.opts.Fsync +
			" lets a record reach the disk after its key goes)"
	case bytes.Contains(cut, []byte(`"event":"request"`)):
		msg += "; a request record: the use record of its key stands before it"
	}
	s.opts.Log(msg)
}

// flush writes the pending records, and stops at the first that fails.
// After an fsync failed (unsynced), it first flushes the file, and fails
// while that fails: the records the failed fsync was to flush may be
// lost, and no key is used while the next ones could be too.
func (s *Sink) flush() error {
	if s.unsynced {
		if err := s.sync(); err != nil {
			return errEarlierUnsynced{fmt.Errorf("flush the audit file to disk: %w", err)}
		}
		s.unsynced = false
	}
	for len(s.pending) > 0 {
		if err := s.put(s.pending[0]); err != nil {
			if errors.Is(err, errUnsynced) { // written: not again
				s.pending[0] = nil
				s.pending = s.pending[1:]
				return errEarlierUnsynced{err}
			}
			return err
		}
		s.pending[0] = nil
		s.pending = s.pending[1:]
	}
	s.pending = nil
	return nil
}

// retry writes the pending records every retryInterval until they are
// all written, which makes the sink healthy again.
func (s *Sink) retry() {
	t := time.NewTicker(retryInterval)
	defer t.Stop()
	for range t.C {
		s.mu.Lock()
		if !s.closed {
			// A file that cannot be written (a full disk, its size
			// limit) may be moved or removed to make room: the kept
			// records go to the new one, as after SIGUSR1.
			_ = s.follow()
		}
		done := s.closed || s.flush() == nil
		if done {
			s.retrying = false
			if !s.closed {
				s.recovered()
			}
		}
		s.mu.Unlock()
		if done {
			return
		}
	}
}

// tick flushes the file every interval (fsync: interval), writes a
// checkpoint when records have waited checkpointAfter for one, and
// follows a file moved or removed between records (probe).
func (s *Sink) tick(interval, checkpointAfter time.Duration) {
	defer close(s.stopped)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.mu.Lock()
		if s.opts.Signer != nil && s.unsigned > 0 && time.Since(s.lastSign) >= checkpointAfter && len(s.pending) == 0 {
			s.signNow()
		}
		// The probe first: a file renamed under till is flushed as it
		// is left (probe), and f is then the file at the path.
		lost := s.probe()
		f := s.toSync()
		s.mu.Unlock()
		if lost != nil && s.opts.OnError != nil {
			s.opts.OnError(lost, nil)
		}
		if f != nil {
			// Outside the lock: an fsync can take a while, and records
			// keep coming. A file closed meanwhile (rotate, leave) was
			// synced first.
			if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) && !isNotSyncable(err) {
				s.mu.Lock()
				s.syncFailed()
				s.mu.Unlock()
				if s.opts.OnError != nil {
					s.opts.OnError(fmt.Errorf("flush the audit file to disk: %w", err), nil)
				}
			}
		}
	}
}

// probe follows, between records, a file moved or removed under till,
// as the next record would: a new file at the path takes the records.
// When the file was removed and none can be opened at the path (a
// folder there, a read-only disk), records would be lost: the sink is
// not healthy until one can, so readiness says so before a request finds
// out; the error is returned when the sink turns unhealthy. A moved file
// still takes records, as in put; the file in place is checked to take
// writes and to have room (probeWrite). A sink retrying records it kept
// is left to retry.
func (s *Sink) probe() error {
	if s.file == nil || s.closed || s.retrying {
		return nil
	}
	st := s.file.check()
	if !st.moved {
		// A file cut in place is taken at the next record.
		return s.probeWrite()
	}
	if !st.removed {
		if err := s.leave(); err != nil {
			return err
		}
	}
	if err := s.reopen(s.file.name()); err != nil {
		if st.removed && s.healthy.Swap(false) {
			s.failures.Add(1)
			return err
		}
		return nil
	}
	s.refusing = false // what the probe found is of the file gone
	s.healthy.Store(true)
	return s.probeWrite()
}

// probeWrite checks, between records, that the file in place still
// takes writes (it is not immutable) and that its disk has room for the
// next records: the sink is unhealthy while it does not, and healthy
// again once it does (a record written meanwhile, on the last bytes of a
// disk, is not enough). The error is returned when the sink turns
// unhealthy. It costs a syscall or two once a second (tick), whatever
// asks /readyz how often.
func (s *Sink) probeWrite() error {
	err := s.file.writable()
	if err == nil {
		err = s.file.room()
	}
	switch {
	case err != nil && s.healthy.Swap(false):
		s.refusing = true
		s.failures.Add(1)
		return fmt.Errorf("the audit file takes no writes: %w", err)
	case err == nil && s.refusing:
		s.refusing = false
		s.healthy.Store(true)
	}
	return nil
}

// syncFailed makes the sink take no record, and so no key be used, until
// the file is flushed to disk again (flush, retried every retryInterval):
// the records a failed fsync was to flush may never reach the disk.
func (s *Sink) syncFailed() {
	s.unsynced = true
	s.healthy.Store(false)
	s.failures.Add(1)
	if !s.retrying && !s.closed {
		s.retrying = true
		go s.retry()
	}
}

// recovered makes the sink healthy after its records were written,
// unless the probe found the file refusing writes or its disk full: only
// the probe says otherwise.
func (s *Sink) recovered() {
	if !s.refusing {
		s.healthy.Store(true)
	}
}

type syncer interface{ Sync() error }

// toSync is the output the tick flushes, outside the lock, when records
// were written since the last flush (fsync: interval), else nil. The
// sink takes it for flushed from then on.
func (s *Sink) toSync() syncer {
	if !s.dirty || s.opts.Fsync != FsyncInterval {
		return nil
	}
	s.dirty = false
	return s.syncer()
}

// syncer is what flushes the sink's output; nil when nothing does.
func (s *Sink) syncer() syncer {
	if s.file != nil {
		return s.file.f
	}
	f, _ := s.w.(syncer)
	return f
}

// syncOut flushes f, the sink's output, to stable storage (fsync:
// always). A variable for tests.
var syncOut = func(f syncer) error { return f.Sync() }

// sync flushes the output to stable storage, when it can be.
func (s *Sink) sync() error {
	s.dirty = false
	if f := s.syncer(); f != nil {
		if err := syncOut(f); err != nil && !isNotSyncable(err) {
			return err
		}
	}
	return nil
}

// Reopen opens the audit file at its path anew, for rotation schemes that
// move the file and then signal (SIGUSR1): the next record goes to the
// file at the path, which continues the chain. A file copied and emptied
// in place (copytruncate) starts a new file of the chain. It does nothing
// when the path still names the file open, or when the sink is not a
// file. On
// error the file open so far stays in use.
func (s *Sink) Reopen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.follow()
}

// follow takes a new file at the path when the one open was moved or
// removed, and a file cut in place as a new one (see Reopen).
func (s *Sink) follow() error {
	if s.file == nil {
		return nil
	}
	switch st := s.file.check(); {
	case st.cut: // copied and emptied in place: a new file begins
		s.file.size = st.size
		s.chain.restart("")
		return nil
	case !st.moved:
		return nil
	case !st.removed:
		if err := s.leave(); err != nil {
			return err
		}
	}
	return s.reopen(s.file.name())
}

// leave flushes the file renamed under till before the sink leaves it
// for a new one at the path (fsync: interval; see put for the others):
// the records written there since the last fsync, or those an fsync that
// failed was to flush, reach the disk first. A flush of the new file
// would say nothing of them. It flushes even a file taken for flushed:
// the tick may be flushing it outside the lock (toSync), and its fsync
// of a file closed meanwhile fails unseen. A failure is a failed fsync
// (syncFailed).
func (s *Sink) leave() error {
	if s.opts.Fsync != FsyncInterval {
		return nil
	}
	if err := s.sync(); err != nil {
		s.syncFailed()
		return fmt.Errorf("flush the renamed audit file to disk: %w", err)
	}
	s.unsynced = false
	return nil
}

// Healthy reports whether the sink takes records: the last write
// succeeded, and no failed record waits to be written.
func (s *Sink) Healthy() bool { return s.healthy.Load() }

// Failures counts the records that could not be written when due.
func (s *Sink) Failures() uint64 { return s.failures.Load() }

// Close makes a last try at the pending records, signs a last checkpoint
// when records follow the last one, flushes the sink to stable storage
// and closes it.
// Closing twice does nothing more.
func (s *Sink) Close() error {
	s.stopOnce.Do(func() {
		if s.stop != nil {
			close(s.stop)
			<-s.stopped
		}
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	_ = s.flush() // what fails here is in the operational log already
	if s.opts.Signer != nil && s.unsigned > 0 {
		s.signNow()
	}
	var errs []error
	if err := s.sync(); err != nil {
		errs = append(errs, fmt.Errorf("sync audit sink: %w", err))
	}
	c, _ := s.w.(io.Closer)
	if s.file != nil {
		c = s.file
	}
	if c != nil {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close audit sink: %w", err))
		}
	}
	return errors.Join(errs...)
}

// stdout writes to os.Stdout without closing it at shutdown.
type stdout struct{}

func (stdout) Write(p []byte) (int, error) { return os.Stdout.Write(p) }
func (stdout) Sync() error                 { return os.Stdout.Sync() }

// isNotSyncable reports whether err says the file (a pipe, a terminal,
// /dev/stdout) cannot be fsynced, which is not a failure of the sink.
func isNotSyncable(err error) bool {
	return errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) || errors.Is(err, os.ErrInvalid)
}
