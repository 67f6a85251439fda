package config

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tillgw/till/vault"
)

// Source is a place provider keys are fetched from instead of the vault
// file: a route's secret names one as SOURCE:PATH or SOURCE:PATH#FIELD.
type Source struct {
	// Name is how refs name the source: [a-z0-9][a-z0-9_-]*, not "till".
	Name string
	// Type is one of SourceTypes.
	Type string
	// TTL is how long a fetched value is used before it is fetched again
	// (refreshed in the background before then); default 5m.
	TTL time.Duration
	// FailureTTL is how long after the last good fetch its value may still
	// be used while the source fails; 0 (the default) refuses at once.
	FailureTTL time.Duration
	// Dir is the folder of a files source, absolute: one file per secret.
	Dir string
	// Command is an exec source's argv; the ref's path is appended. It
	// runs without a shell. A program named by a relative path is the
	// config folder's (made absolute); a bare name is looked up in PATH.
	Command []string
	// Timeout bounds one run of an exec source's command; default 10s.
	Timeout time.Duration
	// Address is a vault source's server, such as https://vault:8200.
	Address string
	// CAFile, when set, is the PEM file of the CA a vault source's server
	// certificate must chain to (instead of the system roots).
	CAFile string
	// Namespace is a vault source's namespace (Vault Enterprise, OpenBao).
	Namespace string
	// Auth is how a vault source logs in.
	Auth VaultAuth
	// AuthMount is where a vault source's approle or kubernetes auth
	// method is mounted; default its type's name.
	AuthMount string
	// Region is an aws_secretsmanager source's region; empty means the AWS
	// SDK's default chain (AWS_REGION, shared config).
	Region string
	// Endpoint overrides an aws_secretsmanager source's endpoint URL.
	Endpoint string
	// Line is the source's line in the config file (for messages).
	Line int
}

// VaultAuth is how a vault source gets its token: exactly one field is set.
type VaultAuth struct {
	// TokenFile holds a token, re-read at every fetch so that an agent
	// (Vault Agent's sink) may rewrite it.
	TokenFile string
	// AppRole logs in with a role id and secret id read from files.
	AppRole *AppRoleAuth
	// Kubernetes logs in with the pod's service-account token.
	Kubernetes *KubernetesAuth
}

// Method names the auth method set: token_file, approle or kubernetes.
func (a VaultAuth) Method() string {
	switch {
	case a.AppRole != nil:
		return "approle"
	case a.Kubernetes != nil:
		return "kubernetes"
	}
	return "token_file"
}

// AppRoleAuth is Vault's AppRole login; both ids are read from files at
// each login.
type AppRoleAuth struct {
	// RoleIDFile holds the role id.
	RoleIDFile string
	// SecretIDFile holds the secret id.
	SecretIDFile string
}

// KubernetesAuth is Vault's Kubernetes login: Role is the Vault role and
// JWTFile the service-account token, re-read at each login (projected
// tokens rotate).
type KubernetesAuth struct {
	// Role is the Vault role bound to the service account.
	Role string
	// JWTFile is the service-account token.
	JWTFile string
}

// DefaultServiceAccountToken is where Kubernetes mounts a pod's
// service-account token.
const DefaultServiceAccountToken = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// SourceTypes are the types a source may have, in the order the contract
// lists them.
var SourceTypes = []string{"vault", "aws_secretsmanager", "files", "exec"}

// Source defaults.
const (
	DefaultSourceTTL     = 5 * time.Minute
	DefaultSourceTimeout = 10 * time.Second
)

// MinSourceTTL is the shortest ttl (and non-zero failure_ttl) a source
// may have. The cache fetches a value again once it is older than its
// ttl, so a ttl of a nanosecond would send a request to Vault or AWS for
// nearly every request till serves; a second bounds that at one fetch a
// second per ref, as often as a files source looks for changes.
const MinSourceTTL = time.Second

// SecretRef is a route's secret that lives in a source: SOURCE:PATH or
// SOURCE:PATH#FIELD.
type SecretRef struct {
	// Source names an entry of Config.Sources.
	Source string
	// Path is what the source looks up: a file under a files source's
	// folder, the argument given to an exec source's command.
	Path string
	// Field, when set, picks one field of a JSON object value.
	Field string
}

// String is the ref as written in the config; audit records and logs name
// the secret by it.
func (r SecretRef) String() string {
	s := r.Source + ":" + r.Path
	if r.Field != "" {
		s += "#" + r.Field
	}
	return s
}

