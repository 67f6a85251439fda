package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
	"github.com/tillgw/till/vault/source"
)

// Keys gives the current value of a secret ref (SOURCE:PATH#FIELD); a
// *source.Cache does.
type Keys interface {
	// GetAs returns ref's value read in form f, or an error wrapping
	// source.ErrUnavailable.
	GetAs(ctx context.Context, ref string, f source.Form) (source.Result, error)
}

var _ Keys = (*source.Cache)(nil)

// sourced is how a route whose secret lives in a source gets its key: at
// request time, from the cache, compiled into an injection that is kept
// while the value stays the same, so that a cached request costs a lookup
// and a comparison, not a rendering.
type sourced struct {
	ref    string
	form   source.Form
	cr     *config.Route
	maxAge time.Duration
	keys   Keys
	last   atomic.Pointer[injection]
	// compiling is held while a new value is compiled: the requests a
	// fetch released together compile it once, so a minting route has
	// one minter, which mints once for all of them.
	compiling sync.Mutex
	// seed is the minter of the value the snapshot before this one used
	// (see adopt); set before the snapshot serves, and taken by the first
	// value compiled, so that a token the upstream has refused since is
	// not adopted again at a later compile.
	seed atomic.Pointer[minter]
}

// status is what the cache holds of the ref: its value's metadata and
// when it was fetched (zero when it holds none, or does not tell: Keys
// without StatusOf).
func (s *sourced) status() source.Status {
	c, ok := s.keys.(interface {
		StatusOf(ref string, f source.Form) source.Status
	})
	if !ok {
		return source.Status{}
	}
	return c.StatusOf(s.ref, s.form)
}

// cachedAt reports whether the cache holds the ref's value, and when it
// was fetched; false when the cache does not tell (Keys without StatusOf).
func (s *sourced) cachedAt() (time.Time, bool) {
	st := s.status()
	return st.Fetched, !st.Fetched.IsZero()
}

// held returns the fingerprint and expiry (max_age included) of the
// value the cache holds for the ref; "" and zero when it holds none.
func (s *sourced) held() (fp string, expires time.Time) {
	st := s.status()
	if st.Fetched.IsZero() {
		return "", time.Time{}
	}
	return st.Secret.Fingerprint(), st.Secret.ExpiresAt(s.maxAge)
}

// dropped says why the value whose fingerprint is fp, fetched for a
// connection that went with it, is no longer the source's: the cache has
// found it gone from the source, or holds another value since. nil while
// the cache holds it, or knows of nothing newer (a fetch that failed, an
// entry evicted).
func (s *sourced) dropped(fp string) *apiError {
	switch st := s.status(); {
	case errors.Is(st.Err, source.ErrGone):
		return &apiError{CodeSecretUnavailable, "the key this connection went with is gone from its source"}
	case !st.Fetched.IsZero() && st.Secret.Fingerprint() != fp:
		return &apiError{CodeSecretUnavailable, "the key this connection went with was replaced at its source"}
	}
	return nil
}

// askInterval is how often a connection held on a key from a source asks
// the cache for it (askWhileHeld).
const askInterval = time.Second

// askWhileHeld asks the cache for the key every askInterval until ctx
// ends, as a request on the route would: the cache fetches only when
// asked (in the background past RefreshAt of the ttl; a files source's
// change within a second), so a WebSocket alone on the route would
// otherwise never learn that its key was replaced or gone at the source.
// What a fetch finds changed, the cache tells (OnChange), and the
// connection is checked again (Gateway.Recheck).
func (s *sourced) askWhileHeld(ctx context.Context) {
	tick := time.NewTicker(askInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			_, _ = s.keys.GetAs(ctx, s.ref, s.form)
		}
	}
}

// sourcedKey is how the key x went with was fetched: its pool member's
// source, or its route's; nil for a key from the vault.
func (x *exchange) sourcedKey() *sourced {
	if x.member != nil {
		return x.member.sourced
	}
	return x.route.sourced
}

// errMintChanged refuses a request whose key, or the way its token is
// minted, a reload replaced after it was decided, when it cannot go with
// the one served now.
var errMintChanged = apiError{CodeSecretUnavailable, "the key for this request, or how its token is minted, was replaced while it came in; send it again"}

// mintsAs names how the route cr mints a token from its key, as its
// config says: the token endpoint, scopes, audience, app and
// installation, every field of it; "" for a key sent as it is, or
// signed. It is the key of the route's minter (routes that mint alike
// share tokens), and, for a key from a source, whose minter is made only
// once its value is fetched, it tells a reload that changes how it mints.
func mintsAs(cr *config.Route) string {
	var way any
	switch inj := cr.Inject; {
	case inj.OAuth2 != nil:
		way = inj.OAuth2
	case inj.GitHubApp != nil:
		way = []any{inj.GitHubApp, cr.Upstream.String()}
	case inj.Google != nil:
		way = inj.Google
	default:
		return ""
	}
	b, _ := json.Marshal(way) // strings, numbers and lists of strings
	return string(b)
}

