// Package fake holds strict fakes of the secret stores till reads keys
// from, for tests: no Vault or AWS server can run where the tests do.
// Each follows the documented HTTP API closely enough for the official
// client to talk to it, and refuses what the real service would (a
// missing or expired token, a bad signature), so a test passes only when
// till speaks the protocol right.
package fake

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Vault fakes a HashiCorp Vault (or OpenBao) server's HTTP API, v1, as
// documented for Vault 1.x: KV version 2 reads (GET /v1/MOUNT/data/PATH,
// with version metadata, routed to the longest mount the path starts
// with, as Vault routes), the mount of a path
// (GET /v1/sys/internal/ui/mounts/PATH, which the vault CLI asks first,
// for a token with access to the path), AppRole and Kubernetes logins (POST or PUT
// /v1/auth/MOUNT/login), token renewal (/v1/auth/token/renew-self) and
// lookup (GET /v1/auth/token/lookup-self, which the default policy lets
// every token make), and its error shape ({"errors": [...]}, 403 for a
// missing, unknown or expired X-Vault-Token, and for a path no policy of
// the token grants).
type Vault struct {
	*httptest.Server
	// CAFile is the PEM file of the server's certificate.
	CAFile string

	mu        sync.Mutex
	now       func() time.Time
	namespace string
	roleID    string
	secretID  string
	k8sRole   string
	k8sJWT    string
	tokenTTL  time.Duration
	renewable bool
	down      bool
	standby   string               // the active node a standby redirects to; "" when active
	front     *frontAnswer         // what a proxy in front of Vault answers instead; nil: none
	tokens    map[string]time.Time // token → expiry (zero: none)
	entries   map[string]*kvEntry
	forbidden map[string]bool // MOUNT/PATH no token may read
	mounts    map[string]int  // secrets engine mount → KV version
	lookups   int             // mount lookups answered
	logins    int
	renewals  int
	reads     map[string]int
	refused   int
}

type kvEntry struct {
	data      map[string]string
	custom    map[string]string
	created   time.Time
	version   int
	deleted   time.Time // the current version's deletion_time (soft delete)
	destroyed bool      // the current version's data is gone for good
}

// NewVault starts a fake Vault over TLS. Its logins issue renewable tokens
// that live ttl (0: no expiry).
func NewVault(t testing.TB, ttl time.Duration) *Vault {
	t.Helper()
	v := &Vault{
		now:       time.Now,
		tokenTTL:  ttl,
		renewable: true,
		tokens:    map[string]time.Time{},
		entries:   map[string]*kvEntry{},
		forbidden: map[string]bool{},
		mounts:    map[string]int{"secret": 2, "kv": 2},
		reads:     map[string]int{},
	}
	v.Server = httptest.NewTLSServer(http.HandlerFunc(v.serve))
	t.Cleanup(v.Close)
	v.CAFile = writeCA(t, v.Server)
	return v
}

