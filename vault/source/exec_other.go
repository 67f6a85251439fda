//go:build !unix

package source

import "os/exec"

// killGroup leaves the default: a cancel kills the helper itself.
func killGroup(*exec.Cmd) {}
