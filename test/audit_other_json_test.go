package test

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAuditFileOfAnotherAppLeftAlone: audit.file names an app's JSON
// settings by mistake, one line with no final newline as JSON writers
// leave it. check said ok, and serve took the line for a record a crash
// had cut short: it removed it, the whole file, logged that it had
// repaired a crash, and wrote its records there. Both now refuse the
// file, and leave it as it was.
func TestAuditFileOfAnotherAppLeftAlone(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := t.TempDir()
	tillDirIn(t, dir, providerConfig(u, "audit: {file: settings.json}\n"))
	path := filepath.Join(dir, "settings.json")
	settings := `{"database":"postgres://db/app","replicas":3}`
	if err := os.WriteFile(path, []byte(settings), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runTill(t, dir, "", nil, "check")
	if code != 1 || !strings.Contains(errOut, "not an audit file") {
		t.Errorf("till check with audit.file an app's settings: exit %d, want 1, not an audit file\n%s%s", code, out, errOut)
	}
	if tl, err := tryStartTillCmd(t, dir, u.caFile, nil, nil, "serve", "--listen", "127.0.0.1:0"); !errors.Is(err, errExited) {
		if err == nil {
			tl.stop()
		}
		t.Errorf("till serve with audit.file an app's settings: %v, want it to exit before listening", err)
	}
	if got, _ := os.ReadFile(path); string(got) != settings {
		t.Errorf("the app's settings were changed: %q, now %q", settings, got)
	}
}
