//go:build unix

package audit

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"strings"
	"testing"
	"time"
)

// TestSecondSinkOnFileRefused: a second till opening the audit file a
// running till writes (a mistaken second till serve, one started before
// the other stopped) must refuse it before it writes a byte: with
// audit.sign, its checkpoint at start took the seq the running till's
// next record then took again, and the trail no longer verified. Once the
// first till has closed it, or after a rotation, the file is free.
func TestSecondSinkOnFileRefused(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	first, path := openTest(t, Options{Signer: key})
	first.Write(record("1"))
	before, _ := os.ReadFile(path)
	if _, err := Open(Options{Path: path, Signer: key}); err == nil || !strings.Contains(err.Error(), "another till") {
		t.Fatalf("a second sink on the file: %v, want a refusal naming another till", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
		t.Errorf("the refused sink wrote to the file:\n%s", after[len(before):])
	}
	first.Write(record("2"))
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	first.Write(record("3")) // to the renamed file, then follows the path
	first.Write(record("4"))
	first.Close()
	mustVerify(t, VerifyOptions{PublicKey: pub}, path+".1", path)
	again, err := Open(Options{Path: path})
	if err != nil {
		t.Fatalf("the file once its till closed it: %v", err)
	}
	again.Close()
}

// TestRotatedFileInUseNotCut: a file rotated (renamed) while its till
// still has it open, and before that till follows the move, is the
// predecessor a new till on the path finds: a partial last line there
// may be a record that till is writing, not one a crash cut. It is left
// alone.
func TestRotatedFileInUseNotCut(t *testing.T) {
	// The first till must not follow the move during the test.
	defer func(d time.Duration) { tickInterval = d }(tickInterval)
	tickInterval = time.Hour
	first, path := openTest(t, Options{})
	first.Write(record("1"))
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path+".1", os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"level":"info","event":"use"`) // being written
	f.Close()
	before, _ := os.ReadFile(path + ".1")
	second, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	second.Close()
	if after, _ := os.ReadFile(path + ".1"); !bytes.Equal(after, before) {
		t.Errorf("the file another till writes was cut: %q, was %q", after, before)
	}
}
