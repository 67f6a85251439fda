// Package regfile reads the files till reads again at each reload (its
// config, its price table, its vault and key file): regular files only,
// and only so much of each.
package regfile

import (
	"io"
	"io/fs"
	"os"
	"syscall"
)

// Read returns at most limit bytes of the regular file at path (a link to
// one counts): a caller given limit bytes knows the file may hold more.
// Anything else is refused with a *NotRegularError: a device such as
// /dev/zero would never end, and a named pipe with no writer would hold
// the open, and the reload waiting on it. The open does not wait.
func Read(path string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, &NotRegularError{Path: path, Kind: kind(st.Mode())}
	}
	return io.ReadAll(io.LimitReader(f, limit))
}

// NotRegularError is Read's refusal of a path that is not a regular file.
type NotRegularError struct {
	// Path is the path given to Read.
	Path string
	// Kind says what it is instead: "a named pipe", "a folder", ...
	Kind string
}

// Error says what the path is.
func (e *NotRegularError) Error() string {
	return e.Path + " is not a regular file but " + e.Kind
}

// kind names a kind of file that is not a regular one.
func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a folder"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "a special file"
}
