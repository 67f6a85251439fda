package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// TestRoutesOnOneCredentialShareTokens: routes that mint alike from one
// credential ask the token endpoint once between them, whether the
// credential is in the vault or in a source; a route that asks for other
// scopes mints its own, and a new value at the source mints afresh.
func TestRoutesOnOneCredentialShareTokens(t *testing.T) {
	const creds = `{"client_id":"app","client_secret":"secret-app-0123456789"}`
	for _, tt := range []struct{ name, secret string }{
		{"vault", "cred"},
		{"source", `"mounted:app"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			asks := map[string]int{} // by scope
			sent := map[string]bool{}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				if r.URL.Path != "/token" {
					sent[r.Header.Get("Authorization")] = true
					return
				}
				scope := r.FormValue("scope")
				asks[scope]++
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"access_token":"tok-`+scope+`-0123456789abcdef-`+strconv.Itoa(asks[scope])+`","token_type":"Bearer","expires_in":3600}`)
			}))
			defer srv.Close()
			fields, err := vault.ParseFields([]byte(creds))
			if err != nil {
				t.Fatal(err)
			}
			keys := &fakeKeys{values: map[string]string{"mounted:app": creds}}
			snapshot := func(scopes ...string) *Snapshot {
				y := "version: 1\nsources:\n  - {name: mounted, type: files, dir: keys}\nroutes:\n"
				for i, scope := range scopes {
					y += "  - {name: r" + strconv.Itoa(i) + ", upstream: " + srv.URL + ", secret: " + tt.secret +
						", inject: {oauth2: {token_url: " + srv.URL + "/token, scopes: [" + scope + "]}}}\n"
				}
				cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				return NewSnapshotWithKeys(cfg, map[string]vault.Secret{"cred": vault.NewFieldSecret("cred", fields, time.Now())}, keys)
			}
			gw := New(snapshot("read", "read", "read", "write"), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
			get := func(route string) {
				t.Helper()
				w := httptest.NewRecorder()
				gw.ServeHTTP(w, httptest.NewRequest("GET", "/"+route+"/x", nil))
				if w.Code != 200 {
					t.Fatalf("%s: status %d: %s", route, w.Code, w.Body)
				}
			}
			for range 2 {
				for i := range 4 {
					get("r" + strconv.Itoa(i))
				}
			}
			mu.Lock()
			if asks["read"] != 1 || asks["write"] != 1 {
				t.Errorf("3 routes asking for scope read and 1 for write asked %d and %d times, want 1 and 1", asks["read"], asks["write"])
			}
			mu.Unlock()
			// A reload that has the last route ask as the others do:
			// they keep their token, whatever that route had before.
			gw.Swap(snapshot("read", "read", "read", "read"))
			for i := range 4 {
				get("r" + strconv.Itoa(i))
			}
			mu.Lock()
			if asks["read"] != 1 {
				t.Errorf("after a reload that left their way of minting as it was: %d asks for scope read, want 1", asks["read"])
			}
			mu.Unlock()
			if tt.name == "vault" {
				return
			}
			keys.set("mounted:app", `{"client_id":"app","client_secret":"secret-app-rotated-9876543210"}`)
			get("r0")
			get("r1")
			mu.Lock()
			defer mu.Unlock()
			if asks["read"] != 2 {
				t.Errorf("a new value at the source: %d asks for scope read in all, want 2 (one afresh)", asks["read"])
			}
			if !sent["Bearer tok-read-0123456789abcdef-2"] {
				t.Errorf("the token minted from the new value was not sent; sent %v", sent)
			}
		})
	}
}
