package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tillgw/till/usage"
	"golang.org/x/net/http/httpguts"
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
	Credential  string `json:"credential"`  // how the key is used: static, sigv4, oauth2, github_app or google; "" without a route

	member *member // the pool's key decided on, which Mint asks with; nil outside a pool
}

// explainFetchTimeout bounds how long a dry run waits for a key from a
// source.
const explainFetchTimeout = time.Minute

// Explain decides method and target (a path for reverse mode, or an http://
// or https:// URL for forward mode) for the named client ("" for none)
// coming from remoteAddr, asking for model ("" for none: a request
// without a body), with the same resolve and decide steps as a live
// request. It touches no rate bucket (Rate shows the route's rate) and
// takes no turn of a pool's round robin: on a pool it names the key the
// next request would take, and leaves that key to it.
func (s *Snapshot) Explain(method, target, clientName, remoteAddr, model string, now time.Time) Verdict {
	v := Verdict{Mode: modeReverse, Client: anonymous}
	refuse := func(e apiError) Verdict {
		v.Code, v.Reason = e.code, e.message
		return v
	}
	u, e := explainURL(target)
	if e != nil {
		return refuse(*e)
	}
	if u.Scheme != "" {
		// Refused before it resolves, a proxied request is recorded
		// as forward mode, as serve records it.
		v.Mode = modeForward
	}
	id := identity{}
	if clientName != "" {
		// A dry run trusts the name: as if the client showed its token
		// and, when required, its certificate.
		id.client = s.clients.byName(clientName)
		id.viaCert = true
		if id.client == nil {
			return refuse(apiError{CodeClientUnauthenticated, "no client of that name in the config"})
		}
		v.Client = clientName
	}
	t, e := s.explainTarget(u, id, remoteAddr)
	if e != nil {
		return refuse(*e)
	}
	v.Mode = t.mode
	if t.route == nil {
		return explainUnrouted(v, id, method, u.Scheme, remoteAddr)
	}
	rt := t.route
	v.Route, v.Secret, v.Fingerprint = rt.name, rt.secretName, rt.fp
	v.Credential = credStatic
	if rt.injection.cred != "" {
		v.Credential = rt.injection.cred
	}
	v.Upstream = (&url.URL{Scheme: rt.upstream.Scheme, Host: rt.upstream.Host, Path: t.outPath, RawPath: t.rawPath, RawQuery: u.RawQuery}).String()
	if !rt.rate.IsZero() {
		v.Rate = rt.rate.String()
	}
	r := &http.Request{Method: method, URL: u, Header: http.Header{}, RemoteAddr: remoteAddr, Host: u.Host}
	ctx, cancel := context.WithTimeout(context.Background(), explainFetchTimeout)
	defer cancel()
	a := explainAsk(rt, t.outPath, model)
	if m := modelInPath(rt.usage, t.outPath); m != "" {
		a.model = m // as live: Gemini's model in the path wins over the body's
	}
	if t.namesModel {
		a.model = t.model // as live: Bedrock's too, always
	}
	d := s.decide(r.WithContext(ctx), rt, t.pathForRules(), id, now, nil, func() (ask, *apiError) { return a, nil })
	if d.inj != nil {
		v.Secret, v.Fingerprint, v.member = d.inj.secretName, d.inj.fp, d.member
	}
	if !d.Allowed {
		switch {
		case d.Code == CodeSecretMissing && rt.problem != "":
			d.Reason = rt.problem
		case d.fetchErr != nil:
			d.Reason += ": " + d.fetchErr.Error()
		}
		return refuse(apiError{d.Code, d.Reason})
	}
	v.Allowed = true
	v.Warning = explainWarning(d.Warning, len(rt.models) > 0 && a.model == "")
	return v
}

// explainUnrouted completes v, the verdict on a request relayed (an
// http:// URL) or tunnelled (https://) to a host without a route, as
// serveAbsolute, relay and serveConnect decide it: a client outside its
// addresses is refused, and so is a relayed method that is not a token.
func explainUnrouted(v Verdict, id identity, method, scheme, remoteAddr string) Verdict {
	e, ok := id.admit(remoteAddr, nil)
	if ok && scheme == "http" && !httpguts.ValidHeaderFieldName(method) {
		e, ok = errMethodNotToken, false
	}
	if !ok {
		v.Code, v.Reason = e.code, e.message
		return v
	}
	v.Allowed = true
	v.Warning = "no route: relayed untouched, without a key, if the address checks pass"
	return v
}

