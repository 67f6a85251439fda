package main

import (
	"os"
	"strings"
	"testing"

	"github.com/tillgw/till/audit"
)

// auditRecord is a request record as till writes it (the sink adds seq
// and prev).
func auditRecord(id, at string) []byte {
	return []byte(`{"level":"info","time":"` + at + `","event":"request","id":"` + id + `","mode":"reverse","client":"web","route":"openai",` +
		`"secret":"openai","key_fp":"sha256:0123456789abcdef","method":"POST","host":"api.openai.com","path":"/v1/chat/completions",` +
		`"status":200,"outcome":"forwarded","reason":"","attempt":1}` + "\n")
}

// TestAuditCLIEdges: --until to the second covers that second, as the
// table prints LAST; a --pubkey or --checkpoint value that names no file
// is not printed back (it may be a key); verify says that a trail
// starting after an earlier file of its own name follows a file removed
// or renamed, and, without --pubkey, what the chain alone cannot show.
func TestAuditCLIEdges(t *testing.T) {
	c := newCLI(t)
	s, err := audit.Open(audit.Options{Path: "audit.log"})
	if err != nil {
		t.Fatal(err)
	}
	s.Write(auditRecord("a", "2026-12-02T10:00:00.5Z"))
	if err := os.Remove("audit.log"); err != nil {
		t.Fatal(err)
	}
	s.Write(auditRecord("b", "2026-12-02T10:00:01.25Z"))
	s.Close()

	out, errOut, code := c.run("", "audit", "summary", "--until", "2026-12-02T10:00:01Z", "audit.log")
	if code != 0 || !strings.Contains(out, "2026-12-02T10:00:01Z") {
		t.Errorf("summary --until the LAST it printed: exit %d: %s%s", code, out, errOut)
	}
	if out, _, _ := c.run("", "audit", "summary", "--until", "2026-12-02T10:00:01.1Z", "audit.log"); strings.Contains(out, "2026-12-02T10:00:01Z") {
		t.Errorf("summary --until with a fraction counted a later record:\n%s", out)
	}

	const pasted = "sk-proj-LIVESECRET0123456789abcdef"
	for _, flag := range []string{"--pubkey", "--checkpoint"} {
		out, errOut, code := c.run("", "audit", "verify", flag, pasted, "audit.log")
		if code == 0 || strings.Contains(out+errOut, "LIVESECRET") || !strings.Contains(errOut, flag+": cannot read the file (34 characters, not shown)") {
			t.Errorf("verify %s with a key: exit %d: %s%s", flag, code, out, errOut)
		}
	}

	out, errOut, code = c.run("", "audit", "verify", "audit.log")
	if code != 0 || !strings.Contains(out, "the first record follows an earlier audit.log, since removed or renamed") {
		t.Errorf("verify of the file after its predecessor was removed: exit %d: %s%s", code, out, errOut)
	}
	// Without a public key, the ok says what the chain alone cannot show.
	if !strings.Contains(errOut, "note: only signed checkpoints (audit.sign: true, verify --pubkey) show records cut from the end") {
		t.Errorf("verify without --pubkey: no note of what it cannot see: %s", errOut)
	}
}
