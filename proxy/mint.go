package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"golang.org/x/sync/singleflight"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// minter mints the access tokens a route attaches (OAuth2 client
// credentials) from its long-lived secret, and keeps the current one until
// a minute before it expires, or until the upstream refused it: one mint
// for all the requests that wait for it.
type minter struct {
	// fetch asks the token endpoint for a token with client (once, or
	// more: x/oauth2's auth_style auto tries a second way after a
	// failure); key names how it mints (mintsAs: everything the route's
	// config says of it; for Google the key file's account and token
	// endpoint too), for sharing a minter between routes.
	fetch    func(ctx context.Context, client *http.Client) (*oauth2.Token, error)
	endpoint *url.URL // where fetch asks, for the audit record of the ask
	key      string
	base     *injection // the route's injection: names, fingerprint, echo forms
	// secret holds what an ask sends that is secret in any part (an
	// OAuth2 client secret, as it is and escaped) and its forms: an
	// endpoint's error that quotes a run of minEchoForm characters of
	// one (the first characters of the secret it refused) is not logged.
	secret []string
	cur    atomic.Pointer[minted]
	flight singleflight.Group
	// failed is the endpoint's last failure while no ask has succeeded
	// since: until it passes, requests get it without an ask.
	failed atomic.Pointer[mintFailure]
	now    func() time.Time
}

// minted is one token, compiled into the injection that attaches it.
type minted struct {
	inj     *injection
	key     string        // its minter's key: how it was minted (see mintID)
	token   *oauth2.Token // as the endpoint gave it, for a reload to adopt
	expires time.Time     // zero: none given
	at      time.Time     // when it was minted
	renewal bool          // minted in place of a token refused with a 401
	// refused is set when the upstream answered 401 to it: the next
	// request mints anew. Shared with the copy a reload adopts, which a
	// request still running on the old snapshot may see refused.
	refused *atomic.Bool
}

// mintFailure is a token endpoint's failure, remembered until until: an
// ask sends the long-lived secret, and an endpoint that refuses it (a
// client disabled, an outage) must not be asked once per request, by any
// app that can reach the route, each ask a use record and a wait.
type mintFailure struct {
	err   error // scrubbed
	wait  time.Duration
	until time.Time
}

// errMintBackoff is the error of a request that a remembered failure
// answered: the endpoint was not asked.
type errMintBackoff struct{ failed *mintFailure }

func (e errMintBackoff) Error() string {
	return "not asked again before " + e.failed.until.UTC().Format(time.RFC3339) + ", after: " + e.failed.err.Error()
}

// mintRetryFirst and mintRetryMax bound how long a token endpoint's
// failure is remembered: the first, then twice as long after each failure
// in a row, at most mintRetryMax; a token minted ends it, as does a
// reload that changes the secret or how it mints (a new minter).
const (
	mintRetryFirst = time.Second
	mintRetryMax   = 30 * time.Second
)

// errCredentialUnavailable refuses a request whose token cannot be minted.
var errCredentialUnavailable = apiError{CodeCredentialUnavailable, "the token for this route cannot be obtained from its token endpoint"}

// mintEarly is how long before its expiry a token is no longer used (a
// token that lives no longer is used for half its life).
const mintEarly = time.Minute

// refusedAfter is how long a token minted in place of one refused with a
// 401 is used before a 401 ends it too: a 401 sooner is the answer of a
// path, not of a token just renewed, and an app that asks such a path
// again and again must not mint a token each time.
const refusedAfter = 30 * time.Second

// mintTimeout bounds one call to the token endpoint.
const mintTimeout = 30 * time.Second

// defaultTokenLife is how long a token without expires_in is used.
const defaultTokenLife = time.Hour

// tokenClient asks token endpoints for tokens, as the routes' transport
// goes upstream (certificates verified, no proxy from the environment),
// and returns a redirect as the endpoint's answer, never following it:
// a redirect would carry what asks for the token (a client secret, a
// signed assertion) to another host.
var tokenClient = &http.Client{
	Transport:     NewTransport(),
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       mintTimeout,
}

