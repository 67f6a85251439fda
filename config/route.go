package config

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/textproto"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"gopkg.in/yaml.v3"
)

// routeNodes remembers where a route's fields are, for the checks across
// routes and clients that run after decoding.
type routeNodes struct {
	path    string
	node    *yaml.Node
	name    *yaml.Node
	prefix  *yaml.Node
	secret  *yaml.Node
	clients []*yaml.Node
}

// route decodes one route, filling unset fields from its preset and then
// from the defaults.
func (d *decoder) route(n *yaml.Node, path string) (Route, routeNodes, bool) {
	r := Route{Line: n.Line}
	rn := routeNodes{path: path, node: n}
	f := d.fields(n, path, routeKeys)
	if f == nil {
		return r, rn, false
	}

	if v := f["name"]; v == nil {
		d.errorf(n, join(path, "name"), "required")
	} else if s, ok := d.nonEmpty(v, join(path, "name")); ok && d.check(v, join(path, "name"), ValidName(s)) {
		r.Name = s
		rn.name = v
	}

	var preset *Preset
	if v := f["preset"]; v != nil {
		p := join(path, "preset")
		if s, ok := d.nonEmpty(v, p); ok {
			if pr, found := LookupPreset(s); found {
				preset = &pr
				r.Preset = pr.Name
			} else if plausibleKey(s) {
				if sg := d.suggest(s, presetNames()); sg != "" {
					d.errorf(v, p, "unknown preset %q (did you mean %q?)", s, sg)
				} else {
					d.errorf(v, p, "unknown preset %q (known: %s)", s, strings.Join(presetNames(), ", "))
				}
			} else {
				d.errorf(v, p, "unknown preset (known: %s)", strings.Join(presetNames(), ", "))
			}
		}
	}

	if v := f["allow_plaintext"]; v != nil {
		r.AllowPlaintext = d.boolean(v, join(path, "allow_plaintext"))
	}

	// A region is the preset's upstream's, and what SigV4 signs for: an
	// upstream of one's own does not make it less needed.
	if preset != nil && preset.NeedsRegion() {
		if rv := f["region"]; rv == nil {
			d.errorf(n, join(path, "region"), "required with preset %s (hint: such as us-east-1)", preset.Name)
		} else if reg, good := d.matching(rv, join(path, "region"), cloudRegionRE, "must be a region such as us-east-1 or europe-west4"); good {
			r.Region = reg
		}
	}
	switch v := f["upstream"]; {
	case v != nil:
		p := join(path, "upstream")
		if s, ok := d.nonEmpty(v, p); ok {
			u, err := parseUpstream(s, r.AllowPlaintext)
			if d.check(v, p, err) {
				r.Upstream = u
			}
		}
	case preset != nil && preset.NeedsRegion():
		if r.Region != "" {
			r.Upstream, _ = parseUpstream(strings.ReplaceAll(preset.Upstream, RegionPlaceholder, r.Region), false)
		}
	case preset != nil:
		// The catalog is tested to hold valid https URLs.
		r.Upstream, _ = parseUpstream(preset.Upstream, false)
	case f["preset"] == nil:
		d.errorf(n, join(path, "upstream"), "required (hint: set upstream, or a preset such as \"preset: openai\")")
	}

	if v := f["prefix"]; v != nil {
		p := join(path, "prefix")
		if s, ok := d.nonEmpty(v, p); ok && d.check(v, p, validPrefix(s)) {
			r.Prefix = s
			rn.prefix = v
		}
	} else if r.Name != "" {
		r.Prefix = "/" + r.Name
		rn.prefix = rn.name
	}

	switch v := f["secret"]; {
	case v != nil && v.Kind == yaml.SequenceNode:
		rn.secret = v
		r.Pool = d.pool(v, f["pool"], join(path, "secret"), join(path, "pool"))
		if r.Pool != nil {
			r.Secret, r.Ref = r.Pool.Members[0].Secret, r.Pool.Members[0].Ref
		}
	case v != nil:
		rn.secret = v
		r.Secret, r.Ref, _ = d.secretName(v, join(path, "secret"))
	default:
		r.Secret = r.Name
	}
	if v := f["pool"]; v != nil && r.Pool == nil && (f["secret"] == nil || f["secret"].Kind != yaml.SequenceNode) {
		d.errorf(v, join(path, "pool"), "needs a list of secrets (hint: secret: [openai-a, openai-b])")
	}

	switch v := f["inject"]; {
	case v != nil:
		if in, ok := d.inject(v, join(path, "inject")); ok {
			r.Inject = in
		}
	case preset != nil && preset.NeedsApp():
		d.errorf(n, join(path, "inject"), "required with preset %s: inject: {github_app: {app_id: N, installation_id: N}} (hint: the app's id is on its settings page, the installation's id ends its settings URL)", preset.Name)
	case preset != nil:
		r.Inject = preset.Inject
		if sig := r.Inject.AWSSigV4; sig != nil && sig.Region == RegionPlaceholder {
			r.Inject.AWSSigV4 = &AWSSigV4{Service: sig.Service, Region: r.Region}
		}
	case f["preset"] == nil:
		d.errorf(n, join(path, "inject"), `required (hint: header: Authorization with format: "Bearer {secret}", or query: NAME, or basic)`)
	}

	if preset != nil && len(preset.Headers) > 0 {
		r.Headers = maps.Clone(preset.Headers)
	}
	if v := f["headers"]; v != nil {
		r.Headers = d.headers(v, join(path, "headers"), r.Headers)
	}

	if v := f["allow"]; v != nil {
		base := ""
		if r.Upstream != nil {
			base = r.Upstream.Path
		}
		r.Allow = d.allow(v, join(path, "allow"), base)
	}

	r.Usage = UsageNone
	if preset != nil {
		r.Usage, r.StreamsReportUsage = preset.Usage, preset.StreamsReportUsage
	}
	if v := f["usage"]; v != nil {
		if s, ok := d.enum(v, join(path, "usage"), UsageFormats...); ok {
			r.Usage = s
		}
	}
	if len(r.Allow.Models) > 0 && r.Usage == UsageNone && !r.SignsForBedrock() {
		d.errorf(f["allow"], join(path, "allow.models"), "needs a route whose usage is known (hint: a preset such as openai, or usage: openai)")
	}

	if v := emptyList(n, "clients"); v != nil {
		// clients: [], or clients: with every name commented out, would
		// read as no clients: key, which lets callers without a token in.
		d.errorf(v, join(path, "clients"), `must name at least one client (hint: "clients: any" accepts any client)`)
	} else if v := f["clients"]; v != nil {
		p := join(path, "clients")
		switch {
		case v.Kind == yaml.ScalarNode && v.Value == "any" && v.ShortTag() == "!!str":
			// Said explicitly: any caller that can reach the listener.
			r.AnyClient = true
		case v.Kind == yaml.ScalarNode:
			// Not echoed: a stray value here may be a pasted token.
			d.errorf(v, p, `must be a list of client names such as [web], or any (hint: "clients: any" accepts anyone who can reach the listener)`)
		default:
			d.list(v, p, func(v *yaml.Node, p string) {
				if s, ok := d.nonEmpty(v, p); ok {
					r.Clients = append(r.Clients, s)
					rn.clients = append(rn.clients, v)
				}
			})
		}
	}

	if v := f["rate"]; v != nil {
		p := join(path, "rate")
		if s, ok := d.nonEmpty(v, p); ok {
			rt, err := ParseRate(s)
			if d.check(v, p, err) {
				r.Rate = rt
			}
		}
	}
	if v := f["burst"]; v != nil {
		p := join(path, "burst")
		if b, ok := d.integer(v, p); ok {
			switch {
			case b < 1 || b > maxBurst:
				d.errorf(v, p, "must be from 1 to %d", maxBurst)
			case f["rate"] == nil:
				d.errorf(v, p, "needs a rate (hint: add rate: 10/s)")
			default:
				r.Burst = int(b)
			}
		}
	} else {
		r.Burst = r.Rate.Count
	}

	if preset != nil {
		r.Strip = slices.Clone(preset.Strip)
	}
	if v := f["strip"]; v != nil {
		add := adder(&r.Strip)
		d.list(v, join(path, "strip"), func(v *yaml.Node, p string) {
			s, ok := d.nonEmpty(v, p)
			if ok && d.check(v, p, validHeaderName(s)) {
				add(textproto.CanonicalMIMEHeaderKey(s))
			}
		})
	}

	if preset != nil {
		r.StripQuery = slices.Clone(preset.StripQuery)
	}
	if v := f["strip_query"]; v != nil {
		add := adder(&r.StripQuery)
		d.list(v, join(path, "strip_query"), func(v *yaml.Node, p string) {
			s, ok := d.nonEmpty(v, p)
			if ok && d.check(v, p, validQueryName(s)) {
				add(s)
			}
		})
	}

	r.Timeout = DefaultTimeout
	if v := f["timeout"]; v != nil {
		if t, ok := d.duration(v, join(path, "timeout")); ok {
			r.Timeout = t
		}
	}

	if v := f["max_body"]; v != nil {
		p := join(path, "max_body")
		if s, ok := d.str(v, p); ok {
			size, err := ParseSize(s)
			switch {
			case err != nil:
				d.errorf(v, p, "must be a size such as 512KB, 10MB or 1GiB")
			case size == 0:
				// MaxBody 0 is "no cap": a cap of nothing written as 0
				// must not become one.
				d.errorf(v, p, "must be more than 0 (hint: leave max_body out for no cap)")
			default:
				r.MaxBody = size
			}
		}
	}
	if v := f["region"]; v != nil && (preset == nil || !preset.NeedsRegion()) {
		d.errorf(v, join(path, "region"), "only used with the presets bedrock, bedrock-agent and vertex (hint: set aws_sigv4's region in inject)")
	}
	if r.Inject.AWSSigV4 != nil && r.MaxBody == 0 {
		r.MaxBody = DefaultSigV4MaxBody // the body is held to be hashed
	}
	return r, rn, true
}

