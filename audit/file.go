package audit

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/tillgw/till/internal/atomicfile"
	"github.com/tillgw/till/internal/regfile"
)

// ErrHeld says that another till holds the audit file's lock: it writes
// the file, and two tills on one file would break its chain.
var ErrHeld = errors.New("held by another till, which writes it")

// ErrSymlink says that the audit file's path is a symbolic link, which
// till never writes through.
var ErrSymlink = errors.New("a symbolic link, which till never writes through")

// file is the audit file at path, written through f (opened for
// appending, mode 0600, in a folder created 0700 when missing, never
// through a symbolic link).
type file struct {
	path     string
	maxSize  int64 // rotate before a record would grow the file past it; 0: never
	maxFiles int   // rotated files kept: path.1 (newest) to path.maxFiles
	f        *os.File
	id       os.FileInfo // f's, for os.SameFile
	size     int64
	// cut is set while the file ends in part of a record that could not
	// be taken back out (an append-only file on a full disk), after
	// cutAt bytes: nothing is appended after it until it is.
	cut   bool
	cutAt int64
	// syncFolder flushes the folder after a file is created or rotated
	// (fsync: always), so that a power loss cannot lose the file's name.
	syncFolder bool
}

// syncDir flushes the folder dir's entries to stable storage. A
// variable for tests.
var syncDir = func(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !isNotSyncable(err) {
		return err
	}
	return nil
}

// open opens the file at the path in place of f, which it closes (on
// error, f stays open). It returns the file's last line, without its
// newline, or nil when the file is empty. A last line without a newline
// is a record whose write a crash cut short: it is removed, since it is
// no record, and returned as cut.
func (af *file) open() (last, cut []byte, err error) {
	if err := os.MkdirAll(filepath.Dir(af.path), 0o700); err != nil {
		return nil, nil, fmt.Errorf("create audit folder: %w", err)
	}
	// Never through a link: one left at the path (after the file was
	// removed, say) by whoever can write the folder would have records
	// appended to any file till can write, its vault or a shell's rc file.
	f, err := openAppend(af.path, os.O_CREATE)
	if err == nil {
		if err = lock(f); err != nil {
			f.Close()
			err = fmt.Errorf("open audit file: %w", err)
		}
	}
	if err != nil {
		return nil, nil, err
	}
	id, last, cut, size, err := tail(f)
	if err == nil && len(cut) > 0 {
		err = f.Truncate(size)
	}
	if err == nil && af.syncFolder {
		err = syncDir(filepath.Dir(af.path))
	}
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("open audit file: %w", err)
	}
	if af.f != nil {
		// A file moved away (by a rotation outside till) keeps the
		// records written to it: they reach the disk before it goes.
		_ = af.f.Sync()
		af.f.Close()
	}
	af.f, af.id, af.size, af.cut = f, id, size, false
	return bytes.TrimRight(last, "\n"), cut, nil
}

// openAppend opens the audit file at path to append to it (flag adds
// os.O_CREATE, or not), never through a symbolic link.
func openAppend(path string, flag int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|atomicfile.NoFollow|flag, 0o600)
	if st, lerr := os.Lstat(path); err != nil && lerr == nil && st.Mode()&fs.ModeSymlink != 0 {
		return nil, fmt.Errorf("open audit file: %s is %w", path, ErrSymlink)
	}
	if err != nil {
		return nil, fmt.Errorf("open audit file: %w", err)
	}
	return f, nil
}

// tail reads the end of the audit file f: its identity, its last line
// (with its newline), and its size without a last line a crash cut short,
// which is cut; f is not changed. A file that is not a regular one is a
// *regfile.NotRegularError.
func tail(f *os.File) (id os.FileInfo, last, cut []byte, size int64, err error) {
	id, err = f.Stat()
	if err == nil && !id.Mode().IsRegular() {
		// A named pipe or a device takes no cut, no rotation and no
		// fsync, and a pipe nobody reads blocks the write of a record,
		// and every key use behind it.
		return nil, nil, nil, 0, regfile.NotRegular(f.Name(), id.Mode())
	}
	if err == nil {
		size = id.Size()
		last, err = lastLine(f, size)
	}
	if err == nil && len(last) > 0 && last[len(last)-1] != '\n' {
		cut = last
		size -= int64(len(cut))
		last = nil
		if size > 0 {
			last, err = lastLine(f, size)
		}
		// Whole JSON that is no record is a file JSON writers ended
		// without a newline (an app's settings), not a record cut short.
		if err == nil && (!isTornRecord(cut) || json.Valid(cut) && !isRecord(cut)) {
			err = errNotTrail
		}
	}
	// Only a trail is cut or appended to: a file of another kind (a
	// config or an app's log named as audit.file by mistake), whose last
	// line is whole as text files' are, is left as it is.
	if err == nil && len(last) > 0 && !isRecord(last) {
		err = errNotTrail
	}
	return id, last, cut, size, err
}

