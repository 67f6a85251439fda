// Package regfile reads the files till reads again at each reload (its
// config, its price table, its vault and key file): regular files only,
// and only so much of each.
package regfile

import (
	"io"
	"io/fs"
	"os"
	"strconv"
	"syscall"
)

// Read returns the contents of the regular file at path (a link to one
// counts), which may hold at most limit bytes: a larger one is refused
// with a *TooLargeError, once limit+1 bytes of it are read. Anything
// else is refused with a *NotRegularError: a device such as /dev/zero
// would never end, and a named pipe with no writer would hold the open,
// and the reload waiting on it. The open does not wait.
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
		return nil, NotRegular(path, st.Mode())
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(data)) > limit {
		err = &TooLargeError{Path: path, Limit: limit}
	}
	if err != nil {
		clear(data) // a key file's bytes, perhaps
		return nil, err
	}
	return data, nil
}

// TooLargeError is Read's refusal of a file larger than its limit: most
// likely not the file meant (a log, a disk image), or one that has grown
// past what its reader would hold in memory.
type TooLargeError struct {
	// Path is the path given to Read.
	Path string
	// Limit is the most bytes the file could have held.
	Limit int64
}

// Error names the file and its limit, and asks whether it is the file
// meant.
func (e *TooLargeError) Error() string {
	return e.Path + " is larger than " + size(e.Limit) + ": is it the right file?"
}

// size writes n bytes in the largest binary unit that divides it.
func size(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

// NotRegularError is Read's refusal of a path that is not a regular file.
type NotRegularError struct {
	// Path is the path given to Read.
	Path string
	// Kind says what it is instead: "a named pipe", "a folder", ...
	Kind string
}

// NotRegular is the refusal of path, whose file of mode m is not a
// regular one.
func NotRegular(path string, m fs.FileMode) *NotRegularError {
	return &NotRegularError{Path: path, Kind: kind(m)}
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