// maxBurst bounds a route's burst: requests let through at once.
const maxBurst = 1 << 30

// inject decodes the inject mapping: exactly one of header (with format),
// query or basic.
func (d *decoder) inject(n *yaml.Node, path string) (Inject, bool) {
	var in Inject
	f := d.fields(n, path, injectKeys)
	if f == nil {
		return in, false
	}
	set := 0
	for _, k := range []string{"header", "query", "basic", "aws_sigv4", "oauth2", "github_app", "google"} {
		if f[k] != nil {
			set++
		}
	}
	if set != 1 {
		d.errorf(n, path, "needs exactly one of header, query, basic, aws_sigv4, oauth2, github_app or google")
		return in, false
	}
	ok := true
	if v := f["format"]; v != nil && f["header"] == nil {
		d.errorf(v, join(path, "format"), "only used with header")
		ok = false
	}
	switch {
	case f["header"] != nil:
		v, p := f["header"], join(path, "header")
		s, good := d.nonEmpty(v, p)
		if good && d.check(v, p, validHeaderName(s)) && d.check(v, p, settableHeader(s)) {
			in.Header = textproto.CanonicalMIMEHeaderKey(s)
		} else {
			ok = false
		}
		in.Format, _ = ParseTemplate("{secret}")
		if v := f["format"]; v != nil {
			t, good := d.template(v, join(path, "format"))
			if good && len(t.Fields()) == 0 {
				d.errorf(v, join(path, "format"), "must use {secret} or {secret.FIELD}")
				good = false
			}
			in.Format, ok = t, ok && good
		}
	case f["aws_sigv4"] != nil:
		v, p := f["aws_sigv4"], join(path, "aws_sigv4")
		sf := d.fields(v, p, sigV4Keys)
		if sf == nil {
			return in, false
		}
		sig := &AWSSigV4{}
		if sv := sf["service"]; sv == nil {
			d.errorf(v, join(p, "service"), "required (hint: the AWS service to sign for, such as bedrock or s3)")
			ok = false
		} else if svc, good := d.matching(sv, join(p, "service"), serviceRE, "must be an AWS service's signing name such as bedrock, s3 or execute-api"); good {
			sig.Service = svc
		} else {
			ok = false
		}
		if rv := sf["region"]; rv == nil {
			d.errorf(v, join(p, "region"), "required (hint: such as us-east-1)")
			ok = false
		} else if rs, _ := d.str(rv, join(p, "region")); d.presets && rs == RegionPlaceholder {
			sig.Region = rs // the route's region, when the preset is used
		} else if reg, good := d.matching(rv, join(p, "region"), regionRE, "must be an AWS region such as us-east-1"); good {
			sig.Region = reg
		} else {
			ok = false
		}
		in.AWSSigV4 = sig
	case f["oauth2"] != nil:
		v, p := f["oauth2"], join(path, "oauth2")
		of := d.fields(v, p, oauth2Keys)
		if of == nil {
			return in, false
		}
		o := &OAuth2{AuthStyle: "auto"}
		if tv := of["token_url"]; tv == nil {
			d.errorf(v, join(p, "token_url"), "required (hint: the token endpoint, such as https://login.example.com/oauth/token)")
			ok = false
		} else if ts, good := d.nonEmpty(tv, join(p, "token_url")); good {
			if u, err := parseUpstream(ts, false); d.check(tv, join(p, "token_url"), err) {
				o.TokenURL = u.String()
			} else {
				ok = false
			}
		} else {
			ok = false
		}
		if sv := of["scopes"]; sv != nil {
			o.Scopes = d.strs(sv, join(p, "scopes"))
		}
		if av := of["audience"]; av != nil {
			o.Audience, _ = d.str(av, join(p, "audience"))
		}
		if av := of["auth_style"]; av != nil {
			if st, good := d.enum(av, join(p, "auth_style"), "auto", "header", "params"); good {
				o.AuthStyle = st
			} else {
				ok = false
			}
		}
		in.OAuth2 = o
	case f["google"] != nil:
		v, p := f["google"], join(path, "google")
		gf := d.fields(v, p, googleKeys)
		if gf == nil {
			return in, false
		}
		g := &Google{Scopes: []string{DefaultGoogleScope}}
		if sv := gf["scopes"]; sv != nil {
			g.Scopes = d.strs(sv, join(p, "scopes"))
		}
		in.Google = g
	case f["github_app"] != nil:
		v, p := f["github_app"], join(path, "github_app")
		gf := d.fields(v, p, githubAppKeys)
		if gf == nil {
			return in, false
		}
		g := &GitHubApp{}
		for _, k := range []string{"app_id", "installation_id"} {
			kv := gf[k]
			if kv == nil && d.presets {
				continue // the route names them
			}
			if kv == nil {
				d.errorf(v, join(p, k), "required (hint: the number GitHub shows in the app's settings)")
				ok = false
				continue
			}
			id, good := d.intBetween(kv, join(p, k), 1, 1<<53, "")
			if !good {
				ok = false
			}
			if k == "app_id" {
				g.AppID = int64(id)
			} else {
				g.InstallationID = int64(id)
			}
		}
		in.GitHubApp = g
	case f["query"] != nil:
		v, p := f["query"], join(path, "query")
		s, good := d.nonEmpty(v, p)
		if good && d.check(v, p, validQueryName(s)) {
			in.Query = s
		} else {
			ok = false
		}
	default:
		v, p := f["basic"], join(path, "basic")
		bf := d.fields(v, p, basicKeys)
		if bf == nil {
			return in, false
		}
		b := &Basic{}
		if u := bf["username"]; u == nil {
			d.errorf(v, join(p, "username"), `required (e.g. "{secret.user}")`)
			ok = false
		} else if t, good := d.template(u, join(p, "username")); good {
			b.Username = t
		} else {
			ok = false
		}
		if pw := bf["password"]; pw != nil {
			if t, good := d.template(pw, join(p, "password")); good {
				b.Password = t
			} else {
				ok = false
			}
		}
		if ok && len(b.Username.Fields())+len(b.Password.Fields()) == 0 {
			d.errorf(v, p, "must use {secret} or {secret.FIELD} in username or password")
			ok = false
		}
		if ok && strings.Contains(b.Username.literal(), ":") {
			d.errorf(bf["username"], join(p, "username"), `must not contain ":" (it separates user and password)`)
			ok = false
		}
		in.Basic = b
	}
	return in, ok
}

