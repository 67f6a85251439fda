package audit_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/tillgw/till/audit"
)

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestOpenFile: a file is gunzipped when its bytes say gzip, whatever its
// name says.
func TestOpenFile(t *testing.T) {
	const text = "{\"event\":\"request\"}\n{\"event\":\"use\"}\n"
	twoMembers := append(gzipped(t, []byte(text[:20])), gzipped(t, []byte(text[20:]))...)
	tests := []struct {
		name string
		file string
		data []byte
		want string
	}{
		{"plain", "audit.log", []byte(text), text},
		{"gzip without .gz", "audit.log.1", gzipped(t, []byte(text)), text},
		{"plain named .gz", "audit.log.1.gz", []byte(text), text},
		{"concatenated gzip members", "audit.log.2", twoMembers, text},
		{"empty", "audit.log", nil, ""},
		{"empty gzip", "audit.log.3", gzipped(t, nil), ""},
		{"one byte", "audit.log", []byte{0x1f}, "\x1f"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := audit.OpenFile(writeFile(t, tt.file, tt.data))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestOpenFileErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "audit.log")
	if _, err := audit.OpenFile(missing); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: got %v, want an error naming it", err)
	}
	dir := t.TempDir()
	if _, err := audit.OpenFile(dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("a folder: got %v, want an error naming it", err)
	}
	// The gzip magic, then not a gzip header.
	bad := writeFile(t, "audit.log.1", []byte("\x1f\x8bnot gzip at all"))
	if _, err := audit.OpenFile(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("a broken gzip header: got %v, want an error naming the file", err)
	}
	// Compressed by a tool till does not read (logrotate's compresscmd):
	// said so, not read as a trail someone edited.
	for tool, magic := range map[string]string{"zstd": "\x28\xb5\x2f\xfd\x04\x58", "xz": "\xfd7zXZ\x00\x00", "bzip2": "BZh91AY", "lz4": "\x04\x22\x4d\x18\x64"} {
		f := writeFile(t, "audit.log.2."+tool, []byte(magic+"rest of the stream"))
		_, err := audit.OpenFile(f)
		if err == nil || !strings.Contains(err.Error(), f+" is compressed with "+tool) || !strings.Contains(err.Error(), tool+" -d") {
			t.Errorf("a file compressed with %s: got %v, want an error saying so and how to read it", tool, err)
		}
	}
}

// A compressed file cut short (logrotate still compressing it, a disk
// full) fails the read at the line it reached, naming the file.
func TestReadLinesTruncatedGzip(t *testing.T) {
	var text strings.Builder
	for range 2000 {
		text.WriteString(`{"event":"request","time":"2026-12-02T10:00:00Z","outcome":"forwarded"}` + "\n")
	}
	z := gzipped(t, []byte(text.String()))
	path := writeFile(t, "audit.log.1", z[:len(z)-20])
	r, err := audit.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	lines := 0
	err = audit.ReadLines(r, path, func(int, []byte) error { lines++; return nil })
	var le *audit.LineError
	if !errors.As(err, &le) || le.File != path || le.Line != lines+1 || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("got %v after %d lines, want an unexpected EOF at %s:%d", err, lines, path, lines+1)
	}
}

func TestReadLines(t *testing.T) {
	type line struct {
		num  int
		text string
	}
	read := func(t *testing.T, r io.Reader) ([]line, error) {
		t.Helper()
		var got []line
		err := audit.ReadLines(r, "audit.log", func(num int, b []byte) error {
			got = append(got, line{num, string(b)})
			return nil
		})
		return got, err
	}

	t.Run("lines as written", func(t *testing.T) {
		// '\r' is kept (a hash covers the bytes written); a last line
		// without its newline is read; empty lines are lines.
		got, err := read(t, iotest.OneByteReader(strings.NewReader("a\r\n\nb\nc")))
		if err != nil {
			t.Fatal(err)
		}
		want := []line{{1, "a\r"}, {2, ""}, {3, "b"}, {4, "c"}}
		if !slices.Equal(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}
	})

	t.Run("the longest line", func(t *testing.T) {
		long := bytes.Repeat([]byte("x"), audit.MaxLineSize)
		got, err := read(t, io.MultiReader(strings.NewReader("a\n"), bytes.NewReader(long), strings.NewReader("\nb\n")))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 || len(got[1].text) != audit.MaxLineSize || got[2] != (line{3, "b"}) {
			t.Errorf("got %d lines, want 3, the second %d bytes long", len(got), audit.MaxLineSize)
		}
	})

	t.Run("a line too long", func(t *testing.T) {
		long := bytes.Repeat([]byte("x"), audit.MaxLineSize+1)
		got, err := read(t, io.MultiReader(strings.NewReader("a\nb\n"), bytes.NewReader(long), strings.NewReader("\nc\n")))
		var le *audit.LineError
		if !errors.As(err, &le) || le.Line != 3 || !strings.HasPrefix(err.Error(), "audit.log:3: line longer than") {
			t.Errorf("got %v, want a *LineError at audit.log:3", err)
		}
		if len(got) != 2 {
			t.Errorf("got %d lines before the error, want 2", len(got))
		}
	})

	t.Run("a read error", func(t *testing.T) {
		boom := errors.New("boom")
		_, err := read(t, io.MultiReader(strings.NewReader("a\nb"), iotest.ErrReader(boom)))
		if !errors.Is(err, boom) || err.Error() != "audit.log:2: boom" {
			t.Errorf("got %v, want audit.log:2: boom", err)
		}
	})

	t.Run("fn's error names the line", func(t *testing.T) {
		bad := errors.New("bad record")
		err := audit.ReadLines(strings.NewReader("a\nb\nc\n"), "audit.log", func(num int, _ []byte) error {
			if num == 2 {
				return bad
			}
			return nil
		})
		if !errors.Is(err, bad) || err.Error() != "audit.log:2: bad record" {
			t.Errorf("got %v, want audit.log:2: bad record", err)
		}
	})

	t.Run("fn's LineError is kept", func(t *testing.T) {
		own := &audit.LineError{File: "audit.log.1", Line: 7, Err: errors.New("chain broken")}
		err := audit.ReadLines(strings.NewReader("a\n"), "audit.log", func(int, []byte) error { return own })
		if err != own {
			t.Errorf("got %v, want %v", err, own)
		}
	})
}
