package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestVerifyCatchesStrippedCheckpoints: whoever can write the audit files
// but holds no signing key removes a record of a key use that a
// checkpoint covers, edits another, removes every checkpoint after the
// first (their signatures would fail) and chains the records again (the
// chain holds no secret). The sink signs every CheckpointRecords records,
// so a trail with many more after its last checkpoint is refused.
func TestVerifyCatchesStrippedCheckpoints(t *testing.T) {
	defer func(n int) { CheckpointRecords = n }(CheckpointRecords)
	CheckpointRecords = 5
	pub, _, path := signedTestTrail(t, 30)
	r := mustVerify(t, VerifyOptions{PublicKey: pub}, path)
	if r.Checkpoints < 6 {
		t.Fatalf("setup: %+v", r)
	}

	stripCheckpoints(t, path, `"id":"12"`, `"id":"20"`, `"id":"forged"`)
	r, err := Verify([]string{path}, VerifyOptions{PublicKey: pub})
	var br *Break
	if !errors.As(err, &br) || !strings.Contains(br.Reason, "records follow the last checkpoint") {
		t.Fatalf("verify --pubkey of a trail with a signed record removed and another edited, "+
			"after its later checkpoints were stripped: %+v, %v", r, err)
	}
	// Without a key, the chain alone cannot tell.
	mustVerify(t, VerifyOptions{}, path)
}

// signedTestTrail writes n records to a new audit file, signed with a new
// key, and returns the key and the file.
func signedTestTrail(t *testing.T, n int) (ed25519.PublicKey, ed25519.PrivateKey, string) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(nil)
	s, path := openTest(t, Options{Signer: priv})
	for i := range n {
		s.Write(record(fmt.Sprint(i)))
	}
	s.Close()
	return pub, priv, path
}

