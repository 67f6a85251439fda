package audit

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"time"
)

// MaxLineSize is the longest line the readers of this package accept. A
// record is well under a kilobyte; a longer line is not one (a file that is
// not an audit trail, or one without newlines), and the cap keeps such a
// file from being read into memory whole.
const MaxLineSize = 1 << 20

// gzipMagic starts every gzip member (RFC 1952, section 2.3.1).
var gzipMagic = []byte{0x1f, 0x8b}

// ErrNoEvent is what a line that is a JSON object without an "event"
// wraps (a *LineError from summary, a *Break from verify): no record
// lacks one, while every line of till's own log (serve's stderr) does,
// the file most often given for the audit trail by mistake.
var ErrNoEvent = errors.New(`not an audit record (no "event")`)

// otherCompression names the compressor whose magic bytes (zstd, xz,
// bzip2, lz4: logrotate's compresscmd) start a file, or "": such a file
// is no audit file till can read, and reading it as one would report it
// edited.
func otherCompression(magic []byte) string {
	for _, c := range []struct{ tool, magic string }{
		{"zstd", "\x28\xb5\x2f\xfd"},
		{"xz", "\xfd7zXZ\x00"},
		{"bzip2", "BZh"},
		{"lz4", "\x04\x22\x4d\x18"},
	} {
		if bytes.HasPrefix(magic, []byte(c.magic)) {
			return c.tool
		}
	}
	return ""
}

// OpenFile opens an audit file for reading. A file that starts with gzip's
// magic bytes is decompressed as it is read, whatever its name: rotated
// files are compressed by logrotate or by hand and renamed at will, and a
// trail is read as one whatever was done to its parts. Concatenated gzip
// members read as one stream. The caller closes what it returns.
func OpenFile(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err // *fs.PathError: "open PATH: ..."
	}
	br := bufio.NewReaderSize(f, 64<<10)
	// A file shorter than a magic (empty, or one byte) is read as is.
	magic, err := br.Peek(6)
	if err != nil && !errors.Is(err, io.EOF) {
		f.Close()
		return nil, err // *fs.PathError: "read PATH: ..."
	}
	if tool := otherCompression(magic); tool != "" {
		f.Close()
		return nil, fmt.Errorf("%s is compressed with %s, which till does not read: decompress it first (%s -d), or have logrotate use gzip", path, tool, tool)
	}
	if !bytes.HasPrefix(magic, gzipMagic) {
		return &readFile{Reader: br, f: f}, nil
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &readFile{Reader: zr, f: f, z: zr}, nil
}

// readFile is an open audit file, read through a buffer or a gzip reader.
type readFile struct {
	io.Reader
	f *os.File
	z *gzip.Reader // nil when the file is not compressed
}

// errCutGzip is a compressed audit file that ends before its gzip stream
// does: the records it held past that point are not in it. It is
// io.ErrUnexpectedEOF to errors.Is.
var errCutGzip error = cutGzipError{}

type cutGzipError struct{}

func (cutGzipError) Error() string {
	return "the compressed file is cut short (a compression or copy that did not finish, or a full disk): the records from this line on are lost"
}

func (cutGzipError) Is(target error) bool { return target == io.ErrUnexpectedEOF }

// Read reads the file, decompressed; a gzip stream that ends early is
// errCutGzip.
func (r *readFile) Read(p []byte) (int, error) {
	n, err := r.Reader.Read(p)
	if r.z != nil && errors.Is(err, io.ErrUnexpectedEOF) {
		err = errCutGzip
	}
	return n, err
}

func (r *readFile) Close() error {
	var zerr error
	if r.z != nil {
		zerr = r.z.Close()
	}
	return errors.Join(zerr, r.f.Close())
}

// LineError is an error at one line of an audit file, printed as
// FILE:LINE: reason. The reasons this package gives never quote the line:
// a file named by mistake (an env file, say) may hold a key.
type LineError struct {
	File string // the file's name as given
	Line int    // numbered from 1
	Err  error  // what is wrong with the line
}

// Error is FILE:LINE: reason.
func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }

// Unwrap returns what is wrong with the line.
func (e *LineError) Unwrap() error { return e.Err }

