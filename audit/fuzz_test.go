package audit

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// FuzzVerify reads arbitrary files as trails: Verify never panics, and
// what it passes is a chain of JSON records, numbered from 1.
func FuzzVerify(f *testing.F) {
	var buf bytes.Buffer
	s := New(&buf, Options{Fsync: FsyncNone})
	for _, id := range []string{"a", "b", "c"} {
		s.Write(record(id))
	}
	f.Add(buf.Bytes())
	f.Add([]byte(`{"seq":1,"prev":""}` + "\n"))
	f.Add([]byte("{\"seq\":2,\"prev\":\"x\"}\n{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "audit.log")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := Verify([]string{path}, VerifyOptions{})
		if err != nil {
			return
		}
		n := 0
		for line := range bytes.Lines(data) {
			var c chained
			if json.Unmarshal(line, &c) != nil || c.Seq == nil || *c.Seq != uint64(n+1) {
				t.Fatalf("verify passed line %d: %q", n+1, line)
			}
			n++
		}
		if n != r.Records {
			t.Fatalf("%d lines, %d records reported", n, r.Records)
		}
	})
}
