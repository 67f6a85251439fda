package regfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestReadLimit: a file of limit bytes is read whole; one byte more is
// refused with a *TooLargeError that names the file and its limit, so
// that no reader has to count what it got.
func TestReadLimit(t *testing.T) {
	tests := []struct {
		limit int64
		want  string // the limit as the error writes it
	}{
		{10, "10 bytes"},
		{1 << 10, "1 KiB"},
		{64 << 10, "64 KiB"},
		{1 << 20, "1 MiB"},
		{16 << 20, "16 MiB"},
		{1<<20 + 1<<10, "1025 KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "f")
			if err := os.WriteFile(path, make([]byte, tt.limit), 0o600); err != nil {
				t.Fatal(err)
			}
			if got, err := Read(path, tt.limit); err != nil || int64(len(got)) != tt.limit {
				t.Fatalf("a file of its limit: got %d bytes, %v; want %d bytes", len(got), err, tt.limit)
			}
			if err := os.WriteFile(path, make([]byte, tt.limit+1), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := Read(path, tt.limit)
			var big *TooLargeError
			if !errors.As(err, &big) || big.Path != path || big.Limit != tt.limit || got != nil {
				t.Fatalf("a byte over its limit: got %d bytes, %v; want a *TooLargeError", len(got), err)
			}
			if want := path + " is larger than " + tt.want + ": is it the right file?"; err.Error() != want {
				t.Errorf("got %q, want %q", err, want)
			}
		})
	}
}
