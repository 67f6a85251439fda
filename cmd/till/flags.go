package main

import (
	"flag"
	"fmt"
	"io"
)

// newFlags returns a flag set for a subcommand with the -c flag every
// subcommand takes.
func newFlags(name string, stderr io.Writer, configPath *string) *flag.FlagSet {
	fs := flag.NewFlagSet("till "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(configPath, "c", "", "config `file` (default $TILL_CONFIG, then ./till.yaml)")
	return fs
}

// parseInterleaved parses flags that may come before or after positional
// arguments (till secret set openai --expires 90d) and returns the
// positional arguments.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if err == flag.ErrHelp {
				return nil, err
			}
			return nil, usageError{err.Error()}
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

// wantArgs checks the number of positional arguments.
func wantArgs(pos []string, n int, synopsis string) error {
	if len(pos) != n {
		// The arguments are not echoed: one could be a key pasted by mistake.
		return usageError{fmt.Sprintf("usage: %s (expected %d argument(s), got %d)", synopsis, n, len(pos))}
	}
	return nil
}
