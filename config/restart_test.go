package config

import (
	"slices"
	"testing"
	"time"
)

func TestRestartNeeded(t *testing.T) {
	base := func() *Config {
		return &Config{
			Listen:        "127.0.0.1:8080",
			ShutdownGrace: 30 * time.Second,
			TLS:           TLS{Names: []string{"till.internal"}, ACME: &ACME{Email: "ops@example.com"}},
			Admin:         Admin{Listen: "127.0.0.1:9090", TokenSHA256: testHash},
			Audit:         Audit{File: "/var/log/till-audit.log"},
			Limits:        Limits{Redis: "redis://127.0.0.1:6379/0", OnRedisError: "allow"},
			Forward:       Forward{Enabled: true, Intercept: true, CACert: "/etc/till/till-ca.pem", CertCache: 1024},
			Routes:        []Route{{Name: "openai"}},
		}
	}
	tests := []struct {
		name   string
		change func(c *Config)
		want   []string
	}{
		{"nothing", func(*Config) {}, nil},
		{"audit", func(c *Config) {
			c.Audit.Fsync, c.Audit.MaxSize, c.Audit.MaxFiles, c.Audit.Sign = "always", 1<<20, 3, true
		}, []string{"audit.fsync", "audit.max_size", "audit.max_files", "audit.sign"}},
		{"reloadable only", func(c *Config) {
			c.Routes = append(c.Routes, Route{Name: "second"})
			c.Clients = []Client{{Name: "web"}}
			c.Forward.Enabled = false
			c.Forward.UnknownHosts = "tunnel"
			c.Vault.MaxAge = time.Hour
			c.BrowserOrigins = []string{"https://app.example.com"}
			c.Log = Log{Level: "debug", Format: "console"}
		}, nil},
		{"listen", func(c *Config) { c.Listen = "127.0.0.1:0" }, []string{"listen"}},
		{"tls names", func(c *Config) { c.TLS.Names = append(c.TLS.Names, "other") }, []string{"tls.names"}},
		{"acme removed", func(c *Config) { c.TLS.ACME = nil }, []string{"tls.acme"}},
		{"acme changed", func(c *Config) { c.TLS.ACME = &ACME{Email: "ops@example.com", CA: "https://acme.example/dir"} }, []string{"tls.acme"}},
		{"acme equal, new pointer", func(c *Config) { c.TLS.ACME = &ACME{Email: "ops@example.com"} }, nil},
		{"admin", func(c *Config) { c.Admin = Admin{} }, []string{"admin.listen", "admin.token_sha256"}},
		{"audit file", func(c *Config) { c.Audit.File = "-" }, []string{"audit.file"}},
		{"redis", func(c *Config) { c.Limits.Redis = "" }, []string{"limits.redis"}},
		{"on redis error", func(c *Config) { c.Limits.OnRedisError = "deny" }, []string{"limits.on_redis_error"}},
		{"shutdown grace", func(c *Config) { c.ShutdownGrace = time.Second }, []string{"shutdown_grace"}},
		{"interception", func(c *Config) {
			c.Forward.Intercept = false
			c.Forward.CACert = "/tmp/ca.pem"
			c.Forward.CertCache = 8
		}, []string{"forward.intercept", "forward.ca_cert", "forward.cert_cache"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.change(c)
			if got := RestartNeeded(base(), c); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	// Forward mode turned on by a reload: the interception CA is loaded
	// only at start, so interception waits for a restart.
	off := base()
	off.Forward.Enabled = false
	if got := RestartNeeded(off, base()); !slices.Equal(got, []string{"forward.enabled"}) {
		t.Errorf("forward mode turned on: got %q, want forward.enabled", got)
	}
	// A client certificate added by a reload, on an ACME listener that
	// took none at start.
	withCert := base()
	withCert.Clients = []Client{{Name: "web", Cert: true}}
	if got := RestartNeeded(base(), withCert); !slices.Equal(got, []string{"clients[].cert"}) {
		t.Errorf("a certificate client added on ACME: got %q, want clients[].cert", got)
	}
	if got := RestartNeeded(withCert, withCert); got != nil {
		t.Errorf("certificate clients at start: got %q, want nothing", got)
	}
	noIntercept := base()
	noIntercept.Forward.Intercept = false
	off.Forward.Intercept = false
	// A TLS listener chose its protocols at start: a proxy's wait for a
	// restart, even without interception.
	if got := RestartNeeded(off, noIntercept); !slices.Equal(got, []string{"forward.enabled"}) {
		t.Errorf("forward mode turned on a TLS listener without interception: got %q, want forward.enabled", got)
	}
	off.TLS, noIntercept.TLS = TLS{}, TLS{}
	if got := RestartNeeded(off, noIntercept); got != nil {
		t.Errorf("forward mode turned on without interception: got %q, want nothing", got)
	}
}