// compileOAuth2 reads the client credentials of sec for cfg, which mints
// as way says (mintsAs); the client secret is scrubbed from echoes. It
// returns the minter, the values to scrub, or why it cannot.
func compileOAuth2(way string, cfg *config.OAuth2, sec vault.Secret) (*minter, []string, string) {
	id, okID := sec.Field("client_id")
	key, okKey := sec.Field("client_secret")
	if !okID || !okKey {
		return nil, nil, "oauth2 needs a secret with the fields client_id and client_secret: " + lacking(sec, "client_id", "client_secret") + " (till secret set NAME --json)"
	}
	c := clientcredentials.Config{ClientID: id, ClientSecret: key, TokenURL: cfg.TokenURL, Scopes: cfg.Scopes}
	switch cfg.AuthStyle {
	case "header":
		c.AuthStyle = oauth2.AuthStyleInHeader
	case "params":
		c.AuthStyle = oauth2.AuthStyleInParams
	}
	if cfg.Audience != "" {
		c.EndpointParams = map[string][]string{"audience": {cfg.Audience}}
	}
	endpoint, err := url.Parse(cfg.TokenURL)
	if err != nil {
		return nil, nil, "oauth2: token_url is not a URL" // config validates it
	}
	// x/oauth2 sends the secret query-escaped, in the form or in Basic
	// credentials, which an endpoint's error may quote.
	fetch := func(ctx context.Context, client *http.Client) (*oauth2.Token, error) {
		return c.Token(context.WithValue(ctx, oauth2.HTTPClient, client))
	}
	sent := []string{key, url.QueryEscape(key)}
	// The values whole, not only their forms: those leave out what
	// keyCore takes for a provider's prefix, which in a client secret
	// (base64url, "ZqLm_Rt-...") is as random and secret as the rest.
	part := append(echoForms(sent), sent...)
	return &minter{fetch: fetch, endpoint: endpoint, key: way, secret: part, now: time.Now}, sent, ""
}

// askChecks are what each ask of a token endpoint is held to (see
// askGuard); any may be nil. before runs just before each ask (an ask
// sends the long-lived secret) and may stop it with errAuditUnavailable;
// goes runs once each ask has its connection, before anything is written
// on it, and may stop it with its error; wait returns the tracking of an
// ask that waits, from then, to be written (over HTTP/2: see unwritten),
// which calls stop with the error of a reload that refuses it.
type askChecks struct {
	before func() bool
	goes   func() error
	wait   func(stop func(error)) *unwritten
}

// token returns the current token's injection, minting one when there is
// none still good; the error is the token endpoint's, or that of checks,
// which each ask is held to.
func (m *minter) token(ctx context.Context, checks askChecks) (*minted, error) {
	if t := m.cur.Load(); t != nil && m.good(t) {
		return t, nil
	}
	if err := m.backingOff(); err != nil {
		return nil, err
	}
	ch := m.flight.DoChan("token", func() (any, error) {
		prev := m.cur.Load()
		if prev != nil && m.good(prev) {
			return prev, nil // minted while this call waited
		}
		if err := m.backingOff(); err != nil {
			return nil, err // failed while this call waited
		}
		client := *tokenClient
		guard := &askGuard{RoundTripper: client.Transport, askChecks: checks}
		sent := &sentCredentials{RoundTripper: guard}
		client.Transport = sent
		// Not the request's context: the token serves every request.
		ctx, cancel := context.WithTimeout(context.Background(), mintTimeout)
		defer cancel()
		tok, err := m.fetch(ctx, &client)
		if cause := guard.stopped(); err != nil && cause != nil {
			return nil, cause // till's, not the endpoint's failure: not remembered
		}
		if err != nil {
			return nil, m.fail(m.scrub(err, sent.forms()))
		}
		if !sendable(tok.AccessToken) {
			// Not kept: it would fail every send until it expired.
			return nil, m.fail(errors.New("the token endpoint's token is empty, or holds a space or control character, and cannot be sent in a header"))
		}
		if len(tok.AccessToken) < minEchoForm {
			// Not sent: an upstream's echo of it would not be found.
			return nil, m.fail(fmt.Errorf("the token endpoint's token is shorter than %d characters: an echo of it could not be told from other text, so it is not sent", minEchoForm))
		}
		t := m.compile(tok)
		t.renewal = prev != nil && prev.refused.Load()
		m.cur.Store(t)
		m.failed.Store(nil)
		return t, nil
	})
	select {
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*minted), nil
	}
}