// errNotTrail refuses a file that does not end in a record.
var errNotTrail = errors.New("its last line is not a record: not an audit file")

// Check reports what Open would refuse of the audit file at path (a
// symbolic link, a folder, a named pipe or a device, a file till cannot
// write, one whose last line is no record), without creating or
// changing anything; "" and "-" (stdout) are fine. A file that is not
// there is fine too: Open makes it.
func Check(path string) error {
	if path == "" || path == "-" {
		return nil
	}
	f, err := openAppend(path, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if _, _, _, _, err := tail(f); err != nil {
		return fmt.Errorf("open audit file: %w", err)
	}
	return nil
}

// isRecordStart reports whether line can be (the start of) a record: a
// JSON object.
func isRecordStart(line []byte) bool { return len(line) > 0 && line[0] == '{' }

// isRecord reports whether line is a record: a JSON object with an
// "event", as every record is (see ErrNoEvent).
func isRecord(line []byte) bool {
	var r struct {
		Event string `json:"event"`
	}
	return json.Unmarshal(line, &r) == nil && r.Event != ""
}

// isTornRecord reports whether a last line without a newline can be a
// record a crash cut: its start, or after a power loss the NUL bytes a
// file system leaves where data did not reach the disk.
func isTornRecord(cut []byte) bool {
	t := bytes.TrimLeft(cut, "\x00")
	return len(t) == 0 || isRecordStart(t)
}

// lastLine reads the last line of the first size bytes of f, with its
// newline if it has one. A last line longer than MaxLineSize is an
// error: the file is not an audit trail.
func lastLine(f io.ReaderAt, size int64) ([]byte, error) {
	if size == 0 {
		return nil, nil
	}
	n := min(size, MaxLineSize)
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, size-n); err != nil && err != io.EOF {
		return nil, err
	}
	body := buf
	if body[len(body)-1] == '\n' {
		body = body[:len(body)-1]
	}
	if i := bytes.LastIndexByte(body, '\n'); i >= 0 {
		return buf[i+1:], nil
	}
	if n < size {
		return nil, errors.New("its last line is longer than 1 MiB: not an audit file")
	}
	return buf, nil
}

// lastRecordOf reads the last record of the file at path, without its
// newline, read through when gzip-compressed; nil when it has none. A
// record a crash cut short at the end of a file not compressed is
// removed first, as open would have removed it had till started again
// before the file was moved (cut says what was removed): the chain goes
// on from the record before it.
func lastRecordOf(path string) (last, cut []byte) {
	f, err := os.OpenFile(path, os.O_RDWR|atomicfile.NoFollow, 0)
	if err != nil {
		if f, err = os.OpenFile(path, os.O_RDONLY|atomicfile.NoFollow, 0); err != nil {
			return nil, nil
		}
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return nil, nil
	}
	if magic := make([]byte, len(gzipMagic)); st.Size() >= int64(len(magic)) {
		if _, err := f.ReadAt(magic, 0); err == nil && bytes.Equal(magic, gzipMagic) {
			last = lastLineOfGzip(f)
		} else {
			last, cut = lastWholeRecord(f)
		}
	}
	if !isRecordStart(last) || last[len(last)-1] != '\n' {
		return nil, nil // a compressed file's torn record is not one to chain to
	}
	return bytes.TrimRight(last, "\n"), cut
}

// lastWholeRecord returns the last whole record of the audit file f, with
// its newline, after it removes a record a crash cut short after it (cut,
// nil when none or when f cannot be cut: verify then names it; nor is it
// cut while another till has f open, since it may be a record that till
// is writing). nil when f ends in no record.
func lastWholeRecord(f *os.File) (last, cut []byte) {
	_, last, cut, size, err := tail(f)
	if err != nil || !isRecordStart(last) {
		return nil, nil
	}
	if len(cut) > 0 && (lock(f) != nil || f.Truncate(size) != nil) {
		cut = nil
	}
	return last, cut
}

// lastLineOfGzip reads the gzip stream r through and returns its last
// line, with its newline if it has one.
func lastLineOfGzip(r io.Reader) []byte {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil
	}
	br := bufio.NewReaderSize(zr, 64<<10)
	var last, cur []byte
	for {
		chunk, err := br.ReadSlice('\n')
		cur = append(cur, chunk...)
		switch {
		case len(cur) > MaxLineSize:
			return nil // a line longer than records are: not an audit file
		case err == bufio.ErrBufferFull:
			continue
		case len(cur) > 0:
			last, cur = cur, last[:0]
		}
		if err != nil {
			return last
		}
	}
}