// stripCheckpoints rewrites the trail at path as whoever can write it but
// holds no signing key can: every checkpoint after the first goes (its
// signature would no longer verify), so does the record that holds hide
// (a key use to hide), edits (old, new pairs) are made, and the records
// are chained again (the chain holds no secret).
func stripCheckpoints(t *testing.T, path, hide string, edits ...string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edit := strings.NewReplacer(edits...)
	var c chain
	var out []byte
	checkpoints := 0
	for line := range strings.Lines(string(b)) {
		if strings.Contains(line, `"event":"checkpoint"`) {
			if checkpoints++; checkpoints > 1 {
				continue
			}
		}
		if strings.Contains(line, hide) {
			continue
		}
		line = edit.Replace(line)
		// Take the chain fields off and stamp the record again.
		i := strings.LastIndex(line, `,"seq":`)
		stamped := c.stamp(nil, []byte(line[:i]+"}\n"))
		c.commit(stamped)
		out = append(out, stamped...)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCheckpointAtRestart: records left unsigned (by a crash, or a till
// that did not sign) are signed as soon as a signing till opens the
// file, so that no more than CheckpointRecords ever wait for one.
func TestCheckpointAtRestart(t *testing.T) {
	defer func(n int) { CheckpointRecords = n }(CheckpointRecords)
	CheckpointRecords = 5
	pub, priv, _ := ed25519.GenerateKey(nil)
	s, path := openTest(t, Options{})
	for i := range 4 {
		s.Write(record(fmt.Sprint(i)))
	}
	s.Close()
	s2, _ := openTest(t, Options{Path: path, Signer: priv})
	recs := lines(t, path)
	if len(recs) != 5 || recs[4]["event"] != "checkpoint" {
		t.Fatalf("after a signing till opened the file: %v; want a checkpoint after the 4 records", recs)
	}
	for i := range 9 {
		s2.Write(record(fmt.Sprint(i)))
	}
	if r := mustVerify(t, VerifyOptions{PublicKey: pub}, path); r.Checkpoints != 2 || r.Unsigned != 4 {
		t.Errorf("report %+v, want 2 checkpoints and 4 records after the last", r)
	}
	s2.Close()
	// Opened again after a checkpoint, nothing is added.
	openTest(t, Options{Path: path, Signer: priv})
	if n := len(lines(t, path)); n != 16 {
		t.Errorf("%d records after a restart at a checkpoint, want 16", n)
	}
}

// TestRotatedSignedFilesVerifyAlone: each file of a signed trail ends in
// a checkpoint before it is rotated, so that the rotated files, given
// alone (the current one shipped elsewhere, or not yet signed), verify
// with the public key.
func TestRotatedSignedFilesVerifyAlone(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	s, path := openTest(t, Options{Signer: priv, MaxSize: 2000, MaxFiles: 20})
	for i := range 40 {
		s.Write(record(fmt.Sprint(i)))
	}
	s.Close()
	var rotated []string
	for i := 20; i >= 1; i-- {
		if _, err := os.Stat(fmt.Sprintf("%s.%d", path, i)); err == nil {
			rotated = append(rotated, fmt.Sprintf("%s.%d", path, i))
		}
	}
	if len(rotated) < 3 {
		t.Fatalf("setup: %d rotated files, want 3 or more", len(rotated))
	}
	for _, name := range rotated {
		recs := lines(t, name)
		if last := recs[len(recs)-1]; last["event"] != "checkpoint" {
			t.Errorf("%s ends in %v, want a checkpoint", name, last)
		}
		mustVerify(t, VerifyOptions{PublicKey: pub}, name)
	}
	mustVerify(t, VerifyOptions{PublicKey: pub}, append(rotated, path)...)
	// Without a key the files rotate at max_size, less one checkpoint.
	s2, path2 := openTest(t, Options{MaxSize: 2000, MaxFiles: 20})
	for i := range 40 {
		s2.Write(record(fmt.Sprint(i)))
	}
	s2.Close()
	for i := 1; i <= 20; i++ {
		if st, err := os.Stat(fmt.Sprintf("%s.%d", path2, i)); err == nil && st.Size() > 2000 {
			t.Errorf("%s.%d: %d bytes, past max_size", path2, i, st.Size())
		}
	}
}

// TestFsyncAlwaysSyncsFolder: with fsync: always, the folder is flushed
// once a file is created or rotated, so that a power loss cannot lose a
// file of records (its name) that were each flushed.
func TestFsyncAlwaysSyncsFolder(t *testing.T) {
	defer func(f func(string) error) { syncDir = f }(syncDir)
	var synced []string
	syncDir = func(dir string) error { synced = append(synced, dir); return nil }
	s, path := openTest(t, Options{Fsync: FsyncAlways, MaxSize: 1000, MaxFiles: 3})
	if len(synced) != 1 || synced[0] != filepath.Dir(path) {
		t.Fatalf("folder syncs after the file was created: %q, want one of %s", synced, filepath.Dir(path))
	}
	for i := 0; len(synced) == 1 && i < 100; i++ {
		s.Write(record(fmt.Sprint(i)))
	}
	if _, err := os.Stat(path + ".1"); err != nil || len(synced) != 2 {
		t.Fatalf("after a rotation: %v, folder syncs %q; want one more", err, synced)
	}
	s.Close()
	synced = nil
	s2, _ := openTest(t, Options{Fsync: FsyncInterval, MaxSize: 1000, MaxFiles: 3})
	for i := range 20 {
		s2.Write(record(fmt.Sprint(i)))
	}
	s2.Close()
	if len(synced) != 0 {
		t.Errorf("fsync: interval synced the folder %d times, want 0", len(synced))
	}
}

// TestRestartSignsNoRewrittenTrail: whoever can write the audit files
// but holds no signing key strips every checkpoint after the first,
// removes a record of a key use deep in the trail and chains the rest
// again, while till is stopped. The till that starts on the file signs
// the records it finds unsigned (those a crash left), and later
// checkpoints cover them by the chain: no checkpoint may have signed
// more records than till leaves between two, or the rewrite passes.
func TestRestartSignsNoRewrittenTrail(t *testing.T) {
	defer func(n int) { CheckpointRecords = n }(CheckpointRecords)
	CheckpointRecords = 5
	pub, priv, path := signedTestTrail(t, 30)
	mustVerify(t, VerifyOptions{PublicKey: pub}, path)

	stripCheckpoints(t, path, `"id":"12"`)
	// The next start, and a few records after it (signed at Close).
	s2, _ := openTest(t, Options{Path: path, Signer: priv})
	for i := range 3 {
		s2.Write(record(fmt.Sprint("after", i)))
	}
	s2.Close()
	r, err := Verify([]string{path}, VerifyOptions{PublicKey: pub})
	var br *Break
	if !errors.As(err, &br) || !strings.Contains(br.Reason, "no checkpoint signed") {
		t.Fatalf("verify --pubkey of a trail rewritten after its first checkpoint, then signed by a restart: %+v, %v", r, err)
	}
	if recs := lines(t, path); recs[br.Line-1]["event"] != "checkpoint" {
		t.Errorf("the break is at line %d, %v; want the checkpoint that signed the rewritten records", br.Line, recs[br.Line-1])
	}
}

// TestVerifyReportsLastSigned: a trail cut back to a checkpoint verifies
// (nothing in it can tell), but the time of its last signature, which
// Verify reports, is the earlier checkpoint's: the operator who knows
// till ran later sees that its last records are missing.
func TestVerifyReportsLastSigned(t *testing.T) {
	defer func(n int) { CheckpointRecords = n }(CheckpointRecords)
	CheckpointRecords = 5
	pub, _, path := signedTestTrail(t, 12)
	var signed []time.Time
	for _, rec := range lines(t, path) {
		if rec["event"] == "checkpoint" {
			at, _ := time.Parse(time.RFC3339Nano, rec["time"].(string))
			signed = append(signed, at)
		}
	}
	if len(signed) < 2 {
		t.Fatalf("setup: %d checkpoints", len(signed))
	}
	if r := mustVerify(t, VerifyOptions{PublicKey: pub}, path); !r.LastSigned.Equal(signed[len(signed)-1]) {
		t.Errorf("LastSigned %v, want the last checkpoint's time %v", r.LastSigned, signed[len(signed)-1])
	}
	rewrite(t, path, func(l []string) []string { return l[:CheckpointRecords+1] })
	if r := mustVerify(t, VerifyOptions{PublicKey: pub}, path); !r.LastSigned.Equal(signed[0]) {
		t.Errorf("cut back to the first checkpoint: LastSigned %v, want its time %v", r.LastSigned, signed[0])
	}
	if r := mustVerify(t, VerifyOptions{}, path); !r.LastSigned.IsZero() {
		t.Errorf("without a key: LastSigned %v, want none (no signature was checked)", r.LastSigned)
	}
}

// TestParseAuthorizedKeyTypes: --pubkey takes till's key type only. A
// security key's sk-ssh-ed25519 key and a certificate hold an Ed25519
// key too, and were taken as one: a key till never signs with, which
// makes every checkpoint a failed signature rather than the wrong key
// named.
func TestParseAuthorizedKeyTypes(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	sshPub, _ := ssh.NewPublicKey(pub)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 1024)
	rsaPub, _ := ssh.NewPublicKey(&rsaKey.PublicKey)
	signer, _ := ssh.NewSignerFromKey(priv)
	cert := &ssh.Certificate{Key: sshPub, CertType: ssh.UserCert, ValidBefore: ssh.CertTimeInfinity}
	if err := cert.SignCert(rand.Reader, signer); err != nil {
		t.Fatal(err)
	}
	// A security key's public key, as ssh-keygen -t ed25519-sk writes it:
	// type, key, application (OpenSSH's PROTOCOL.u2f).
	wire := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
			b = append(b, p...)
		}
		return b
	}
	sk := "sk-ssh-ed25519@openssh.com " + base64.StdEncoding.EncodeToString(wire([]byte("sk-ssh-ed25519@openssh.com"), pub, []byte("ssh:"))) + "\n"
	for _, tt := range []struct {
		name, text string
		ok         bool
	}{
		{"ssh-ed25519", string(ssh.MarshalAuthorizedKey(sshPub)), true},
		{"sk-ssh-ed25519", sk, false},
		{"certificate", string(ssh.MarshalAuthorizedKey(cert)), false},
		{"rsa", string(ssh.MarshalAuthorizedKey(rsaPub)), false},
	} {
		k, err := ParseAuthorizedKey([]byte(tt.text))
		switch {
		case tt.ok && (err != nil || !k.Equal(pub)):
			t.Errorf("%s: %v", tt.name, err)
		case !tt.ok && (err == nil || !strings.Contains(err.Error(), "want ssh-ed25519")):
			t.Errorf("%s: got %v, want an error naming ssh-ed25519", tt.name, err)
		}
	}
}