// explainURL parses a dry run's target as net/http parses a request line
// (a "//" path names no host, a "#" is part of the path): a path, or the
// URL of a proxied request ("/" when it names none, as every HTTP client
// sends).
func explainURL(target string) (*url.URL, *apiError) {
	u, err := url.ParseRequestURI(target)
	if err != nil || (u.Scheme == "" && !strings.HasPrefix(target, "/")) {
		return nil, &apiError{CodeBadRequest, "the target must be a path (/openai/v1/models) or an http:// or https:// URL"}
	}
	if u.Scheme != "" && u.Path == "" && u.Opaque == "" {
		u.Path = "/"
	}
	return u, nil
}

// explainWarning words an allowed dry run's warning: the decision's, or,
// on a route that checks the model of a request that named none, that
// only a request without a body would pass.
func explainWarning(code string, modelUnchecked bool) string {
	switch {
	case code == CodeSecretStale:
		return "the key's source fails; its last good value, younger than failure_ttl, would be used"
	case code == CodeSecretExpired:
		return "the secret has expired; on_expired: warn lets the request through"
	case modelUnchecked:
		return "this route checks the model: a request with a body must name an allowed one (give --model to check it)"
	}
	return ""
}

// explainTarget resolves u as the gateway would: a path as a reverse-mode
// request, an http:// URL as an absolute-form one, an https:// URL as a
// request inside a CONNECT to its host (which is decided first).
func (s *Snapshot) explainTarget(u *url.URL, id identity, remoteAddr string) (target, *apiError) {
	switch u.Scheme {
	case "":
		return s.resolvePath(u)
	case "http":
		return s.resolveURL(u)
	case "https":
		authority := u.Host
		if u.Port() == "" {
			authority = net.JoinHostPort(u.Hostname(), "443")
		}
		// A till whose config intercepts always has its CA: serve does
		// not start without it.
		ct, mode, e := s.resolveConnect(authority, true)
		if e != nil {
			return target{}, e
		}
		if mode == modeTunnel {
			return target{mode: modeTunnel}, nil
		}
		if e := s.admitConnect(id, remoteAddr, ct); e != nil {
			return target{}, e
		}
		return s.resolveInner(ct, u.Host, &url.URL{Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery})
	}
	return target{}, &apiError{CodeBadRequest, "the target must be a path or an http:// or https:// URL"}
}

// Mint obtains a token for v, an allowed request's verdict on s, as the
// request would, and reports the token endpoint's error, if any; the
// token itself is never returned (till test --mint). It asks with the key
// the verdict names (s.credential): on a pool, the member it decided on,
// not the one whose turn comes next; a source's current value; and never
// a key expired under on_expired: block, which serve withholds.
// The ask sends the long-lived secret, a key use: as a live request's
// ask, it is recorded first in a, in a `use` record naming the verdict's
// client and the key, with the endpoint's host and path, one per
// ask; when that record cannot be written, nothing is sent and the error
// is ErrAuditUnavailable. As a request, it asks only when the route's
// minter holds no token still good and no failure of the endpoint is
// remembered (which is then the error): Minted says which.
func (s *Snapshot) Mint(ctx context.Context, a *Audit, v Verdict) (Minted, error) {
	return s.mint(ctx, a, v, nil)
}

// mint is Mint; given g, which serves s, the ask is held to the config g
// serves, as a request's ask is (x.mint): once it has the endpoint's
// connection, and while it waits to be written there, the key does not
// go if a reload swapped s out (it may have moved the token_url, or
// revoked the key) or the key expired (testKeyGoes). The error is then
// a keptBack.
func (s *Snapshot) mint(ctx context.Context, a *Audit, v Verdict, g *Gateway) (Minted, error) {
	for _, rt := range s.routes {
		if rt.name != v.Route {
			continue
		}
		r := (&http.Request{Method: http.MethodGet, URL: &url.URL{Path: rt.prefix}, Header: http.Header{}, RemoteAddr: "127.0.0.1:0"}).WithContext(ctx)
		d := Decision{member: v.member}
		in, e, ok := s.credential(r, rt, identity{}, time.Now(), true, &d)
		if !ok {
			if d.fetchErr != nil {
				return Minted{}, d.fetchErr
			}
			return Minted{}, fmt.Errorf("%s (%s)", e.message, e.code)
		}
		if in.minter == nil {
			return Minted{}, errMintsNoToken
		}
		rec := record{id: newRequestIDs().next(), client: v.Client, route: rt.name, method: http.MethodPost,
			host: in.minter.endpoint.Host, path: in.minter.endpoint.Path}
		rec.nameKey(in)
		var asks atomic.Int32
		checks := askChecks{before: func() bool {
			return a.writeUse(&rec, int(asks.Add(1)), time.Now())
		}}
		if g != nil {
			w := keyWatch{g, func(l *live) (*apiError, time.Time) { return s.testKeyGoes(l, in) }}
			checks.goes = func() error {
				if e := w.goes(); e != nil {
					return keptBack{*e}
				}
				return nil
			}
			checks.wait = func(stop func(error)) *unwritten {
				return w.waiter(func(e *apiError) { stop(keptBack{*e}) })
			}
		}
		t, err := in.minter.token(ctx, checks)
		m := Minted{Asked: asks.Load() > 0, UseID: rec.id}
		if errors.Is(err, errAuditUnavailable) {
			return m, ErrAuditUnavailable
		}
		if err == nil {
			m.At, m.Until = t.at, t.sentUntil()
		}
		return m, err
	}
	return Minted{}, fmt.Errorf("no route %q", v.Route)
}

