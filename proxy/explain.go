package proxy

import (
	"net/url"
	"strings"
	"time"
)

// Verdict is what the gateway would do with a request, decided by the same
// rules as a live request but without sending anything (`till test`).
type Verdict struct {
	Allowed     bool   `json:"allowed"`     // the request would be sent
	Mode        string `json:"mode"`        // reverse, forward, intercept or tunnel, as in the audit record
	Route       string `json:"route"`       // the route matched; "" when none
	Client      string `json:"client"`      // the client the request comes as; "anonymous" when none
	Secret      string `json:"secret"`      // the name of the secret the route attaches
	Fingerprint string `json:"fingerprint"` // the secret's key_fp; "" when it is missing
	Upstream    string `json:"upstream"`    // the URL the request would reach
	Code        string `json:"code"`        // error code when refused
	Reason      string `json:"reason"`      // why, in a sentence
	Warning     string `json:"warning"`     // allowed, but something is off
	Rate        string `json:"rate"`        // the route's per-client rate, not applied here
}

// Explain decides method and target (a path for reverse mode, or an http://
// or https:// URL for forward mode) for the named client ("" for none)
// coming from remoteAddr.
func (s *Snapshot) Explain(method, target, clientName, remoteAddr string, now time.Time) Verdict {
	v := Verdict{Mode: modeReverse, Client: anonymous}
	refuse := func(d denial) Verdict {
		v.Code, v.Reason = d.code, d.message
		return v
	}
	u, err := url.Parse(target)
	if err != nil || (u.Scheme == "" && !strings.HasPrefix(target, "/")) {
		return refuse(denial{CodeBadRequest, "the target must be a path (/openai/v1/models) or an http:// or https:// URL"})
	}
	id := identity{}
	if clientName != "" {
		// A dry run trusts the name: as if the client showed its token
		// and, when required, its certificate.
		id.client = s.clients.byName(clientName)
		id.viaCert = true
		if id.client == nil {
			return refuse(denial{CodeClientUnauthenticated, "no client of that name in the config"})
		}
		v.Client = clientName
	}
	if reason := checkPath(u.RawPath, u.Path); reason != "" && u.Path != "" {
		return refuse(denial{CodeBadRequest, reason})
	}

	var rt *route
	outPath := u.Path
	switch u.Scheme {
	case "":
		var rest string
		if rt, rest = s.match(u.Path); rt != nil {
			outPath = rt.upstream.Path + rest
		}
	case "http", "https":
		v.Mode = modeForward
		if u.Scheme == "https" {
			v.Mode = modeIntercept
		}
		if !s.forward.Enabled || (u.Scheme == "https" && !s.forward.Intercept) {
			return refuse(denial{CodeBadRequest, "forward mode (or interception, for https) is off in this config"})
		}
		rt = s.matchHost(hostKey(u.Scheme, u.Host), u.Path)
		if rt == nil && u.Scheme == "http" && u.Port() == "" {
			rt = s.matchHost(hostKey("https", u.Host), u.Path)
		}
		if rt == nil {
			if s.forward.UnknownHosts == "tunnel" {
				v.Mode = modeTunnel
				v.Allowed = true
				v.Warning = "no route: relayed untouched, without a key, if the address checks pass"
				return v
			}
			return refuse(denial{CodeHostNotAllowed, "no route for this host"})
		}
	default:
		return refuse(denial{CodeBadRequest, "the target must be a path or an http:// or https:// URL"})
	}
	if outPath == "" {
		outPath = "/"
	}
	if rt == nil {
		return refuse(denial{CodeRouteNotFound, "no route matches this path"})
	}
	v.Route, v.Secret, v.Fingerprint = rt.name, rt.secretName, rt.fp
	v.Upstream = (&url.URL{Scheme: rt.upstream.Scheme, Host: rt.upstream.Host, Path: outPath, RawQuery: u.RawQuery}).String()
	if !rt.rate.IsZero() {
		v.Rate = rt.rate.String()
	}
	if d, ok := id.admit(remoteAddr, rt.clients); !ok {
		return refuse(d)
	}
	if d, ok := rt.allows(strings.ToUpper(method), outPath); !ok {
		return refuse(d)
	}
	d, ok, warn := rt.secretState(now, s.onExpired)
	if !ok {
		if rt.problem != "" {
			d.message = rt.problem
		}
		return refuse(d)
	}
	if warn {
		v.Warning = "the secret has expired; on_expired: warn lets the request through"
	}
	v.Allowed = true
	return v
}