// backingOff returns errMintBackoff while the endpoint's last failure is
// remembered.
func (m *minter) backingOff() error {
	if f := m.failed.Load(); f != nil && m.now().Before(f.until) {
		return errMintBackoff{f}
	}
	return nil
}

// fail remembers err, the endpoint's failure, for twice as long as the
// one before it (mintRetryFirst for the first), and returns it.
func (m *minter) fail(err error) error {
	wait := mintRetryFirst
	if f := m.failed.Load(); f != nil {
		wait = min(2*f.wait, mintRetryMax)
	}
	m.failed.Store(&mintFailure{err: err, wait: wait, until: m.now().Add(wait)})
	return err
}

// askGuard is the transport of one ask of a token endpoint (x.mint).
// before runs ahead of every request it sends, and may stop it: the ask
// sends the long-lived secret, and its use record must be written first
// (invariant 8). goes runs once the transport has a connection for the
// request, before anything is written on it, and may stop it too: a key
// that expired, or that a reload refused, while the endpoint was dialled
// (up to the transport's dial and handshake timeouts) does not go, as
// withhold keeps it from an upstream; wait stops it from then until it is
// written. A stopped request is never written (dropUnwritten), its
// headers are cleared (when goes stopped it) and its body never read;
// stopped says why, whatever the flow made of the transport's error.
type askGuard struct {
	http.RoundTripper
	askChecks
	mu    sync.Mutex
	cause error
}

func (b *askGuard) RoundTrip(r *http.Request) (*http.Response, error) {
	if b.before != nil && !b.before() {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, b.stop(errAuditUnavailable)
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	out := r.Clone(ctx) // headers of its own, to clear
	stopped := &atomic.Bool{}
	if r.Body != nil && r.Body != http.NoBody { // NoBody: sent as no body
		out.Body = stoppable{r.Body, stopped}
	}
	if out.Body != r.Body && r.GetBody != nil {
		out.GetBody = func() (io.ReadCloser, error) {
			body, err := r.GetBody()
			return stoppable{body, stopped}, err
		}
	}
	// net/http's Transport sends the ask again by itself on another
	// connection when one fails under it (HTTP/2's REFUSED_STREAM, a
	// GOAWAY): each connection after the first is another send of the
	// secret, which before must allow first, as sendTrace does upstream.
	var u *unwritten
	if b.wait != nil {
		u = b.wait(func(cause error) {
			stopped.Store(true)
			cancel(b.stop(cause))
		})
	}
	defer u.written()
	conns := 0
	trace := &httptrace.ClientTrace{WroteHeaders: u.written, GotConn: func(info httptrace.GotConnInfo) {
		var cause error
		if b.goes != nil {
			cause = b.goes()
		}
		if conns++; cause == nil && conns > 1 && b.before != nil && !b.before() {
			cause = errAuditUnavailable
		}
		if cause != nil {
			stopped.Store(true)
			clear(out.Header)
			cancel(b.stop(cause))
			dropUnwritten(info.Conn)
			return
		}
		u.watch(info.Conn)
	}}
	res, err := b.RoundTripper.RoundTrip(out.WithContext(httptrace.WithClientTrace(ctx, trace)))
	if err != nil {
		if cause := b.stopped(); cause != nil {
			err = cause
		}
		cancel(nil)
	}
	return res, err
}

// stop keeps cause as why the ask stopped, and returns it.
func (b *askGuard) stop(cause error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cause = cause
	return cause
}

// stopped returns why the ask stopped, or nil.
func (b *askGuard) stopped() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cause
}

// stoppable is a token request's body, which reads nothing once its
// request was stopped.
type stoppable struct {
	io.ReadCloser
	stopped *atomic.Bool
}

func (s stoppable) Read(p []byte) (int, error) {
	if s.stopped.Load() {
		return 0, errWithheld
	}
	return s.ReadCloser.Read(p)
}

// good reports whether t may still be sent.
func (m *minter) good(t *minted) bool {
	return !t.refused.Load() && (t.expires.IsZero() || m.now().Before(t.sentUntil()))
}

