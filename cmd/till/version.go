package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

func runVersion(args []string, e *env) error {
	var cfgPath string
	fs := newFlags("version", e.stderr, &cfgPath)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, "till version"); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "till %s %s\n", buildVersion(), runtime.Version())
	return nil
}

// buildVersion is the -ldflags version, else the module version, else "dev".
func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
