package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"30s", 30 * time.Second, false},
		{"1.5h", 90 * time.Minute, false},
		{"90d", 90 * 24 * time.Hour, false},
		{"1d12h", 36 * time.Hour, false},
		{"2d30m", 48*time.Hour + 30*time.Minute, false},
		{"-1d", -24 * time.Hour, false},
		{"0", 0, false},
		{"d", 0, true},
		{"1.5d", 0, true},
		{"1dd", 0, true},
		{"1x", 0, true},
		{"", 0, true},
		{"106752d", 0, true},
		{"99999999999999999999d", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseDuration(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error: got %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"0", 0, false},
		{"1048576", 1 << 20, false},
		{"100B", 100, false},
		{"512KB", 512_000, false},
		{"10MB", 10_000_000, false},
		{"10mb", 10_000_000, false},
		{"10 MB", 10_000_000, false},
		{"2GB", 2_000_000_000, false},
		{"1TB", 1_000_000_000_000, false},
		{"512KiB", 512 << 10, false},
		{"1GiB", 1 << 30, false},
		{"1MiB", 1 << 20, false},
		{"", 0, true},
		{"MB", 0, true},
		{"-1", 0, true},
		{"1.5MB", 0, true},
		{"10 parsecs", 0, true},
		{"10  MB", 0, true},
		{"9999999999TiB", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error: got %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		in      string
		want    Rate
		wantErr bool
	}{
		{"10/s", Rate{10, time.Second}, false},
		{"100/m", Rate{100, time.Minute}, false},
		{"1000/h", Rate{1000, time.Hour}, false},
		{"0/s", Rate{}, true},
		{"-1/s", Rate{}, true},
		{"+1/s", Rate{}, true},
		{"10/d", Rate{}, true},
		{"10", Rate{}, true},
		{"/s", Rate{}, true},
		{"10/sec", Rate{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRate(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error: got %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			if err == nil && got.String() != tt.in {
				t.Errorf("String: got %q, want %q", got.String(), tt.in)
			}
		})
	}
	if got := (Rate{}).String(); got != "unlimited" || !(Rate{}).IsZero() {
		t.Errorf("zero Rate: got %q", got)
	}
}

func TestParsePrefix(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/8":          "10.0.0.0/8",
		"10.1.2.3/8":          "10.0.0.0/8",
		"127.0.0.1":           "127.0.0.1/32",
		"fd00::/8":            "fd00::/8",
		"::ffff:10.0.0.0/104": "10.0.0.0/8",
		"::ffff:10.0.0.5":     "10.0.0.5/32",
		"::ffff:0:0/64":       "",
		"fe80::1%eth0":        "",
		"ten":                 "",
	} {
		p, err := ParsePrefix(in)
		if got := p.String(); err != nil && want != "" || err == nil && got != want {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %q", in, p, err, want)
		}
	}
}

// TestRedisURLAsServeTakesIt: a limits.redis URL the Redis client refuses
// (a database that is no number, an unknown option) is a config error,
// not a till that passes check and cannot start; the error does not
// quote the URL, which may hold a password.
func TestRedisURLAsServeTakesIt(t *testing.T) {
	for _, u := range []string{"redis://:hunter2@127.0.0.1:6379/abc", "redis://:hunter2@127.0.0.1:6379/0?foo=bar"} {
		_, err := Parse("till.yaml", []byte("version: 1\nlimits: {redis: \""+u+"\"}\nroutes: []\n"), t.TempDir())
		if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "limits.redis") {
			t.Errorf("%s: %v, want a config error at limits.redis without the password", u, err)
		}
	}
	if _, err := Parse("till.yaml", []byte("version: 1\nlimits: {redis: \"rediss://user:pw@redis.internal:6380/2?pool_size=8\"}\nroutes: []\n"), t.TempDir()); err != nil {
		t.Errorf("a URL the client takes was refused: %v", err)
	}
}

// TestAuditMaxSizeMinimum: the smallest audit.max_size is 4KB as the
// units count it (4,000 bytes), as the reference says.
func TestAuditMaxSizeMinimum(t *testing.T) {
	c, err := Parse("till.yaml", []byte("version: 1\naudit: {file: a.log, max_size: 4KB}\n"), t.TempDir())
	if err != nil || c.Audit.MaxSize != 4000 {
		t.Errorf("max_size 4KB: %v, %v", c, err)
	}
}

// TestRedisTLSAlwaysVerified: limits.redis cannot turn off the
// verification of a rediss:// server's certificate (go-redis reads
// ?skip_verify=true as InsecureSkipVerify). With it, anyone on the path
// to Redis could pose as it: read its password, and answer every budget
// and rate check "not spent". There is no skip-verify switch (SECURITY.md).
func TestRedisTLSAlwaysVerified(t *testing.T) {
	for _, u := range []string{"rediss://:hunter2@redis.internal:6380/0?skip_verify=true", "rediss://:hunter2@redis.internal/0?skip_verify=1&pool_size=3", "rediss://:hunter2@redis.internal/0?skip_verify=false"} {
		_, err := Parse("till.yaml", []byte("version: 1\nlimits: {redis: \""+u+"\"}\nroutes: []\n"), t.TempDir())
		if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "skip_verify") {
			t.Errorf("%s: %v, want a config error about skip_verify, without the password", u, err)
		}
	}
}

// TestRedisOwnOptionsRefused: till sets Redis's timeouts and retries
// itself, so a URL's ?dial_timeout and the like would be ignored without
// a word. They are refused; options till leaves alone are kept.
func TestRedisOwnOptionsRefused(t *testing.T) {
	for _, k := range []string{"dial_timeout=3s", "read_timeout=1s", "write_timeout=1s", "pool_timeout=2s", "max_retries=5", "context_timeout_enabled=false"} {
		_, err := Parse("till.yaml", []byte("version: 1\nlimits: {redis: \"redis://:hunter2@redis.internal/0?pool_size=3&"+k+"\"}\nroutes: []\n"), t.TempDir())
		name, _, _ := strings.Cut(k, "=")
		if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "?"+name) {
			t.Errorf("%s: %v, want a config error naming ?%s, without the password", k, err, name)
		}
	}
	if _, err := Parse("till.yaml", []byte("version: 1\nlimits: {redis: \"redis://redis.internal/0?pool_size=3&client_name=till\"}\nroutes: []\n"), t.TempDir()); err != nil {
		t.Errorf("pool_size and client_name: %v, want them kept", err)
	}
}