// errTestReloaded keeps back the ask of a test that a reload overtook.
var errTestReloaded = apiError{CodeSecretUnavailable, "a reload changed the config served while the token endpoint was reached; run till test --mint again"}

// testKeyGoes judges whether in, the key of a test's ask decided on s,
// may go as l, the config served now, says: only while l is s, and the
// key has not expired since (under on_expired: block); until its expiry.
func (s *Snapshot) testKeyGoes(l *live, in *injection) (*apiError, time.Time) {
	if l.Snapshot != s {
		return errTestReloaded.ref(), time.Time{}
	}
	if refusal, ok, _ := in.secretState(time.Now(), s.onExpired); !ok {
		return refusal.ref(), time.Time{}
	}
	return nil, in.expires
}

// Minted is how Mint came by a token.
type Minted struct {
	// Asked says the token endpoint was asked, after the use record
	// with the id UseID was written. Else the route's minter held a
	// token still good (or got one from an ask made for a request
	// meanwhile), which a request would go with too.
	Asked bool
	// UseID is the id of the ask's use record.
	UseID string
	// At is when the token was minted.
	At time.Time
	// Until is when till stops sending the token (zero when it does
	// not expire).
	Until time.Time
}

// ApplyMint says in v, an allowed request's verdict, how Mint went for
// it: refused (audit_unavailable when the ask could not be recorded,
// credential_unavailable when no token came, the refusal of the config
// served when that kept the key back), or allowed with a warning that
// says where the token came from, or that the route mints none.
func (v *Verdict) ApplyMint(m Minted, err error) {
	var kept keptBack
	switch {
	case errors.Is(err, ErrAuditUnavailable):
		v.Allowed, v.Code, v.Reason = false, CodeAuditUnavailable, err.Error()
		return
	case errors.Is(err, errMintsNoToken):
		v.Warning = strings.TrimPrefix(v.Warning+"; "+err.Error(), "; ")
		return
	case errors.As(err, &kept):
		v.Allowed, v.Code, v.Reason = false, kept.e.code, kept.Error()
		return
	case err != nil:
		v.Allowed, v.Code, v.Reason = false, CodeCredentialUnavailable, "the token endpoint refused: "+err.Error()
		return
	}
	said := "a token was obtained from the token endpoint (the ask is in the audit trail, its use record's id " + m.UseID + ")"
	if !m.Asked {
		said = "the token endpoint was not asked for this test: a request would go with the token it gave at " + m.At.UTC().Format(time.RFC3339)
		if !m.Until.IsZero() {
			said += ", sent until " + m.Until.UTC().Format(time.RFC3339)
		}
	}
	v.Warning = strings.TrimPrefix(v.Warning+"; "+said, "; ")
}

// errMintsNoToken is Mint's error for a route that sends its key as it
// is: the request is allowed, and there is nothing to ask.
var errMintsNoToken = errors.New("--mint asked nothing: the route sends its key as it is, with no token endpoint")

// ErrAuditUnavailable is Mint's error when the use record of its ask
// could not be written: the token endpoint was not asked.
var ErrAuditUnavailable = errors.New("the use record of the ask could not be written, so the token endpoint was not asked")

// explainAsk is what live reads of a body naming model on rt: on a route
// with model rules, the body {"model": ...} read by usage.Inspect, which
// cannot take a model name over 256 bytes.
func explainAsk(rt *route, outPath, model string) ask {
	a := ask{model: model, body: model != "", readable: true}
	if rt.usage == usage.None {
		a.model, a.readable = "", false // as live: such a route reads no body
	} else if model != "" && len(rt.models) > 0 {
		m, _ := json.Marshal(model)
		req, err := usage.Inspect(rt.usage, outPath, []byte(`{"model":`+string(m)+`}`))
		a.model, a.readable = req.Model, err == nil
	}
	return a
}
