package config

import "slices"

// RestartNeeded returns the names (as written in till.yaml) of the settings
// that differ between old and new and that a reload cannot apply: listeners,
// their certificates, the audit file, the shared limiter, the shutdown grace
// and the interception CA are set up once, when till starts. A reload keeps
// serving with the old values, so the log names the settings that wait for
// the next restart. It returns nil when nothing needs a restart. The log
// settings are not among them: a reload applies them.
func RestartNeeded(old, new *Config) []string {
	var changed []string
	add := func(differ bool, name string) {
		if differ {
			changed = append(changed, name)
		}
	}
	add(old.Listen != new.Listen, "listen")
	add(!slices.Equal(old.TLS.Names, new.TLS.Names), "tls.names")
	add(!sameACME(old.TLS.ACME, new.TLS.ACME), "tls.acme")
	add(old.Admin.Listen != new.Admin.Listen, "admin.listen")
	add(old.Admin.TokenSHA256 != new.Admin.TokenSHA256, "admin.token_sha256")
	add(old.Audit.File != new.Audit.File, "audit.file")
	add(old.Audit.Fsync != new.Audit.Fsync, "audit.fsync")
	add(old.Audit.MaxSize != new.Audit.MaxSize, "audit.max_size")
	add(old.Audit.MaxFiles != new.Audit.MaxFiles, "audit.max_files")
	add(old.Audit.Sign != new.Audit.Sign, "audit.sign")
	add(old.Limits.Redis != new.Limits.Redis, "limits.redis")
	add(old.Limits.OnRedisError != new.Limits.OnRedisError, "limits.on_redis_error")
	add(old.ShutdownGrace != new.ShutdownGrace, "shutdown_grace")
	// The CA is loaded only when forward mode is on at start, and a TLS
	// listener chooses its protocols then (HTTP/1.1 first for a proxy,
	// whose clients send CONNECT over it whatever they offered).
	add(!old.Forward.Enabled && new.Forward.Enabled && (new.Forward.Intercept || len(new.TLS.Names) > 0), "forward.enabled")
	// An ACME listener takes client certificates only when a client had
	// one at start (till's CA is loaded for them then).
	add(new.TLS.ACME != nil && !certClients(old) && certClients(new), "clients[].cert")
	add(old.Forward.Intercept != new.Forward.Intercept, "forward.intercept")
	add(old.Forward.CACert != new.Forward.CACert, "forward.ca_cert")
	add(old.Forward.CertCache != new.Forward.CertCache, "forward.cert_cache")
	return changed
}

// certClients reports whether a client of c presents a certificate.
func certClients(c *Config) bool {
	return slices.ContainsFunc(c.Clients, func(cl Client) bool { return cl.Cert })
}

func sameACME(a, b *ACME) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