// sentUntil is when t stops being sent: a minute before it expires (half
// its life for one that lives no longer, else it would never be used);
// zero when it has no expiry.
func (t *minted) sentUntil() time.Time {
	if t.expires.IsZero() {
		return time.Time{}
	}
	early := mintEarly
	if life := t.expires.Sub(t.at); life <= mintEarly {
		early = life / 2
	}
	return t.expires.Add(-early)
}

// refuse ends t, which the upstream answered 401 at now, unless it was
// renewed after a 401 less than refusedAfter before.
func (t *minted) refuse(now time.Time) {
	if !t.renewal || now.Sub(t.at) >= refusedAfter {
		t.refused.Store(true)
	}
}

// sendable reports whether a token can go in a header as Bearer TOKEN:
// RFC 6750's b64token is printable ASCII without spaces.
func sendable(tok string) bool {
	for i := range len(tok) {
		if c := tok[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return tok != ""
}

// compile makes the injection of tok: Authorization: Bearer TOKEN, with
// the token among the forms scrubbed from echoes.
func (m *minter) compile(tok *oauth2.Token) *minted {
	in := *m.base
	in.minter = nil
	in.injectHeader = "Authorization"
	in.injectValue = "Bearer " + tok.AccessToken
	in.echoForms = append(append([]string(nil), m.base.echoForms...), echoForms([]string{tok.AccessToken, in.injectValue})...)
	t := &minted{inj: &in, key: m.key, token: tok, expires: tok.Expiry, at: m.now(), refused: new(atomic.Bool)}
	if !t.expires.After(t.at) {
		// None given, or one already past (expires_in ≤ 0): used as one
		// without, until a 401 ends it, not minted again for each request.
		t.expires = t.at.Add(defaultTokenLife)
	}
	in.minted = t
	return t
}

// scrub returns the token endpoint's error as one line that holds no form
// of the secret, nor of sent (the forms of what the ask sent as a
// credential: a signed assertion, an app's JWT), which an endpoint's
// answer may quote, nor any part of a client secret (quotesPart). Of an answer (oauth2.RetrieveError) it keeps the HTTP
// status, and the error code and description when they are plain text
// (plainText); never the body. Of any other error, its text without those
// forms, or nothing when it holds an escape.
func (m *minter) scrub(err error, sent []string) error {
	forms := append(slices.Clip(m.base.echoForms), sent...)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		// Every escaped form of a secret that differs from the secret
		// holds a backslash (\", \\, \u00a0): a text with one is left out.
		msg := redact(err.Error(), forms, 300)
		if strings.IndexByte(msg, '\\') >= 0 || echoes([]string{msg}, forms) || quotesPart(msg, m.secret) {
			return errors.New("the token endpoint's error is not logged: it may quote the credential")
		}
		return errors.New(msg)
	}
	msg := "oauth2: the token endpoint answered"
	if re.Response != nil {
		msg += " " + strconv.Itoa(re.Response.StatusCode) + " " + http.StatusText(re.Response.StatusCode)
	}
	if plainText(re.ErrorCode, forms) && !quotesPart(re.ErrorCode, m.secret) {
		msg += ", error " + shorten(re.ErrorCode, 64)
	}
	if plainText(re.ErrorDescription, forms) && !quotesPart(re.ErrorDescription, m.secret) {
		msg += ": " + shorten(re.ErrorDescription, 200)
	}
	return errors.New(msg)
}

// plainText reports whether s, an answer's error or error_description,
// holds only what RFC 6749 (section 5.2) allows there, printable ASCII
// but '"' and '\\', and none of forms. Nothing in it is then escaped when
// printed, so no escaped form of a secret can hide in it: a text that is
// not plain is left out whole.
func plainText(s string, forms []string) bool {
	for i := range len(s) {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return s != "" && !echoes([]string{s}, forms)
}

// redact returns s without any of forms, on one line, cut to at most limit
// characters (after the replacement, so that a cut leaves no part of a
// form that would have been replaced).
func redact(s string, forms []string, limit int) string {
	s = strings.ToValidUTF8(s, " ")
	for _, f := range forms {
		s = strings.ReplaceAll(s, f, "REDACTED")
	}
	s = strings.Join(strings.Fields(s), " ")
	for _, f := range forms {
		s = strings.ReplaceAll(s, f, "REDACTED")
	}
	return shorten(s, limit)
}

// shorten returns s cut to at most limit characters, marked when cut.
func shorten(s string, limit int) string {
	if r := []rune(s); len(r) > limit {
		return string(r[:limit]) + "…"
	}
	return s
}

// mint returns in, or, for a route that mints its tokens, the injection
// of the token its minter holds, asking the token endpoint for one when
// none is still good. The ask sends the long-lived secret: a key use,
// recorded first (invariant 8) as the request's, to the endpoint, and
// kept back (keptBack) when w refuses it once the endpoint's connection
// is got, or while it waits there to be written (unwritten). The request
// waits for the token no longer than its route's timeout: the ask, which
// serves every request waiting, runs on for up to mintTimeout. The error
// is errAuditUnavailable, keptBack, errMintWait or the endpoint's;
// asked reports whether the use record was written all the same.
func (x *exchange) mint(in *injection, w keyWatch) (_ *injection, asked bool, _ error) {
	m := in.minter
	if m == nil {
		return in, false, nil
	}
	ctx := x.ctx
	if x.route.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, x.route.timeout, errMintWait{x.route.timeout})
		defer cancel()
	}
	// A copy made here: the ask may outlive this request.
	rec := x.rec
	rec.method, rec.host, rec.path = http.MethodPost, m.endpoint.Host, m.endpoint.Path
	rec.nameKey(in)
	// Each ask (a transport's resend too) is an attempt of its own.
	var asks atomic.Int32
	asks.Store(x.attempts.Load())
	var sent atomic.Bool
	t, err := m.token(ctx, askChecks{
		before: func() bool {
			if !x.audit.writeUse(&rec, int(asks.Add(1)), time.Now()) {
				x.auditFailed.Store(true)
				return false
			}
			sent.Store(true)
			return true
		},
		goes: func() error {
			if e := w.goes(); e != nil {
				return keptBack{*e}
			}
			return nil
		},
		wait: func(stop func(error)) *unwritten {
			return w.waiter(func(e *apiError) { stop(keptBack{*e}) })
		},
	})
	if err != nil {
		return nil, sent.Load(), err
	}
	return t.inj, sent.Load(), nil
}

