package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Operations: signals, stopping, audit files that move, vault leftovers.

// TestCommandsRemoveVaultLeftovers leaves a temp file beside the vault, as
// a secret set killed before its rename does (an encrypted copy of an
// older vault, holding keys since rotated): every command that opens the
// vault removes it.
func TestCommandsRemoveVaultLeftovers(t *testing.T) {
	dir := t.TempDir()
	setSecret(t, dir, "openai", openaiKey)
	leftover := filepath.Join(dir, ".till.vault.tmp-4242")
	leave := func() {
		t.Helper()
		if err := os.WriteFile(leftover, []byte("an older vault"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"secret", "list"}, {"check"}, {"test", "GET", "/openai/v1/models"}} {
		leave()
		runTill(t, dir, "", nil, args...)
		if _, err := os.Stat(leftover); err == nil {
			t.Errorf("till %s left the vault's temp file in place", strings.Join(args, " "))
		}
	}
	leave()
	startTillIn(t, dir, "")
	if _, err := os.Stat(leftover); err == nil {
		t.Error("till serve left the vault's temp file in place")
	}
}
