//go:build !unix

package budget

import "testing"

// busyRedis needs SIGSTOP, which only Unix has.
func busyRedis(t *testing.T, _ redisServer) (done func()) {
	t.Skip("holding redis-server takes SIGSTOP, which only Unix has")
	return nil
}
