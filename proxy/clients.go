package proxy

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/tillgw/till/config"
)

// TokenPrefix starts every till client token.
const TokenPrefix = "till_"

// TokenLength is the random part of a token `till client add` makes: 40
// base62 characters, about 238 bits.
const TokenLength = 40

// anonymous is the audit name of a request that presented no known token.
const anonymous = "anonymous"

// client is a known caller: the SHA-256 of its token, never the token.
type client struct {
	name   string
	digest [sha256.Size]byte
	cidrs  []netip.Prefix
	cert   bool // a client certificate from till's CA is required
}

// clientSet holds the known clients of a snapshot.
type clientSet []client

func newClientSet(cs []config.Client) clientSet {
	out := make(clientSet, 0, len(cs))
	for _, c := range cs {
		d, err := hex.DecodeString(c.TokenSHA256)
		if err != nil || len(d) != sha256.Size {
			continue // config validated it
		}
		out = append(out, client{name: c.Name, digest: [sha256.Size]byte(d), cidrs: c.CIDRs, cert: c.Cert})
	}
	return out
}

// byToken returns the client whose token this is, or nil. Every digest is
// compared, in constant time, so timing says nothing about which matched.
func (cs clientSet) byToken(token string) *client {
	d := sha256.Sum256([]byte(token))
	var found *client
	for i := range cs {
		if subtle.ConstantTimeCompare(d[:], cs[i].digest[:]) == 1 {
			found = &cs[i]
		}
	}
	return found
}

// from reports whether addr ("ip:port") is within the client's CIDRs.
func (c *client) from(addr string) bool {
	if len(c.cidrs) == 0 {
		return true
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return false
	}
	// A link-local peer's address carries the zone of the interface it
	// came through (fe80::1%eth0); a CIDR carries none, and a prefix
	// never contains a zoned address, so it is compared without it.
	ip := ap.Addr().Unmap().WithZone("")
	return slices.ContainsFunc(c.cidrs, func(p netip.Prefix) bool { return p.Contains(ip) })
}

// tokenFrom extracts a till token from a credential header value: bare,
// Bearer (or token, as GitHub's SDKs send it), the password (or user) of
// Basic (or the token as it is after Basic), or after any other scheme, as a route's inject format may put
// one before its key ("DeepL-Auth-Key {secret}") and the app's SDK then
// sends it before the till token. Anything else (an SDK's dummy key)
// gives "". The scheme ends at a space or a tab: RFC 9110 (section 11.4)
// puts spaces alone there, but servers that split on whitespace read
// "Bearer<TAB>TOKEN" as a token, and one till did not read as its own
// would leave it.
func tokenFrom(v string) string {
	v = strings.TrimSpace(v)
	if i := strings.IndexAny(v, " \t"); i >= 0 {
		scheme, rest := v[:i], strings.TrimSpace(v[i+1:])
		switch {
		case strings.EqualFold(scheme, "bearer"), strings.EqualFold(scheme, "token"):
			v = rest
		case strings.EqualFold(scheme, "basic"):
			b, err := base64.StdEncoding.DecodeString(rest)
			if err != nil {
				// A token as it is: its "_" is never base64's.
				v = rest
				break
			}
			user, pass, _ := strings.Cut(string(b), ":")
			v = pass
			if !strings.HasPrefix(pass, TokenPrefix) {
				v = user
			}
		case !strings.HasPrefix(v, TokenPrefix):
			v = rest
		}
	}
	if strings.HasPrefix(v, TokenPrefix) {
		return v
	}
	return ""
}

// byName returns the named client, or nil.
func (cs clientSet) byName(name string) *client {
	for i := range cs {
		if cs[i].name == name {
			return &cs[i]
		}
	}
	return nil
}

// identity is who a request says it is.
type identity struct {
	client    *client
	presented bool // a till token was presented, known or not
	viaCert   bool // the client presented its certificate
	conflict  bool // a token that is not the certificate's client's came with it
	// credential is the header value whose token named the client.
	credential string
}

// certID is what a verified client certificate says: the client's name
// (its common name) and the token it was issued with (the first 16 hex
// digits of the token's SHA-256, in a urn:till:client:NAME:DIGEST URI), so
// that rotating a client's token revokes its old certificates.
type certID struct {
	name, binding string
}