// TestReplacedFileNotResumed: while till runs, whoever can write the
// audit folder moves the file away and puts a rewritten copy at its
// path: a signed key use removed, the checkpoint that signed it dropped,
// the rest chained again (within what verify allows unsigned). The
// running till followed the path and went on from the copy's last
// record, so its next checkpoint signed the rewrite. It knows the record
// it wrote last: a file at the path that ends in another is not
// continued from, and verify finds where till's records meet it.
func TestReplacedFileNotResumed(t *testing.T) {
	defer func(n int) { CheckpointRecords = n }(CheckpointRecords)
	CheckpointRecords = 5
	pub, priv, _ := ed25519.GenerateKey(nil)
	var said []string
	s, path := openTest(t, Options{Signer: priv, Log: func(msg string) { said = append(said, msg) }})
	for i := range 12 {
		s.Write(record(fmt.Sprint(i)))
	}
	if err := os.Rename(path, path+".moved"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path + ".moved")
	os.WriteFile(path, b, 0o600)
	stripCheckpoints(t, path, `"id":"7"`) // signed by the second checkpoint
	os.Remove(path + ".moved")
	if err := s.Reopen(); err != nil { // SIGUSR1, or the probe a second later
		t.Fatal(err)
	}
	for i := range 6 {
		s.Write(record(fmt.Sprint("after", i)))
	}
	s.Close()
	_, err := Verify([]string{path}, VerifyOptions{PublicKey: pub})
	var br *Break
	if !errors.As(err, &br) {
		t.Fatalf("verify --pubkey of a file rewritten and swapped in under a running till: %v, want a break", err)
	}
	if recs := lines(t, path); recs[br.Line]["id"] != "after0" {
		t.Errorf("break %v; want it where till's first record after the swap meets the copy", err)
	}
	if len(said) != 1 || !strings.Contains(said[0], "does not end in the record till wrote last") {
		t.Errorf("log %q, want the swap said", said)
	}
}

