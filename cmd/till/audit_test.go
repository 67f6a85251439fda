package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

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
	if !strings.Contains(errOut, "note: only signed checkpoints (audit.sign: true, verify --pubkey) show an edited last record") ||
		!strings.Contains(errOut, "only one kept elsewhere (--checkpoint) records cut from the end") {
		t.Errorf("verify without --pubkey: no note of what it cannot see: %s", errOut)
	}
}

// TestAuditVerifyNoCheckpointYet: a signed trail till began less than a
// minute ago holds no checkpoint yet (till signs within 60 s and at
// shutdown). verify --pubkey refuses it, but says why it may be so and
// to try again, not that the trail was tampered with.
func TestAuditVerifyNoCheckpointYet(t *testing.T) {
	c := newCLI(t)
	lines := signedTrail(t, 2)
	// The trail as a running till leaves it before its first checkpoint.
	os.WriteFile("audit.log", append(bytes.Join(lines[:2], []byte("\n")), '\n'), 0o600)
	out, errOut, code := c.run("", "audit", "verify", "--pubkey", "audit.pub", "audit.log")
	for _, want := range []string{
		"till: error: audit.log:2: no checkpoint in the trail: till signs its records within 60 s and at shutdown",
		"till: hint: verify again in a minute, or once till stops",
	} {
		if code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("verify --pubkey of a trail not signed yet: exit %d, stderr lacks %q:\n%s%s", code, want, out, errOut)
		}
	}
	if strings.Contains(errOut, "not as till wrote it") {
		t.Errorf("verify --pubkey calls a trail not signed yet tampered with:\n%s", errOut)
	}
}

// signedTrail writes a signed trail of n genuine request records to
// audit.log (ending in a checkpoint), writes the public key to audit.pub,
// and returns the lines.
func signedTrail(t *testing.T, n int) [][]byte {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(nil)
	s, err := audit.Open(audit.Options{Path: "audit.log", Signer: priv})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		s.Write(auditRecord(fmt.Sprint(i), "2026-12-02T10:00:00Z"))
	}
	s.Close()
	os.WriteFile("audit.pub", []byte(audit.AuthorizedKey(priv)), 0o644)
	b, _ := os.ReadFile("audit.log")
	return bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
}

