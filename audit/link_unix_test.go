//go:build unix

package audit

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestReopenNeverFollowsPlantedLink: whoever can write in the audit
// folder (a log folder shared with a log shipper's group, say) removes the
// audit file and leaves a symbolic link in its place. till, replacing the
// removed file "at its path", must not open the link's target for
// appending: that would append records (whose path field the unauthenticated
// caller chooses, "$(...)" included) to any file till may write: its vault
// (corrupting it), its key, a shell's rc file. config.Parse refuses a link to
// the vault only at start; the reopen at run time follows any link.
func TestReopenNeverFollowsPlantedLink(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	victim := filepath.Join(t.TempDir(), "victim")
	orig := []byte("echo this file is till's user's, not the audit trail\n")
	if err := os.WriteFile(victim, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(Options{Path: path, OnError: func(error, []byte) {}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Write(record("1"))
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, path); err != nil {
		t.Fatal(err)
	}
	s.Write(record("$(touch${IFS}/tmp/pwned)"))
	s.Write(record("3"))
	got, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, orig) {
		t.Errorf("till appended audit records to the target of a link planted at audit.file:\n%s", got)
	}
}
