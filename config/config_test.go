package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Key-shaped values, built from parts so that no scanner takes this file
// for a leak.
var (
	fakeOpenAIKey = "sk-proj-" + strings.Repeat("Ab3x", 8)
	fakeAWSKey    = "AKIA" + strings.Repeat("Q7", 8)
	fakeRandomKey = "q8Ff2Lk9Zr1" + "Xm4Vt7Pw3Nd6" + "Hs5Bj0Yc2Ge8"
	fakeSlackKey  = "xoxb-" + "1234567890-" + "AbCdEfGhIj"
	fakeStripeKey = "sk_live_" + strings.Repeat("4eC3", 6)
)

const literalKey = "looks like a literal key (not shown); remove it from the config, store it with till secret set NAME, and inject it with {secret}"

const testHash = "9a0b9a0b9a0b9a0b9a0b9a0b9a0b9a0b9a0b9a0b9a0b9a0b9a0b9a0b9a0b9a0b"

// otherHash is a second client's token_sha256: no two clients share one.
const otherHash = "1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f"

// TestParseErrors checks that each bad config gives exactly one error, with
// its line, field path and message.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"empty file", "", `till.yaml: empty config (hint: run "till init")`},
		{"only comments", "# nothing\n", `till.yaml: empty config (hint: run "till init")`},
		{"null document", "~\n", `till.yaml: empty config (hint: run "till init")`},
		{"not a mapping", "- a\n", `till.yaml:1: must be a mapping of settings (hint: start with "version: 1")`},
		{"syntax error", "version: 1\nroutes: [\n", `till.yaml:2: invalid yaml: did not find expected node content`},
		// yaml.v3 reports these at the line before the enclosing block
		// ("routes:", "forward:"); till names the line of the mistake.
		{"key indented out of its route", "version: 1\nroutes:\n  - name: openai\n    preset: openai\n  allow:\n    methods: [GET]\n", `till.yaml:5: invalid yaml: did not find expected '-' indicator`},
		{"key indented under its route", "version: 1\nroutes:\n  - name: openai\n    preset: openai\n   allow: {}\n", `till.yaml:5: invalid yaml: did not find expected '-' indicator`},
		{"key indented short", "version: 1\nforward:\n  enabled: true\n unknown_hosts: deny\n", `till.yaml:4: invalid yaml: did not find expected key`},
		{"tab", "version: 1\nroutes:\n  - name: openai\n\tpreset: openai\n", `till.yaml:4: invalid yaml: found a tab character that violates indentation`},
		{"flow left open", "version: 1\nroutes:\n  - name: openai\n    allow:\n      methods: [GET\n\n# end\n", `till.yaml:5: invalid yaml: did not find expected ',' or ']'`},
		{"quote left open", "version: 1\nroutes:\n  - name: \"openai\n    preset: openai\n", `till.yaml:3: invalid yaml: found unexpected end of stream`},
		{"two documents", "version: 1\n---\nversion: 1\n", `till.yaml:2: more than one yaml document (hint: remove the "---" separator)`},
		{"missing version", "listen: 127.0.0.1:8080\n", `till.yaml:1: version: required (hint: add "version: 1" at the top)`},
		{"version 2", "version: 2\n", `till.yaml:1: version: unsupported version 2 (hint: this till reads version 1)`},
		{"version string", "version: \"1\"\n", `till.yaml:1: version: must be a whole number`},
		{"unknown root field", "version: 1\nlisen: 127.0.0.1:1\n", `till.yaml:2: lisen: unknown field (did you mean "listen"?)`},
		{"unknown field far off", "version: 1\nzzzz: 1\n", `till.yaml:2: zzzz: unknown field (expected version, listen, shutdown_grace, tls, admin, vault, audit, forward, limits, log, clients, routes, browser_origins, server_names, sources, budgets, prices)`},
		{"secret-like key not echoed", "version: 1\nsk-proj/AbC+123=: x\n", `till.yaml:2: unknown field (name not shown; expected version, listen, shutdown_grace, tls, admin, vault, audit, forward, limits, log, clients, routes, browser_origins, server_names, sources, budgets, prices)`},
		{"duplicate field", "version: 1\nlisten: 127.0.0.1:1\nlisten: 127.0.0.1:2\n", `till.yaml:3: listen: duplicate field (first at line 2)`},
		{"alias", "version: 1\nlisten: &a 127.0.0.1:1\nadmin: {listen: *a}\n", `till.yaml:3: admin.listen: yaml aliases are not supported (hint: repeat the value)`},
		{"bad listen", "version: 1\nlisten: 8080\n", `till.yaml:2: listen: must be host:port (e.g. 127.0.0.1:8080)`},
		{"bad port", "version: 1\nlisten: 127.0.0.1:99999\n", `till.yaml:2: listen: must be host:port with a port from 0 to 65535 (e.g. 127.0.0.1:8080)`},
		{"bad duration", "version: 1\nshutdown_grace: soon\n", `till.yaml:2: shutdown_grace: must be a duration such as 30s, 5m, 12h or 90d`},
		{"zero duration", "version: 1\nshutdown_grace: 0s\n", `till.yaml:2: shutdown_grace: must be more than zero`},
		{"admin without token", "version: 1\nadmin:\n  listen: 0.0.0.0:9090\n", `till.yaml:3: admin.token_sha256: required when admin.listen is not loopback (hint: the SHA-256 hex of a token kept apart, made with: openssl rand -hex 32 | tr -d '\n' > admin.token && sha256sum < admin.token; the CLI sends it from $TILL_ADMIN_TOKEN)`},
		{"admin all interfaces without token", "version: 1\nadmin: {listen: \":9090\"}\n", `till.yaml:2: admin.token_sha256: required when admin.listen is not loopback (hint: the SHA-256 hex of a token kept apart, made with: openssl rand -hex 32 | tr -d '\n' > admin.token && sha256sum < admin.token; the CLI sends it from $TILL_ADMIN_TOKEN)`},
		{"admin socket without path", "version: 1\nadmin: {listen: \"unix:\"}\n", `till.yaml:2: admin.listen: unix:PATH must name a socket file (e.g. unix:/run/till/admin.sock)`},
		{"admin socket a folder", "version: 1\nadmin: {listen: \"unix:/run/till/\"}\n", `till.yaml:2: admin.listen: unix:PATH must name a socket file (e.g. unix:/run/till/admin.sock)`},
		{"admin socket too long", "version: 1\nadmin: {listen: \"unix:/" + strings.Repeat("a", 103) + "\"}\n", `till.yaml:2: admin.listen: the socket's path is 104 bytes long once made absolute and bound in a private folder beside it, more than a socket's may be (103) (hint: a shorter path, such as unix:/run/till/admin.sock)`},
		{"admin bad token", "version: 1\nadmin: {listen: 127.0.0.1:9090, token_sha256: abc}\n", `till.yaml:2: admin.token_sha256: must be 64 hex digits (the SHA-256 of the token; "till client add" prints it)`},
		{"on_expired enum", "version: 1\nvault: {on_expired: ignore}\n", `till.yaml:2: vault.on_expired: must be "block" or "warn"`},
		{"audit fsync enum", "version: 1\naudit: {fsync: sometimes}\n", `till.yaml:2: audit.fsync: must be "none" or "interval" or "always"`},
		{"audit max_size unit", "version: 1\naudit: {file: a.log, max_size: 10 parsecs}\n", `till.yaml:2: audit.max_size: must be a size such as 64KB, 100MB or 1GB`},
		{"audit max_size small", "version: 1\naudit: {file: a.log, max_size: 1KB}\n", `till.yaml:2: audit.max_size: must be at least 4KB`},
		{"audit file is the vault", "version: 1\naudit:\n  file: till.vault\n", `till.yaml:3: audit.file: is vault.path: the records appended to it would break it (hint: audit.file: /var/log/till/audit.jsonl)`},
		{"audit file is the key", "version: 1\nvault: {key_file: keys/till.key}\naudit: {file: ./keys/../keys/till.key}\n", `till.yaml:3: audit.file: is vault.key_file: the records appended to it would break it (hint: audit.file: /var/log/till/audit.jsonl)`},
		{"audit file is the config", "version: 1\naudit: {file: till.yaml}\n", `till.yaml:2: audit.file: is the config file itself: the records appended to it would break it (hint: audit.file: /var/log/till/audit.jsonl)`},
		{"audit file is the CA certificate", "version: 1\naudit: {file: till-ca.pem}\n", `till.yaml:2: audit.file: is forward.ca_cert: the records appended to it would break it (hint: audit.file: /var/log/till/audit.jsonl)`},
		{"audit max_size just small", "version: 1\naudit: {file: a.log, max_size: 3999}\n", `till.yaml:2: audit.max_size: must be at least 4KB`},
		{"audit max_size stdout", "version: 1\naudit: {max_size: 1MB}\n", `till.yaml:2: audit.max_size: needs audit.file: stdout cannot be rotated`},
		{"audit max_files", "version: 1\naudit: {max_files: 0}\n", `till.yaml:2: audit.max_files: must be between 1 and 1000 (rotated files kept)`},
		{"audit sign bool", "version: 1\naudit: {sign: maybe}\n", `till.yaml:2: audit.sign: must be true or false`},
		{"audit key injected", "version: 1\nroutes:\n  - {name: x, preset: openai, secret: till-audit}\n", `till.yaml:3: routes[0].secret: "till-audit" holds till's audit signing key and can never be injected`},
		{"unknown_hosts enum", "version: 1\nforward: {unknown_hosts: allow}\n", `till.yaml:2: forward.unknown_hosts: must be "deny" or "tunnel"`},
		{"on_redis_error enum", "version: 1\nlimits: {on_redis_error: maybe}\n", `till.yaml:2: limits.on_redis_error: must be "allow" or "deny"`},
		{"log level enum", "version: 1\nlog:\n  level: verbose\n", `till.yaml:3: log.level: must be "debug" or "info" or "warn" or "error"`},
		{"log format enum", "version: 1\nlog: {format: text}\n", `till.yaml:2: log.format: must be "json" or "console"`},
		{"unknown log field", "version: 1\nlog: {levl: warn}\n", `till.yaml:2: log.levl: unknown field (did you mean "level"?)`},
		{"bool", "version: 1\nforward: {enabled: yes}\n", `till.yaml:2: forward.enabled: must be true or false`},
		{"redis scheme, password not echoed", "version: 1\nlimits:\n  redis: http://:hunter2@127.0.0.1:6379\n", `till.yaml:3: limits.redis: must be a redis:// or rediss:// URL (e.g. redis://127.0.0.1:6379/0)`},
		{"origin with a path", "version: 1\nbrowser_origins: [https://app.example.com/x]\n", `till.yaml:2: browser_origins[0]: must be a web origin such as "https://app.example.com" or "http://localhost:3000" (scheme, host and port only)`},
		{"origin without scheme", "version: 1\nbrowser_origins: [app.example.com]\n", `till.yaml:2: browser_origins[0]: must be a web origin such as "https://app.example.com" or "http://localhost:3000" (scheme, host and port only)`},
		{"origin null", "version: 1\nbrowser_origins: [\"null\"]\n", `till.yaml:2: browser_origins[0]: must be a web origin such as "https://app.example.com" or "http://localhost:3000" (scheme, host and port only)`},
		{"bad server name", "version: 1\nserver_names: [\"till_gw\"]\n", `till.yaml:2: server_names[0]: must be a DNS name or IP address`},
		{"bad cidr", "version: 1\nforward: {allow_cidrs: [10.0.0.0/33]}\n", `till.yaml:2: forward.allow_cidrs[0]: must be a CIDR prefix such as 10.0.0.0/8 or an IP address`},
		{"acme without email", "version: 1\ntls:\n  names: [a.example]\n  acme: {ca: https://acme.example/dir}\n", `till.yaml:4: tls.acme.email: required (hint: the ACME account contact)`},
		{"acme without names", "version: 1\ntls:\n  acme: {email: ops@example.com}\n", `till.yaml:3: tls.names: required with acme (hint: the DNS names to get certificates for)`},
		{"client bad name", "version: 1\nclients:\n  - name: Web\n    token_sha256: " + testHash + "\n", `till.yaml:3: clients[0].name: must be lowercase letters, digits, '_' and '-', starting with a letter or digit, at most 64 characters`},
		{"client named anonymous", "version: 1\nclients:\n  - {name: anonymous, token_sha256: " + testHash + "}\n", `till.yaml:3: clients[0].name: "anonymous" is reserved: "anonymous" names callers without a token, "any" a route open to everyone`},
		{"client named any", "version: 1\nclients:\n  - {name: any, token_sha256: " + testHash + "}\n", `till.yaml:3: clients[0].name: "any" is reserved: "anonymous" names callers without a token, "any" a route open to everyone`},
		{"client without token", "version: 1\nclients:\n  - name: web\n", `till.yaml:3: clients[0].token_sha256: required (hint: "till client add NAME" prints it)`},
		{"duplicate client", "version: 1\nclients:\n  - {name: web, token_sha256: " + testHash + "}\n  - {name: web, token_sha256: " + testHash + "}\n", `till.yaml:4: clients[1].name: duplicate client name "web" (first at line 3)`},
		{"unknown route field", "version: 1\nroutes:\n  - name: openai\n    preset: openai\n    upstrem: https://x.example\n", `till.yaml:5: routes[0].upstrem: unknown field (did you mean "upstream"?)`},
		{"route without name", "version: 1\nroutes:\n  - preset: openai\n", `till.yaml:3: routes[0].name: required`},
		{"bad route name", "version: 1\nroutes:\n  - {name: Open AI, preset: openai}\n", `till.yaml:3: routes[0].name: must be lowercase letters, digits, '_' and '-', starting with a letter or digit, at most 64 characters`},
		{"unknown preset", "version: 1\nroutes:\n  - {name: openai, preset: opnai}\n", `till.yaml:3: routes[0].preset: unknown preset "opnai" (did you mean "openai"?)`},
		{"no upstream", "version: 1\nroutes:\n  - name: x\n    inject: {query: key}\n", `till.yaml:3: routes[0].upstream: required (hint: set upstream, or a preset such as "preset: openai")`},
		{"bad secret name", "version: 1\nroutes:\n  - {name: x, preset: openai, secret: Open/AI}\n", `till.yaml:3: routes[0].secret: invalid secret name (7 characters): use 1 to 64 characters of a-z, 0-9, "_", "." and "-", starting with a letter or digit`},
		{"CA key as secret", "version: 1\nroutes:\n  - {name: x, preset: openai, secret: till-ca}\n", `till.yaml:3: routes[0].secret: "till-ca" holds till's CA key and can never be injected`},
		{"no inject", "version: 1\nroutes:\n  - name: x\n    upstream: https://x.example\n", `till.yaml:3: routes[0].inject: required (hint: header: Authorization with format: "Bearer {secret}", or query: NAME, or basic)`},
		{"bad upstream scheme", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    upstream: ftp://x.example\n", `till.yaml:5: routes[0].upstream: must be an https URL (plain http only for loopback, or set allow_plaintext: true)`},
		{"http non-loopback", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    upstream: http://api.example.com\n", `till.yaml:5: routes[0].upstream: must be an https URL (plain http only for loopback, or set allow_plaintext: true)`},
		{"http to a name that only starts like localhost", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    upstream: http://localhost.evil.example\n", `till.yaml:5: routes[0].upstream: must be an https URL (plain http only for loopback, or set allow_plaintext: true)`},
		{"upstream without host", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    upstream: api.example.com\n", `till.yaml:5: routes[0].upstream: must be an absolute URL such as https://api.example.com`},
		{"upstream userinfo not echoed", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    upstream: https://user:hunter2@api.example.com\n", `till.yaml:5: routes[0].upstream: must not contain a user or password (hint: credentials belong in the vault)`},
		{"upstream query", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    upstream: https://api.example.com/?key=1\n", `till.yaml:5: routes[0].upstream: must not have a query string`},
		{"duplicate name", "version: 1\nroutes:\n  - {name: openai, preset: openai}\n  - {name: openai, preset: openai, prefix: /other}\n", `till.yaml:4: routes[1].name: duplicate route name "openai" (first at line 3)`},
		{"duplicate prefix", "version: 1\nroutes:\n  - {name: openai, preset: openai}\n  - name: openai2\n    preset: openai\n    prefix: /openai\n", `till.yaml:6: routes[1].prefix: duplicate prefix "/openai" (first used by route "openai" at line 3)`},
		{"prefix trailing slash", "version: 1\nroutes:\n  - {name: x, preset: openai, prefix: /x/}\n", `till.yaml:3: routes[0].prefix: must start with "/" and name at least one segment, without a trailing "/" (e.g. /openai)`},
		{"prefix dot segment", "version: 1\nroutes:\n  - {name: x, preset: openai, prefix: /a/../b}\n", `till.yaml:3: routes[0].prefix: must not have "." or ".." segments`},
		{"inject two kinds", "version: 1\nroutes:\n  - name: x\n    upstream: https://x.example\n    inject: {header: X-Key, query: key}\n", `till.yaml:5: routes[0].inject: needs exactly one of header, query, basic, aws_sigv4, oauth2, github_app or google`},
		{"format with query", "version: 1\nroutes:\n  - name: x\n    upstream: https://x.example\n    inject: {query: key, format: \"{secret}\"}\n", `till.yaml:5: routes[0].inject.format: only used with header`},
		{"CR LF in format", "version: 1\nroutes:\n  - name: x\n    upstream: https://x.example\n    inject:\n      header: Authorization\n      format: \"Bearer {secret}\\r\\nX-Evil: 1\"\n", `till.yaml:7: routes[0].inject.format: must not contain control characters such as CR or LF`},
		{"unterminated placeholder", "version: 1\nroutes:\n  - name: x\n    upstream: https://x.example\n    inject:\n      header: Authorization\n      format: \"Bearer {secret\"\n", `till.yaml:7: routes[0].inject.format: unterminated placeholder (use {secret} or {secret.FIELD})`},
		{"unknown placeholder", "version: 1\nroutes:\n  - name: x\n    upstream: https://x.example\n    inject:\n      header: Authorization\n      format: \"Bearer {env.HOME}\"\n", `till.yaml:7: routes[0].inject.format: unknown placeholder (only {secret} and {secret.FIELD} are allowed)`},
		{"format without secret", "version: 1\nroutes:\n  - name: x\n    upstream: https://x.example\n    inject:\n      header: Authorization\n      format: \"Bearer sk-hardcoded\"\n", `till.yaml:7: routes[0].inject.format: must use {secret} or {secret.FIELD}`},
		{"bad header name", "version: 1\nroutes:\n  - name: x\n    upstream: https://x.example\n    inject: {header: \"X Key\"}\n", `till.yaml:5: routes[0].inject.header: must be a header name (letters, digits and !#$%&'*+-.^_` + "`" + `|~)`},
		{"inject into host", "version: 1\nroutes:\n  - name: x\n    upstream: https://x.example\n    inject: {header: host}\n", `till.yaml:5: routes[0].inject.header: must not be a hop-by-hop, framing or till header`},
		{"basic without secret", "version: 1\nroutes:\n  - name: x\n    upstream: https://x.example\n    inject:\n      basic: {username: admin}\n", `till.yaml:6: routes[0].inject.basic: must use {secret} or {secret.FIELD} in username or password`},
		{"header value with newline", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    headers:\n      X-Extra: \"a\\nb\"\n", `till.yaml:6: routes[0].headers.X-Extra: must not contain control characters such as CR or LF`},
		{"bad strip name", "version: 1\nroutes:\n  - {name: x, preset: openai, strip: [\"x key\"]}\n", `till.yaml:3: routes[0].strip[0]: must be a header name (letters, digits and !#$%&'*+-.^_` + "`" + `|~)`},
		{"bad method", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    allow: {methods: [\"GE T\"]}\n", `till.yaml:5: routes[0].allow.methods[0]: must be an HTTP method such as GET or POST`},
		{"bad glob", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    allow:\n      paths: [/a/**/b]\n", `till.yaml:6: routes[0].allow.paths[0]: "**" is only allowed as the last segment`},
		{"unknown client in route", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    clients: [web]\n", `till.yaml:5: routes[0].clients[0]: unknown client "web" (hint: define it under clients, or run "till client add web")`},
		{"empty route clients", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    clients: []\n", `till.yaml:5: routes[0].clients: must name at least one client (hint: "clients: any" accepts any client)`},
		{"bad rate", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    rate: 10/d\n", `till.yaml:5: routes[0].rate: must be a rate such as 10/s, 100/m or 1000/h`},
		{"zero rate", "version: 1\nroutes:\n  - {name: x, preset: openai, rate: 0/s}\n", `till.yaml:3: routes[0].rate: must be a rate such as 10/s, 100/m or 1000/h`},
		{"zero burst", "version: 1\nroutes:\n  - {name: x, preset: openai, rate: 1/s, burst: 0}\n", `till.yaml:3: routes[0].burst: must be from 1 to 1073741824`},
		{"huge burst", "version: 1\nroutes:\n  - {name: x, preset: openai, rate: 1/s, burst: 2000000000}\n", `till.yaml:3: routes[0].burst: must be from 1 to 1073741824`},
		{"unicode host", "version: 1\nroutes:\n  - {name: x, preset: openai, upstream: 'https://exämple.com/v1'}\n", `till.yaml:3: routes[0].upstream: host must be written in ASCII, as requests carry it (hint: xn--exmple-cua.com)`},
		{"percent-encoded unicode host", "version: 1\nroutes:\n  - {name: x, preset: openai, upstream: 'https://ex%C3%A4mple.com'}\n", `till.yaml:3: routes[0].upstream: host must be written in ASCII, as requests carry it (hint: xn--exmple-cua.com)`},
		{"wildcard upstream host", "version: 1\nroutes:\n  - {name: x, preset: openai, upstream: 'https://*.example.com'}\n", `till.yaml:3: routes[0].upstream: host must be a DNS name (letters, digits, '-', '_' and '.') or an IP address`},
		{"upstream host with a comma", "version: 1\nroutes:\n  - {name: x, preset: openai, upstream: 'https://a,b.example.com'}\n", `till.yaml:3: routes[0].upstream: host must be a DNS name (letters, digits, '-', '_' and '.') or an IP address`},
		{"upstream port 0", "version: 1\nroutes:\n  - {name: x, preset: openai, upstream: 'https://api.example.com:0'}\n", `till.yaml:3: routes[0].upstream: must have a port number from 1 to 65535`},
		{"upstream port too high", "version: 1\nroutes:\n  - {name: x, preset: openai, upstream: 'https://api.example.com:65536'}\n", `till.yaml:3: routes[0].upstream: must have a port number from 1 to 65535`},
		{"burst without rate", "version: 1\nroutes:\n  - {name: x, preset: openai, burst: 5}\n", `till.yaml:3: routes[0].burst: needs a rate (hint: add rate: 10/s)`},
		{"bad timeout", "version: 1\nroutes:\n  - {name: x, preset: openai, timeout: 60}\n", `till.yaml:3: routes[0].timeout: must be a duration such as 30s, 5m, 12h or 90d`},
		{"bad max_body", "version: 1\nroutes:\n  - {name: x, preset: openai, max_body: 10 parsecs}\n", `till.yaml:3: routes[0].max_body: must be a size such as 512KB, 10MB or 1GiB`},
		{"zero max_body", "version: 1\nroutes:\n  - {name: x, preset: openai, max_body: 0KB}\n", `till.yaml:3: routes[0].max_body: must be more than 0 (hint: leave max_body out for no cap)`},
		{"upstream empty port", "version: 1\nroutes:\n  - {name: x, preset: openai, upstream: \"https://api.example.com:/v1\"}\n", `till.yaml:3: routes[0].upstream: has an empty port after ":" (hint: remove the ":", or give the port such as :8443)`},
		{"token_url empty port", "version: 1\nroutes:\n  - {name: x, upstream: https://x.example, inject: {oauth2: {token_url: \"https://login.example:/token\"}}}\n", `till.yaml:3: routes[0].inject.oauth2.token_url: has an empty port after ":" (hint: remove the ":", or give the port such as :8443)`},
		{"null route clients", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    clients: ~\n", `till.yaml:5: routes[0].clients: must name at least one client (hint: "clients: any" accepts any client)`},
		{"null allow paths", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    allow:\n      paths:\n      # - /v1/models\n", `till.yaml:6: routes[0].allow.paths: is empty, which would allow any (hint: remove the key to allow any, or list what is allowed)`},
		{"empty client cidrs", "version: 1\nclients:\n  - name: web\n    token_sha256: " + testHash + "\n    cidrs: []\n", `till.yaml:5: clients[0].cidrs: is empty, which would accept the client from any address (hint: remove the key to accept any address, or list ranges such as [10.0.0.0/8])`},
		{"null client cidrs", "version: 1\nclients:\n  - name: web\n    token_sha256: " + testHash + "\n    cidrs:\n", `till.yaml:5: clients[0].cidrs: is empty, which would accept the client from any address (hint: remove the key to accept any address, or list ranges such as [10.0.0.0/8])`},
		{"duplicate client token", "version: 1\nclients:\n  - {name: web, token_sha256: " + testHash + "}\n  - {name: billing, token_sha256: " + strings.ToUpper(testHash) + "}\n", `till.yaml:4: clients[1].token_sha256: is client "web"'s token_sha256 too (line 3): that token would name only one of them (hint: "till client rotate billing" gives it a token of its own)`},
		{"admin token a client's", "version: 1\nadmin:\n  listen: 127.0.0.1:9090\n  token_sha256: " + testHash + "\nclients:\n  - {name: web, token_sha256: " + testHash + "}\n", `till.yaml:4: admin.token_sha256: is client "web"'s token_sha256 too (line 6): that client's app could use the admin endpoints (hint: hash a random token of its own for the admin listener)`},
		{"leading zero", "version: 1\nroutes:\n  - {name: x, preset: openai, rate: 1/s, burst: 010}\n", `till.yaml:3: routes[0].burst: has a leading zero, which yaml may read as octal: 0100 is 64 (hint: write 10, in decimal without the leading zero)`},
		{"source unknown type", "version: 1\nsources:\n  - {name: s, type: gcp}\n", `till.yaml:3: sources[0].type: must be "vault" or "aws_secretsmanager" or "files" or "exec"`},
		{"source vault bare", "version: 1\nsources:\n  - {name: corp, type: vault}\n", "till.yaml:3: sources[0].address: required (hint: the server's URL, such as https://vault.internal:8200)\ntill.yaml:3: sources[0].auth: required (hint: token_file, approle or kubernetes)"},
		{"source vault plain http", "version: 1\nsources:\n  - {name: corp, type: vault, address: 'http://vault.corp:8200', auth: {token_file: /t}}\n", `till.yaml:3: sources[0].address: must be an https URL (plain http only for loopback, or set allow_plaintext: true)`},
		{"source vault path", "version: 1\nsources:\n  - {name: corp, type: vault, address: 'https://vault.corp/v1', auth: {token_file: /t}}\n", `till.yaml:3: sources[0].address: must not have a path (hint: https://vault.internal:8200)`},
		{"source vault two auths", "version: 1\nsources:\n  - {name: corp, type: vault, address: 'https://v', auth: {token_file: /t, kubernetes: {role: r}}}\n", `till.yaml:3: sources[0].auth: must set exactly one of token_file, approle or kubernetes`},
		{"source vault approle half", "version: 1\nsources:\n  - {name: corp, type: vault, address: 'https://v', auth: {approle: {role_id_file: /r}}}\n", `till.yaml:3: sources[0].auth.approle.secret_id_file: required (hint: the file holding the AppRole secret id)`},
		{"source vault k8s no role", "version: 1\nsources:\n  - {name: corp, type: vault, address: 'https://v', auth: {kubernetes: {}}}\n", `till.yaml:3: sources[0].auth.kubernetes.role: required (hint: the Vault role bound to this service account)`},
		{"source vault bad mount", "version: 1\nsources:\n  - {name: corp, type: vault, address: 'https://v', auth_mount: '../x', auth: {token_file: /t}}\n", `till.yaml:3: sources[0].auth_mount: must be a mount path such as approle or k8s-prod (letters, digits, '_', '-', '/')`},
		{"source aws bad region", "version: 1\nsources:\n  - {name: aws, type: aws_secretsmanager, region: Virginia}\n", `till.yaml:3: sources[0].region: must be an AWS region such as us-east-1`},
		{"source aws region on files", "version: 1\nsources:\n  - {name: m, type: files, dir: /s, region: us-east-1}\n", `till.yaml:3: sources[0].region: only used with type: aws_secretsmanager`},
		{"source address on aws", "version: 1\nsources:\n  - {name: aws, type: aws_secretsmanager, address: 'https://v'}\n", `till.yaml:3: sources[0].address: only used with type: vault`},
		{"source name till", "version: 1\nsources:\n  - {name: till, type: files, dir: /s}\n", `till.yaml:3: sources[0].name: "till" is reserved`},
		{"source bad name", "version: 1\nsources:\n  - {name: Mounted, type: files, dir: /s}\n", `till.yaml:3: sources[0].name: must be lowercase letters, digits, '_' and '-', starting with a letter or digit, at most 64 characters`},
		{"source duplicate", "version: 1\nsources:\n  - {name: m, type: files, dir: /s}\n  - {name: m, type: files, dir: /t}\n", `till.yaml:4: sources[1].name: duplicate source name "m" (first at line 3)`},
		{"source without type", "version: 1\nsources:\n  - {name: m}\n", `till.yaml:3: sources[0].type: required (hint: vault, aws_secretsmanager, files, exec)`},
		{"source unknown field", "version: 1\nsources:\n  - {name: m, type: files, dir: /s, failure_tll: 1s}\n", `till.yaml:3: sources[0].failure_tll: unknown field (did you mean "failure_ttl"?)`},
		{"files without dir", "version: 1\nsources:\n  - {name: m, type: files}\n", `till.yaml:3: sources[0].dir: required (hint: the folder holding one file per secret)`},
		{"exec without command", "version: 1\nsources:\n  - {name: op, type: exec}\n", `till.yaml:3: sources[0].command: required (hint: the helper's argv, such as [op, read]; the ref's path is appended)`},
		{"exec command a string", "version: 1\nsources:\n  - {name: op, type: exec, command: op read}\n", `till.yaml:3: sources[0].command: must be a list of arguments such as [op, read] (it runs without a shell)`},
		{"exec empty command", "version: 1\nsources:\n  - {name: op, type: exec, command: []}\n", `till.yaml:3: sources[0].command: must name a program`},
		{"dir on exec", "version: 1\nsources:\n  - {name: op, type: exec, command: [op], dir: /s}\n", `till.yaml:3: sources[0].dir: only used with type: files`},
		{"timeout on files", "version: 1\nsources:\n  - {name: m, type: files, dir: /s, timeout: 1s}\n", `till.yaml:3: sources[0].timeout: only used with type: exec`},
		{"source zero ttl", "version: 1\nsources:\n  - {name: m, type: files, dir: /s, ttl: 0s}\n", `till.yaml:3: sources[0].ttl: must be more than zero`},
		{"source tiny ttl", "version: 1\nsources:\n  - {name: m, type: files, dir: /s, ttl: 1ns}\n", `till.yaml:3: sources[0].ttl: must be at least 1s: a value older than ttl is fetched again, so a shorter one asks the source at nearly every request (hint: 5m, the default)`},
		{"source ttl under a second", "version: 1\nsources:\n  - {name: corp, type: vault, address: 'https://v', auth: {token_file: /t}, ttl: 999ms}\n", `till.yaml:3: sources[0].ttl: must be at least 1s: a value older than ttl is fetched again, so a shorter one asks the source at nearly every request (hint: 5m, the default)`},
		{"source tiny failure_ttl", "version: 1\nsources:\n  - {name: m, type: files, dir: /s, failure_ttl: 1ns}\n", `till.yaml:3: sources[0].failure_ttl: must be 0s (off) or at least 1s: a value is used its whole ttl before a failing source matters, so a shorter one never stands in (hint: 10m)`},
		{"source bad failure_ttl", "version: 1\nsources:\n  - {name: m, type: files, dir: /s, failure_ttl: soon}\n", `till.yaml:3: sources[0].failure_ttl: must be a duration such as 0s, 30s, 5m or 1h`},
		{"ref to unknown source", "version: 1\nsources:\n  - {name: mounted, type: files, dir: /s}\nroutes:\n  - {name: x, preset: openai, secret: \"mountd:openai\"}\n", `till.yaml:5: routes[0].secret: unknown source "mountd" (did you mean "mounted"?)`},
		{"ref without sources", "version: 1\nroutes:\n  - {name: x, preset: openai, secret: \"corp:secret/openai\"}\n", `till.yaml:3: routes[0].secret: unknown source "corp" (hint: define it under sources:, or use a vault secret name without ":")`},
		{"ref far from sources", "version: 1\nsources:\n  - {name: mounted, type: files, dir: /s}\nroutes:\n  - {name: x, preset: openai, secret: \"zzzzzz:openai\"}\n", `till.yaml:5: routes[0].secret: unknown source "zzzzzz" (known: mounted)`},
		{"ref without path", "version: 1\nsources:\n  - {name: m, type: files, dir: /s}\nroutes:\n  - {name: x, preset: openai, secret: \"m:\"}\n", `till.yaml:5: routes[0].secret: must name a path after the source (SOURCE:PATH)`},
		{"ref bad field", "version: 1\nsources:\n  - {name: m, type: files, dir: /s}\nroutes:\n  - {name: x, preset: openai, secret: \"m:a#b c\"}\n", `till.yaml:5: routes[0].secret: field after # must be 1 to 64 characters of letters, digits, '_', '.' and '-'`},
		{"ref to till", "version: 1\nroutes:\n  - {name: x, preset: openai, secret: \"till:ca\"}\n", `till.yaml:3: routes[0].secret: source name "till" is reserved`},
		{"routes not a list", "version: 1\nroutes: {name: x}\n", `till.yaml:2: routes: must be a list (hint: [a, b] or one "- item" per line)`},
		{"clients a word", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    clients: everyone\n", `till.yaml:5: routes[0].clients: must be a list of client names such as [web], or any (hint: "clients: any" accepts anyone who can reach the listener)`},
		{"clients any in brackets", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    clients: [any]\n", `till.yaml:5: routes[0].clients[0]: unknown client "any" (hint: "clients: any", without brackets, accepts any client)`},
		{"clients any as a mapping", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    clients: {any: true}\n", `till.yaml:5: routes[0].clients: must be a list (hint: [a, b] or one "- item" per line)`},
		{"literal key in a header", "version: 1\nroutes:\n  - {name: a, preset: openai}\n  - name: x\n    preset: openai\n    headers:\n      x-api-key: " + fakeOpenAIKey + "\n", `till.yaml:7: routes[1].headers.X-Api-Key: ` + literalKey},
		{"literal key after text in a header", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    headers: {X-Other: \"Token " + fakeAWSKey + "\"}\n", `till.yaml:5: routes[0].headers.X-Other: ` + literalKey},
		{"random token in a header", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    headers: {X-Key: " + fakeRandomKey + "}\n", `till.yaml:5: routes[0].headers.X-Key: ` + literalKey},
		{"literal key as a header name", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    headers: {" + fakeOpenAIKey + ": x}\n", `till.yaml:5: routes[0].headers: a header name ` + literalKey},
		{"literal key in format", "version: 1\nroutes:\n  - name: x\n    upstream: https://x.example\n    inject:\n      header: Authorization\n      format: \"Bearer " + fakeOpenAIKey + "\"\n", `till.yaml:7: routes[0].inject.format: ` + literalKey},
		{"literal key beside the placeholder", "version: 1\nroutes:\n  - name: x\n    upstream: https://x.example\n    inject:\n      header: X-Auth\n      format: \"{secret}:" + fakeSlackKey + "\"\n", `till.yaml:7: routes[0].inject.format: ` + literalKey},
		{"literal key as basic password", "version: 1\nroutes:\n  - name: x\n    upstream: https://x.example\n    inject:\n      basic: {username: \"{secret}\", password: " + fakeStripeKey + "}\n", `till.yaml:6: routes[0].inject.basic.password: ` + literalKey},
		{"key-like preset not echoed", "version: 1\nroutes:\n  - {name: x, preset: " + fakeOpenAIKey + "}\n", `till.yaml:3: routes[0].preset: unknown preset (known: anthropic, bedrock, bedrock-agent, cohere, gemini, github, github-app, groq, huggingface, mistral, openai, sendgrid, slack, stripe, twilio, vertex)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("till.yaml", []byte(tt.yaml), t.TempDir())
			if err == nil {
				t.Fatalf("Parse succeeded, want error %q", tt.want)
			}
			if c != nil {
				t.Errorf("Parse returned a config with its error")
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			for _, secret := range []string{"hunter2", "sk-hardcoded", "sk-proj", "X-Evil", fakeOpenAIKey, fakeAWSKey, fakeRandomKey, fakeSlackKey, fakeStripeKey} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q quotes a value from the file", err)
				}
			}
		})
	}
}

// TestParseErrorsAll checks that every problem is reported at once, in file
// order, each an *Error.
func TestParseErrorsAll(t *testing.T) {
	data, err := os.ReadFile("testdata/bad.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Parse("bad.yaml", data, "/etc/till")
	if err == nil {
		t.Fatal("Parse succeeded, want errors")
	}
	want := []string{
		`bad.yaml:1: version: unsupported version 2 (hint: this till reads version 1)`,
		`bad.yaml:2: listen: must be host:port (e.g. 127.0.0.1:8080)`,
		`bad.yaml:4: routes[0].name: must be lowercase letters, digits, '_' and '-', starting with a letter or digit, at most 64 characters`,
		`bad.yaml:4: routes[0].upstream: required (hint: set upstream, or a preset such as "preset: openai")`,
		`bad.yaml:5: routes[0].upstrem: unknown field (did you mean "upstream"?)`,
		`bad.yaml:8: routes[0].inject.format: unknown placeholder (only {secret} and {secret.FIELD} are allowed)`,
		`bad.yaml:9: routes[0].rate: must be a rate such as 10/s, 100/m or 1000/h`,
		`bad.yaml:11: routes[0].allow.paths[0]: "**" is only allowed as the last segment`,
	}
	if got := err.Error(); got != strings.Join(want, "\n") {
		t.Errorf("got %q, want %q", got, strings.Join(want, "\n"))
	}
	var e *Error
	if !errors.As(err, &e) || e.File != "bad.yaml" || e.Line != 1 || e.Path != "version" {
		t.Errorf("errors.As gave %+v, want the version error", e)
	}
}

func TestParseTooLarge(t *testing.T) {
	data := []byte("version: 1\n" + strings.Repeat("#", MaxSize))
	_, err := Parse("till.yaml", data, ".")
	if got, want := errString(err), "till.yaml: config is larger than 1 MiB: is it the right file?"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestParseFull(t *testing.T) {
	data, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c, err := Parse("full.yaml", data, dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.File != "full.yaml" || c.Version != 1 || c.Listen != "127.0.0.1:8080" || c.ShutdownGrace != 45*time.Second {
		t.Errorf("top level: got %q %d %q %v", c.File, c.Version, c.Listen, c.ShutdownGrace)
	}
	if !reflect.DeepEqual(c.BrowserOrigins, []string{"https://app.example.com", "http://localhost:3000"}) || !reflect.DeepEqual(c.ServerNames, []string{"till.lan"}) {
		t.Errorf("browser_origins, server_names: got %q %q", c.BrowserOrigins, c.ServerNames)
	}
	if !reflect.DeepEqual(c.TLS, TLS{Names: []string{"till.internal"}, ACME: &ACME{Email: "ops@example.com", CA: "https://acme.example/dir"}}) {
		t.Errorf("tls: got %+v", c.TLS)
	}
	if c.Admin != (Admin{Listen: "0.0.0.0:9090", TokenSHA256: testHash}) {
		t.Errorf("admin: got %+v", c.Admin)
	}
	wantVault := Vault{Path: filepath.Join(dir, "data/till.vault"), PathSet: true, KeyFile: "/etc/till/till.key", MaxAge: 90 * 24 * time.Hour, OnExpired: "warn"}
	if c.Vault != wantVault {
		t.Errorf("vault: got %+v, want %+v", c.Vault, wantVault)
	}
	if got, want := c.Audit.File, filepath.Join(dir, "logs/audit.log"); got != want {
		t.Errorf("audit.file: got %q, want %q", got, want)
	}
	wantForward := Forward{
		Enabled: true, UnknownHosts: "tunnel",
		AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.1/32")},
		CACert:     filepath.Join(dir, "ca/till-ca.pem"),
		CertCache:  DefaultCertCache,
	}
	if !reflect.DeepEqual(c.Forward, wantForward) {
		t.Errorf("forward: got %+v, want %+v", c.Forward, wantForward)
	}
	if c.Limits != (Limits{Redis: "redis://127.0.0.1:6379/0", OnRedisError: "deny"}) {
		t.Errorf("limits: got %+v", c.Limits)
	}
	if c.Log != (Log{Level: "warn", Format: "console"}) {
		t.Errorf("log: got %+v", c.Log)
	}
	wantClients := []Client{
		{Name: "web", TokenSHA256: strings.Repeat("4f1c", 16), CIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Cert: true, Line: 27},
		{Name: "batch", TokenSHA256: strings.Repeat("0", 64), Line: 31},
	}
	if !reflect.DeepEqual(c.Clients, wantClients) {
		t.Errorf("clients: got %+v, want %+v", c.Clients, wantClients)
	}
	if len(c.Routes) != 4 {
		t.Fatalf("got %d routes, want 4", len(c.Routes))
	}

	r := c.Routes[1]
	if r.Name != "internal" || r.Preset != "" || r.Prefix != "/internal/v2" || r.Secret != "internal-key" || r.Line != 36 {
		t.Errorf("internal: got name %q preset %q prefix %q secret %q line %d", r.Name, r.Preset, r.Prefix, r.Secret, r.Line)
	}
	if got, want := r.Upstream.String(), "https://api.example.com/base"; got != want {
		t.Errorf("internal upstream: got %q, want %q", got, want)
	}
	if r.Inject.Header != "X-Api-Key" || !reflect.DeepEqual(r.Inject.Format.Fields(), []string{"token"}) {
		t.Errorf("internal inject: got %q %q", r.Inject.Header, r.Inject.Format.Fields())
	}
	if !reflect.DeepEqual(r.Headers, map[string]string{"X-Api-Version": "2"}) {
		t.Errorf("internal headers: got %v", r.Headers)
	}
	if !reflect.DeepEqual(r.Allow.Methods, []string{"GET", "POST"}) || len(r.Allow.Paths) != 3 || r.Allow.Paths[2].String() != "/base/v1/files/**" {
		t.Errorf("internal allow: got %v %v", r.Allow.Methods, r.Allow.Paths)
	}
	if !reflect.DeepEqual(r.Clients, []string{"web", "batch"}) || r.Rate != (Rate{10, time.Second}) || r.Burst != 20 {
		t.Errorf("internal clients/rate: got %v %v %d", r.Clients, r.Rate, r.Burst)
	}
	if !reflect.DeepEqual(r.Strip, []string{"X-Other-Key"}) || r.Timeout != 36*time.Hour || r.MaxBody != 10_000_000 {
		t.Errorf("internal strip/timeout/max_body: got %v %v %d", r.Strip, r.Timeout, r.MaxBody)
	}

	r = c.Routes[2]
	if r.Upstream.String() != "http://127.0.0.1:9000" || r.Inject.Query != "key" || r.Prefix != "/local" || r.Secret != "local" || r.Burst != 100 || r.Timeout != DefaultTimeout {
		t.Errorf("local: got %+v", r)
	}
	r = c.Routes[3]
	if r.Inject.Basic == nil || !reflect.DeepEqual(r.Inject.Basic.Username.Fields(), []string{"sid"}) || r.MaxBody != 1048576 {
		t.Errorf("twilio: got %+v", r)
	}
}

func TestParseDefaults(t *testing.T) {
	dir := t.TempDir()
	c, err := Parse("till.yaml", []byte("version: 1\n"), dir)
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		File: "till.yaml", Version: 1, Listen: "127.0.0.1:8080", ShutdownGrace: 30 * time.Second,
		Vault:   Vault{Path: filepath.Join(dir, "till.vault"), KeyFile: filepath.Join(dir, "till.key"), OnExpired: "block"},
		Audit:   Audit{File: "-", Fsync: "interval", MaxFiles: 10},
		Forward: Forward{Intercept: true, UnknownHosts: "deny", CACert: filepath.Join(dir, "till-ca.pem"), CertCache: DefaultCertCache},
		Limits:  Limits{OnRedisError: "allow"},
		Log:     Log{Level: "info"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v, want %+v", c, want)
	}
}

// TestRelativePaths checks that relative paths are resolved against the
// config's folder, and that the folder is made absolute.
func TestRelativePaths(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, dir, path, want string
	}{
		{"relative to dir", "/etc/till", "data/till.vault", "/etc/till/data/till.vault"},
		{"dot dot", "/etc/till", "../till.vault", "/etc/till.vault"},
		{"absolute kept", "/etc/till", "/var/lib/till.vault", "/var/lib/till.vault"},
		{"relative dir made absolute", "conf", "till.vault", filepath.Join(wd, "conf", "till.vault")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("till.yaml", []byte("version: 1\nvault: {path: "+tt.path+"}\n"), tt.dir)
			if err != nil {
				t.Fatal(err)
			}
			if c.Vault.Path != tt.want {
				t.Errorf("got %q, want %q", c.Vault.Path, tt.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "till.yaml")
	if err := os.WriteFile(path, []byte("version: 1\naudit: {file: audit.log}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.File != path || c.Audit.File != filepath.Join(dir, "audit.log") {
		t.Errorf("got file %q audit %q", c.File, c.Audit.File)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v, want not exist", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, MaxSize+10), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.HasSuffix(err.Error(), "config is larger than 1 MiB: is it the right file?") {
		t.Errorf("got %v, want the size error", err)
	}
}

// TestUpstream checks the scheme rules and normalisation.
func TestUpstream(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"https", "upstream: https://api.example.com", "https://api.example.com"},
		{"trailing slash dropped", "upstream: https://api.example.com/v1/", "https://api.example.com/v1"},
		{"http loopback v4", "upstream: http://127.0.0.2:8000", "http://127.0.0.2:8000"},
		{"http loopback v6", "upstream: http://[::1]:8000", "http://[::1]:8000"},
		{"http localhost", "upstream: http://localhost:8000", "http://localhost:8000"},
		{"http with allow_plaintext", "upstream: http://10.0.0.1:8000\n    allow_plaintext: true", "http://10.0.0.1:8000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			y := "version: 1\nroutes:\n  - name: x\n    inject: {query: key}\n    " + tt.yaml + "\n"
			c, err := Parse("till.yaml", []byte(y), "/")
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Routes[0].Upstream.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestPresetRoute checks that a preset fills a route, and that fields set
// in the route win (strip and headers are added to the preset's).
func TestPresetRoute(t *testing.T) {
	y := `version: 1
routes:
  - name: anthropic
    preset: anthropic
  - name: claude-team
    preset: anthropic
    secret: anthropic-team
    upstream: https://anthropic-proxy.example.com
    inject: {header: Authorization, format: "Bearer {secret}"}
    headers: {anthropic-beta: tools}
    strip: [x-api-key, X-Other]
`
	c, err := Parse("till.yaml", []byte(y), "/")
	if err != nil {
		t.Fatal(err)
	}
	a, o := c.Routes[0], c.Routes[1]
	lookup := func(string) (string, bool) { return "KEY", true }

	if a.Preset != "anthropic" || a.Prefix != "/anthropic" || a.Secret != "anthropic" || a.Upstream.String() != "https://api.anthropic.com" {
		t.Errorf("preset route: got preset %q prefix %q secret %q upstream %q", a.Preset, a.Prefix, a.Secret, a.Upstream)
	}
	if v, _ := a.Inject.Format.Render(lookup); a.Inject.Header != "X-Api-Key" || v != "KEY" {
		t.Errorf("preset inject: got %q %q", a.Inject.Header, v)
	}
	if !reflect.DeepEqual(a.Headers, map[string]string{"Anthropic-Version": "2023-06-01"}) {
		t.Errorf("preset headers: got %v", a.Headers)
	}
	if !reflect.DeepEqual(a.Strip, []string{"X-Api-Key", "Authorization"}) {
		t.Errorf("preset strip: got %v", a.Strip)
	}

	if o.Prefix != "/claude-team" || o.Secret != "anthropic-team" || o.Upstream.String() != "https://anthropic-proxy.example.com" {
		t.Errorf("override: got prefix %q secret %q upstream %q", o.Prefix, o.Secret, o.Upstream)
	}
	if v, _ := o.Inject.Format.Render(lookup); o.Inject.Header != "Authorization" || v != "Bearer KEY" {
		t.Errorf("override inject: got %q %q", o.Inject.Header, v)
	}
	if !reflect.DeepEqual(o.Headers, map[string]string{"Anthropic-Version": "2023-06-01", "Anthropic-Beta": "tools"}) {
		t.Errorf("override headers: got %v", o.Headers)
	}
	if !reflect.DeepEqual(o.Strip, []string{"X-Api-Key", "Authorization", "X-Other"}) {
		t.Errorf("override strip: got %v", o.Strip)
	}
	// The catalog must not be changed through a route.
	o.Headers["X-Mutated"] = "1"
	if p, _ := LookupPreset("anthropic"); len(p.Headers) != 1 {
		t.Errorf("preset headers changed: %v", p.Headers)
	}
}

func TestPresets(t *testing.T) {
	ps := Presets()
	var names []string
	for _, p := range ps {
		names = append(names, p.Name)
		if p.Secret != p.Name || p.Docs == "" || !strings.HasPrefix(p.Upstream, "https://") {
			t.Errorf("%s: got secret %q docs %q upstream %q", p.Name, p.Secret, p.Docs, p.Upstream)
		}
		if _, err := parseUpstream(strings.ReplaceAll(p.Upstream, RegionPlaceholder, "us-east-1"), false); err != nil {
			t.Errorf("%s: upstream: %v", p.Name, err)
		}
	}
	want := []string{"anthropic", "bedrock", "bedrock-agent", "cohere", "gemini", "github", "github-app", "groq", "huggingface", "mistral", "openai", "sendgrid", "slack", "stripe", "twilio", "vertex"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("got %q, want %q", names, want)
	}
	tests := []struct {
		name, header, value, base string
	}{
		{"openai", "Authorization", "Bearer K", "/v1"},
		{"anthropic", "X-Api-Key", "K", ""},
		{"gemini", "X-Goog-Api-Key", "K", ""},
		{"groq", "Authorization", "Bearer K", "/openai/v1"},
		{"slack", "Authorization", "Bearer K", "/api"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := LookupPreset(tt.name)
			if !ok {
				t.Fatal("not found")
			}
			v, err := p.Inject.Format.Render(func(string) (string, bool) { return "K", true })
			if err != nil || p.Inject.Header != tt.header || v != tt.value || p.BaseURLPath != tt.base {
				t.Errorf("got %q %q %q (%v), want %q %q %q", p.Inject.Header, v, p.BaseURLPath, err, tt.header, tt.value, tt.base)
			}
		})
	}
	tw, _ := LookupPreset("twilio")
	if tw.Inject.Basic == nil || !reflect.DeepEqual(tw.Inject.Basic.Password.Fields(), []string{"token"}) {
		t.Errorf("twilio: got %+v", tw.Inject)
	}
	if _, ok := LookupPreset("nope"); ok {
		t.Error("LookupPreset found nope")
	}
}

func TestDefault(t *testing.T) {
	dir := t.TempDir()
	has := func(s string) bool { return s == "openai" || s == "anthropic" || s == "unrelated" }
	c := Default(dir, "", has)
	if c.File != "" || c.Version != 1 || c.Listen != DefaultListen || c.Audit.File != "-" || c.Admin.Listen != "" {
		t.Errorf("got %+v", c)
	}
	if c.Vault.Path != filepath.Join(dir, "till.vault") || c.Vault.KeyFile != filepath.Join(dir, "till.key") {
		t.Errorf("vault: got %+v", c.Vault)
	}
	if c.Log != (Log{Level: "info"}) {
		t.Errorf("log: got %+v, want level info and the format left to the terminal", c.Log)
	}
	var names, prefixes []string
	for _, r := range c.Routes {
		names = append(names, r.Name)
		prefixes = append(prefixes, r.Prefix)
		if r.Line != 0 || r.Timeout != DefaultTimeout || r.Upstream == nil || r.Secret != r.Name {
			t.Errorf("route %s: got %+v", r.Name, r)
		}
	}
	if !reflect.DeepEqual(names, []string{"anthropic", "openai"}) || !reflect.DeepEqual(prefixes, []string{"/anthropic", "/openai"}) {
		t.Errorf("got routes %q at %q", names, prefixes)
	}

	c = Default(dir, "/run/secrets/till.key", nil)
	if c.Vault.KeyFile != "/run/secrets/till.key" || len(c.Routes) != 0 {
		t.Errorf("got key %q and %d routes", c.Vault.KeyFile, len(c.Routes))
	}
}

func TestStarterConfig(t *testing.T) {
	s := StarterConfig()
	c, err := Parse("till.yaml", s, t.TempDir())
	if err != nil {
		t.Fatalf("starter config does not parse: %v", err)
	}
	if len(c.Routes) != 0 {
		t.Errorf("starter config has %d active routes, want 0", len(c.Routes))
	}
	all := [][]string{rootKeys, tlsKeys, acmeKeys, adminKeys, vaultKeys, auditKeys, forwardKeys, limitsKeys, logKeys, clientKeys, routeKeys, injectKeys, basicKeys, allowKeys, sourceKeys, vaultAuthKeys, appRoleKeys, kubernetesAuthKeys, budgetKeys, pricesKeys, poolKeys, sigV4Keys, oauth2Keys, githubAppKeys, googleKeys}
	for _, keys := range all {
		for _, k := range keys {
			if !strings.Contains(string(s), k+":") {
				t.Errorf("starter config does not mention %q", k)
			}
		}
	}
	for _, p := range Presets() {
		if !strings.Contains(string(s), p.Name) {
			t.Errorf("starter config does not list preset %q", p.Name)
		}
	}
	// Uncommenting the example routes must give a valid config too.
	var b strings.Builder
	examples := false
	for line := range strings.Lines(string(s)) {
		switch {
		case strings.HasPrefix(line, "routes: []"):
			continue
		case strings.HasPrefix(line, "# routes:"):
			examples = true
		}
		if examples {
			line = strings.TrimPrefix(strings.TrimPrefix(line, "#"), " ")
		}
		b.WriteString(line)
	}
	_, err = Parse("till.yaml", []byte(b.String()), "/")
	if err == nil {
		t.Fatalf("uncommented routes parse without their client: want an unknown client error")
	}
	if got, want := err.Error(), `till.yaml:118: routes[1].clients[0]: unknown client "web" (hint: define it under clients, or run "till client add web")`+"\n"+
		`till.yaml:132: budgets[0].clients[0]: unknown client "web" (hint: define it under clients, or run "till client add web")`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	StarterConfig()[0] = 'X'
	if StarterConfig()[0] == 'X' {
		t.Error("StarterConfig returns shared bytes")
	}
}

func TestSuggest(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"upstrem", "upstream"},
		{"Upstream", "upstream"},
		{"prefx", "prefix"},
		{"lisen", "listen"},
		{"zzzzzzzz", ""},
		{"rat", "rate"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := suggest(tt.in, append(routeKeys, rootKeys...)); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseSources(t *testing.T) {
	y := "version: 1\nsources:\n  - {name: mounted, type: files, dir: secrets}\n  - name: op\n    type: exec\n    command: [op, read]\n    ttl: 1m\n    failure_ttl: 30s\n    timeout: 2s\nroutes:\n  - {name: a, preset: openai, secret: \"mounted:openai\"}\n  - {name: b, preset: openai, prefix: /b, secret: \"op:op://vault/item#key\"}\n"
	c, err := Parse("till.yaml", []byte(y), "/etc/till")
	if err != nil {
		t.Fatal(err)
	}
	want := []Source{
		{Name: "mounted", Type: "files", TTL: DefaultSourceTTL, Dir: "/etc/till/secrets", Line: 3},
		{Name: "op", Type: "exec", TTL: time.Minute, FailureTTL: 30 * time.Second, Command: []string{"op", "read"}, Timeout: 2 * time.Second, Line: 4},
	}
	if !reflect.DeepEqual(c.Sources, want) {
		t.Errorf("got %+v, want %+v", c.Sources, want)
	}
	refs := []*SecretRef{{Source: "mounted", Path: "openai"}, {Source: "op", Path: "op://vault/item", Field: "key"}}
	for i, r := range c.Routes {
		if !reflect.DeepEqual(r.Ref, refs[i]) {
			t.Errorf("routes[%d].Ref: got %+v, want %+v", i, r.Ref, refs[i])
		}
		if got := r.Ref.String(); got != r.Secret {
			t.Errorf("routes[%d]: got ref %q, want %q", i, got, r.Secret)
		}
	}
	if c.Routes[0].Ref == nil || c.Routes[1].Ref.Field != "key" {
		t.Errorf("refs not parsed")
	}
}

func TestParseVaultAndAWSSources(t *testing.T) {
	y := `version: 1
sources:
  - name: corp
    type: vault
    address: https://vault.internal:8200/
    ca_file: vault-ca.pem
    namespace: team/prod
    auth: {approle: {role_id_file: role-id, secret_id_file: /run/secret-id}}
    auth_mount: approle-till
  - name: k8s
    type: vault
    address: http://127.0.0.1:8200
    auth: {kubernetes: {role: till}}
  - name: agent
    type: vault
    address: https://vault.internal
    auth: {token_file: /var/run/vault/token}
  - name: aws
    type: aws_secretsmanager
    region: eu-central-1
    endpoint: https://secretsmanager.eu-central-1.amazonaws.com
routes:
  - {name: a, preset: openai, secret: "corp:secret/openai#api_key"}
`
	c, err := Parse("till.yaml", []byte(y), "/etc/till")
	if err != nil {
		t.Fatal(err)
	}
	want := []Source{
		{Name: "corp", Type: "vault", TTL: DefaultSourceTTL, Address: "https://vault.internal:8200", CAFile: "/etc/till/vault-ca.pem", Namespace: "team/prod",
			Auth: VaultAuth{AppRole: &AppRoleAuth{RoleIDFile: "/etc/till/role-id", SecretIDFile: "/run/secret-id"}}, AuthMount: "approle-till", Line: 3},
		{Name: "k8s", Type: "vault", TTL: DefaultSourceTTL, Address: "http://127.0.0.1:8200",
			Auth: VaultAuth{Kubernetes: &KubernetesAuth{Role: "till", JWTFile: DefaultServiceAccountToken}}, Line: 10},
		{Name: "agent", Type: "vault", TTL: DefaultSourceTTL, Address: "https://vault.internal", Auth: VaultAuth{TokenFile: "/var/run/vault/token"}, Line: 14},
		{Name: "aws", Type: "aws_secretsmanager", TTL: DefaultSourceTTL, Region: "eu-central-1", Endpoint: "https://secretsmanager.eu-central-1.amazonaws.com", Line: 18},
	}
	if !reflect.DeepEqual(c.Sources, want) {
		t.Errorf("got  %+v\nwant %+v", c.Sources, want)
	}
	for i, m := range []string{"approle", "kubernetes", "token_file"} {
		if got := c.Sources[i].Auth.Method(); got != m {
			t.Errorf("sources[%d].Auth.Method() = %q, want %q", i, got, m)
		}
	}
}

// TestDefaultRoutesAreTheirPresets: the route a preset gives with no
// config file is the route "- {name: P, preset: P}" gives in one: the
// two are built apart, and a preset setting one of them forgot (mistral's
// streams_report_usage) made streams fail only without a config.
func TestDefaultRoutesAreTheirPresets(t *testing.T) {
	dir := t.TempDir()
	for _, r := range Default(dir, "", func(string) bool { return true }).Routes {
		c, err := Parse("till.yaml", []byte("version: 1\nroutes: [{name: "+r.Name+", preset: "+r.Name+"}]\n"), dir)
		if err != nil {
			t.Fatalf("%s: %v", r.Name, err)
		}
		parsed := c.Routes[0]
		parsed.Line = 0
		if !reflect.DeepEqual(r, parsed) {
			t.Errorf("preset %s: without a config\n%+v\nin one\n%+v", r.Name, r, parsed)
		}
	}
}

// TestRegionWithOwnUpstream: a route on a preset that signs for a region
// (bedrock) keeps needing it when it names its own upstream; it signed
// for the empty region, which AWS refuses.
func TestRegionWithOwnUpstream(t *testing.T) {
	y := "version: 1\nroutes: [{name: br, preset: bedrock, upstream: \"http://127.0.0.1:9901\", region: eu-west-1, secret: aws}]\n"
	c, err := Parse("till.yaml", []byte(y), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if sig := c.Routes[0].Inject.AWSSigV4; sig == nil || sig.Region != "eu-west-1" {
		t.Errorf("signs with %+v, want region eu-west-1", sig)
	}
	_, err = Parse("till.yaml", []byte(strings.Replace(y, ", region: eu-west-1", "", 1)), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "routes[0].region: required with preset bedrock") {
		t.Errorf("no region: got %v", err)
	}
}

// TestEmptyAllowList: allow: {methods: []} allowed every method, where
// clients: [] is refused; an empty allow list is refused too.
func TestEmptyAllowList(t *testing.T) {
	for _, k := range []string{"methods", "paths", "models"} {
		y := "version: 1\nroutes: [{name: openai, preset: openai, allow: {" + k + ": []}}]\n"
		_, err := Parse("till.yaml", []byte(y), t.TempDir())
		if err == nil || !strings.Contains(err.Error(), "routes[0].allow."+k+": is empty, which would allow any") {
			t.Errorf("allow.%s: []: got %v", k, err)
		}
	}
}

// TestNullRuleListRefused: fields reads a key with nothing after it as
// absent, so a rule list whose every entry was commented out (a common way
// to "remove" the last client or path), or written ~ or null, meant "any",
// while the same intent written [] was refused. Each must be an error.
func TestNullRuleListRefused(t *testing.T) {
	tests := []struct{ name, doc, want string }{
		{"route clients all commented out", "version: 1\nclients:\n  - {name: web, token_sha256: " + testHash + "}\nroutes:\n  - name: x\n    preset: openai\n    clients:\n      # - web\n", "till.yaml:7: routes[0].clients: must name at least one client"},
		{"route clients: ~", "version: 1\nroutes:\n  - {name: x, preset: openai, clients: ~}\n", "till.yaml:3: routes[0].clients: must name at least one client"},
		{"allow.paths all commented out", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    allow:\n      paths:\n        # - /v1/models\n", "till.yaml:6: routes[0].allow.paths: is empty, which would allow any"},
		{"allow.methods: null", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    allow:\n      methods: null\n", "till.yaml:6: routes[0].allow.methods: is empty, which would allow any"},
		{"allow.models all commented out", "version: 1\nroutes:\n  - name: x\n    preset: openai\n    allow:\n      models:\n        # - gpt-4o-mini\n", "till.yaml:6: routes[0].allow.models: is empty, which would allow any"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("till.yaml", []byte(tt.doc), t.TempDir())
			if err == nil {
				r := c.Routes[0]
				t.Fatalf("loaded: clients=%v any=%v methods=%v paths=%v models=%v: the rule written with no entries allows every value",
					r.Clients, r.AnyClient, r.Allow.Methods, r.Allow.Paths, r.Allow.Models)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q, want %q", err, tt.want)
			}
		})
	}
}

// TestYAMLTagsRefused: a tag made the file say one thing and till read
// another: "rate: !!null 10/s" loaded as no rate, a budget's
// "tokens: !!null 1000000" as no token cap, "!!binary" text as the
// encoded name, a custom tag as nothing at all.
func TestYAMLTagsRefused(t *testing.T) {
	route := "version: 1\nroutes:\n  - name: x\n    preset: openai\n"
	tests := []struct{ name, doc, want string }{
		{"rate !!null", route + "    rate: !!null 10/s\n", "till.yaml:5: routes[0].rate: has a yaml tag"},
		{"budget tokens !!null", route + "budgets:\n  - {name: b, window: 1h, requests: 100, tokens: !!null 1000000}\n", "till.yaml:6: budgets[0].tokens: has a yaml tag"},
		{"secret !!binary", route + "    secret: !!binary b3BlbmFp\n", "till.yaml:5: routes[0].secret: has a yaml tag"},
		{"custom tag", route + "    max_body: !size 10MB\n", "till.yaml:5: routes[0].max_body: has a yaml tag"},
		{"!!str", route + "    clients: !!str any\n", "till.yaml:5: routes[0].clients: has a yaml tag"},
		{"tag on a list entry", route + "    allow: {methods: [GET, !!str POST]}\n", "till.yaml:5: routes[0].allow.methods[1]: has a yaml tag"},
		{"tag on a key", route + "    !!str timeout: 30s\n", "till.yaml:5: routes[0]: has a yaml tag"},
		{"tag on a mapping", "version: 1\nroutes:\n  - !!map {name: x, preset: openai}\n", "till.yaml:3: routes[0]: has a yaml tag"},
		{"tag on a header", route + "    headers: {X-A: !!str b}\n", "till.yaml:5: routes[0].headers.X-A: has a yaml tag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("till.yaml", []byte(tt.doc), t.TempDir())
			if err == nil {
				t.Fatalf("loaded: rate=%v secret=%q max_body=%d budgets=%+v", c.Routes[0].Rate, c.Routes[0].Secret, c.Routes[0].MaxBody, c.Budgets)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q, want %q", err, tt.want)
			}
		})
	}
}

// TestEmptyClientCIDRsRefused: a client's cidrs: [] (or cidrs: with every
// entry commented out) loaded as "from any address": the author wrote a
// source restriction with no range in it, a shape allow.* refuse too.
func TestEmptyClientCIDRsRefused(t *testing.T) {
	for name, doc := range map[string]string{
		"cidrs: []":           "version: 1\nclients:\n  - {name: web, token_sha256: " + testHash + ", cidrs: []}\n",
		"cidrs commented out": "version: 1\nclients:\n  - name: web\n    token_sha256: " + testHash + "\n    cidrs:\n      # - 10.1.2.0/24\n",
	} {
		t.Run(name, func(t *testing.T) {
			c, err := Parse("till.yaml", []byte(doc), t.TempDir())
			if err == nil {
				t.Fatalf("loaded with cidrs=%v: client web is accepted from any address", c.Clients[0].CIDRs)
			}
			if !strings.Contains(err.Error(), "clients[0].cidrs: is empty") {
				t.Errorf("got %q, want clients[0].cidrs refused as empty", err)
			}
		})
	}
}

// TestDuplicateClientTokenRefused: two clients with one token_sha256 (a
// copy-paste of "till client add" output, in any case) loaded, and the
// proxy then named that token's caller the last of them, so the first
// client's app got the second's routes and lost its own cidrs. The same
// token under two names is refused, as two clients of one name are.
func TestDuplicateClientTokenRefused(t *testing.T) {
	doc := "version: 1\nclients:\n" +
		"  - {name: web, token_sha256: " + testHash + ", cidrs: [10.0.0.0/8]}\n" +
		"  - {name: billing, token_sha256: " + strings.ToUpper(testHash) + "}\n"
	_, err := Parse("till.yaml", []byte(doc), t.TempDir())
	if err == nil {
		t.Fatal("two clients with the same token_sha256 (web, billing) loaded without an error: web's token is identified as billing")
	}
	if !strings.Contains(err.Error(), "till.yaml:4") || strings.Contains(strings.ToLower(err.Error()), testHash) {
		t.Errorf("error %q should point at the second client (till.yaml:4), without the digest", err)
	}
}

// TestAdminTokenNotAClientToken: admin.token_sha256 equal to a client's
// loaded; the app holding that low-value client token could then read
// /metrics, /admin/routes, /admin/usage and POST /admin/reload.
func TestAdminTokenNotAClientToken(t *testing.T) {
	doc := "version: 1\nadmin: {listen: 127.0.0.1:9090, token_sha256: " + otherHash + "}\nclients:\n  - {name: web, token_sha256: " + otherHash + "}\n"
	_, err := Parse("till.yaml", []byte(doc), t.TempDir())
	if err == nil {
		t.Fatal("admin.token_sha256 equal to client web's token_sha256 loaded: web's app token is the admin token")
	}
	if !strings.Contains(err.Error(), "till.yaml:2: admin.token_sha256:") {
		t.Errorf("got %q, want it at admin.token_sha256", err)
	}
}

// TestLeadingZeroNumbersRefused: yaml.v3 reads "requests: 0100" as octal
// 64 where YAML 1.2 (which till otherwise follows: yes/no are not
// booleans) reads 100, and "usd: 010" became 8 dollars. Neither reading is
// taken: a number with a leading zero is refused.
func TestLeadingZeroNumbersRefused(t *testing.T) {
	c, err := Parse("till.yaml", []byte("version: 1\nbudgets:\n  - {name: a, window: 1d, requests: 0100}\n  - {name: b, window: 1d, usd: 010}\n"), t.TempDir())
	if err == nil {
		t.Fatalf("loaded: requests: 0100 read as %d, usd: 010 as %v", c.Budgets[0].Requests, c.Budgets[1].USD)
	}
	for _, want := range []string{"till.yaml:3: budgets[0].requests: has a leading zero", "(hint: write 100,", "till.yaml:4: budgets[1].usd: has a leading zero", "(hint: write 10,"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want %q in it", err, want)
		}
	}
	// Zero itself, decimals and explicit bases read as before.
	c, err = Parse("till.yaml", []byte("version: 1\nforward: {cert_cache: 0x10}\nbudgets:\n  - {name: a, window: 1d, usd: 0.5, requests: 1_000}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if c.Forward.CertCache != 16 || c.Budgets[0].USD != 0.5 || c.Budgets[0].Requests != 1000 {
		t.Errorf("got cert_cache %d, usd %v, requests %d; want 16, 0.5, 1000", c.Forward.CertCache, c.Budgets[0].USD, c.Budgets[0].Requests)
	}
}

// TestKeyAsSecretName: a key pasted where the secret's name goes (a
// lowercase one passes the name rule) is refused unshown; it was logged
// with the route at every start and reload.
func TestKeyAsSecretName(t *testing.T) {
	const k = "sk-proj-abcdefghijklmnopqrstuvwxyz12"
	for _, secret := range []string{k, "[openai, " + k + "]"} {
		y := "version: 1\nroutes: [{name: openai, preset: openai, secret: " + secret + "}]\n"
		_, err := Parse("till.yaml", []byte(y), t.TempDir())
		if err == nil || !strings.Contains(err.Error(), "looks like a literal key (not shown)") || strings.Contains(err.Error(), "abcdefgh") {
			t.Errorf("secret: %s: got %v", secret, err)
		}
	}
}

// TestCheckedLikeServe: check passed configs serve then refused (the
// admin listener on the gateway's address) or sent wrong (an upstream
// with a trailing space, sent as %20).
func TestCheckedLikeServe(t *testing.T) {
	for y, want := range map[string]string{
		"version: 1\nlisten: 127.0.0.1:18282\nadmin: {listen: \"127.0.0.1:18282\"}\n":                       "admin.listen: is the gateway's listen address too",
		"version: 1\nroutes: [{name: up, upstream: \"https://api.openai.com/v1 \", inject: {header: A}}]\n": "routes[0].upstream: must be an absolute URL such as https://api.example.com, without spaces",
	} {
		if _, err := Parse("till.yaml", []byte(y), t.TempDir()); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", y, err, want)
		}
	}
}

// TestAdminAndGatewayOnPortZero: both listeners on port 0 each get a free
// port of their own from the kernel, so the config is not refused as one
// address taken twice (the soak test's config was).
func TestAdminAndGatewayOnPortZero(t *testing.T) {
	y := "version: 1\nlisten: 127.0.0.1:0\nadmin: {listen: \"127.0.0.1:0\"}\n"
	if _, err := Parse("till.yaml", []byte(y), t.TempDir()); err != nil {
		t.Errorf("both listeners on port 0: %v", err)
	}
}

// TestAuditFileThroughLink: an audit.file that is a link to the vault is
// the vault.
func TestAuditFileThroughLink(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "till.vault"), []byte("age"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "till.vault"), filepath.Join(dir, "audit.jsonl")); err != nil {
		t.Fatal(err)
	}
	_, err := Parse("till.yaml", []byte("version: 1\naudit: {file: audit.jsonl}\n"), dir)
	if err == nil || !strings.Contains(err.Error(), "audit.file: is vault.path") {
		t.Errorf("an audit file linked to the vault: %v", err)
	}
	if _, err := Parse("till.yaml", []byte("version: 1\naudit: {file: other.jsonl}\n"), dir); err != nil {
		t.Errorf("an audit file of its own: %v", err)
	}
}

// TestShadowedForwardRoutes: in forward mode, a route whose upstream an
// earlier route has (written another way too) is never picked: till check
// says so. Without forward mode, or with upstreams apart, nothing is said.
func TestShadowedForwardRoutes(t *testing.T) {
	for _, tt := range []struct {
		yaml string
		want int
	}{
		{"forward: {enabled: true}\nroutes:\n  - {name: a, upstream: https://api.example.com, secret: k, inject: {header: Authorization, format: 'Bearer {secret}'}}\n  - {name: b, upstream: https://API.example.com:443/, secret: k, inject: {header: Authorization, format: 'Bearer {secret}'}}\n", 1},
		{"forward: {enabled: true}\nroutes:\n  - {name: a, upstream: https://api.example.com, secret: k, inject: {header: Authorization, format: 'Bearer {secret}'}}\n  - {name: b, upstream: https://api.example.com/v2, secret: k, inject: {header: Authorization, format: 'Bearer {secret}'}}\n", 0},
		{"routes:\n  - {name: a, upstream: https://api.example.com, secret: k, inject: {header: Authorization, format: 'Bearer {secret}'}}\n  - {name: b, upstream: https://api.example.com, secret: k, inject: {header: Authorization, format: 'Bearer {secret}'}}\n", 0},
		// Spellings of one host that forward mode takes for one.
		{"forward: {enabled: true}\nroutes:\n  - {name: a, upstream: https://api.example.com, secret: k, inject: {query: k}}\n  - {name: b, upstream: 'https://api.example.com.', secret: k, inject: {query: k}}\n", 1},
		{"forward: {enabled: true}\nroutes:\n  - {name: a, upstream: https://api.example.com, secret: k, inject: {query: k}}\n  - {name: b, upstream: 'https://api.example.com:0443', secret: k, inject: {query: k}}\n", 1},
		{"forward: {enabled: true}\nroutes:\n  - {name: a, upstream: https://10.0.0.1, secret: k, inject: {query: k}}\n  - {name: b, upstream: 'https://[::ffff:10.0.0.1]:443', secret: k, inject: {query: k}}\n", 1},
		{"forward: {enabled: true}\nroutes:\n  - {name: a, upstream: 'https://[2001:db8::1]', secret: k, inject: {query: k}}\n  - {name: b, upstream: 'https://[2001:DB8:0::1]', secret: k, inject: {query: k}}\n", 1},
		{"forward: {enabled: true}\nroutes:\n  - {name: a, upstream: 'https://api.example.com:8443', secret: k, inject: {query: k}}\n  - {name: b, upstream: 'https://api.example.com', secret: k, inject: {query: k}}\n", 0},
	} {
		cfg, err := Parse("till.yaml", []byte("version: 1\n"+tt.yaml), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.ShadowedForwardRoutes(); len(got) != tt.want {
			t.Errorf("%s: %q, want %d warning(s)", tt.yaml, got, tt.want)
		} else if tt.want > 0 && !strings.Contains(got[0], `forward mode takes "a" for every request to it, so "b" serves only through its prefix`) {
			t.Errorf("the warning does not say which route forward mode takes: %s", got[0])
		}
	}
}

// TestExecCommandRelativeToConfig checks that an exec source's command
// given as a relative path (./get-key) is the config folder's file, as
// every other path in the config is. Resolved against the working folder
// instead, a till started elsewhere (a service manager's /, a shell in
// /tmp) ran whatever file of that name a local user had put there, as
// till, with every key it holds within reach. A bare name is looked up in
// PATH as before.
func TestExecCommandRelativeToConfig(t *testing.T) {
	tests := []struct {
		name, command string
		want          []string
	}{
		{"dot slash", "[./get-key, --ref]", []string{"/etc/till/get-key", "--ref"}},
		{"subfolder", "[bin/get-key]", []string{"/etc/till/bin/get-key"}},
		{"parent", "[../libexec/get-key]", []string{"/etc/libexec/get-key"}},
		{"absolute", "[/usr/bin/op, read]", []string{"/usr/bin/op", "read"}},
		{"bare name from PATH", "[op, read, ./x]", []string{"op", "read", "./x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			y := "version: 1\nsources:\n  - {name: op, type: exec, command: " + tt.command + "}\n"
			c, err := Parse("till.yaml", []byte(y), "/etc/till")
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Sources[0].Command; !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestAdminSocket: admin.listen takes unix:PATH, PATH relative to the
// config file like every other path, and needs no token: only till's
// user can connect to the socket.
func TestAdminSocket(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct{ listen, want string }{
		{"unix:/run/till/admin.sock", "/run/till/admin.sock"},
		{"unix:run/admin.sock", filepath.Join(dir, "run/admin.sock")},
		{"127.0.0.1:9090", ""},
	} {
		c, err := Parse("till.yaml", []byte("version: 1\nadmin: {listen: \""+tt.listen+"\"}\n"), dir)
		if err != nil {
			t.Errorf("%s: %v", tt.listen, err)
			continue
		}
		if got := c.Admin.Socket(); got != tt.want {
			t.Errorf("%s: Socket() %q, want %q", tt.listen, got, tt.want)
		}
		if tt.want != "" && c.Admin.Listen != "unix:"+tt.want {
			t.Errorf("%s: Listen %q, want unix:%s", tt.listen, c.Admin.Listen, tt.want)
		}
	}
}
