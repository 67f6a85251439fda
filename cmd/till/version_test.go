package main

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestBuildInfo(t *testing.T) {
	stamped := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Version: "v1.4.0"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef"},
			{Key: "vcs.time", Value: "2026-11-30T10:00:00Z"},
			{Key: "vcs.modified", Value: "false"},
		},
	}
	dirty := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Version: "(devel)"},
		Settings:  []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "true"}},
	}
	tests := []struct {
		name                  string
		bi                    *debug.BuildInfo
		version, commit, date string // -ldflags values
		want                  buildInfo
	}{
		{"no build info", nil, "", "", "", buildInfo{"dev", unknown, unknown, runtime.Version()}},
		{"-buildvcs=false", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, "", "", "",
			buildInfo{"dev", unknown, unknown, "go1.26.8"}},
		{"stamped", stamped, "", "", "", buildInfo{"v1.4.0", "0123456789abcdef", "2026-11-30T10:00:00Z", "go1.26.8"}},
		{"modified", dirty, "", "", "", buildInfo{"dev", "abc-dirty", unknown, "go1.26.8"}},
		{"-ldflags win", dirty, "v2.0.0", "fedcba", "2026-12-01T00:00:00Z", buildInfo{"v2.0.0", "fedcba", "2026-12-01T00:00:00Z", "go1.26.8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := buildInfoFrom(tt.bi, tt.version, tt.commit, tt.date); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestVersionOutput(t *testing.T) {
	c := newCLI(t)
	out, _, code := c.run("", "--log-level", "error", "version")
	bi := readBuildInfo()
	want := "till " + bi.version + "\ncommit: " + bi.commit + "\nbuilt:  " + bi.date + "\ngo:     " + bi.goVersion + "\n"
	if code != exitOK || out != want {
		t.Errorf("got exit %d %q, want %q", code, out, want)
	}
}
