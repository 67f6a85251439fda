//go:build !unix

package source

import "os/exec"

// killGroup leaves the default: a cancel kills the helper itself.
func killGroup(*exec.Cmd) {}

// endGroup does nothing here: the helper has no group of its own.
func endGroup(*exec.Cmd) {}
