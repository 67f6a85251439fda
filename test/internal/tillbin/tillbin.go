// Package tillbin builds the till binary for the end-to-end tests that drive
// it as a process, so that every such package builds it the same way: once
// per test binary, from its TestMain, into a folder of its own.
package tillbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// pkg is the command under test. Naming it by import path rather than by a
// relative folder lets any package of the module build it, whatever its
// depth.
const pkg = "github.com/tillgw/till/cmd/till"

// Build compiles till into a new temporary folder and returns the binary's
// path and a function that removes the folder. The go command's output goes
// to stderr, where a failed build explains itself.
func Build() (bin string, remove func(), err error) {
	dir, err := os.MkdirTemp("", "till-bin-")
	if err != nil {
		return "", nil, err
	}
	remove = func() { os.RemoveAll(dir) }
	bin = filepath.Join(dir, "till")
	build := exec.Command("go", "build", "-o", bin, pkg)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		remove()
		return "", nil, fmt.Errorf("build %s: %w", pkg, err)
	}
	return bin, remove, nil
}
