package audit

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
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
	pub, priv, _ := ed25519.GenerateKey(nil)
	s, path := openTest(t, Options{Signer: priv})
	for i := range 30 {
		s.Write(record(fmt.Sprint(i)))
	}
	s.Close()
	r := mustVerify(t, VerifyOptions{PublicKey: pub}, path)
	if r.Checkpoints < 6 {
		t.Fatalf("setup: %+v", r)
	}

	b, _ := os.ReadFile(path)
	var c chain
	var out []byte
	checkpoints := 0
	for line := range strings.Lines(string(b)) {
		if strings.Contains(line, `"event":"checkpoint"`) {
			checkpoints++
			if checkpoints > 1 {
				continue // stripped: its signature would no longer verify
			}
		}
		if strings.Contains(line, `"id":"12"`) {
			continue // the key use to hide
		}
		line = strings.Replace(line, `"id":"20"`, `"id":"forged"`, 1)
		// Take the chain fields off and stamp the record again.
		i := strings.LastIndex(line, `,"seq":`)
		raw := line[:i] + "}\n"
		stamped := c.stamp(nil, []byte(raw))
		c.commit(stamped)
		out = append(out, stamped...)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := Verify([]string{path}, VerifyOptions{PublicKey: pub})
	var br *Break
	if !errors.As(err, &br) || !strings.Contains(br.Reason, "records follow the last checkpoint") {
		t.Fatalf("verify --pubkey of a trail with a signed record removed and another edited, "+
			"after its later checkpoints were stripped: %+v, %v", r, err)
	}
	// Without a key, the chain alone cannot tell.
	mustVerify(t, VerifyOptions{}, path)
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