// maxRefPath bounds a ref's path: it is a file name or an argument, never
// a document.
const maxRefPath = 1024

// IsSecretRef reports whether a route's secret names a source (it has a
// ":", which vault names never do).
func IsSecretRef(s string) bool { return strings.Contains(s, ":") }

// ParseSecretRef splits SOURCE:PATH[#FIELD] and checks its parts; it does
// not check that the source exists. Messages never quote the ref.
func ParseSecretRef(s string) (SecretRef, error) {
	src, rest, ok := strings.Cut(s, ":")
	if !ok {
		return SecretRef{}, errorString("must be SOURCE:PATH or SOURCE:PATH#FIELD")
	}
	path, field, hasField := strings.Cut(rest, "#")
	ref := SecretRef{Source: src, Path: path, Field: field}
	if err := validSourceName(src); err != nil {
		return ref, errorString("source name " + err.Error())
	}
	switch {
	case path == "":
		return ref, errorString("must name a path after the source (SOURCE:PATH)")
	case len(path) > maxRefPath:
		return ref, errorString(fmt.Sprintf("path must be at most %d characters", maxRefPath))
	case strings.ContainsFunc(path, isControl):
		return ref, errorString("path must not contain control characters")
	case hasField && !vault.ValidSourceField(field):
		// The names vault.ParseSourceFields keeps of a document read
		// as fields: what a ref can name is what is read.
		return ref, errorString("field after # must be 1 to 64 characters of letters, digits, '_', '.' and '-'")
	}
	return ref, nil
}

func validSourceName(s string) error {
	if s == "till" {
		return errorString(`"till" is reserved`)
	}
	return ValidName(s)
}

// sources decodes the sources list.
func (d *decoder) sources(n *yaml.Node, path string) []Source {
	var out []Source
	seen := map[string]int{}
	d.list(n, path, func(v *yaml.Node, p string) {
		s, ok := d.source(v, p)
		if !ok {
			return
		}
		if s.Name != "" {
			if first, dup := seen[s.Name]; dup {
				d.errorf(v, join(p, "name"), "duplicate source name %q (first at line %d)", s.Name, first)
				return
			}
			seen[s.Name] = s.Line
		}
		out = append(out, s)
	})
	return out
}

