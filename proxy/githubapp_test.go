package proxy

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tillgw/till/vault"
)

// fakeGitHub mints installation tokens at the route's exchange path and
// revokes the one a request authenticates with at DELETE
// /installation/token, as GitHub does; any other path answers 401 to a
// token it did not mint or revoked.
type fakeGitHub struct {
	*httptest.Server
	mu      sync.Mutex
	minted  int
	live    map[string]bool
	revokes int
}

func newFakeGitHub(t *testing.T) *fakeGitHub {
	gh := &fakeGitHub{live: map[string]bool{}}
	gh.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gh.mu.Lock()
		defer gh.mu.Unlock()
		if r.Method == http.MethodPost && r.URL.Path == "/app/installations/2/access_tokens" {
			gh.minted++
			tok := "ghs_installation" + strconv.Itoa(gh.minted) + "abcdefghijklmnop"
			gh.live[tok] = true
			w.WriteHeader(http.StatusCreated)
			_ = json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_at": time.Now().Add(time.Hour)})
			return
		}
		tok := r.Header.Get("Authorization")[len("Bearer "):]
		if !gh.live[tok] {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.URL.Path == "/installation/token" && r.Method == http.MethodDelete {
			gh.revokes++
			delete(gh.live, tok)
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	t.Cleanup(gh.Close)
	return gh
}

// An app cannot revoke a GitHub App route's installation token (GitHub's
// DELETE /installation/token), in any spelling GitHub may read as that
// path: the token is till's, shared by every app of the route, which
// would each get a 401 until till minted again.
func TestGitHubAppTokenNotRevokedThroughTheRoute(t *testing.T) {
	gh := newFakeGitHub(t)
	gw, _, _ := mintGateway(t, gh.URL, "{github_app: {app_id: 1, installation_id: 2}}", vault.NewSecret("cred", rsaPEM(t), time.Now()), "")
	get := func() int {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/repos/o/r", nil))
		return w.Code
	}
	if code := get(); code != http.StatusOK {
		t.Fatalf("GET before: got %d, want 200", code)
	}
	for _, target := range []string{"/api/installation/token", "/api/installation/token/", "/api/Installation/TOKEN", "/api/installation/%74oken", "/api//installation/token", "/api/installation//token"} {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("DELETE", target, nil))
		if w.Code != http.StatusForbidden || w.Header().Get("X-Till-Error") != CodePathNotAllowed {
			t.Errorf("DELETE %s: got %d %s, want 403 %s", target, w.Code, w.Header().Get("X-Till-Error"), CodePathNotAllowed)
		}
		if code := get(); code != http.StatusOK {
			t.Errorf("GET after DELETE %s: got %d, want 200", target, code)
		}
	}
	gh.mu.Lock()
	defer gh.mu.Unlock()
	if gh.revokes != 0 || gh.minted != 1 {
		t.Errorf("the token was revoked %d times, minted %d times; want 0 and 1", gh.revokes, gh.minted)
	}
}
