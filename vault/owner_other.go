//go:build !unix

package vault

// matchOwner does nothing where files have no unix owner.
func matchOwner(path, like string) {}
