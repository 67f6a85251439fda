//go:build linux

package test

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// TestSecretPromptPty drives till secret set at a terminal: a pty, as a
// person would. Ctrl-C and SIGTERM end it with 130, Ctrl-D and an empty
// line with 1, none storing anything, each leaving the terminal as it
// found it; nothing typed is echoed.
func TestSecretPromptPty(t *testing.T) {
	const typed = "sk-typed-at-the-prompt-0123456789"
	suiteLeaks.key(typed)
	pemKey := "-----BEGIN PRIVATE KEY-----\rTUlJQ2Vn\rc2VjcmV0\r-----END PRIVATE KEY-----\r"
	tests := []struct {
		name   string
		input  string
		signal syscall.Signal
		code   int
		stderr string
		args   []string
	}{
		{"ctrl-c", typed[:10] + "\x03", 0, 130, "till: interrupted: nothing stored", nil},
		{"ctrl-d", typed[:10] + "\x04", 0, 1, "no value entered (Ctrl-D): nothing stored", nil},
		{"ctrl-d at once", "\x04", 0, 1, "nothing stored", nil},
		{"sigterm", typed[:10], syscall.SIGTERM, 130, "till: interrupted: nothing stored", nil},
		{"sigint", typed[:10], syscall.SIGINT, 130, "till: interrupted: nothing stored", nil},
		{"empty", "\r", 0, 1, "no value from the prompt: nothing stored", nil},
		{"typed", typed + "\r", 0, 0, `stored secret "openai"`, nil},
		// Pasted whole, and what follows it dropped, not left for the
		// shell to run and keep in its history.
		{"typed ahead", typed + "\rls -l\r", 0, 0, `stored secret "openai"`, nil},
		{"pem pasted", pemKey + "echo after\r", 0, 0, `stored secret "openai"`, []string{"--pem"}},
		{"json pasted", "{\r  \"sid\": \"" + typed + "\",\r  \"token\": \"t\"\r}\rleft\r", 0, 0, `stored secret "openai"`, []string{"--json"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			ptmx, tty, err := pty.Open()
			if err != nil {
				t.Skipf("no pty: %v", err)
			}
			defer ptmx.Close()
			defer tty.Close()
			before, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(tillBin, append([]string{"secret", "set", "openai"}, tt.args...)...)
			cmd.Dir = dir
			cmd.Env = tillEnv()
			cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			screen := &syncBuffer{}
			go io.Copy(screen, ptmx)

			waitFor(t, 10*time.Second, "the prompt", func() bool { return strings.Contains(screen.String(), "secret value") })
			if _, err := ptmx.Write([]byte(tt.input)); err != nil {
				t.Fatal(err)
			}
			if tt.signal != 0 {
				// The key typed so far reaches till before the signal.
				time.Sleep(100 * time.Millisecond)
				cmd.Process.Signal(tt.signal)
			}
			var code int
			select {
			case err := <-exited:
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					code = ee.ExitCode()
				} else if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-exited
				t.Fatalf("till secret set still waits at the prompt after %q; the screen:\n%s", tt.input, screen.String())
			}
			if n, err := unix.IoctlGetInt(int(tty.Fd()), unix.TIOCINQ); err != nil || n != 0 {
				t.Errorf("%d bytes typed are left unread for the shell (%v)", n, err)
			}
			after, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			if after.Lflag != before.Lflag || after.Iflag != before.Iflag || after.Oflag != before.Oflag {
				t.Errorf("the terminal was not restored: lflag %#x iflag %#x oflag %#x, was %#x %#x %#x",
					after.Lflag, after.Iflag, after.Oflag, before.Lflag, before.Iflag, before.Oflag)
			}
			waitFor(t, 5*time.Second, "till's last words", func() bool { return strings.Contains(screen.String(), tt.stderr) })
			out := screen.String()
			suiteLeaks.text("till secret set at a pty", out)
			if code != tt.code {
				t.Errorf("exit %d, want %d; the screen:\n%s", code, tt.code, out)
			}
			if strings.Contains(out, typed[:10]) {
				t.Errorf("what was typed was echoed:\n%s", out)
			}
			_, err = os.Stat(filepath.Join(dir, "till.vault"))
			if stored := err == nil; stored != (tt.code == 0) {
				t.Errorf("vault exists: %v, want %v", stored, tt.code == 0)
			}
		})
	}
}

// TestSecretPromptAfterStop: till secret set stopped at its prompt from
// outside (SIGTSTP or SIGSTOP: Ctrl-Z reaches the raw prompt as a byte,
// so a kill from another terminal) under an interactive shell, then
// brought back with fg. The shell sets the terminal as it likes
// meanwhile (bash turns echo back on); the prompt makes it raw again when
// it continues, so what is typed after fg is not echoed either.
func TestSecretPromptAfterStop(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	const typed = "sk-typed-across-a-stop-0123456789"
	suiteLeaks.key(typed)
	for name, sig := range map[string]syscall.Signal{"SIGTSTP": syscall.SIGTSTP, "SIGSTOP": syscall.SIGSTOP} {
		t.Run(name, func(t *testing.T) { promptAcrossStop(t, bash, typed, sig) })
	}
}

// promptAcrossStop types typed at till secret set's prompt under bash on
// a pty, stopping till with sig halfway and bringing it back with fg.
func promptAcrossStop(t *testing.T, bash, typed string, sig syscall.Signal) {
	dir := t.TempDir()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer ptmx.Close()
	defer tty.Close()
	sh := exec.Command(bash, "--norc", "--noprofile", "-i")
	sh.Dir = dir
	sh.Env = tillEnv("PS1=shell$ ", "TERM=dumb")
	sh.Stdin, sh.Stdout, sh.Stderr = tty, tty, tty
	sh.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sh.Process.Kill(); sh.Wait() }()
	screen := &syncBuffer{}
	go io.Copy(screen, ptmx)
	see := func(what string) {
		t.Helper()
		waitFor(t, 10*time.Second, what+" on the screen:\n"+screen.String(), func() bool { return strings.Contains(screen.String(), what) })
	}
	see("shell$ ")
	ptmx.Write([]byte(tillBin + " secret set openai\r"))
	see("secret value")
	ptmx.Write([]byte(typed[:10]))
	time.Sleep(100 * time.Millisecond)
	pgrp, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPGRP)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(-pgrp, sig); err != nil {
		t.Fatal(err)
	}
	see("Stopped")
	ptmx.Write([]byte("fg\r"))
	// Back in the foreground: the prompt reads without echo again.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if pg, _ := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPGRP); pg != pgrp {
			continue
		}
		if tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS); err == nil && tio.Lflag&unix.ECHO == 0 {
			break
		}
	}
	ptmx.Write([]byte(typed[10:] + "\r"))
	see(`stored secret "openai"`)
	out := screen.String()
	suiteLeaks.text("till secret set stopped at a pty", out)
	if strings.Contains(out, typed[:10]) || strings.Contains(out, typed[10:]) {
		t.Errorf("what was typed was echoed:\n%s", out)
	}
}