// cloudRegionRE matches an AWS or Google Cloud region (us-east-1,
// europe-west4), which becomes part of a host name.
var cloudRegionRE = regexp.MustCompile(`^[a-z]{2,12}(-[a-z0-9]{1,12}){1,3}$`)

// serviceRE matches an AWS service's signing name.
var serviceRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,62}$`)

// template parses an inject template; the message names the problem, not
// the text, which may hold a hard-coded credential.
func (d *decoder) template(n *yaml.Node, path string) (Template, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return Template{}, false
	}
	t, err := ParseTemplate(s)
	if !d.check(n, path, err) {
		return Template{}, false
	}
	if t.hasLiteralKey() {
		d.errorf(n, path, "%s", errLiteralKey)
		return Template{}, false
	}
	return t, true
}

// errLiteralKey refuses a value that looks like a key (see looksLikeKey)
// in a header or an inject template. The value is not shown: it may well
// be a real key, and messages end up in terminals, CI logs and tickets.
const errLiteralKey = "looks like a literal key (not shown); remove it from the config, store it with till secret set NAME, and inject it with {secret}"

// headers decodes the extra request headers, merged over base.
func (d *decoder) headers(n *yaml.Node, path string, base map[string]string) map[string]string {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "must be a mapping of header names to values")
		return base
	}
	out := maps.Clone(base)
	if out == nil {
		out = make(map[string]string)
	}
	seen := make(map[string]bool)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && looksLikeKey(k.Value) {
			d.errorf(k, path, "a header name %s", errLiteralKey)
			continue
		}
		if k.Kind != yaml.ScalarNode || validHeaderName(k.Value) != nil {
			d.errorf(k, path, "invalid header name (hint: letters, digits and !#$%%&'*+-.^_`|~)")
			continue
		}
		name := textproto.CanonicalMIMEHeaderKey(k.Value)
		p := join(path, name)
		if seen[name] {
			d.errorf(k, p, "duplicate header")
			continue
		}
		seen[name] = true
		if !d.check(k, p, settableHeader(name)) {
			continue
		}
		if v.Kind == yaml.AliasNode {
			d.errorf(v, p, "yaml aliases are not supported (hint: repeat the value)")
			continue
		}
		s, ok := d.str(v, p)
		if !ok {
			continue
		}
		if strings.ContainsFunc(s, isHeaderValueControl) {
			d.errorf(v, p, "must not contain control characters such as CR or LF")
			continue
		}
		if looksLikeKey(s) {
			d.errorf(v, p, "%s", errLiteralKey)
			continue
		}
		out[name] = s
	}
	return out
}

