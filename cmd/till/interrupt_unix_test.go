//go:build unix

package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tillgw/till/internal/regfile/regfiletest"
)

// TestAuditStopsWhenInterrupted: main takes SIGINT and SIGTERM for every
// command, so till audit summary and verify, which did not watch for
// them, could not be stopped (Ctrl-C, timeout(1), a supervisor) while
// blocked on a file anyone may have put among the trail's: a FIFO whose
// open never returns, a gzip bomb. Interrupted, they end with 130 at
// once. (Unfixed, this test blocks until go test's -timeout.)
func TestAuditStopsWhenInterrupted(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "audit.log.1")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip("no FIFO here:", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // as a signal does
	for _, cmd := range []string{"summary", "verify"} {
		var out, errOut bytes.Buffer
		code := run(ctx, []string{"audit", cmd, fifo}, &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }})
		if code != exitInterrupted || errOut.String() != "till: interrupted\n" {
			t.Errorf("audit %s of a FIFO, interrupted: exit %d: %q", cmd, code, errOut.String())
		}
	}
}

// TestSecretSetFileStopsWhenInterrupted: secret set --file with a named
// pipe (a process substitution, <(pass show openai), is one) waits for
// its writer, as it must; but main takes SIGINT and SIGTERM, and the
// open of a pipe no one writes to did not watch for them, so neither
// Ctrl-C nor timeout(1) could end it. Interrupted, it ends with 130 at
// once and stores nothing. (Unfixed, this test blocks until go test's
// -timeout.)
func TestSecretSetFileStopsWhenInterrupted(t *testing.T) {
	c := newCLI(t)
	fifo := filepath.Join(c.dir, "value")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip("no FIFO here:", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // as a signal does
	var out, errOut bytes.Buffer
	code := run(ctx, []string{"secret", "set", "openai", "--file", fifo}, &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }})
	if code != exitInterrupted || errOut.String() != "till: interrupted: nothing stored\n" {
		t.Errorf("secret set --file of a FIFO, interrupted: exit %d: %q", code, errOut.String())
	}
}

// TestCACertMustBeRegular: till env and till ca export read
// forward.ca_cert as serve does: a named pipe there is refused at once,
// not waited on (its open ignored Ctrl-C), and a device such as
// /dev/zero is not read until memory runs out. Were the pipe waited on,
// the test writes to it, and what the command makes of that is not the
// pipe's refusal.
func TestCACertMustBeRegular(t *testing.T) {
	for _, args := range [][]string{{"env"}, {"ca", "export"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			c := newCLI(t)
			fifo := filepath.Join(c.dir, "ca.pem")
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Skip("no FIFO here:", err)
			}
			for _, ca := range []string{fifo, os.DevNull} {
				os.WriteFile("till.yaml", []byte("version: 1\nforward: {enabled: true, ca_cert: "+ca+"}\n"), 0o644)
				done := make(chan error, 1)
				go func() {
					_, errOut, _ := c.run("", args...)
					done <- errors.New(errOut)
				}()
				err := regfiletest.Fed(fifo, "not a certificate\n", done)
				if !strings.Contains(err.Error(), ca+" is not a regular file") {
					t.Errorf("forward.ca_cert %s: got %q, want it refused", ca, err)
				}
			}
		})
	}
}
