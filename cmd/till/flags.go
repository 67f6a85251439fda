package main

import (
	"flag"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"github.com/tillgw/till/config"
)

// newFlags returns a flag set for a subcommand with the -c flag every
// subcommand takes.
func newFlags(name string, stderr io.Writer, configPath *string) *flag.FlagSet {
	fs := flag.NewFlagSet("till "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(configPath, "c", "", "config `file` (default $TILL_CONFIG, then ./till.yaml)")
	return fs
}

// configFirst moves a -c FILE written before the command (till -c
// till.yaml serve) to just after the command and its subcommand, where
// every command reads it.
func configFirst(args []string) []string {
	if len(args) == 0 {
		return args
	}
	n := configFlagWords(args[0])
	if n == 0 || len(args) <= n {
		return args
	}
	cfg, rest := args[:n], args[n:]
	words := 1
	if _, ok := commandGroups[rest[0]]; ok && len(rest) > 1 {
		words = 2
	}
	return append(append(slices.Clone(rest[:words]), cfg...), rest[words:]...)
}

// configFlagWords is how many words a -c flag starting with a takes: 2
// (-c FILE), 1 (-c=FILE), or 0 when a is no -c flag.
func configFlagWords(a string) int {
	switch {
	case a == "-c" || a == "--c":
		return 2
	case strings.HasPrefix(a, "-c=") || strings.HasPrefix(a, "--c="):
		return 1
	}
	return 0
}

// parseInterleaved parses flags that may come before or after positional
// arguments (till secret set openai --expires 90d) and returns the
// positional arguments.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// safeFlagError matches the flag package's messages that hold nothing but
// a bare flag name.
var safeFlagError = regexp.MustCompile(`^(flag provided but not defined|flag needs an argument): -[a-z][a-z0-9-]{0,31}$`)

// parseFlags is fs.Parse without the flag package's own messages, which
// quote the argument that failed: a key pasted where a NAME goes can start
// with '-' ("-----BEGIN PRIVATE KEY-----...") and would be printed back.
func parseFlags(fs *flag.FlagSet, args []string) error {
	out := fs.Output()
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(out)
	if err == nil {
		return nil
	}
	name := strings.TrimPrefix(fs.Name(), "till ")
	if err == flag.ErrHelp {
		printHelp(out, name, fs)
		return err
	}
	fmt.Fprintf(out, "Usage: %s\n", synopsis(name))
	fs.PrintDefaults()
	switch {
	case safeFlagError.MatchString(err.Error()):
		return usageError{err.Error()}
	}
	return usageError{"a malformed flag or flag value (not shown, in case it is a key); put -- before an argument that starts with '-'"}
}

// wantArgs checks the number of positional arguments.
func wantArgs(pos []string, n int, synopsis string) error {
	if len(pos) != n {
		// The arguments are not echoed: one could be a key pasted by mistake.
		return usageError{fmt.Sprintf("usage: %s (expected %d argument(s), got %d)", synopsis, n, len(pos))}
	}
	return nil
}

// knownClient refuses, as a usage error, a --client NAME that names no
// client of cfg. The name is not echoed: it may be a key pasted in its
// place.
func knownClient(cfg *config.Config, name string) error {
	if slices.ContainsFunc(cfg.Clients, func(c config.Client) bool { return c.Name == name }) {
		return nil
	}
	return withHint(usageError{"--client: no client of that name in " + displayPath(configName(cfg))},
		"till client list shows the names; till client add NAME makes one")
}

// clientNameArg checks a client NAME given on the command line (an
// argument or --client) before anything prints it. The error never holds
// the argument: what fails the name rule may be a key pasted in its place,
// and it would land in a terminal or a CI log.
func clientNameArg(arg, what string) error {
	err := config.ValidName(arg)
	if err == nil {
		return nil
	}
	return withHint(usageError{fmt.Sprintf("%s is not a client name (%d characters, not shown)", what, len(arg))},
		"a client name "+err.Error()+"; till client list shows them")
}
