package audit

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tillgw/till/internal/termtext"
)

// VerifyOptions say what Verify checks besides the hash chain.
type VerifyOptions struct {
	// PublicKey, when set, checks every checkpoint's signature, and
	// wants at least one, with no more records before each (since the
	// checkpoint before it) or after the last than till writes between
	// two (twice CheckpointRecords, for a checkpoint whose write
	// failed).
	PublicKey ed25519.PublicKey
	// Checkpoint, when set, is a checkpoint record kept elsewhere: the
	// trail must hold it (the same seq, chain head, time and signature,
	// however its JSON is spaced or ordered), so that records up to it
	// cannot have been removed.
	Checkpoint []byte
}

// Report says what Verify read.
type Report struct {
	// Files and Records count what was read; Checkpoints, the
	// checkpoint records among them.
	Files, Records, Checkpoints int
	// Unsigned counts the records after the last checkpoint.
	Unsigned int
	// LastSigned is the time the last checkpoint was signed at, when
	// the signatures were checked (VerifyOptions.PublicKey): till wrote
	// nothing after it that the trail proves, since the records after
	// it, and any later checkpoints, may have been removed.
	LastSigned time.Time
	// StartsAfter names the file (prev_file) that the first record
	// chains to, when the trail given starts after others; that link
	// is not checked.
	StartsAfter string
}

// Break is where a trail fails: the first line that is not as till
// wrote it, or that does not follow the one before it.
type Break struct {
	// File is the file's name as given.
	File string
	// Line is the line's number, from 1.
	Line int
	// Reason says what is wrong, and what may have happened.
	Reason string
	err    error // what Unwrap returns
}

// Error is FILE:LINE: reason.
func (b *Break) Error() string { return fmt.Sprintf("%s:%d: %s", b.File, b.Line, b.Reason) }

// Unwrap is ErrNoCheckpoint for a signed trail without a checkpoint,
// ErrUnsignedRecords for one with more records than till leaves
// unsigned, ErrNoEvent for a line that is no record, else nil.
func (b *Break) Unwrap() error { return b.err }

// ErrNoCheckpoint is what the Break of a trail verified with a public key
// wraps when the trail holds no checkpoint: a trail till began less than
// CheckpointInterval ago may hold none yet, so it is no proof of
// tampering on its own.
var ErrNoCheckpoint = errors.New("no checkpoint in the trail")

// ErrUnsignedRecords is what the Break of a trail verified with a public
// key wraps when more records than till leaves between two checkpoints
// follow one (or precede a checkpoint): they may have been rewritten
// after the checkpoints that signed them were removed, or were written
// while audit.sign was off.
var ErrUnsignedRecords = errors.New("more records than till leaves unsigned")

// chained is what Verify reads of a record.
type chained struct {
	Seq      *uint64 `json:"seq"`
	Prev     *string `json:"prev"`
	PrevFile string  `json:"prev_file"`
	Event    string  `json:"event"`
	Time     string  `json:"time"`
	Sig      string  `json:"sig"`
}

// maxUnsigned is the most records a trail may hold after its last
// checkpoint: the sink signs every CheckpointRecords records, and again
// at the start after a crash; twice that leaves room for a checkpoint
// whose write failed.
func maxUnsigned() int { return 2 * CheckpointRecords }

// verifier walks a trail, one line at a time.
type verifier struct {
	o      VerifyOptions
	report Report
	// Where the walk is.
	file string
	line int
	// The last record read: its hash, its seq and where it is.
	prev     string
	prevSeq  uint64
	prevAt   string // FILE:LINE
	prevCR   bool   // it ends in "\r" (crlfReason)
	started  bool
	found    bool // the checkpoint asked for
	wantCkpt chained
	first    firstLines // of the files read
}

