package proxy

import (
	"encoding/json"
	"mime"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// TestRequest is the request that till test --mint tries on a running
// till (POST /admin/test), as till test's arguments and flags name it.
type TestRequest struct {
	Method string `json:"method"`           // GET, POST, ...: upper case, as HTTP compares it
	Target string `json:"target"`           // a path (/openai/v1/models) or an http:// or https:// URL
	Client string `json:"client,omitempty"` // the client it comes as; "" for none
	From   string `json:"from,omitempty"`   // its source address, for clients' cidrs; "" for 127.0.0.1
	Model  string `json:"model,omitempty"`  // the model its body names; "" for none
}

// maxTestRequest bounds the body of POST /admin/test.
const maxTestRequest = 64 << 10

// serveTest answers POST /admin/test: till test --mint on the running
// till, since the audit trail has one writer. The request is decided on
// the live snapshot as Explain decides it and, when allowed, its route's
// token is asked for through the route's own minter (Mint), with the
// token cache and the trail that serve's requests use: the ask's use
// record lands in serve's trail, and a token the minter holds still good
// is not asked for again, as no request would ask for it. The answer is
// the verdict (ApplyMint), never the token.
func (g *Gateway) serveTest(w http.ResponseWriter, r *http.Request) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		// A web page cannot send that without a CORS preflight, which
		// the admin listener never answers.
		writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"error": "the body must be JSON (Content-Type: application/json)"})
		return
	}
	var t TestRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxTestRequest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		// Not quoted: the body may hold what was pasted in the wrong place.
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "the body must be one JSON object of method, target, client, from and model"})
		return
	}
	if t.From == "" {
		t.From = "127.0.0.1"
	}
	source, err := netip.ParseAddr(t.From)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "from must be an IP address such as 10.0.0.5"})
		return
	}
	if t.Method == "" || len(t.Method) > 32 || strings.Trim(t.Method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "method must be an HTTP method such as GET or POST, in upper case"})
		return
	}
	snap := g.Snapshot()
	v := snap.Explain(t.Method, t.Target, t.Client, netip.AddrPortFrom(source, 0).String(), t.Model, time.Now())
	if v.Allowed && v.Route != "" {
		m, err := snap.mint(r.Context(), g.audit, v, g)
		v.ApplyMint(m, err)
		ev := g.log.Info().Str("route", v.Route).Str("client", v.Client).Bool("asked", m.Asked)
		if m.Asked {
			ev = ev.Str("id", m.UseID) // the ask's use record
		}
		if err != nil {
			ev = ev.Str("error", err.Error())
		}
		ev.Msg("till test --mint asked for the route's token through the admin listener")
	}
	writeJSON(w, http.StatusOK, v)
}