func (d *decoder) source(n *yaml.Node, path string) (Source, bool) {
	s := Source{Line: n.Line, TTL: DefaultSourceTTL}
	f := d.fields(n, path, sourceKeys)
	if f == nil {
		return s, false
	}
	ok := true
	if v := f["name"]; v == nil {
		d.errorf(n, join(path, "name"), "required")
		ok = false
	} else if name, good := d.nonEmpty(v, join(path, "name")); good && d.check(v, join(path, "name"), validSourceName(name)) {
		s.Name = name
	} else {
		ok = false
	}
	if v := f["type"]; v == nil {
		d.errorf(n, join(path, "type"), "required (hint: %s)", strings.Join(SourceTypes, ", "))
		ok = false
	} else if t, good := d.enum(v, join(path, "type"), SourceTypes...); !good {
		ok = false
	} else {
		s.Type = t
	}
	if v := f["ttl"]; v != nil {
		if t, good := d.duration(v, join(path, "ttl")); good && t < MinSourceTTL {
			d.errorf(v, join(path, "ttl"), "must be at least %s: a value older than ttl is fetched again, so a shorter one asks the source at nearly every request (hint: 5m, the default)", MinSourceTTL)
		} else if good {
			s.TTL = t
		}
	}
	if v := f["failure_ttl"]; v != nil {
		s.FailureTTL = d.failureTTL(v, join(path, "failure_ttl"))
	}
	only := func(key, typ string) {
		if v := f[key]; v != nil && s.Type != "" && s.Type != typ {
			d.errorf(v, join(path, key), "only used with type: %s", typ)
			ok = false
		}
	}
	only("dir", "files")
	only("command", "exec")
	only("timeout", "exec")
	for _, k := range []string{"address", "ca_file", "namespace", "auth", "auth_mount"} {
		only(k, "vault")
	}
	only("region", "aws_secretsmanager")
	only("endpoint", "aws_secretsmanager")
	switch s.Type {
	case "vault":
		ok = d.vaultSource(n, f, path, &s) && ok
	case "aws_secretsmanager":
		if v := f["region"]; v != nil {
			var good bool
			s.Region, good = d.matching(v, join(path, "region"), regionRE, "must be an AWS region such as us-east-1")
			ok = ok && good
		}
		if v := f["endpoint"]; v != nil {
			if u, good := d.serverURL(v, join(path, "endpoint")); good {
				s.Endpoint = u
			} else {
				ok = false
			}
		}
	case "files":
		if v := f["dir"]; v == nil {
			d.errorf(n, join(path, "dir"), "required (hint: the folder holding one file per secret)")
			ok = false
		} else if p, good := d.filePath(v, join(path, "dir")); good {
			s.Dir = p
		} else {
			ok = false
		}
	case "exec":
		s.Timeout = DefaultSourceTimeout
		if v := f["command"]; v == nil {
			d.errorf(n, join(path, "command"), "required (hint: the helper's argv, such as [op, read]; the ref's path is appended)")
			ok = false
		} else {
			p := join(path, "command")
			if v.Kind == yaml.ScalarNode {
				d.errorf(v, p, "must be a list of arguments such as [op, read] (it runs without a shell)")
				ok = false
			} else {
				s.Command = d.strs(v, p)
				if len(s.Command) == 0 {
					d.errorf(v, p, "must name a program")
					ok = false
				}
				for i, a := range s.Command {
					if strings.ContainsFunc(a, isControl) {
						d.errorf(v, fmt.Sprintf("%s[%d]", p, i), "must not contain control characters")
						ok = false
					}
				}
				// A program named by a path (./get-key) is the config
				// folder's, as every path here is: resolved against the
				// working folder, it would be whatever file of that name
				// is where till happens to start. A bare name is PATH's.
				if len(s.Command) > 0 && strings.ContainsAny(s.Command[0], "/"+string(filepath.Separator)) {
					s.Command[0] = d.resolve(s.Command[0])
				}
			}
		}
		if v := f["timeout"]; v != nil {
			if t, good := d.duration(v, join(path, "timeout")); good {
				s.Timeout = t
			}
		}
	}
	return s, ok
}

// failureTTL reads a source's failure_ttl: 0 (off) or at least
// MinSourceTTL. A value is served its whole ttl, which is never shorter,
// before a failing source matters, so a shorter failure_ttl would never
// stand a value in: it is refused rather than silently doing nothing.
func (d *decoder) failureTTL(v *yaml.Node, p string) time.Duration {
	str, good := d.str(v, p)
	if !good {
		return 0
	}
	t, err := ParseDuration(str)
	switch {
	case err != nil || t < 0:
		d.errorf(v, p, "must be a duration such as 0s, 30s, 5m or 1h")
	case t > 0 && t < MinSourceTTL:
		d.errorf(v, p, "must be 0s (off) or at least %s: a value is used its whole ttl before a failing source matters, so a shorter one never stands in (hint: 10m)", MinSourceTTL)
	default:
		return t
	}
	return 0
}