// predecessor is the file that the audit file at the path follows, and its
// last record: the newest file beside it, by modification time, named
// path.SUFFIX or path-SUFFIX, as till (path.1) or logrotate (dateext,
// compress) names one, that holds records. "" when there is none, so that
// a till restarted after a rotation outside it goes on with the chain.
// cut is what was removed of a record a crash cut short at its end.
func (af *file) predecessor() (name string, last, cut []byte) {
	dir, base := filepath.Split(af.path)
	entries, err := os.ReadDir(filepath.Clean(dir))
	if err != nil {
		return "", nil, nil
	}
	type candidate struct {
		name string
		mod  time.Time
	}
	var found []candidate
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || len(name) <= len(base)+1 || name[:len(base)] != base || name[len(base)] != '.' && name[len(base)] != '-' {
			continue
		}
		if info, err := e.Info(); err == nil {
			found = append(found, candidate{name, info.ModTime()})
		}
	}
	slices.SortFunc(found, func(a, b candidate) int { return b.mod.Compare(a.mod) })
	for _, c := range found {
		if last, cut := lastRecordOf(filepath.Join(dir, c.name)); last != nil {
			return c.name, last, cut
		}
	}
	return "", nil, nil
}

// full reports whether a record of n bytes must go to a new file.
func (af *file) full(n int) bool {
	return af.maxSize > 0 && af.size > 0 && af.size+int64(n) > af.maxSize
}

// rotated is the name of the i-th rotated file (1 is the newest).
func (af *file) rotated(i int) string { return af.path + "." + strconv.Itoa(i) }

// rotate moves the file to path.1 (and path.1 to path.2, …, dropping the
// oldest beyond maxFiles) and opens a new one at the path.
func (af *file) rotate() error {
	if err := af.f.Sync(); err != nil {
		return fmt.Errorf("rotate audit file: %w", err)
	}
	// A rotation whose open failed has moved the files already (the
	// path no longer names f): moving them again would drop the oldest
	// at every try. Only the open is left to do.
	for i := af.maxFiles; i >= 1 && af.named(); i-- {
		src := af.path
		if i > 1 {
			src = af.rotated(i - 1)
		}
		err := os.Rename(src, af.rotated(i))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("rotate audit file: %w", err)
		}
	}
	_, _, err := af.open()
	return err
}

// append writes one record to f. A record cut short (a full disk) would
// run into the next one: its start is taken back out, and until it can
// be, no record is written.
func (af *file) append(p []byte) error {
	if af.cut {
		if err := af.f.Truncate(af.cutAt); err != nil {
			return fmt.Errorf("the audit file ends in a record cut short, which cannot be removed: %w", err)
		}
		af.cut = false
	}
	n, err := af.f.Write(p)
	if err != nil && n > 0 {
		af.cutAt = af.size
		if st, serr := af.f.Stat(); serr == nil {
			af.cutAt = st.Size() - int64(n)
		}
		af.cut = af.f.Truncate(af.cutAt) != nil
		n = 0
	}
	af.size += int64(n)
	return err
}

// state is what one stat of the path tells of the file open.
type state struct {
	moved   bool  // the path no longer names it (it was renamed or removed)
	removed bool  // it was removed: what is written to it can never be read
	cut     bool  // it is shorter than till wrote it: emptied in place
	size    int64 // its size, when not moved
}

// check tells, with one stat, whether the path no longer names f, and
// whether f was removed or cut shorter than till wrote it (a rotation by
// copy and truncate, or ": > FILE").
func (af *file) check() state {
	same, size := names(af.path, af.id)
	if same {
		return state{cut: size < af.size, size: size}
	}
	return state{moved: true, removed: unlinked(af.f)}
}

// writable reports, with a write of no bytes, whether f takes writes: an
// immutable file (chattr +i) refuses them, as it would every record.
func (af *file) writable() error {
	_, err := af.f.Write(nil)
	return err
}

// roomAhead is the room the probe asks the disk for beyond the end of
// the audit file: a few records, so that a full disk makes the sink
// unhealthy before a record finds out, from the start on.
const roomAhead = 4096

// reserveRoom is reserve; a variable for tests.
var reserveRoom = reserve

// room reports whether the disk has room for the next records, without
// writing any (see reserve).
func (af *file) room() error {
	if err := reserveRoom(af.f, af.size, roomAhead); err != nil {
		return fmt.Errorf("its disk has no room for the next records: %w", err)
	}
	return nil
}

// named reports whether the path still names f.
func (af *file) named() bool {
	same, _ := names(af.path, af.id)
	return same
}

// takeBack removes the last n bytes of f, whose size is size: a record
// written to a file emptied under it.
func (af *file) takeBack(size int64, n int) error {
	af.size = max(size-int64(n), 0)
	return af.f.Truncate(af.size)
}

// name is the base name f has now (after a rename), as far as the system
// tells.
func (af *file) name() string { return filepath.Base(currentName(af.f)) }

func (af *file) Sync() error  { return af.f.Sync() }
func (af *file) Close() error { return af.f.Close() }