// allow decodes a route's allow: block; base is its upstream's path, under
// which every path it forwards lies.
func (d *decoder) allow(n *yaml.Node, path, base string) Allow {
	var a Allow
	f := d.fields(n, path, allowKeys)
	for _, k := range []string{"methods", "paths", "models"} {
		// An empty list reads as no rule, which allows every value: it
		// is refused, so that "allow none" cannot mean "allow any". So is
		// one written null (every entry commented out), which fields
		// would read as absent.
		if v := emptyList(n, k); v != nil {
			d.errorf(v, join(path, k), "is empty, which would allow any (hint: remove the key to allow any, or list what is allowed)")
		}
	}
	if v := f["methods"]; v != nil {
		d.list(v, join(path, "methods"), func(v *yaml.Node, p string) {
			if s, ok := d.nonEmpty(v, p); ok && d.check(v, p, validMethod(s)) {
				a.Methods = append(a.Methods, strings.ToUpper(s))
			}
		})
	}
	if v := f["paths"]; v != nil {
		d.list(v, join(path, "paths"), func(v *yaml.Node, p string) {
			s, ok := d.nonEmpty(v, p)
			if !ok {
				return
			}
			g, err := ParseGlob(s)
			if !d.check(v, p, err) {
				return
			}
			if !g.CanMatchUnder(base) {
				d.errorf(v, p, "can never match: paths are matched as sent upstream, under the upstream's path %s (hint: write %q)",
					base, strings.TrimSuffix(base, "/")+s)
				return
			}
			a.Paths = append(a.Paths, g)
		})
	}
	if v := f["models"]; v != nil {
		d.list(v, join(path, "models"), func(v *yaml.Node, p string) {
			s, ok := d.nonEmpty(v, p)
			if !ok {
				return
			}
			if len(s) > 128 || strings.ContainsFunc(s, isControl) {
				d.errorf(v, p, "must be a model name or glob such as gpt-4.1* (at most 128 characters)")
				return
			}
			a.Models = append(a.Models, s)
		})
	}
	return a
}

