package config

import (
	"bytes"
	"strings"
	"testing"
)

// TestRemoveClientKeepsTheRestsMeaning: client rm of the only client,
// whose token_sha256 its author wrote as a block scalar (or a double-quoted
// scalar continued with "\" on the next line), must not hand the lines
// that follow the value's first line to the key before clients:, which
// would still parse (audit.file: a path may hold a space) and move the
// audit trail to another file.
func TestRemoveClientKeepsTheRestsMeaning(t *testing.T) {
	half := testHash[:32]
	for _, tt := range []struct{ name, token string }{
		{"folded block scalar", ">-\n      " + testHash},
		{"literal block scalar", "|-\n      " + testHash},
		{"double-quoted, continued", "\"" + half + "\\\n      " + testHash[32:] + "\""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			doc := "version: 1\naudit:\n  file: ./audit.log\nclients:\n  - name: gone\n    token_sha256: " + tt.token + "\n"
			before, err := Parse("till.yaml", []byte(doc), "/etc/till")
			if err != nil {
				t.Fatalf("the config before: %v", err)
			}
			out, err := RemoveClient("till.yaml", []byte(doc), "gone")
			if err != nil {
				return // a refusal is safe
			}
			after, err := Parse("till.yaml", out, "/etc/till")
			if err != nil {
				t.Fatalf("RemoveClient returned a config that does not parse: %v", err)
			}
			if after.Audit.File != before.Audit.File {
				t.Errorf("removing client gone moved audit.file from %q to %q; the file is now:\n%s", before.Audit.File, after.Audit.File, out)
			}
			if len(after.Clients) != 0 {
				t.Errorf("clients left: %v", after.Clients)
			}
		})
	}
}

// TestAddClientKeepsCRLF: a CRLF config comes back from an edit with CRLF
// line endings only.
func TestAddClientKeepsCRLF(t *testing.T) {
	doc := "version: 1\r\nclients:\r\n  - name: a\r\n    token_sha256: " + testHash + "\r\n"
	out, err := AddClient("till.yaml", []byte(doc), Client{Name: "b", TokenSHA256: strings.Repeat("b", 64)})
	if err != nil {
		t.Fatal(err)
	}
	if n, crlf := bytes.Count(out, []byte("\n")), bytes.Count(out, []byte("\r\n")); n != crlf {
		t.Errorf("%d of %d line breaks are CRLF after the edit:\n%q", crlf, n, out)
	}
	doc = "version: 1\r\nclients:\r\n  - name: a\r\n    token_sha256: " + testHash + "\r\n  - name: b\r\n    token_sha256: " + strings.Repeat("b", 64) + "\r\n"
	if out, err = RemoveClient("till.yaml", []byte(doc), "b"); err != nil || bytes.Count(out, []byte("\n")) != bytes.Count(out, []byte("\r\n")) {
		t.Errorf("rm of a CRLF config: %v %q", err, out)
	}
}