// Verify checks the hash chain of the trail in files, given oldest first
// (each file's records follow from those of the file before it), reading
// them as streams. It returns a *Break at the first line that fails.
func Verify(files []string, o VerifyOptions) (Report, error) {
	v := &verifier{o: o, first: firstLines{}}
	if o.Checkpoint != nil {
		o.Checkpoint = bytes.TrimSpace(o.Checkpoint)
		if err := json.Unmarshal(o.Checkpoint, &v.wantCkpt); err != nil || v.wantCkpt.Event != "checkpoint" || v.wantCkpt.Seq == nil || v.wantCkpt.Prev == nil {
			return Report{}, errors.New("the checkpoint given is not a checkpoint record (one JSON line with \"event\":\"checkpoint\")")
		}
		if o.PublicKey != nil && !v.signed(&v.wantCkpt) {
			return Report{}, errors.New("the checkpoint given is not signed by the public key given")
		}
		v.o.Checkpoint = o.Checkpoint
	}
	for _, name := range files {
		if err := v.walk(name); err != nil {
			return v.report, err
		}
	}
	if o.Checkpoint != nil && !v.found {
		return v.report, &Break{File: v.file, Line: v.line, Reason: fmt.Sprintf("the trail ends without the checkpoint given (seq %d, time %s): records up to it were removed", *v.wantCkpt.Seq,
			// The checkpoint may come from a file kept elsewhere, written by
			// anyone who can write there: its time is quoted, not printed.
			termtext.Escape(v.wantCkpt.Time, 64))}
	}
	if o.PublicKey != nil && v.report.Checkpoints == 0 {
		return v.report, &Break{File: v.file, Line: v.line, err: ErrNoCheckpoint, Reason: fmt.Sprintf("%s: till signs its records within %.0f s and at shutdown, "+
			"so a trail whose first record is younger holds none yet; otherwise audit.sign is off, or the checkpoints were removed", ErrNoCheckpoint, CheckpointInterval.Seconds())}
	}
	if o.PublicKey != nil && v.report.Unsigned > maxUnsigned() {
		// The chain holds no secret: whoever removes the checkpoints
		// after a record can rewrite it and chain the rest again.
		return v.report, &Break{File: v.file, Line: v.line, err: ErrUnsignedRecords, Reason: fmt.Sprintf("%d records follow the last checkpoint, where till signs every %d: "+
			"checkpoints after it were removed, and the records after them may have been rewritten (or audit.sign was turned off)",
			v.report.Unsigned, CheckpointRecords)}
	}
	return v.report, nil
}

// walk checks the records of one file.
func (v *verifier) walk(name string) error {
	f, err := OpenFile(name)
	if err != nil {
		return err
	}
	defer f.Close()
	v.file, v.line = name, 0
	v.report.Files++
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := readLine(r)
		if len(line) == 0 && err == io.EOF {
			return nil
		}
		v.line++
		if err == io.EOF {
			return v.broken("the last record has no end of line: the file was cut")
		}
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return v.broken("a line longer than 1 MiB: not a record")
			}
			if errors.Is(err, errCutGzip) {
				return v.broken(err.Error())
			}
			return fmt.Errorf("read %s: %w", name, err)
		}
		if v.line == 1 {
			if err := v.first.check(name, line); err != nil {
				return v.broken(err.Error())
			}
		}
		if err := v.check(line); err != nil {
			return err
		}
	}
}