// secretName reads one secret: a vault name, or a source ref.
func (d *decoder) secretName(v *yaml.Node, p string) (string, *SecretRef, bool) {
	s, ok := d.nonEmpty(v, p)
	switch {
	case !ok:
	case IsSecretRef(s):
		if ref, err := ParseSecretRef(s); d.check(v, p, err) {
			return s, &ref, true
		}
	case looksLikeKey(s):
		// Not shown: the key itself, pasted where its name goes, would
		// reach every log line that names the route's secret.
		d.errorf(v, p, "looks like a literal key (not shown) (hint: store it with till secret set NAME and write NAME here)")
	case d.check(v, p, validSecretName(s)):
		return s, nil, true
	}
	return "", nil, false
}

// Pool limits.
const (
	maxPoolMembers      = 16
	DefaultPoolCooldown = time.Minute
	maxPoolCooldown     = 30 * 24 * time.Hour
)

// pool decodes a list of secrets and the pool: settings for it.
func (d *decoder) pool(list, settings *yaml.Node, path, spath string) *Pool {
	pl := &Pool{Strategy: PoolRoundRobin, Cooldown: DefaultPoolCooldown}
	ok := true
	seen := map[string]bool{}
	d.list(list, path, func(v *yaml.Node, p string) {
		name, ref, good := d.secretName(v, p)
		switch {
		case !good:
			ok = false
		case seen[name]:
			d.errorf(v, p, "%q is listed twice", name)
			ok = false
		default:
			seen[name] = true
			pl.Members = append(pl.Members, PoolMember{Secret: name, Ref: ref})
		}
	})
	if ok && (len(pl.Members) < 2 || len(pl.Members) > maxPoolMembers) {
		d.errorf(list, path, "a pool needs 2 to %d secrets (hint: one secret is written secret: NAME)", maxPoolMembers)
		ok = false
	}
	if settings != nil {
		f := d.fields(settings, spath, poolKeys)
		if v := f["strategy"]; v != nil {
			if s, good := d.enum(v, join(spath, "strategy"), PoolRoundRobin, PoolSticky); good {
				pl.Strategy = s
			} else {
				ok = false
			}
		}
		if v := f["cooldown"]; v != nil {
			if c, good := d.duration(v, join(spath, "cooldown")); good && c <= maxPoolCooldown {
				pl.Cooldown = c
			} else {
				if good {
					d.errorf(v, join(spath, "cooldown"), "at most 30d (a key the upstream rejects rests ten cooldowns)")
				}
				ok = false
			}
		}
	}
	if !ok {
		return nil
	}
	return pl
}

