package proxy

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/tillgw/till/usage"
)

// identityOnly is the Accept-Encoding of a metered request: one slice
// for all, as outbound's headers' values are replaced, never written to.
var identityOnly = []string{"identity"}

// attach points out at the route's upstream, with the app's query, and
// attaches the route's key: the host dialled and the Host header both come
// from the route alone (invariant 1). Before the key goes in, it removes
// the app's credentials and the method and URL overrides that would slip
// past the route's allow rules, under any alias, the query parameters
// that carry a provider key (strip_query), and any header or query
// parameter holding a till token (invariant 2): of till client add's
// shape, or any known client's, a cookie too. The record names the key
// once its use is recorded (writeAhead), not here: a key attached is not
// yet sent.
func (x *exchange) attach(out *http.Request, rawQuery string) {
	rt, in := x.route, x.inj
	out.URL.Scheme = rt.upstream.Scheme
	out.URL.Host = rt.upstream.Host
	out.URL.Path = x.outPath
	out.URL.RawPath = x.rawPath
	out.URL.RawQuery = withoutOverrideParams(withoutClientTokens(rawQuery))
	for _, name := range rt.queryCredentials {
		if out.URL.RawQuery != "" {
			out.URL.RawQuery = withoutParam(out.URL.RawQuery, name)
		}
	}
	out.Host = ""
	h := out.Header
	stripHeaders(h, rt.credentials, overrideHeaders)
	dropKnownTokens(out, x.live.clients)
	if rt.usage != usage.None {
		// The answer then comes uncompressed, which the meter can read;
		// so does the app. Said outright: a request without the header
		// takes any coding (RFC 9110, section 12.5.3).
		h["Accept-Encoding"] = identityOnly
	}
	for _, kv := range rt.addHeaders {
		if _, ok := h[kv[0]]; !ok {
			h[kv[0]] = []string{kv[1]}
		}
	}
	if in.injectHeader != "" {
		h[in.injectHeader] = []string{in.injectValue}
	}
	if in.injectQuery != "" {
		q := withoutParam(out.URL.RawQuery, in.injectQuery)
		if q != "" {
			q += "&"
		}
		out.URL.RawQuery = q + in.injectPair
	}
}

// withoutParam removes every parameter named name from the raw query,
// comparing decoded names so that an encoded duplicate cannot slip
// through, and with "$" before them, Google's spelling of its system
// parameters ($key for key).
func withoutParam(raw, name string) string {
	return withoutParams(raw, func(part string) bool {
		key, _, _ := strings.Cut(part, "=")
		k, err := url.QueryUnescape(key)
		return err != nil || k == name || k == "$"+name
	})
}
