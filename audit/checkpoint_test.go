package audit

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