// writeCA writes srv's certificate as PEM and returns the file.
func writeCA(t testing.TB, srv *httptest.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(path, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Mount mounts a KV secrets engine of version (1 or 2) at path, which
// may hold slashes (team/kv). "secret" and "kv" are KV version 2 mounts
// from the start.
func (v *Vault) Mount(path string, version int) {
	v.mu.Lock()
	v.mounts[path] = version
	v.mu.Unlock()
}

// mountOf returns the longest mount path starts with, and the rest of
// path after it; v.mu is held.
func (v *Vault) mountOf(path string) (mount, rest string, ok bool) {
	for m := range v.mounts {
		if r, found := strings.CutPrefix(path, m+"/"); found && len(m) > len(mount) {
			mount, rest, ok = m, r, true
		}
	}
	return mount, rest, ok
}

// RequireNamespace makes every request need X-Vault-Namespace: ns.
func (v *Vault) RequireNamespace(ns string) {
	v.mu.Lock()
	v.namespace = ns
	v.mu.Unlock()
}

// EnableAppRole accepts AppRole logins at auth/approle with these ids.
func (v *Vault) EnableAppRole(roleID, secretID string) {
	v.mu.Lock()
	v.roleID, v.secretID = roleID, secretID
	v.mu.Unlock()
}

// EnableKubernetes accepts Kubernetes logins at auth/kubernetes for role
// with this service-account token.
func (v *Vault) EnableKubernetes(role, jwt string) {
	v.mu.Lock()
	v.k8sRole, v.k8sJWT = role, jwt
	v.mu.Unlock()
}

// SetRenewable says whether renew-self succeeds.
func (v *Vault) SetRenewable(ok bool) {
	v.mu.Lock()
	v.renewable = ok
	v.mu.Unlock()
}

// SetDown makes every request fail with 503, as a sealed Vault answers.
func (v *Vault) SetDown(down bool) {
	v.mu.Lock()
	v.down = down
	v.mu.Unlock()
}

// SetStandby makes every request get the answer of an HA standby that
// does not forward it: 307 to the same path at leader (a URL), with no
// body, as Vault's respondStandby writes it; "" ends it.
func (v *Vault) SetStandby(leader string) {
	v.mu.Lock()
	v.standby = leader
	v.mu.Unlock()
}

// frontAnswer is an answer that is not Vault's.
type frontAnswer struct {
	code int
	body string
}

// SetFront makes every request get the answer of something in front of
// Vault instead of Vault's (a load balancer, a proxy): code with body as
// it is, with no Content-Type when body is empty; code 0 ends it.
func (v *Vault) SetFront(code int, body string) {
	v.mu.Lock()
	v.front = nil
	if code != 0 {
		v.front = &frontAnswer{code, body}
	}
	v.mu.Unlock()
}

// IssueToken returns a new token valid for ttl (0: no expiry), as an
// agent would have written to its sink.
func (v *Vault) IssueToken(ttl time.Duration) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.issue(ttl)
}

// Forbid makes reads of MOUNT/PATH get 403 whatever the token, as Vault
// answers a path its policies do not grant (one mistyped included).
func (v *Vault) Forbid(path string) {
	v.mu.Lock()
	v.forbidden[path] = true
	v.mu.Unlock()
}

// RevokeAll makes every token issued so far invalid.
func (v *Vault) RevokeAll() {
	v.mu.Lock()
	clear(v.tokens)
	v.mu.Unlock()
}

// Put writes a new version of MOUNT/PATH with these fields and custom
// metadata (nil for none), created now.
func (v *Vault) Put(path string, data, custom map[string]string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e := v.entries[path]
	if e == nil {
		e = &kvEntry{}
		v.entries[path] = e
	}
	e.data, e.custom, e.created = data, custom, v.now().UTC()
	e.deleted, e.destroyed = time.Time{}, false
	e.version++
}

// Delete soft-deletes the current version of MOUNT/PATH, as `vault kv
// delete` does: reads get 404 with its metadata and null data.
func (v *Vault) Delete(path string) {
	v.mu.Lock()
	v.entries[path].deleted = v.now().UTC()
	v.mu.Unlock()
}

// Destroy destroys the current version of MOUNT/PATH, as `vault kv
// destroy` does: reads get 404 with destroyed metadata and null data.
func (v *Vault) Destroy(path string) {
	v.mu.Lock()
	e := v.entries[path]
	e.destroyed, e.data = true, nil
	v.mu.Unlock()
}

// Reads returns how many reads of MOUNT/PATH were answered with data.
func (v *Vault) Reads(path string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.reads[path]
}

// MountLookups returns how many mount lookups
// (sys/internal/ui/mounts/PATH) were answered.
func (v *Vault) MountLookups() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.lookups
}

// Logins returns how many logins succeeded.
func (v *Vault) Logins() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.logins
}

// Renewals returns how many renewals succeeded.
func (v *Vault) Renewals() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.renewals
}

// Refused returns how many requests were refused for their token.
func (v *Vault) Refused() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.refused
}

// issue makes a token; v.mu is held.
func (v *Vault) issue(ttl time.Duration) string {
	b := make([]byte, 18)
	rand.Read(b)
	tok := "hvs.fake" + hex.EncodeToString(b)
	var exp time.Time
	if ttl > 0 {
		exp = v.now().Add(ttl)
	}
	v.tokens[tok] = exp
	return tok
}

