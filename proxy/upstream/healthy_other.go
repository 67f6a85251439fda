//go:build !unix

package upstream

import "net"

// idleHealthy cannot peek here: a closed connection shows as an error on
// its next use, which Send retries when that is safe.
func idleHealthy(net.Conn) bool { return true }