// parseUpstream checks an upstream URL: https, or http only for loopback
// hosts or when plaintext is allowed; no userinfo, query or fragment. The
// messages never echo the URL, which may carry a password.
// CheckTokenURL checks the URL of a token endpoint that is not in the
// config (a Google key's token_uri) as a token_url is checked: https, or
// plain http to loopback only, since what asks for a token is a
// credential.
func CheckTokenURL(s string) error {
	_, err := parseUpstream(s, false)
	return err
}

func parseUpstream(s string, allowPlaintext bool) (*url.URL, error) {
	if strings.ContainsFunc(s, unicode.IsSpace) {
		return nil, errorString("must be an absolute URL such as https://api.example.com, without spaces")
	}
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" || u.Scheme == "" || u.Host == "" || u.Hostname() == "" {
		return nil, errorString("must be an absolute URL such as https://api.example.com")
	}
	u.Scheme = strings.ToLower(u.Scheme)
	switch u.Scheme {
	case "https":
	case "http":
		if !allowPlaintext && !isLoopbackHost(u.Hostname()) {
			return nil, errHTTPS
		}
	default:
		return nil, errHTTPS
	}
	if u.User != nil {
		return nil, errorString("must not contain a user or password (hint: credentials belong in the vault)")
	}
	if err := asciiHost(u.Hostname()); err != nil {
		return nil, err
	}
	if err := hostName(u.Hostname()); err != nil {
		return nil, err
	}
	if u.RawQuery != "" || u.ForceQuery {
		return nil, errorString("must not have a query string")
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return nil, errorString("must not have a fragment")
	}
	if strings.HasSuffix(u.Host, ":") {
		// url.Parse takes an empty port, and dialling reads it as the
		// default one, but forward mode would look the route up under
		// the host with a bare ":" and never find it for host:443.
		return nil, errorString(`has an empty port after ":" (hint: remove the ":", or give the port such as :8443)`)
	}
	if err := validPort(u.Port(), true); err != nil {
		return nil, err
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = strings.TrimRight(u.RawPath, "/")
	for seg := range strings.SplitSeq(u.Path, "/") {
		if seg == "." || seg == ".." {
			return nil, errorString(`path must not have "." or ".." segments`)
		}
	}
	return u, nil
}