// errSecretUnavailable refuses a request whose key cannot be fetched.
var errSecretUnavailable = apiError{CodeSecretUnavailable, "the key for this route cannot be fetched from its source"}

// current returns the injection of the ref's current value, and whether
// that value is stale (used within failure_ttl while the source fails).
func (s *sourced) current(ctx context.Context) (*injection, bool, error) {
	res, err := s.keys.GetAs(ctx, s.ref, s.form)
	if err != nil {
		return nil, false, err
	}
	fp, expires := res.Secret.Fingerprint(), res.Secret.ExpiresAt(s.maxAge)
	if in := s.last.Load(); in != nil && in.fp == fp && in.expires.Equal(expires) {
		return in, res.Stale, nil
	}
	s.compiling.Lock()
	defer s.compiling.Unlock()
	if in := s.last.Load(); in != nil && in.fp == fp && in.expires.Equal(expires) {
		return in, res.Stale, nil // compiled while this one waited
	}
	in, values := compileInjection(s.cr, map[string]vault.Secret{s.ref: res.Secret}, s.maxAge)
	if in.problem != "" {
		return nil, false, errors.New(in.problem)
	}
	in.echoForms = echoForms(values)
	if in.minter != nil {
		seed := s.seed.Swap(nil)
		in.minter.base = &in
		switch prev := s.last.Load(); {
		case prev != nil && prev.minter != nil && prev.fp == in.fp && prev.minter.key == in.minter.key:
			// The same credential minting the same way, compiled anew
			// for another expiry (a Vault entry's
			// custom_metadata.expires changed): its token is kept
			// rather than minted anew once per ttl, and goes under
			// the expiry the source gives now, which a request is
			// checked against again before it goes.
			in.minter.adopt(prev.minter)
		case seed != nil && seed.base.fp == in.fp && seed.key == in.minter.key:
			in.minter.adopt(seed)
		}
	}
	s.last.Store(&in)
	return &in, res.Stale, nil
}

// compileSourced sets up rt to fetch its key from keys; without keys (a
// dry run, till check) the route says its source is not reachable here.
// Routes that mint alike from one ref share its fetching (shared), so
// one minter mints for all of them, as for a vault key.
func compileSourced(rt *route, cr *config.Route, maxAge time.Duration, keys Keys, shared *interner) {
	in := &injection{secretName: cr.Secret, cred: credOf(cr.Inject)}
	switch {
	case cr.Inject.Basic != nil:
		in.injectHeader = "Authorization"
	case cr.Inject.Query != "":
		in.injectQuery = cr.Inject.Query
	default:
		in.injectHeader = cr.Inject.Header
	}
	if keys == nil {
		in.problem = "secret " + `"` + cr.Secret + `"` + " comes from a source, which is fetched by till serve only"
	} else {
		rt.sourced = shared.sourced(&sourced{ref: cr.Secret, form: SecretForm(cr), cr: cr, maxAge: maxAge, keys: keys})
	}
	rt.injection = in
}

// SourcedProblem says why cr cannot attach sec, the value of ref (cr's
// source ref, or one of its pool's), as serve finds once it has fetched
// it: a field it needs is missing or not a string, a key does not parse;
// "" when it can. Never a value. till check runs it on what it fetched.
func SourcedProblem(cr *config.Route, ref string, sec vault.Secret) string {
	one := *cr
	one.Secret, one.Pool = ref, nil
	in, _ := compileInjection(&one, map[string]vault.Secret{ref: sec}, 0)
	return in.problem
}

// SecretForm is the form in which a route reads a secret from a source:
// fields for SigV4, OAuth2 and Google credentials and for a template that
// names {secret.FIELD}, a PEM key for a GitHub App, else one value.
func SecretForm(cr *config.Route) source.Form {
	inj := cr.Inject
	switch {
	case inj.GitHubApp != nil:
		return source.FormPEM
	case inj.AWSSigV4 != nil, inj.OAuth2 != nil, inj.Google != nil:
		return source.FormFields
	}
	templates := []config.Template{inj.Format}
	if inj.Basic != nil {
		templates = append(templates, inj.Basic.Username, inj.Basic.Password)
	}
	for _, t := range templates {
		for _, f := range t.Fields() {
			if f != "" {
				return source.FormFields
			}
		}
	}
	return source.FormValue
}