// check checks one line (without its newline) against the one before it.
func (v *verifier) check(line []byte) error {
	var r chained
	if err := json.Unmarshal(line, &r); err != nil {
		return v.broken("not a JSON record: edited, or not written by till")
	}
	if r.Event == "" {
		return &Break{File: v.file, Line: v.line, Reason: ErrNoEvent.Error(), err: ErrNoEvent}
	}
	if r.Seq == nil || r.Prev == nil {
		return v.broken("no seq or prev: not part of a chain (written before till chained its records?)")
	}
	seq, prev := *r.Seq, *r.Prev
	want := v.prevSeq + 1
	if v.line == 1 {
		want = 1
	}
	switch {
	case seq > want && v.line == 1:
		return v.broken(fmt.Sprintf("seq %d at the start of a file: records 1 to %d are missing", seq, seq-1))
	case seq > want:
		return v.broken(fmt.Sprintf("seq %d where %d was expected: records are missing or out of order", seq, want))
	case seq < want:
		return v.broken(fmt.Sprintf("seq %d where %d was expected: a record is repeated or out of order", seq, want))
	case !v.started && v.line == 1:
		if prev != "" {
			v.report.StartsAfter = r.PrevFile
			if v.report.StartsAfter == "" {
				v.report.StartsAfter = "an earlier file"
			}
		}
	case prev != v.prev && v.line == 1 && v.prevCR:
		return v.broken(fmt.Sprintf("does not chain to the last record of the file before (%s), whose %s", v.prevAt, crlfReason))
	case prev != v.prev && v.line == 1:
		return v.broken(fmt.Sprintf("does not chain to the last record of the file before (%s): a file between them is missing, the files are out of order, or the one before was cut or edited", v.prevAt))
	case prev != v.prev && v.prevCR:
		return &Break{File: v.file, Line: v.line - 1, Reason: "its hash is not the prev of the record after it: its " + crlfReason}
	case prev != v.prev:
		return &Break{File: v.file, Line: v.line - 1, Reason: fmt.Sprintf("edited: its hash is not the prev of the record after it (line %d)", v.line)}
	}
	if r.Event == "checkpoint" {
		if v.o.PublicKey != nil && !v.signed(&r) {
			return v.broken("the checkpoint's signature does not verify: the records before it were changed, or another key signed it")
		}
		if v.o.PublicKey != nil && v.report.Unsigned > maxUnsigned() {
			// A till signs the records it finds unsigned when it starts
			// (those a crash left): the checkpoints after a record can be
			// removed, the records rewritten and chained again, and the
			// next start signs them, unless no checkpoint may sign more
			// records than till leaves between two.
			return &Break{File: v.file, Line: v.line, err: ErrUnsignedRecords, Reason: fmt.Sprintf("this checkpoint follows %d records no checkpoint signed, where till signs every %d: "+
				"checkpoints before it were removed and the records after them may have been rewritten (till signs what it finds unsigned when it starts), "+
				"or audit.sign was off while they were written", v.report.Unsigned, CheckpointRecords)}
		}
		v.report.Checkpoints++
		v.report.Unsigned = 0
		if v.o.PublicKey != nil {
			v.report.LastSigned, _ = time.Parse(time.RFC3339Nano, r.Time)
		}
		if v.o.Checkpoint != nil && sameCheckpoint(&r, &v.wantCkpt) {
			v.found = true
		}
	} else {
		v.report.Unsigned++
	}
	v.report.Records++
	sum := sha256.Sum256(line)
	v.prev, v.prevSeq = hex.EncodeToString(sum[:]), seq
	v.prevAt = fmt.Sprintf("%s:%d", v.file, v.line)
	v.prevCR = bytes.HasSuffix(line, []byte("\r"))
	v.started = true
	return nil
}

// crlfReason explains a record whose hash fails and whose line ends in
// "\r": till writes "\n" alone, and escapes a "\r" inside a record, so
// the file's line endings were converted, which changes every hash.
const crlfReason = `line ends in CRLF ("\r\n"), where till writes LF: the file's line endings were converted ` +
	"(a Windows editor, git's core.autocrlf, a transfer in text mode), which changes every record's hash; " +
	"verify the original file as till wrote it, or a copy converted back (tr -d '\\r' < FILE > FILE.lf)"

// sameCheckpoint reports whether checkpoints a and b are one: the same
// seq, chain head, time and signature, however their JSON is written (a
// checkpoint kept elsewhere may come back with spaces or its keys
// reordered). Its prev names every record before it, as its bytes would.
func sameCheckpoint(a, b *chained) bool {
	return *a.Seq == *b.Seq && *a.Prev == *b.Prev && a.Time == b.Time && a.Sig == b.Sig
}

// signed reports whether checkpoint r's signature verifies.
func (v *verifier) signed(r *chained) bool {
	sig, err := base64.StdEncoding.DecodeString(r.Sig)
	return err == nil && ed25519.Verify(v.o.PublicKey, signedText(r.Time, *r.Seq, *r.Prev), sig)
}

func (v *verifier) broken(reason string) error {
	return &Break{File: v.file, Line: v.line, Reason: reason}
}

// readLine reads one line without its newline; io.EOF with a line that
// had none.
func readLine(r *bufio.Reader) ([]byte, error) {
	var long []byte
	for {
		part, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			if len(long)+len(part) > MaxLineSize {
				return nil, err
			}
			long = append(long, part...)
			continue
		}
		if long != nil {
			part = append(long, part...)
		}
		if err == nil {
			part = part[:len(part)-1]
		}
		if len(part) > MaxLineSize {
			return nil, bufio.ErrBufferFull // as summary reads it: too long
		}
		return part, err
	}
}