// valid reports whether the request's token is known and unexpired; v.mu
// is held.
func (v *Vault) valid(r *http.Request) (string, bool) {
	tok := r.Header.Get("X-Vault-Token")
	exp, ok := v.tokens[tok]
	if !ok || tok == "" || (!exp.IsZero() && !v.now().Before(exp)) {
		v.refused++
		return "", false
	}
	return tok, true
}

func (v *Vault) serve(w http.ResponseWriter, r *http.Request) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.down {
		vaultErrors(w, http.StatusServiceUnavailable, "Vault is sealed")
		return
	}
	if v.front != nil {
		if v.front.body != "" {
			w.Header().Set("Content-Type", "text/html")
		}
		w.WriteHeader(v.front.code)
		_, _ = io.WriteString(w, v.front.body)
		return
	}
	if v.standby != "" {
		w.Header().Set("Location", v.standby+r.URL.RequestURI())
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
	}
	if v.namespace != "" && strings.Trim(r.Header.Get("X-Vault-Namespace"), "/") != v.namespace {
		vaultErrors(w, http.StatusForbidden, "permission denied")
		return
	}
	path, ok := strings.CutPrefix(r.URL.Path, "/v1/")
	if !ok {
		vaultErrors(w, http.StatusNotFound)
		return
	}
	write := r.Method == http.MethodPost || r.Method == http.MethodPut
	switch {
	case write && path == "auth/token/renew-self":
		v.renewSelf(w, r)
	case r.Method == http.MethodGet && path == "auth/token/lookup-self":
		v.lookupSelf(w, r)
	case write && strings.HasPrefix(path, "auth/") && strings.HasSuffix(path, "/login"):
		v.login(w, r, strings.TrimSuffix(strings.TrimPrefix(path, "auth/"), "/login"))
	case r.Method == http.MethodGet && strings.HasPrefix(path, "sys/internal/ui/mounts/"):
		v.mountInfo(w, r, strings.TrimPrefix(path, "sys/internal/ui/mounts/"))
	case r.Method == http.MethodGet && strings.Contains(path, "/data/"):
		v.read(w, r, path)
	default:
		vaultErrors(w, http.StatusNotFound, "no handler for route \""+path+"\". route entry not found.")
	}
}

func (v *Vault) login(w http.ResponseWriter, r *http.Request, mount string) {
	var body map[string]string
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&body); err != nil {
		vaultErrors(w, http.StatusBadRequest, "failed to parse JSON input")
		return
	}
	switch mount {
	case "approle":
		if v.roleID == "" || body["role_id"] != v.roleID || body["secret_id"] != v.secretID {
			vaultErrors(w, http.StatusBadRequest, "invalid role or secret ID")
			return
		}
	case "kubernetes":
		if v.k8sRole == "" || body["role"] != v.k8sRole || body["jwt"] != v.k8sJWT {
			vaultErrors(w, http.StatusForbidden, "permission denied")
			return
		}
	default:
		vaultErrors(w, http.StatusBadRequest, "no handler for route \"auth/"+mount+"/login\"")
		return
	}
	v.logins++
	v.auth(w, v.issue(v.tokenTTL))
}

func (v *Vault) renewSelf(w http.ResponseWriter, r *http.Request) {
	tok, ok := v.valid(r)
	if !ok {
		vaultErrors(w, http.StatusForbidden, "permission denied")
		return
	}
	if !v.renewable {
		vaultErrors(w, http.StatusBadRequest, "lease is not renewable")
		return
	}
	if v.tokenTTL > 0 {
		v.tokens[tok] = v.now().Add(v.tokenTTL)
	}
	v.renewals++
	v.auth(w, tok)
}

func (v *Vault) lookupSelf(w http.ResponseWriter, r *http.Request) {
	tok, ok := v.valid(r)
	if !ok {
		vaultErrors(w, http.StatusForbidden, "permission denied")
		return
	}
	ttl := 0
	if exp := v.tokens[tok]; !exp.IsZero() {
		ttl = int(exp.Sub(v.now()) / time.Second)
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"request_id": "00000000-0000-0000-0000-000000000000", "lease_id": "", "renewable": false, "lease_duration": 0,
		"data": map[string]any{
			"accessor": "fake-accessor", "policies": []string{"default", "till"}, "ttl": ttl,
			"renewable": v.renewable, "type": "service", "orphan": true,
		},
		"wrap_info": nil, "warnings": nil, "auth": nil,
	})
}