// asciiHost refuses a host name written in Unicode (exämple.com): requests
// carry its ASCII form (xn--exmple-cua.com), in a CONNECT, an absolute
// URL or SNI, and forward mode, which looks routes up by that host, took
// the route's own host for one without a route, and tunnelled it
// untouched (unknown_hosts: tunnel), the app's credentials and all.
func asciiHost(host string) error {
	for i := 0; i < len(host); i++ {
		if host[i] >= utf8.RuneSelf {
			const msg = "host must be written in ASCII, as requests carry it"
			if a, err := idna.Lookup.ToASCII(host); err == nil {
				return errorString(msg + " (hint: " + a + ")")
			}
			return errorString(msg)
		}
	}
	return nil
}

// hostName refuses a host that is neither an IP address nor a DNS name
// (letters, digits, '-', '_' and '.'): url.Parse takes "*.example.com"
// and "a,b", which no upstream answers to, and for which forward mode
// would have till's CA sign a leaf: a wildcard one, for a '*'.
func hostName(host string) error {
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return errorString("host must be a DNS name (letters, digits, '-', '_' and '.') or an IP address")
		}
	}
	return nil
}

const errHTTPS = errorString("must be an https URL (plain http only for loopback, or set allow_plaintext: true)")

// ShadowedForwardRoutes names, when forward mode is on, the routes it
// never picks: forward mode matches a request by its host and the
// upstream's path, and of the routes with the same upstream the first in
// the file wins. Their clients' requests there are refused, though
// through the route's prefix they pass.
func (c *Config) ShadowedForwardRoutes() []string {
	if !c.Forward.Enabled {
		return nil
	}
	var out []string
	first := map[string]string{} // upstream → the route forward mode takes
	for _, r := range c.Routes {
		if r.Upstream == nil {
			continue
		}
		key := r.Upstream.Scheme + "://" + forwardHost(r.Upstream) + strings.TrimSuffix(r.Upstream.Path, "/")
		if name, ok := first[key]; ok {
			out = append(out, fmt.Sprintf("routes %q and %q have the same upstream %s: forward mode takes %q for every request to it, so %q serves only through its prefix (hint: give each its own upstream, or let one route serve both clients)", name, r.Name, r.Upstream, name, r.Name))
			continue
		}
		first[key] = r.Name
	}
	return out
}

// forwardHost writes an upstream's host:port one way, as forward mode
// looks routes up: lower case, without a trailing dot, an IP address in
// its canonical form (an IPv4-mapped one as IPv4), the port as a number,
// the scheme's default left out.
func forwardHost(u *url.URL) string {
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().String()
	}
	port, _ := strconv.Atoi(u.Port()) // checked at load: 1 to 65535, or none
	if port == 0 || port == map[string]int{"http": 80, "https": 443}[u.Scheme] {
		return host
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}
