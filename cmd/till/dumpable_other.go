//go:build !linux

package main

// noCoreDumps has no portable equivalent outside Linux.
func noCoreDumps() error { return nil }