// errMintWait is the error of a request whose token did not come within
// its route's timeout.
type errMintWait struct{ timeout time.Duration }

func (e errMintWait) Error() string {
	return "no token within the route's timeout (" + e.timeout.String() + "): the token endpoint is still asked"
}

// keptBack is why a token endpoint was not asked after all: the refusal
// that the config served once its connection was got gave the request
// that asked (its key expired meanwhile, or a reload refused it).
type keptBack struct{ e apiError }

func (k keptBack) Error() string { return "the token endpoint was not asked: " + k.e.message }

// errAskAgain refuses a request that waited for a token whose ask was
// kept back for another request.
var errAskAgain = apiError{CodeSecretUnavailable, "the token for this route was not asked for; send the request again"}

// mintFailed answers r, whose token could not be minted, unless the app
// went away (or shutdown cut it) while it waited for the token.
func (g *Gateway) mintFailed(w http.ResponseWriter, r *http.Request, x *exchange, err error) {
	if errors.Is(err, errAuditUnavailable) {
		g.fail(w, x, errAuditDown)
		return
	}
	if errors.As(err, new(keptBack)) {
		// The ask it waited for may be another request's: it gets
		// the refusal of its own, as the config served now says.
		e := g.readmit(r, x, x.member)
		if e == nil {
			e = errAskAgain.ref()
		}
		g.refuse(w, x, *e, 0)
		return
	}
	if x.ctx.Err() != nil {
		x.failure = codeClientClosed // or shutdown's cut: see outcome
		return
	}
	const msg = "the route's token cannot be obtained from its token endpoint"
	if errors.As(err, new(errMintBackoff)) {
		// Logged when it failed, not once per request since.
		g.log.Debug().Str("id", x.rec.id).Str("route", x.route.name).Str("secret", x.rec.secret).Str("error", err.Error()).Msg(msg)
	} else {
		g.mintFails.warn(x.rec.id, x.route.name, x.rec.secret, err, msg)
	}
	g.fail(w, x, errCredentialUnavailable)
}
