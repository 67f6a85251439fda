// Command till is an outbound API gateway: apps send it unauthenticated
// requests, and it attaches the provider key that it alone holds.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/tillgw/till/internal/termtext"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	if args, _, err := globalFlags(os.Args[1:]); err == nil && len(args) > 0 && configFirst(args)[0] == "serve" {
		raiseTimerSlack()
		// A closed stdout (the default audit sink) must fail the write,
		// so that till refuses requests, rather than kill the process
		// unrecorded. Every other command dies of it, as other tools do
		// when the reader of their output has gone (till secret list |
		// head -1): quietly.
		signal.Ignore(syscall.SIGPIPE)
	}
	getenv := withholdOwnSecrets() // after the exec above, which keeps them
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], &env{
		stdin:  os.Stdin,
		stdout: os.Stdout,
		stderr: os.Stderr,
		getenv: getenv,
	}))
}

// withholdOwnSecrets takes till's own secrets (withheldFromHelpers) out
// of the process's environment, which every program started from it
// inherits: the AWS SDK runs a profile's credential_process with the
// environment as it is, with no say of till's. It returns the getenv
// the commands read them through, now and at each reload.
func withholdOwnSecrets() func(string) string {
	own := make(map[string]string)
	for _, name := range withheldFromHelpers {
		if v, ok := os.LookupEnv(name); ok {
			own[name] = v
			os.Unsetenv(name)
		}
	}
	return func(name string) string {
		if v, ok := own[name]; ok {
			return v
		}
		return os.Getenv(name)
	}
}

// env is what a subcommand may touch of the outside world, so that tests
// can drive the CLI in-process.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	// log holds the global flags --log-level and --log-format.
	log logFlags
	// coreDumps says why core dumps could not be disabled, if so.
	coreDumps error
	// warn, when set, takes the warnings about the files a command reads
	// (warnf) in place of stderr: serve logs them, so that its stderr
	// stays log lines.
	warn func(msg string)
}

// warnf prints a warning about the files a command reads, as
// `till: warning: …` on stderr, or to e.warn when set.
func (e *env) warnf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if e.warn != nil {
		e.warn(msg)
		return
	}
	fmt.Fprintf(e.stderr, "till: warning: %s\n", msg)
}

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
	// exitInterrupted is the shell's code for a command ended by SIGINT.
	exitInterrupted = 130
)

// usageError marks an error in how till was called (exit code 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func run(ctx context.Context, args []string, e *env) int {
	// Before any command reads a key: a crash must not write it to disk.
	e.coreDumps = noCoreDumps()
	args, lf, err := globalFlags(args)
	if err != nil {
		return report(err, e.stderr)
	}
	e.log = lf
	args = configFirst(args)
	if len(args) > 0 && configFlagWords(args[0]) > 0 {
		// configFirst left it: no command follows.
		return report(usageError{"-c FILE goes with a command: till -c till.yaml serve"}, e.stderr)
	}
	if len(args) == 0 {
		printUsage(e.stderr)
		return exitUsage
	}
	args, e, code, done := helpRequest(args, e)
	if done {
		return code
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "init":
		err = runInit(rest, e)
	case "serve":
		err = runServe(ctx, rest, e)
	case "check":
		err = runCheck(rest, e)
	case "test":
		err = runTest(rest, e)
	case "secret":
		err = runSecret(ctx, rest, e)
	case "ca":
		err = runCA(rest, e)
	case "client":
		err = runClient(rest, e)
	case "env":
		err = runEnv(rest, e)
	case "audit":
		err = untilInterrupted(ctx, func() error { return runAudit(rest, e) })
	case "health":
		err = runHealth(ctx, rest, e)
	case "usage":
		err = runUsage(ctx, rest, e)
	case "version", "--version":
		err = runVersion(rest, e)
	case "help", "-h", "--help":
		printUsage(e.stdout)
		return exitOK
	default:
		err = unknownCommand(cmd)
	}
	return report(err, e.stderr)
}

// maxErrorLine caps each line report prints: a line of till's own is
// well under it, and one quoting another party is cut there.
const maxErrorLine = 4096

// report prints err as `till: error: …` (and `till: hint: …`) and returns
// the exit code.
func report(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK // the usage asked for is printed
	}
	if errors.Is(err, errRefused) {
		return exitError // the verdict is already printed
	}
	if errors.Is(err, errInterrupted) {
		fmt.Fprintf(stderr, "till: %s\n", termtext.Lines(err.Error(), maxErrorLine))
		return exitInterrupted
	}
	// An error may quote another party (a secret source's message, a
	// field of an audit file): no escape sequence of theirs runs on the
	// operator's terminal. Those that quote one escape its newlines too.
	fmt.Fprintf(stderr, "till: error: %s\n", termtext.Lines(err.Error(), maxErrorLine))
	for _, h := range hints(err) {
		fmt.Fprintf(stderr, "till: hint: %s\n", termtext.Lines(h, maxErrorLine))
	}
	var u usageError
	if errors.As(err, &u) {
		return exitUsage
	}
	return exitError
}