// ReadLines calls fn with each line of r and its number, from 1. A line
// ends at '\n' only and is passed without it and with nothing else taken
// off, so that a hash of the line is a hash of the bytes as written. A last
// line without a newline is passed too, unless a read error cut it. The
// line's bytes are valid during the call only. Reading stops at the first
// error, from fn or from r, returned as a *LineError that names name and
// the line (an error from fn that holds a *LineError is returned as is).
// A line longer than MaxLineSize is an error.
func ReadLines(r io.Reader, name string, fn func(num int, line []byte) error) error {
	er := &errReader{r: r}
	sc := bufio.NewScanner(er)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLineSize+1) // +1: the newline
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			return i + 1, data[:i], nil
		}
		// The scanner takes a read error for the end of the file; a line
		// cut short by one is not passed on as if it were whole.
		if atEOF && len(data) > 0 && er.err == nil {
			return len(data), data, nil
		}
		return 0, nil, nil
	})
	n := 0
	for sc.Scan() {
		n++
		if err := fn(n, sc.Bytes()); err != nil {
			var le *LineError
			if errors.As(err, &le) {
				return err
			}
			return &LineError{File: name, Line: n, Err: err}
		}
	}
	switch err := sc.Err(); {
	case errors.Is(err, bufio.ErrTooLong):
		return &LineError{File: name, Line: n + 1, Err: fmt.Errorf("line longer than %d bytes", MaxLineSize)}
	case err != nil:
		return &LineError{File: name, Line: n + 1, Err: err}
	}
	return nil
}

// errReader keeps the error its reader returned, other than io.EOF.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// firstLines tells files of a trail apart by their first record: no two
// files till wrote start with the same line (each record has its own id,
// time and chain), so a file whose first line another's had holds the
// same records: a file given twice, or beside its compressed copy, which
// a summary would count twice.
type firstLines map[[sha256.Size]byte]string

// check records line as the first of the file named name, and says which
// file given before started with it.
func (fl firstLines) check(name string, line []byte) error {
	sum := sha256.Sum256(line)
	if other, ok := fl[sum]; ok {
		return fmt.Errorf("holds the same records as %s (a file given twice, or beside its compressed copy): give each file once", other)
	}
	fl[sum] = name
	return nil
}

// Chronological returns files in the order till wrote them, oldest first,
// by when each one's first record was written (a file with none first): the
// order a trail's rotated files (FILE.2, FILE.1, FILE) and their
// compressed copies are not named in. Where two start at one time, they
// keep the order given.
func Chronological(files []string) ([]string, error) {
	starts := make(map[string]time.Time, len(files))
	for _, path := range files {
		t, err := firstTime(path)
		if err != nil {
			return nil, err
		}
		starts[path] = t
	}
	sorted := slices.Clone(files)
	slices.SortStableFunc(sorted, func(a, b string) int { return starts[a].Compare(starts[b]) })
	return sorted, nil
}

// firstTime is when the first record of the audit file at path was
// written; zero when it has none, or its first line is no record (which
// reading the file will report). A request record's time is when its
// request began, and it is written when the request ends, duration_ms
// later: a long request's record can start a file begun after the one
// that holds its use record, written when it began.
func firstTime(path string) (time.Time, error) {
	r, err := OpenFile(path)
	if err != nil {
		return time.Time{}, err
	}
	defer r.Close()
	var rec struct {
		Time     string          `json:"time"`
		Event    string          `json:"event"`
		Duration json.RawMessage `json:"duration_ms"` // a number; any other value is read as none
	}
	var t time.Time
	err = ReadLines(r, path, func(_ int, line []byte) error {
		if len(bytes.TrimSpace(line)) == 0 {
			return nil
		}
		if json.Unmarshal(line, &rec) == nil {
			t, _ = time.Parse(time.RFC3339Nano, rec.Time)
			ms, err := strconv.ParseFloat(string(rec.Duration), 64)
			if rec.Event == "request" && err == nil && ms > 0 && ms < float64(math.MaxInt64/time.Millisecond) {
				t = t.Add(time.Duration(ms * float64(time.Millisecond)))
			}
		}
		return errFirstRead
	})
	if err != nil && !errors.Is(err, errFirstRead) {
		return time.Time{}, err
	}
	return t.UTC(), nil
}

// errFirstRead stops ReadLines once firstTime has read the first record.
var errFirstRead = errors.New("first record read")
