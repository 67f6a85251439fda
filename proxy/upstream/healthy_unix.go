//go:build unix

package upstream

import (
	"errors"
	"net"
	"syscall"
)

// idleHealthy reports whether an idle connection may carry a request: the
// upstream has neither closed it nor sent anything unasked (a response
// nobody requested must never be taken for the next request's). It peeks
// without blocking and without consuming.
func idleHealthy(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	healthy := false
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		healthy = n < 0 && errors.Is(err, syscall.EAGAIN)
		return true
	})
	return err == nil && healthy
}