// appendChained appends raw (a JSON object without seq/prev) chained to
// the last line of audit.log, as anyone who can write the file can.
func appendChained(t *testing.T, lines [][]byte, raw string) {
	t.Helper()
	last := lines[len(lines)-1]
	var r struct{ Seq uint64 }
	json.Unmarshal(last, &r)
	sum := sha256.Sum256(last)
	line := strings.TrimSuffix(raw, "}") + fmt.Sprintf(`,"seq":%d,"prev":"%s"}`+"\n", r.Seq+1, hex.EncodeToString(sum[:]))
	f, _ := os.OpenFile("audit.log", os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(line)
	f.Close()
}

// TestAuditSummaryTerminalEscapes: the audit files are evidence someone
// who wants to hide key uses may have written. A record after the last
// checkpoint (which verify --pubkey accepts, as till leaves up to 2,000
// there) whose client is cursor-up/erase-line sequences reaches the
// summary table as printable text only: it cannot erase the rows above
// it (the genuine, signed key uses) from the responder's terminal.
func TestAuditSummaryTerminalEscapes(t *testing.T) {
	c := newCLI(t)
	lines := signedTrail(t, 3)
	appendChained(t, lines, `{"level":"info","time":"2026-12-02T11:00:00Z","event":"request","id":"x","mode":"reverse",`+
		`"client":"web\u001b[1A\u001b[2K\u001b[1A\u001b[2K\r","route":"openai","secret":"openai","key_fp":"sha256:ffffffffffffffff",`+
		`"method":"GET","host":"api.openai.com","path":"/","status":200,"outcome":"forwarded","reason":"","attempt":1}`)
	if out, errOut, code := c.run("", "audit", "verify", "--pubkey", "audit.pub", "audit.log"); code != 0 {
		t.Fatalf("setup: verify --pubkey: exit %d: %s%s", code, out, errOut)
	}
	out, errOut, code := c.run("", "audit", "summary", "audit.log")
	if code != 0 {
		t.Fatalf("summary: exit %d: %s", code, errOut)
	}
	if strings.ContainsFunc(out, func(r rune) bool { return r < 0x20 && r != '\n' || r == 0x7f }) {
		t.Errorf("summary table holds control characters from a record (terminal escapes reach the screen): %q", out)
	}
}

// TestAuditVerifyPrevFileEscapes: verify prints the first record's
// prev_file, a value of the file, as it is: terminal escapes in it can
// blank the line that says the link before the trail was not checked.
// TestAuditVerifyPrevFileEscapes: the prev_file verify names comes from
// the file: escape sequences in it cannot blank the warning that an
// earlier file was not given.
func TestAuditVerifyPrevFileEscapes(t *testing.T) {
	c := newCLI(t)
	rec := strings.TrimSuffix(string(auditRecord("a", "2026-12-02T10:00:00Z")), "}\n") +
		`,"seq":1,"prev":"` + strings.Repeat("0", 64) + `","prev_file":"\r\u001b[2K\u001b[8m"}` + "\n"
	os.WriteFile("audit.log", []byte(rec), 0o600)
	out, errOut, code := c.run("", "audit", "verify", "audit.log")
	if code != 0 {
		t.Fatalf("verify: exit %d: %s%s", code, out, errOut)
	}
	if strings.ContainsFunc(out, func(r rune) bool { return r < 0x20 && r != '\n' || r == 0x7f }) {
		t.Errorf("verify output holds control characters from prev_file: %q", out)
	}
}

// TestAuditSummaryUntilCommaFraction: Go's RFC 3339 parser takes ',' as
// the fraction separator too: "10:00:01,1Z" is a time with a fraction,
// not "to the second", and counts what "10:00:01.1Z" counts.
func TestAuditSummaryUntilCommaFraction(t *testing.T) {
	c := newCLI(t)
	s, err := audit.Open(audit.Options{Path: "audit.log"})
	if err != nil {
		t.Fatal(err)
	}
	s.Write(auditRecord("b", "2026-12-02T10:00:01.25Z"))
	s.Close()
	dot, _, _ := c.run("", "audit", "summary", "--until", "2026-12-02T10:00:01.1Z", "audit.log")
	comma, _, _ := c.run("", "audit", "summary", "--until", "2026-12-02T10:00:01,1Z", "audit.log")
	if dot != comma {
		t.Errorf("--until 10:00:01,1Z counts differently from 10:00:01.1Z:\ndot:\n%s\ncomma:\n%s", dot, comma)
	}
}

// TestAuditVerifySignedLate: audit.sign turned on for a file that holds
// more unsigned records than till leaves between two checkpoints: the
// checkpoint signed at start vouches for records no checkpoint signed as
// they were written (whoever removed their checkpoints could have
// rewritten them), so verify --pubkey refuses it and says how to verify
// what was signed: the files written after signing was turned on, which
// a file rotated before the start begins.
func TestAuditVerifySignedLate(t *testing.T) {
	defer func(n int) { audit.CheckpointRecords = n }(audit.CheckpointRecords)
	audit.CheckpointRecords = 5
	c := newCLI(t)
	unsigned := func() {
		s, err := audit.Open(audit.Options{Path: "audit.log"})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			s.Write(auditRecord(fmt.Sprint("u", i), "2026-12-02T10:00:00Z"))
		}
		s.Close()
	}
	unsigned()
	signedTrail(t, 3)
	out, errOut, code := c.run("", "audit", "verify", "--pubkey", "audit.pub", "audit.log")
	for _, want := range []string{
		"till: error: audit.log:21: this checkpoint follows 20 records no checkpoint signed",
		"till: hint: no checkpoint signed those records as they were written",
	} {
		if code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("verify --pubkey of a file signed late: exit %d, stderr lacks %q:\n%s%s", code, want, out, errOut)
		}
	}

	// Signing turned on with a new file: the file after the unsigned one
	// verifies.
	os.Remove("audit.log")
	unsigned()
	if err := os.Rename("audit.log", "audit.log.1"); err != nil {
		t.Fatal(err)
	}
	signedTrail(t, 3)
	if out, errOut, code := c.run("", "audit", "verify", "--pubkey", "audit.pub", "audit.log"); code != 0 {
		t.Errorf("verify --pubkey of the file signed from its start: exit %d: %s%s", code, out, errOut)
	}
	if _, _, code := c.run("", "audit", "verify", "--pubkey", "audit.pub", "audit.log.1", "audit.log"); code != 1 {
		t.Errorf("verify --pubkey of the unsigned file with the signed one: exit %d, want 1", code)
	}
}

