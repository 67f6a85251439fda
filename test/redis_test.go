package test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// startRedis runs a throwaway redis-server on a free loopback port.
func startRedis(t *testing.T) (addr string, stop func()) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server is missing: .ci/run must install it")
		}
		t.Skip("redis-server is not installed")
	}
	// redis-server cannot be told to bind port 0 and say which it got
	// (--port 0 turns TCP off).
	addrs, stop := startListening(t, 1, "Address already in use",
		func(addrs []string) *exec.Cmd {
			_, port, _ := net.SplitHostPort(addrs[0])
			return exec.Command(bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no", "--dir", t.TempDir())
		},
		func(out string, _ []string) bool { return strings.Contains(out, "Ready to accept connections") })
	return addrs[0], stop
}

func redisConfig(u *upstream, redisAddr, onError string) string {
	return fmt.Sprintf(`version: 1
limits:
  redis: redis://%s/0
  on_redis_error: %s
routes:
  - name: openai
    preset: openai
    upstream: %s
    rate: 3/m
`, redisAddr, onError, u.URL)
}

func TestSharedRateLimit(t *testing.T) {
	redisAddr, _ := startRedis(t)
	u := newUpstream(t, http.HandlerFunc(okHandler))
	cfg := redisConfig(u, redisAddr, "allow")
	a := startTill(t, cfg, map[string]string{"openai": openaiKey}, u.caFile)
	b := startTill(t, cfg, map[string]string{"openai": openaiKey}, u.caFile)
	var got []int
	for _, tl := range []*till{a, b, a, b} {
		resp, _ := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
		got = append(got, resp.StatusCode)
	}
	if fmt.Sprint(got) != "[200 200 200 429]" {
		t.Errorf("two instances sharing 3/m: got %v, want [200 200 200 429]", got)
	}
}

func TestRedisDown(t *testing.T) {
	for _, onError := range []string{"allow", "deny"} {
		t.Run(onError, func(t *testing.T) {
			redisAddr, stopRedis := startRedis(t)
			u := newUpstream(t, http.HandlerFunc(okHandler))
			cfg := strings.Replace(redisConfig(u, redisAddr, onError), "version: 1\n", "version: 1\nadmin: {listen: 127.0.0.1:0}\n", 1)
			tl := startTill(t, cfg, map[string]string{"openai": openaiKey}, u.caFile)
			if resp, _ := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil)); resp.StatusCode != 200 {
				t.Fatalf("with Redis up: %d", resp.StatusCode)
			}
			stopRedis()
			resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
			want := map[string]int{"allow": 200, "deny": 429}[onError]
			if resp.StatusCode != want {
				t.Errorf("with Redis down: got %d %s, want %d", resp.StatusCode, body, want)
			}
			if !tl.waitLog("rate-limit store unavailable") {
				t.Errorf("the log does not say Redis failed:\n%s", tl.stderr.String())
			}
			if !strings.Contains(tl.stderr.String(), "limits.on_redis_error") {
				t.Error("the log does not name the setting that decided")
			}
			if _, metrics := adminGet(t, tl.adminAddr(), "/metrics", ""); !strings.Contains(metrics, "till_rate_limit_store_errors_total 1") {
				t.Error("the metrics do not count the failure")
			}
		})
	}
}
