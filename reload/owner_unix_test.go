//go:build unix

package reload

import (
	"os"
	"path/filepath"
	"testing"
)

// TestPollerSeesChown: a vault renamed in with an owner the running till
// cannot read fails to load; the chown that mends it must be seen as a
// change, though it leaves size, mode and time alone.
func TestPollerSeesChown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root can give a file away")
	}
	dir := t.TempDir()
	vaultFile := filepath.Join(dir, "till.vault")
	if err := os.WriteFile(vaultFile, []byte("v1"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := newPoller(vaultFile)
	if p.settled() {
		t.Fatal("nothing changed, and the poller says settled")
	}
	if err := os.Chown(vaultFile, 65532, 65532); err != nil {
		t.Fatal(err)
	}
	if p.settled() {
		t.Fatal("chown: settled at once, want a change seen first")
	}
	if !p.settled() {
		t.Fatal("chown held still: got settled false, want true: a chown must cause a reload")
	}
}
