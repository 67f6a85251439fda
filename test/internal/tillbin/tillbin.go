// Package tillbin builds the till binary for the end-to-end tests that drive
// it as a process, so that every such package builds it the same way: once
// per test binary, from its TestMain, into a folder of its own.
//
// With TILL_E2E_RACE=1 in the environment the binary is built with the race
// detector, and each till process writes any race it finds to a file in the
// binary's folder, where Races reads it back.
package tillbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// pkg is the command under test. Naming it by import path rather than by a
// relative folder lets any package of the module build it, whatever its
// depth.
const pkg = "github.com/tillgw/till/cmd/till"

// raceEnv names the variable that asks for a race-detector build.
const raceEnv = "TILL_E2E_RACE"

// Build compiles till into a new temporary folder and returns the binary's
// path and a function that removes the folder. The go command's output goes
// to stderr, where a failed build explains itself.
//
// When TILL_E2E_RACE=1, the build uses -race and Build sets GORACE in this
// process's environment so that the children it starts (Env passes it on)
// log races to files beside the binary rather than only to their stderr,
// which many tests read without looking for races, and exit as soon as
// they are done: the race runtime otherwise sleeps a second before every
// exit (atexit_sleep_ms), which tests that time a stop (TestIdleStopIsPrompt)
// take for a stop that waits, and which makes the tests that run till
// hundreds of times (TestKill9DuringSecretSet) last minutes.
func Build() (bin string, remove func(), err error) {
	dir, err := os.MkdirTemp("", "till-bin-")
	if err != nil {
		return "", nil, err
	}
	remove = func() { os.RemoveAll(dir) }
	bin = filepath.Join(dir, "till")
	args := []string{"build", "-o", bin}
	if os.Getenv(raceEnv) == "1" {
		args = append(args, "-race")
		// Options the caller set (halt_on_error=1, atexit_sleep_ms) win
		// over the default here; a later log_path wins over theirs.
		os.Setenv("GORACE", strings.TrimSpace("atexit_sleep_ms=0 "+os.Getenv("GORACE")+" log_path="+filepath.Join(dir, "race")))
	}
	build := exec.Command("go", append(args, pkg)...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		remove()
		return "", nil, fmt.Errorf("build %s: %w", pkg, err)
	}
	return bin, remove, nil
}

// Env is the GORACE setting a till process needs to log its races where
// Races finds them, or nothing when the binary was built without -race.
func Env() []string {
	if os.Getenv(raceEnv) != "1" {
		return nil
	}
	return []string{"GORACE=" + os.Getenv("GORACE")}
}

// Races returns the race reports the till processes built as bin have
// written so far, or "" when there are none (or bin was built without
// -race). Call it before remove.
func Races(bin string) string {
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(bin), "race.*"))
	var out strings.Builder
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			fmt.Fprintf(&out, "%s:\n%s\n", filepath.Base(f), b)
		}
	}
	return out.String()
}