// CertURI is the URI a client certificate carries to bind it to the
// client's token digest.
func CertURI(name, tokenSHA256 string) string {
	return "urn:till:client:" + name + ":" + tokenSHA256[:16]
}

// peerCert reads the client certificate verified on r's TLS connection.
func peerCert(r *http.Request) certID {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return certID{}
	}
	cert := r.TLS.VerifiedChains[0][0]
	id := certID{name: cert.Subject.CommonName}
	for _, u := range cert.URIs {
		if rest, ok := strings.CutPrefix(u.String(), "urn:till:client:"+id.name+":"); ok {
			id.binding = rest
		}
	}
	return id
}

// identify looks for a till token in the credentials a request may carry:
// those given on its CONNECT, Proxy-Authorization, X-Till-Token, then the
// route's key headers (so an SDK's api_key=till_... works, whichever of
// them the SDK sends it in); and for a
// client certificate from till's CA, on the request's connection or its
// CONNECT's (connectCert). A certificate counts only for a client with
// cert: true, and only while its token is the one it was issued with.
func (cs clientSet) identify(r *http.Request, connectAuth string, connectCert certID, routeHeaders []string) identity {
	id := cs.identifyToken(r, connectAuth, routeHeaders)
	cert := connectCert
	if p := peerCert(r); p.name != "" {
		cert = p
	}
	if cert.name == "" {
		return id
	}
	c := cs.byName(cert.name)
	switch {
	case c == nil || !c.cert || cert.binding != hex.EncodeToString(c.digest[:8]):
		// A certificate that no longer counts: a known token beside it
		// still names its client (and its cidrs); without one, the
		// caller presented a credential that is refused.
		if id.client != nil {
			return id
		}
		return identity{presented: true}
	case id.presented && id.client != c:
		// A token of another client, or of none (a revoked one).
		return identity{client: c, presented: true, conflict: true}
	}
	return identity{client: c, presented: true, viaCert: true}
}

func (cs clientSet) identifyToken(r *http.Request, connectAuth string, routeHeaders []string) identity {
	var id identity
	try := func(v string) bool {
		if v == "" {
			return false
		}
		tok := tokenFrom(v)
		if tok == "" {
			return false
		}
		id.presented = true
		id.client = cs.byToken(tok)
		if id.client != nil {
			id.credential = v
		}
		return id.client != nil
	}
	if try(connectAuth) || try(r.Header.Get("Proxy-Authorization")) || try(r.Header.Get("X-Till-Token")) {
		return id
	}
	for _, h := range routeHeaders {
		for _, v := range r.Header[h] {
			if try(v) {
				return id
			}
		}
	}
	return id
}

// admit decides whether a request with this identity may use the route:
// a known client must come from its CIDRs; a route with clients admits
// only those.
func (id identity) admit(remoteAddr string, allowed []string) (apiError, bool) {
	if id.conflict {
		return apiError{CodeClientForbidden, "the token is not the one of the client certificate's client"}, false
	}
	if id.client != nil && id.client.cert && !id.viaCert {
		return apiError{CodeClientUnauthenticated, "this client must present its client certificate"}, false
	}
	if id.client != nil && !id.client.from(remoteAddr) {
		return apiError{CodeClientForbidden, "this client may not connect from this address"}, false
	}
	if len(allowed) == 0 {
		return apiError{}, true
	}
	if id.client == nil && id.presented {
		// Mistyped, rotated away, or a client not reloaded yet; or a
		// certificate revoked with its client's token.
		return apiError{CodeClientUnauthenticated, "no client has the till token or certificate sent (a token replaced by till client rotate is revoked)"}, false
	}
	if id.client == nil {
		return apiError{CodeClientUnauthenticated, "this route needs a till client token"}, false
	}
	if !slices.Contains(allowed, id.client.name) {
		return apiError{CodeClientForbidden, "this client may not use this route"}, false
	}
	return apiError{}, true
}

// name is the client's audit name.
func (id identity) name() string {
	if id.client == nil {
		return anonymous
	}
	return id.client.name
}