// TestAuditVerifyPrintsLastSigned: verify --pubkey says when the trail
// was last signed, since a trail cut back to a checkpoint verifies.
func TestAuditVerifyPrintsLastSigned(t *testing.T) {
	c := newCLI(t)
	lines := signedTrail(t, 2)
	var ckpt struct{ Time string }
	json.Unmarshal(lines[len(lines)-1], &ckpt)
	at, err := time.Parse(time.RFC3339Nano, ckpt.Time)
	if err != nil {
		t.Fatalf("setup: the last line is no checkpoint: %s", lines[len(lines)-1])
	}
	want := "last signed at " + at.UTC().Format(time.RFC3339) + ": records till wrote after that can be removed unseen"
	if out, errOut, code := c.run("", "audit", "verify", "--pubkey", "audit.pub", "audit.log"); code != 0 || !strings.Contains(out, want) {
		t.Errorf("verify --pubkey: exit %d, stdout lacks %q:\n%s%s", code, want, out, errOut)
	}
	if out, _, _ := c.run("", "audit", "verify", "audit.log"); strings.Contains(out, "last signed") {
		t.Errorf("verify without --pubkey names a time no signature was checked for:\n%s", out)
	}
}

// TestAuditVerifyStartsAfterRotatedName: till names a new file's
// predecessor as it was named then (audit.log.1); rotations rename it
// (audit.log.2, …) until max_files drops it. A trail verified from its
// oldest kept file names audit.log.1 as the file before it, and verify
// must not say that audit.log.1, which was given, was not: it is the
// dropped one, so named then.
func TestAuditVerifyStartsAfterRotatedName(t *testing.T) {
	c := newCLI(t)
	s, err := audit.Open(audit.Options{Path: "audit.log", MaxSize: 4 << 10, MaxFiles: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 60 {
		s.Write(auditRecord(fmt.Sprint(i), "2026-12-02T10:00:00Z"))
	}
	s.Close()
	if _, err := os.Stat("audit.log.2"); err != nil {
		t.Fatalf("setup: no second rotated file: %v", err)
	}
	out, errOut, code := c.run("", "audit", "verify", "audit.log.2", "audit.log.1", "audit.log")
	if code != 0 {
		t.Fatalf("verify: exit %d: %s%s", code, out, errOut)
	}
	if strings.Contains(out, "follows audit.log.1, which was not given") || !strings.Contains(out, "follows audit.log.1 as then named") {
		t.Errorf("verify names a file given as one not given:\n%s", out)
	}
}

// TestAuditOwnLogGiven: given till's own log (serve's stderr) for its
// audit trail, summary and verify say the line is no record and where
// the trail is, rather than count nothing (an empty table read as "no
// key was used") or call the file tampered with.
func TestAuditOwnLogGiven(t *testing.T) {
	c := newCLI(t)
	log := `{"level":"info","addr":"127.0.0.1:8080","scheme":"http","config":"till.yaml","routes":1,"time":"2026-12-02T10:00:00Z","message":"till listening"}` + "\n"
	if err := os.WriteFile("serve.err", []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"summary", "verify"} {
		out, errOut, code := c.run("", "audit", cmd, "serve.err")
		for _, want := range []string{
			`till: error: serve.err:1: not an audit record (no "event")`,
			"till: hint: this looks like till's own log (serve's stderr): give the audit trail, audit.file or what serve wrote to stdout",
		} {
			if code != 1 || !strings.Contains(errOut, want) {
				t.Errorf("audit %s of till's own log: exit %d, stderr lacks %q:\n%s%s", cmd, code, want, out, errOut)
			}
		}
		if strings.Contains(errOut, "not as till wrote it") {
			t.Errorf("audit %s calls till's own log a tampered trail:\n%s", cmd, errOut)
		}
	}
}
