package proxy

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// AdminOptions configure the admin listener's handler.
type AdminOptions struct {
	Gateway *Gateway // its snapshot answers /readyz and /admin/routes; required
	Metrics *Metrics // served at /metrics
	// Reload builds and swaps in a new snapshot, or says why it did not.
	Reload func() error
	// RestartNeeded names the settings served that wait for a restart.
	RestartNeeded func() []string
	// TokenSHA256, when set, is the hex SHA-256 of the bearer token that
	// /metrics and /admin/* require. /healthz and /readyz stay open for
	// probes.
	TokenSHA256 string
}

// NewAdmin returns the admin handler: /healthz, /readyz, /metrics,
// GET /admin/routes, GET /admin/usage, POST /admin/reload and POST
// /admin/test. It has no request records: only POST /admin/test touches
// a key, when it asks a token endpoint, and that ask has its use record
// in the gateway's trail, as a request's ask has.
func NewAdmin(o AdminOptions) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !o.Gateway.audit.Healthy() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "audit sink failing"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	guard := func(h http.Handler) http.Handler { return requireToken(o.TokenSHA256, h) }
	if o.Metrics != nil {
		mux.Handle("GET /metrics", guard(promhttp.HandlerFor(o.Metrics.Registry(), promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})))
	}
	mux.Handle("GET /admin/routes", guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, adminRoutes(o.Gateway.Snapshot()))
	})))
	mux.Handle("GET /admin/usage", guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rows, err := o.Gateway.Usage(r.Context())
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the budget store cannot be read: " + err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, rows)
	})))
	mux.Handle("POST /admin/test", guard(http.HandlerFunc(o.Gateway.serveTest)))
	mux.Handle("POST /admin/reload", guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := o.Reload(); err != nil {
			writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"result": "failed", "error": err.Error()})
			return
		}
		res := map[string]any{"result": "ok"}
		if o.RestartNeeded != nil {
			if pending := o.RestartNeeded(); len(pending) > 0 {
				res["restart_needed"] = pending
			}
		}
		writeJSON(w, http.StatusOK, res)
	})))
	return browserSafe(o.Gateway, mux)
}

// browserSafe refuses, as the gateway does, what a web page can make a
// browser send: a Host that is not a loopback name on a loopback listener
// (a page that rebinds its name to 127.0.0.1 could read /admin/routes)
// and a request from another origin (a form's POST to /admin/reload).
// browser_origins lists the pages that may use the routes, not the admin
// listener: here every other origin is refused.
func browserSafe(g *Gateway, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := g.Snapshot().browser
		b.origins = nil
		e, ok := b.checkHost(r)
		if ok {
			e, ok = b.checkOrigin(r)
		}
		if !ok {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": e.message})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// requireToken checks a bearer token against its SHA-256, in constant
// time, read as bearerToken reads it.
func requireToken(sumHex string, h http.Handler) http.Handler {
	if sumHex == "" {
		return h
	}
	want, _ := hex.DecodeString(sumHex)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := bearerToken(r.Header.Get("Authorization"))
		got := sha256.Sum256([]byte(tok))
		if !ok || subtle.ConstantTimeCompare(got[:], want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="till admin"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "admin token required"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// bearerToken reads the credentials of an Authorization value under the
// Bearer scheme, which RFC 9110 (section 11.1) matches in any case, after
// one or more spaces (section 11.4): curl's, Prometheus's and the CLI's
// "Bearer ", and a script's "bearer ", all pass.
func bearerToken(v string) (string, bool) {
	scheme, rest, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	tok := strings.TrimLeft(rest, " ")
	return tok, tok != ""
}

// adminRoute is a live route as /admin/routes shows it: no secret value.
type adminRoute struct {
	Name        string     `json:"name"`
	Prefix      string     `json:"prefix"`
	Upstream    string     `json:"upstream"`
	Secret      string     `json:"secret"`
	Fingerprint string     `json:"fingerprint"`
	Expires     *time.Time `json:"expires"`
	Ready       bool       `json:"ready"`
	Problem     string     `json:"problem,omitempty"`
	Clients     []string   `json:"clients"`
	Methods     []string   `json:"methods"`
	Paths       []string   `json:"paths"`
	Rate        string     `json:"rate"`
	// Cached, for a route whose key comes from a source, says whether the
	// cache holds its value, fetched at Fetched.
	Cached  *bool      `json:"cached,omitempty"`
	Fetched *time.Time `json:"fetched,omitempty"`
}

func adminRoutes(s *Snapshot) []adminRoute {
	out := make([]adminRoute, 0, len(s.routes))
	for _, r := range s.routes {
		a := adminRoute{
			Name: r.name, Prefix: r.prefix, Upstream: r.upstream.String(), Secret: r.secretName,
			Fingerprint: r.fp, Ready: r.problem == "", Problem: r.problem,
			Clients: nonNil(r.clients), Methods: nonNil(r.methods), Paths: []string{},
		}
		if !r.expires.IsZero() {
			e := r.expires.UTC()
			a.Expires = &e
		}
		for _, p := range r.paths {
			a.Paths = append(a.Paths, p.String())
		}
		if !r.rate.IsZero() {
			a.Rate = r.rate.String()
		}
		if r.sourced != nil {
			fetched, cached := r.sourced.cachedAt()
			a.Cached = &cached
			if cached {
				f := fetched.UTC()
				a.Fetched = &f
			}
		}
		out = append(out, a)
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