// regionRE matches AWS region names (us-east-1, eu-central-2, us-gov-west-1).
var regionRE = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$`)

// vaultSource decodes what a vault source adds to the common fields.
func (d *decoder) vaultSource(n *yaml.Node, f map[string]*yaml.Node, path string, s *Source) bool {
	ok := true
	if v := f["address"]; v == nil {
		d.errorf(n, join(path, "address"), "required (hint: the server's URL, such as https://vault.internal:8200)")
		ok = false
	} else if u, good := d.serverURL(v, join(path, "address")); good {
		s.Address = u
	} else {
		ok = false
	}
	if v := f["ca_file"]; v != nil {
		if p, good := d.filePath(v, join(path, "ca_file")); good {
			s.CAFile = p
		} else {
			ok = false
		}
	}
	if v := f["namespace"]; v != nil {
		p := join(path, "namespace")
		if ns, good := d.str(v, p); !good {
			ok = false
		} else if strings.ContainsFunc(ns, isControl) || len(ns) > 256 {
			d.errorf(v, p, "must be a namespace path such as team/prod")
			ok = false
		} else {
			s.Namespace = ns
		}
	}
	if v := f["auth_mount"]; v != nil {
		var good bool
		s.AuthMount, good = d.matching(v, join(path, "auth_mount"), mountRE, "must be a mount path such as approle or k8s-prod (letters, digits, '_', '-', '/')")
		ok = ok && good
	}
	v := f["auth"]
	if v == nil {
		d.errorf(n, join(path, "auth"), "required (hint: token_file, approle or kubernetes)")
		return false
	}
	p := join(path, "auth")
	a := d.fields(v, p, vaultAuthKeys)
	if a == nil {
		return false
	}
	if len(a) != 1 {
		d.errorf(v, p, "must set exactly one of token_file, approle or kubernetes")
		return false
	}
	file := func(m map[string]*yaml.Node, n *yaml.Node, p, key, hint string) string {
		if v := m[key]; v != nil {
			if f, good := d.filePath(v, join(p, key)); good {
				return f
			}
		} else if hint != "" {
			d.errorf(n, join(p, key), "required (hint: %s)", hint)
		}
		ok = false
		return ""
	}
	switch {
	case a["token_file"] != nil:
		s.Auth.TokenFile = file(a, v, p, "token_file", "")
	case a["approle"] != nil:
		q := join(p, "approle")
		if m := d.fields(a["approle"], q, appRoleKeys); m != nil {
			s.Auth.AppRole = &AppRoleAuth{
				RoleIDFile:   file(m, a["approle"], q, "role_id_file", "the file holding the AppRole role id"),
				SecretIDFile: file(m, a["approle"], q, "secret_id_file", "the file holding the AppRole secret id"),
			}
		} else {
			ok = false
		}
	case a["kubernetes"] != nil:
		q := join(p, "kubernetes")
		if m := d.fields(a["kubernetes"], q, kubernetesAuthKeys); m != nil {
			k := &KubernetesAuth{JWTFile: DefaultServiceAccountToken}
			if r := m["role"]; r == nil {
				d.errorf(a["kubernetes"], join(q, "role"), "required (hint: the Vault role bound to this service account)")
				ok = false
			} else if role, good := d.nonEmpty(r, join(q, "role")); good {
				k.Role = role
			} else {
				ok = false
			}
			if m["jwt_file"] != nil {
				k.JWTFile = file(m, a["kubernetes"], q, "jwt_file", "")
			}
			s.Auth.Kubernetes = k
		} else {
			ok = false
		}
	}
	return ok
}

// mountRE matches a Vault mount path.
var mountRE = regexp.MustCompile(`^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$`)

// matching reads a non-empty value that re matches; msg says what is
// wanted when it does not.
func (d *decoder) matching(n *yaml.Node, path string, re *regexp.Regexp, msg string) (string, bool) {
	s, ok := d.nonEmpty(n, path)
	if ok && !re.MatchString(s) {
		d.errorf(n, path, "%s", msg)
		return "", false
	}
	return s, ok
}

// serverURL reads the base URL of a server till talks to on its own
// behalf (a Vault server, an AWS endpoint): https, or http for loopback;
// no path, query or credentials.
func (d *decoder) serverURL(n *yaml.Node, path string) (string, bool) {
	s, ok := d.nonEmpty(n, path)
	if !ok {
		return "", false
	}
	u, err := parseUpstream(s, false)
	if err == nil && u.Path != "" {
		err = errorString("must not have a path (hint: https://vault.internal:8200)")
	}
	if err != nil {
		d.errorf(n, path, "%s", err)
		return "", false
	}
	return u.String(), true
}

// checkRefs checks that every route whose secret is a ref names a
// configured source.
func (d *decoder) checkRefs(c *Config, routes []routeNodes) {
	names := make([]string, 0, len(c.Sources))
	for _, s := range c.Sources {
		names = append(names, s.Name)
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		for j, k := range r.Keys() {
			ref := k.Ref
			if ref == nil || slices.Contains(names, ref.Source) {
				continue
			}
			n, p := routes[i].secret, join(routes[i].path, "secret")
			if r.Pool != nil {
				n, p = n.Content[j], fmt.Sprintf("%s[%d]", p, j)
			}
			if n == nil {
				n = routes[i].node
			}
			switch sg := d.suggest(ref.Source, names); {
			case sg != "":
				d.errorf(n, p, "unknown source %q (did you mean %q?)", ref.Source, sg)
			case len(names) == 0:
				d.errorf(n, p, "unknown source %q (hint: define it under sources:, or use a vault secret name without \":\")", ref.Source)
			default:
				d.errorf(n, p, "unknown source %q (known: %s)", ref.Source, strings.Join(names, ", "))
			}
		}
	}
}
