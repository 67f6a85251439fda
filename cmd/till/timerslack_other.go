//go:build !linux

package main

// raiseTimerSlack is Linux's; elsewhere the default timer slack stays.
func raiseTimerSlack() {}