// auth answers a login or renewal with tok; v.mu is held.
func (v *Vault) auth(w http.ResponseWriter, tok string) {
	writeJSON(w, http.StatusOK, map[string]any{
		"request_id": "00000000-0000-0000-0000-000000000000", "lease_id": "", "renewable": false, "lease_duration": 0,
		"data": nil, "wrap_info": nil, "warnings": nil,
		"auth": map[string]any{
			"client_token": tok, "accessor": "fake-accessor", "policies": []string{"default", "till"},
			"token_policies": []string{"default", "till"}, "metadata": map[string]string{},
			"lease_duration": int(v.tokenTTL / time.Second), "renewable": v.renewable,
			"entity_id": "", "token_type": "service", "orphan": true,
		},
	})
}

func (v *Vault) read(w http.ResponseWriter, r *http.Request, path string) {
	if _, ok := v.valid(r); !ok {
		vaultErrors(w, http.StatusForbidden, "permission denied")
		return
	}
	mount, rest, ok := v.mountOf(path)
	rest, isData := strings.CutPrefix(rest, "data/")
	if !ok || !isData || v.mounts[mount] != 2 {
		vaultErrors(w, http.StatusNotFound, "no handler for route \""+path+"\". route entry not found.")
		return
	}
	key := mount + "/" + rest
	if v.forbidden[key] {
		vaultErrors(w, http.StatusForbidden, "permission denied")
		return
	}
	e := v.entries[key]
	if e == nil {
		vaultErrors(w, http.StatusNotFound)
		return
	}
	var custom any
	if e.custom != nil {
		custom = e.custom
	}
	code, data, deletion := http.StatusOK, any(e.data), ""
	if !e.deleted.IsZero() || e.destroyed {
		// Vault's answer to a deleted or destroyed current version.
		code, data = http.StatusNotFound, nil
	} else {
		v.reads[key]++
	}
	if !e.deleted.IsZero() {
		deletion = e.deleted.Format(time.RFC3339Nano)
	}
	writeJSON(w, code, map[string]any{
		"request_id": "00000000-0000-0000-0000-000000000000", "lease_id": "", "renewable": false, "lease_duration": 0,
		"data": map[string]any{
			"data": data,
			"metadata": map[string]any{
				"created_time": e.created.Format(time.RFC3339Nano), "custom_metadata": custom,
				"deletion_time": deletion, "destroyed": e.destroyed, "version": e.version,
			},
		},
		"wrap_info": nil, "warnings": nil, "auth": nil,
	})
}

// mountInfo answers which mount path is under: 403 for a missing or
// unknown token, 400 for a path under no mount.
func (v *Vault) mountInfo(w http.ResponseWriter, r *http.Request, path string) {
	if _, ok := v.valid(r); !ok {
		vaultErrors(w, http.StatusForbidden, "permission denied")
		return
	}
	mount, _, ok := v.mountOf(path)
	if !ok {
		vaultErrors(w, http.StatusBadRequest, "no mount found for path")
		return
	}
	v.lookups++
	options := map[string]any{"version": strconv.Itoa(v.mounts[mount])}
	writeJSON(w, http.StatusOK, map[string]any{
		"request_id": "00000000-0000-0000-0000-000000000000", "lease_id": "", "renewable": false, "lease_duration": 0,
		"data": map[string]any{
			"accessor": "kv_00000000", "config": map[string]any{}, "description": "", "local": false,
			"options": options, "path": mount + "/", "seal_wrap": false, "type": "kv", "uuid": "00000000-0000-0000-0000-000000000000",
		},
		"wrap_info": nil, "warnings": nil, "auth": nil,
	})
}

// vaultErrors writes Vault's error shape.
func vaultErrors(w http.ResponseWriter, code int, msgs ...string) {
	if msgs == nil {
		msgs = []string{}
	}
	writeJSON(w, code, map[string]any{"errors": msgs})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