// TestVerifyCheckpointKeptReformatted: a checkpoint kept elsewhere may
// come back reformatted (a ticket, a wiki, json.dumps' spaces, its keys
// reordered): it is the same checkpoint, with the same seq, chain head,
// time and signature, and the trail that holds it holds everything up to
// it. Verify found it only byte for byte, and said that records up to it
// were removed: a false accusation of tampering. One whose chain head
// differs is still not found.
func TestVerifyCheckpointKeptReformatted(t *testing.T) {
	defer func(n int) { CheckpointRecords = n }(CheckpointRecords)
	CheckpointRecords = 10
	pub, priv, _ := ed25519.GenerateKey(nil)
	s, path := openTest(t, Options{Signer: priv})
	for i := range 25 {
		s.Write(record(fmt.Sprint(i)))
	}
	s.Close()
	b, _ := os.ReadFile(path)
	var kept string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, `"event":"checkpoint"`) {
			kept = l
			break
		}
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(kept), &m); err != nil {
		t.Fatal(err)
	}
	spaced, _ := json.MarshalIndent(m, "", "  ") // keys sorted, spaces and newlines
	for _, key := range []ed25519.PublicKey{nil, pub} {
		if _, err := Verify([]string{path}, VerifyOptions{Checkpoint: spaced, PublicKey: key}); err != nil {
			t.Errorf("verify (key %v) against the checkpoint kept reformatted: %v", key != nil, err)
		}
	}
	m["prev"] = strings.Repeat("0", 64)
	other, _ := json.Marshal(m)
	if _, err := Verify([]string{path}, VerifyOptions{Checkpoint: other}); err == nil {
		t.Error("a checkpoint with another chain head was found in the trail")
	}
}

// TestRotationCheckpointUnsyncedKeepsRecord: with fsync: always and a
// signed trail, the record that fills a file has the checkpoint that ends
// the file written first. When that checkpoint cannot be flushed, the
// record is not written: it is kept and written later, as any record that
// could not be, never taken for written and dropped.
func TestRotationCheckpointUnsyncedKeepsRecord(t *testing.T) {
	defer func(f func(syncer) error) { syncOut = f }(syncOut)
	pub, priv, _ := ed25519.GenerateKey(nil)
	path := filepath.Join(t.TempDir(), "audit.log")
	var failures []error
	s, err := Open(Options{Path: path, Fsync: FsyncAlways, Signer: priv, MaxSize: 2000, MaxFiles: 20,
		OnError: func(err error, _ []byte) { failures = append(failures, err) }})
	if err != nil {
		t.Fatal(err)
	}
	failed := false
	syncOut = func(f syncer) error {
		// The first checkpoint is the one that ends the first file.
		if !failed && strings.Contains(string(s.line), `"event":"checkpoint"`) {
			failed = true
			return errors.New("input/output error")
		}
		return f.Sync()
	}
	var want []string
	for i := range 40 {
		want = append(want, fmt.Sprint(i))
		s.Write(record(fmt.Sprint(i)))
	}
	s.Close()
	if !failed || len(failures) == 0 {
		t.Fatalf("setup: no checkpoint failed to sync (%v)", failures)
	}
	files := []string{path}
	for i := 1; i <= 20; i++ {
		if _, err := os.Stat(fmt.Sprintf("%s.%d", path, i)); err == nil {
			files = append([]string{fmt.Sprintf("%s.%d", path, i)}, files...)
		}
	}
	var got []string
	for _, f := range files {
		for _, m := range lines(t, f) {
			if m["event"] == "request" {
				got = append(got, fmt.Sprint(m["id"]))
			}
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("the trail holds the records\n%v\nwant\n%v", got, want)
	}
	mustVerify(t, VerifyOptions{PublicKey: pub}, files...)
}
