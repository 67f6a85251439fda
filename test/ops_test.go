package test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Operations: signals, stopping, audit files that move, vault leftovers.

// stopTime sends SIGTERM to tl and returns how long it took to exit 0.
func stopTime(t *testing.T, tl *till) time.Duration {
	t.Helper()
	start := time.Now()
	if err := tl.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tl.done:
	case <-time.After(15 * time.Second):
		t.Fatal("till did not stop within 15s of SIGTERM")
	}
	took := time.Since(start)
	if tl.exit != nil {
		t.Errorf("till exited with %v after SIGTERM, want 0", tl.exit)
	}
	return took
}

// TestIdleStopIsPrompt stops an idle till on SIGTERM, in reverse mode and
// in forward mode with an intercepted (HTTP/2) connection kept alive by
// its client: with nothing in flight, neither has anything to wait for.
func TestIdleStopIsPrompt(t *testing.T) {
	get := func(c *http.Client, url string) {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: got %d, want 200", url, resp.StatusCode)
		}
	}

	u := newUpstream(t, http.HandlerFunc(okHandler))
	rev := startTill(t, providerConfig(u, ""), providerSecrets, u.caFile)
	get(&http.Client{}, rev.url("/openai/v1/models")) // its connection stays open, idle
	reverse := stopTime(t, rev)

	f := startForward(t, "deny", false, false)
	c := f.goClient(t)
	get(c, f.providerURL+"/v1/models")
	forward := stopTime(t, f.tl)
	t.Logf("idle stop: reverse %v, forward with an intercepted connection %v", reverse.Round(time.Millisecond), forward.Round(time.Millisecond))
	// Both take well under 100 ms when nothing waits; the bound is
	// generous for a loaded machine, and far under the second that a
	// lingering connection costs.
	for mode, took := range map[string]time.Duration{"reverse": reverse, "forward": forward} {
		if took > 700*time.Millisecond {
			t.Errorf("%s mode: an idle till took %v to stop, want under 700ms", mode, took.Round(time.Millisecond))
		}
	}
}

// TestShutdownCutRecordsSayShutdown stops till while a request waits for
// its upstream longer than the grace period: till cuts it, and its record
// says so (499, reason shutdown), not that the app went away.
func TestShutdownCutRecordsSayShutdown(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // till cuts it
	}))
	tl := startTill(t, providerConfig(u, "shutdown_grace: 300ms\n"), providerSecrets, u.caFile)
	go http.Get(tl.url("/openai/v1/models"))
	for len(u.requests()) == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	stopTime(t, tl)
	recs := tl.audit()
	if len(recs) != 1 || recs[0]["status"] != 499.0 || recs[0]["reason"] != "shutdown" || recs[0]["outcome"] != "error" {
		t.Errorf("audit after a shutdown cut a request: got %v, want one record with status 499, outcome error, reason shutdown", recs)
	}
}

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
