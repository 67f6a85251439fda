package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// Files reads one file per secret under Dir, such as a Kubernetes Secret
// volume. It opens the file afresh at every fetch, so Kubernetes's atomic
// update (a new folder, then the ..data symlink swapped to it) is seen at
// the next one, and its Stamp tells the cache when to fetch again.
// Symlinks are followed only within Dir.
type Files struct {
	// Dir is the folder, absolute.
	Dir string
}

var _ Watched = Files{}

// Stamp is the file's modification time and size, as it is now (the
// ..data symlink followed): "" when there is none.
func (f Files) Stamp(path string) string {
	if !filepath.IsLocal(path) {
		return ""
	}
	st, err := os.Stat(filepath.Join(f.Dir, path))
	if err != nil {
		return ""
	}
	return strconv.FormatInt(st.ModTime().UnixNano(), 10) + " " + strconv.FormatInt(st.Size(), 10)
}

// Fetch reads the file at path, relative to Dir; its mtime is the
// version time.
func (f Files) Fetch(_ context.Context, path string) ([]byte, Meta, error) {
	if !filepath.IsLocal(path) {
		return nil, Meta{}, fmt.Errorf("path %q is not a file inside the source's folder", path)
	}
	root, err := os.OpenRoot(f.Dir)
	if err != nil {
		return nil, Meta{}, fmt.Errorf("open the source's folder %q: %w", f.Dir, pathless(err))
	}
	defer root.Close()
	// Not blocking: a named pipe (or a device) would hold the open, and
	// so the fetch every request for the ref joins, forever. It is
	// refused as not a regular file below.
	file, err := root.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, Meta{}, gone("open %q: no such file in the source's folder %q", path, f.Dir)
	}
	if err != nil {
		return nil, Meta{}, fmt.Errorf("open %q: %w", path, pathless(err))
	}
	defer file.Close()
	st, err := file.Stat()
	if err != nil {
		return nil, Meta{}, fmt.Errorf("stat %q: %w", path, pathless(err))
	}
	if !st.Mode().IsRegular() {
		return nil, Meta{}, fmt.Errorf("%q is not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(file, maxRaw+1))
	if err != nil {
		return nil, Meta{}, fmt.Errorf("read %q: %w", path, pathless(err))
	}
	if len(data) > maxRaw {
		return nil, Meta{}, fmt.Errorf("%q is larger than %d bytes", path, maxRaw)
	}
	return data, Meta{Version: st.ModTime()}, nil
}

// pathless drops the *PathError's path, which the caller names itself.
func pathless(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
