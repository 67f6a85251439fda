package audit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// trail writes n records across rotated files and returns the files,
// oldest first.
func trail(t *testing.T, n int) []string {
	t.Helper()
	s, path := openTest(t, Options{MaxSize: 4 << 10, MaxFiles: 10})
	for i := range n {
		s.Write(record(fmt.Sprint(i)))
	}
	s.Close()
	var files []string
	for i := 10; i >= 1; i-- {
		if _, err := os.Stat(fmt.Sprintf("%s.%d", path, i)); err == nil {
			files = append(files, fmt.Sprintf("%s.%d", path, i))
		}
	}
	return append(files, path)
}

// rewrite changes the lines of file.
func rewrite(t *testing.T, file string, change func([]string) []string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	lines = lines[:len(lines)-1]
	if err := os.WriteFile(file, []byte(strings.Join(change(lines), "")), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyFindsTampering(t *testing.T) {
	tests := []struct {
		name   string
		change func(files []string) // on a fresh trail
		file   int                  // index into the files; -1 the last
		line   int
		reason string
	}{
		{"edited", func(f []string) {
			rewrite(t, f[1], func(l []string) []string { l[4] = strings.Replace(l[4], `"id":"`, `"id":"x`, 1); return l })
		}, 1, 5, "edited"},
		{"deleted", func(f []string) {
			rewrite(t, f[1], func(l []string) []string { return append(l[:4], l[5:]...) })
		}, 1, 5, "missing"},
		{"reordered", func(f []string) {
			rewrite(t, f[1], func(l []string) []string { l[4], l[5] = l[5], l[4]; return l })
		}, 1, 5, "seq 6 where 5"},
		{"repeated", func(f []string) {
			rewrite(t, f[1], func(l []string) []string { return append(l[:5], l[4:]...) })
		}, 1, 6, "repeated"},
		{"cut mid-line", func(f []string) {
			rewrite(t, f[len(f)-1], func(l []string) []string { l[len(l)-1] = l[len(l)-1][:20]; return l })
		}, -1, 0, "cut"},
		{"older file cut at a line", func(f []string) {
			rewrite(t, f[0], func(l []string) []string { return l[:len(l)-1] })
		}, 1, 1, "does not chain"},
		{"head removed", func(f []string) {
			rewrite(t, f[0], func(l []string) []string { return l[2:] })
		}, 0, 1, "records 1 to 2 are missing"},
		{"line endings converted to CRLF", func(f []string) {
			rewrite(t, f[1], func(l []string) []string { return crlf(l) })
		}, 1, 1, "line endings were converted"},
		{"older file's last line in CRLF", func(f []string) {
			rewrite(t, f[0], func(l []string) []string { l[len(l)-1] = crlf(l[len(l)-1:])[0]; return l })
		}, 1, 1, "line endings were converted"},
		{"not JSON", func(f []string) {
			rewrite(t, f[2], func(l []string) []string { l[0] = "hello\n"; return l })
		}, 2, 1, "not a JSON record"},
		{"till's own log", func(f []string) {
			rewrite(t, f[2], func(l []string) []string {
				l[0] = `{"level":"info","addr":"127.0.0.1:8080","time":"2026-12-02T10:00:00Z","message":"till listening"}` + "\n"
				return l
			})
		}, 2, 1, `not an audit record (no "event")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := trail(t, 200)
			if len(files) < 4 {
				t.Fatalf("%d files", len(files))
			}
			mustVerify(t, VerifyOptions{}, files...)
			tt.change(files)
			_, err := Verify(files, VerifyOptions{})
			var br *Break
			if !errors.As(err, &br) {
				t.Fatalf("verify after tampering: %v", err)
			}
			want := tt.file
			if want < 0 {
				want = len(files) - 1
			}
			if br.File != files[want] || (tt.line > 0 && br.Line != tt.line) || !strings.Contains(br.Reason, tt.reason) {
				t.Errorf("got %v, want %s:%d: …%s…", err, files[want], tt.line, tt.reason)
			}
			if !strings.HasPrefix(err.Error(), fmt.Sprintf("%s:%d: ", br.File, br.Line)) {
				t.Errorf("error %q does not start with FILE:LINE", err)
			}
		})
	}
}

// crlf converts lines' endings to CRLF, as a Windows editor would.
func crlf(lines []string) []string {
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\n") + "\r\n"
	}
	return lines
}

func TestVerifyFileOrder(t *testing.T) {
	files := trail(t, 200)
	swapped := append([]string{}, files...)
	swapped[1], swapped[2] = swapped[2], swapped[1]
	if _, err := Verify(swapped, VerifyOptions{}); err == nil {
		t.Error("files out of order verified")
	}
	// Missing a middle file.
	if _, err := Verify(append(append([]string{}, files[:1]...), files[2:]...), VerifyOptions{}); err == nil {
		t.Error("a trail without a middle file verified")
	}
	// Starting from a later file is fine, and said.
	r := mustVerify(t, VerifyOptions{}, files[1:]...)
	if r.StartsAfter == "" {
		t.Error("a trail given from its second file: StartsAfter not set")
	}
}

// TestVerifyAndSummaryAgreeOnLongLines: verify and summary refuse the same
// lines as too long (past MaxLineSize): a trail verify calls ok can be
// summarised.
func TestVerifyAndSummaryAgreeOnLongLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	var c chain
	raw := `{"level":"info","time":"2026-12-02T10:00:00Z","event":"request","client":"web","pad":"` +
		strings.Repeat("a", MaxLineSize) + `"}` + "\n"
	line := c.stamp(nil, []byte(raw))
	os.WriteFile(path, line, 0o600)
	_, verr := Verify([]string{path}, VerifyOptions{})
	_, serr := Summarize([]string{path}, SummaryFilter{})
	if (verr == nil) != (serr == nil) {
		t.Errorf("a %d-byte record: verify err %v, summary err %v", len(line)-1, verr, serr)
	}
}
