package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// commit and date may be set at build time with -ldflags "-X main.commit=...
// -X main.date=..." where the VCS stamp is missing (a build from a source
// archive, or with -buildvcs=false).
var commit, date string

// unknown is what version prints for what the build did not record.
const unknown = "unknown"

func runVersion(args []string, e *env) error {
	var cfgPath string
	fs := newFlags("version", e.stderr, &cfgPath)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, "till version [-c FILE]"); err != nil {
		return err
	}
	bi := readBuildInfo()
	fmt.Fprintf(e.stdout, "till %s\ncommit: %s\nbuilt:  %s\ngo:     %s\n", bi.version, bi.commit, bi.date, bi.goVersion)
	return nil
}

// buildInfo is what a till binary knows of its own build.
type buildInfo struct {
	version   string // -ldflags, module version, or "dev"
	commit    string // VCS revision, "-dirty" when modified; or "unknown"
	date      string // -ldflags date, else the commit's time (RFC 3339); or "unknown"
	goVersion string
}

// readBuildInfo reads the build's stamp: the -ldflags values first, then
// what the go command recorded (module version, vcs.revision,
// vcs.modified, vcs.time).
func readBuildInfo() buildInfo {
	bi, _ := debug.ReadBuildInfo()
	return buildInfoFrom(bi, version, commit, date)
}

// buildInfoFrom is readBuildInfo with its inputs given; bi may be nil.
func buildInfoFrom(bi *debug.BuildInfo, version, commit, date string) buildInfo {
	out := buildInfo{version: version, commit: commit, date: date, goVersion: runtime.Version()}
	var modified bool
	if bi != nil {
		if out.version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			out.version = bi.Main.Version
		}
		if bi.GoVersion != "" {
			out.goVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if out.commit == "" {
					out.commit = s.Value
				}
			case "vcs.modified":
				modified = s.Value == "true"
			case "vcs.time":
				if out.date == "" {
					out.date = s.Value
				}
			}
		}
	}
	if out.version == "" {
		out.version = "dev"
	}
	if out.commit == "" {
		out.commit = unknown
	} else if modified && commit == "" {
		out.commit += "-dirty"
	}
	if out.date == "" {
		out.date = unknown
	}
	return out
}
