package source

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/tillgw/till/internal/regfile/regfiletest"
	"github.com/tillgw/till/test/fake"
)

// writeFile writes a credential file for a test.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// mustNotHold fails when err's message holds any of secrets.
func mustNotHold(t *testing.T, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range secrets {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q holds a secret", err)
		}
	}
}

func TestVaultKVTokenFile(t *testing.T) {
	v := fake.NewVault(t, 0)
	v.Put("secret/openai", map[string]string{"api_key": "sk-vault-1"}, nil)
	v.Put("secret/multi", map[string]string{"a": "1", "b": "2"}, map[string]string{"expires": "2027-01-31"})
	tokenFile := writeFile(t, "token", v.IssueToken(0)+"\n")
	src, err := NewVaultKV(VaultKVOptions{Address: v.URL, CAFile: v.CAFile, TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	c := NewCache(map[string]Spec{"corp": {Source: src, TTL: time.Minute}}, Options{})
	ctx := context.Background()
	for _, ref := range []string{"corp:secret/openai", "corp:secret/openai#api_key"} {
		r, err := c.Get(ctx, ref)
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		if got, _ := r.Secret.Value(); got != "sk-vault-1" {
			t.Errorf("%s: got %q", ref, got)
		}
		if r.Secret.Updated.IsZero() || time.Since(r.Secret.Updated) > time.Minute {
			t.Errorf("%s: version time %v is not the entry's created_time", ref, r.Secret.Updated)
		}
	}
	_, err = c.Get(ctx, "corp:secret/multi")
	if err == nil || !strings.Contains(err.Error(), "secret has 2 fields (a, b): name one with #FIELD") {
		t.Errorf("multi-field without #FIELD: %v", err)
	}
	r, err := c.Get(ctx, "corp:secret/multi#b")
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC); !r.Secret.Expires.Equal(want) {
		t.Errorf("custom_metadata.expires: got %v, want %v", r.Secret.Expires, want)
	}
	if _, err := c.Get(ctx, "corp:secret/openai#nope"); err == nil || !strings.Contains(err.Error(), `no field "nope"`) || !errors.Is(err, ErrGone) {
		t.Errorf("missing field: %v", err)
	}
	if _, _, err := src.Fetch(ctx, "secret/absent"); err == nil || !strings.Contains(err.Error(), "secret/absent: no such secret") || !errors.Is(err, ErrGone) {
		t.Errorf("absent: %v, want an ErrGone", err)
	}
	if _, _, err := src.Fetch(ctx, "openai"); err == nil || !strings.Contains(err.Error(), "must be MOUNT/PATH") {
		t.Errorf("no mount: %v", err)
	}

	// An agent rewrites the token file: the next fetch reads it.
	old, _ := os.ReadFile(tokenFile)
	v.RevokeAll()
	_, _, err = src.Fetch(ctx, "secret/openai")
	if err == nil || !strings.Contains(err.Error(), "403 permission denied") {
		t.Fatalf("revoked token: %v", err)
	}
	mustNotHold(t, err, strings.TrimSpace(string(old)))
	if err := os.WriteFile(tokenFile, []byte(v.IssueToken(0)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := src.Fetch(ctx, "secret/openai"); err != nil {
		t.Fatalf("after the token file was rewritten: %v", err)
	}
}

func TestVaultKVCustomExpiresMustParse(t *testing.T) {
	v := fake.NewVault(t, 0)
	v.Put("secret/x", map[string]string{"k": "v"}, map[string]string{"expires": "next tuesday"})
	src, err := NewVaultKV(VaultKVOptions{Address: v.URL, CAFile: v.CAFile, TokenFile: writeFile(t, "token", v.IssueToken(0))})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = src.Fetch(context.Background(), "secret/x")
	if err == nil || !strings.Contains(err.Error(), "custom_metadata.expires") {
		t.Errorf("got %v, want an error about custom_metadata.expires", err)
	}
}

func TestVaultKVAppRoleRenewsAndLogsInAgain(t *testing.T) {
	v := fake.NewVault(t, time.Hour)
	v.EnableAppRole("role-1", "secret-id-1")
	v.Put("secret/openai", map[string]string{"api_key": "sk-1"}, nil)
	src, err := NewVaultKV(VaultKVOptions{Address: v.URL, CAFile: v.CAFile,
		Login: AppRoleLogin("approle", writeFile(t, "role", "role-1\n"), writeFile(t, "sid", "secret-id-1"))})
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Now()}
	src.now = clk.now
	ctx := context.Background()
	fetch := func() {
		t.Helper()
		if _, _, err := src.Fetch(ctx, "secret/openai"); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		fetch()
	}
	if v.Logins() != 1 || v.Renewals() != 0 {
		t.Fatalf("5 fetches: %d logins, %d renewals; want 1, 0", v.Logins(), v.Renewals())
	}
	clk.add(31 * time.Minute) // past half the lease: renew
	fetch()
	if v.Logins() != 1 || v.Renewals() != 1 {
		t.Fatalf("after half the lease: %d logins, %d renewals; want 1, 1", v.Logins(), v.Renewals())
	}
	v.SetRenewable(false)
	clk.add(31 * time.Minute) // renewal refused: log in again
	fetch()
	if v.Logins() != 2 {
		t.Fatalf("after a refused renewal: %d logins, want 2", v.Logins())
	}
	clk.add(2 * time.Hour) // lease over: log in without trying to renew
	fetch()
	if v.Logins() != 3 || v.Renewals() != 1 {
		t.Fatalf("after the lease ended: %d logins, %d renewals; want 3, 1", v.Logins(), v.Renewals())
	}
	v.RevokeAll() // the server forgets the token: log in again, once
	fetch()
	if v.Logins() != 4 {
		t.Fatalf("after a revocation: %d logins, want 4", v.Logins())
	}
}

func TestVaultKVAppRoleWrongSecretID(t *testing.T) {
	v := fake.NewVault(t, time.Hour)
	v.EnableAppRole("role-1", "secret-id-1")
	src, err := NewVaultKV(VaultKVOptions{Address: v.URL, CAFile: v.CAFile,
		Login: AppRoleLogin("approle", writeFile(t, "role", "role-1"), writeFile(t, "sid", "wrong-secret-id-9"))})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = src.Fetch(context.Background(), "secret/openai")
	if err == nil || !strings.Contains(err.Error(), "log in at auth/approle/login: 400 invalid role or secret ID") {
		t.Errorf("got %v", err)
	}
	mustNotHold(t, err, "wrong-secret-id-9", "role-1")
}

func TestVaultKVKubernetesAndNamespace(t *testing.T) {
	v := fake.NewVault(t, time.Hour)
	const jwt = "eyJhbGciOiJSUzI1NiJ9.sa-token.sig"
	v.EnableKubernetes("till", jwt)
	v.RequireNamespace("team/prod")
	v.Put("kv/anthropic", map[string]string{"key": "sk-ant-1"}, nil)
	jwtFile := writeFile(t, "token", jwt)
	opts := VaultKVOptions{Address: v.URL, CAFile: v.CAFile, Namespace: "team/prod", Login: KubernetesLogin("kubernetes", "till", jwtFile)}
	t.Setenv("VAULT_NAMESPACE", "elsewhere") // the config wins over the environment
	src, err := NewVaultKV(opts)
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := src.Fetch(context.Background(), "kv/anthropic")
	if err != nil || !strings.Contains(string(raw), "sk-ant-1") {
		t.Fatalf("got %v", err)
	}
	opts.Namespace = ""
	other, _ := NewVaultKV(opts)
	_, _, err = other.Fetch(context.Background(), "kv/anthropic")
	if err == nil {
		t.Error("without the namespace: fetched")
	}
	mustNotHold(t, err, jwt)
}

func TestVaultKVNeedsItsCA(t *testing.T) {
	v := fake.NewVault(t, 0)
	v.Put("secret/x", map[string]string{"k": "v"}, nil)
	src, err := NewVaultKV(VaultKVOptions{Address: v.URL, TokenFile: writeFile(t, "token", v.IssueToken(0))})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := src.Fetch(context.Background(), "secret/x"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without ca_file: %v, want a certificate error", err)
	}
	if _, err := NewVaultKV(VaultKVOptions{Address: v.URL, CAFile: filepath.Join(t.TempDir(), "none.pem")}); err == nil {
		t.Error("a missing ca_file was accepted")
	}
}

// A Vault that answers with a redirect gets its answer taken as an
// error: following it would carry the token to the other address.
func TestVaultKVNeverFollowsRedirects(t *testing.T) {
	var reached atomic.Bool
	other := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Store(true)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"data":{"data":{"k":"v"},"metadata":{}}}`))
	}))
	defer other.Close()
	vault := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	}))
	defer vault.Close()
	ca := writeFile(t, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: vault.Certificate().Raw})))
	const token = "hvs.redirect-test-token"
	src, err := NewVaultKV(VaultKVOptions{Address: vault.URL, CAFile: ca, TokenFile: writeFile(t, "token", token)})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = src.Fetch(context.Background(), "secret/x")
	if err == nil {
		t.Error("a redirect was followed to a value")
	}
	if reached.Load() {
		t.Error("the request reached the redirect's target")
	}
	mustNotHold(t, err, token)
}

// TestVaultKVRawErrorBodyStaysOut: an answer that is not Vault's JSON (a
// load balancer's or proxy's error page, a wrong address that echoes the
// request) never becomes the fetch error verbatim: the official client
// puts such a body whole into ResponseError.Errors (RawError), and the
// token the page shows would reach the log line written at every request
// of the route, and till check and secret list.
func TestVaultKVRawErrorBodyStaysOut(t *testing.T) {
	const token = "hvs.CAESIToken-that-must-stay-secret-1234"
	const secretID = "approle-secret-id-that-must-stay-secret"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		// An error page that shows the request it could not pass on.
		fmt.Fprintf(w, "<html><h1>502 Bad Gateway</h1>\n<pre>%s %s\nX-Vault-Token: %s\n\n%s</pre>\n%s</html>",
			r.Method, r.URL.Path, r.Header.Get("X-Vault-Token"), body, strings.Repeat("<!-- padding -->", 4096))
	}))
	defer srv.Close()

	check := func(what string, err error, secrets ...string) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: no error", what)
		}
		msg := err.Error()
		for _, s := range secrets {
			if strings.Contains(msg, s) {
				t.Errorf("%s: the error holds the credential %q: %.160q…", what, s, msg)
			}
		}
		if strings.Contains(msg, "\n") {
			t.Errorf("%s: error spans lines (%d of them)", what, strings.Count(msg, "\n")+1)
		}
		if len(msg) > 1024 {
			t.Errorf("%s: error is %d bytes: the whole page was copied into it", what, len(msg))
		}
	}

	src, err := NewVaultKV(VaultKVOptions{Address: srv.URL, TokenFile: writeFile(t, "token", token+"\n")})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = src.Fetch(context.Background(), "secret/openai")
	check("token_file read", err, token)

	src, err = NewVaultKV(VaultKVOptions{Address: srv.URL,
		Login: AppRoleLogin("approle", writeFile(t, "role", "role-id-1\n"), writeFile(t, "sid", secretID+"\n"))})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = src.Fetch(context.Background(), "secret/openai")
	check("approle login", err, secretID)
}

// TestVaultKVBodyIsCapped: maxRaw "caps what a source reads for one
// value ... never a file of any size", and files, exec and AWS refuse
// more than it; the Vault source reads a KV answer of any size into
// memory (then decodes and re-encodes it) and returns it. A Vault
// endpoint answering with a body of gigabytes takes till down with it.
func TestVaultKVBodyIsCapped(t *testing.T) {
	const total = 32 << 20
	var written atomic.Int64
	// Every request gets the huge answer: a fetch asks for the mount of
	// the path, then for the entry.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		head := `{"data":{"data":{"api_key":"`
		tail := `"},"metadata":{"created_time":"2024-01-01T00:00:00Z","version":1}}}`
		chunk := []byte(strings.Repeat("a", 64<<10))
		n, _ := io.WriteString(w, head)
		written.Add(int64(n))
		for written.Load() < total {
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return // the client stopped reading
			}
		}
		n, _ = io.WriteString(w, tail)
		written.Add(int64(n))
	}))
	defer srv.Close()
	src, err := NewVaultKV(VaultKVOptions{Address: srv.URL, TokenFile: writeFile(t, "token", "hvs.t\n")})
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := src.Fetch(context.Background(), "secret/openai")
	if err == nil {
		t.Errorf("a %d-byte answer was accepted: %d bytes returned (maxRaw is %d)", total, len(raw), maxRaw)
	}
	srv.CloseClientConnections()
	closed := make(chan struct{})
	go func() { srv.Close(); close(closed) }() // once every handler has ended
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("a handler did not end")
	}
	if w := written.Load(); w >= total {
		t.Errorf("the source read all %d bytes of the answer; it should stop after about %d", w, maxRaw)
	}
}

// TestVaultKVForbiddenPathKeepsTheLogin: Vault answers 403 both to a
// token it no longer knows and to a path no policy of a good token grants
// (a mistyped ref, a policy that lacks it). A new login cures the first
// only. Logging in again at every fetch of such a ref (one a second per
// ref while requests come) leaves Vault a new token each time, alive for
// its whole TTL, and uses up a secret id issued for a few uses, after
// which no ref of the source can be read at all.
func TestVaultKVForbiddenPathKeepsTheLogin(t *testing.T) {
	v := fake.NewVault(t, time.Hour)
	v.EnableAppRole("role-1", "secret-id-1")
	v.Put("secret/openai", map[string]string{"api_key": "sk-1"}, nil)
	v.Forbid("secret/other-team")
	src, err := NewVaultKV(VaultKVOptions{Address: v.URL, CAFile: v.CAFile,
		Login: AppRoleLogin("approle", writeFile(t, "role", "role-1"), writeFile(t, "sid", "secret-id-1"))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 10 {
		_, _, err := src.Fetch(ctx, "secret/other-team")
		if err == nil || !strings.Contains(err.Error(), "403 permission denied") {
			t.Fatalf("forbidden path: got %v, want 403 permission denied", err)
		}
	}
	if n := v.Logins(); n != 1 {
		t.Errorf("10 fetches of a path the policy forbids: %d logins, want 1", n)
	}
	if _, _, err := src.Fetch(ctx, "secret/openai"); err != nil {
		t.Fatalf("a permitted path after the refusals: %v", err)
	}
	// A token Vault no longer knows is still replaced at once.
	v.RevokeAll()
	if _, _, err := src.Fetch(ctx, "secret/openai"); err != nil {
		t.Fatalf("after a revocation: %v", err)
	}
	if n := v.Logins(); n != 2 {
		t.Errorf("after a revocation: %d logins, want 2", n)
	}
}

// TestVaultKVDeletedOrDestroyed: a current version deleted or destroyed
// (Vault answers 404 with its metadata and null data) cannot be fetched,
// and the error holds no earlier value; a new version is read again.
func TestVaultKVDeletedOrDestroyed(t *testing.T) {
	v := fake.NewVault(t, 0)
	v.Put("secret/x", map[string]string{"k": "sk-deleted-1"}, nil)
	src, err := NewVaultKV(VaultKVOptions{Address: v.URL, CAFile: v.CAFile, TokenFile: writeFile(t, "token", v.IssueToken(0))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, _, err := src.Fetch(ctx, "secret/x"); err != nil {
		t.Fatal(err)
	}
	for what, remove := range map[string]func(string){"deleted": v.Delete, "destroyed": v.Destroy} {
		remove("secret/x")
		raw, _, err := src.Fetch(ctx, "secret/x")
		if err == nil || !strings.Contains(err.Error(), "secret/x: the current version is deleted") || !errors.Is(err, ErrGone) {
			t.Errorf("%s: got %q, %v", what, raw, err)
		}
		mustNotHold(t, err, "sk-deleted-1")
		v.Put("secret/x", map[string]string{"k": "sk-deleted-1"}, nil)
		if _, _, err := src.Fetch(ctx, "secret/x"); err != nil {
			t.Errorf("%s, then a new version: %v", what, err)
		}
	}
}

// TestVaultKVMountWithSlashes: a ref's mount is the one Vault says its
// path is under, asked once per path: a mount may hold slashes
// (team/kv), and an entry under secret may too (secret/team/openai). A
// KV version 1 mount is refused, saying so; a path under no mount is no
// such secret.
func TestVaultKVMountWithSlashes(t *testing.T) {
	v := fake.NewVault(t, 0)
	v.Mount("team/kv", 2)
	v.Mount("legacy", 1)
	v.Put("team/kv/openai", map[string]string{"api_key": "sk-nested-1"}, nil)
	v.Put("secret/team/openai", map[string]string{"api_key": "sk-nested-2"}, nil)
	src, err := NewVaultKV(VaultKVOptions{Address: v.URL, CAFile: v.CAFile, TokenFile: writeFile(t, "token", v.IssueToken(0))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for path, want := range map[string]string{"team/kv/openai": "sk-nested-1", "secret/team/openai": "sk-nested-2"} {
		for range 2 {
			raw, _, err := src.Fetch(ctx, path)
			if err != nil || !strings.Contains(string(raw), want) {
				t.Errorf("%s: got %q, %v", path, raw, err)
			}
		}
	}
	if n := v.MountLookups(); n != 2 {
		t.Errorf("%d mount lookups for two paths fetched twice each, want 2", n)
	}
	_, _, err = src.Fetch(ctx, "legacy/app/key")
	if err == nil || !strings.Contains(err.Error(), `legacy is a kv mount (options.version "1"): till reads KV version 2 only`) || errors.Is(err, ErrGone) {
		t.Errorf("KV v1 mount: %v", err)
	}
	if _, _, err := src.Fetch(ctx, "nowhere/app/key"); !errors.Is(err, ErrGone) {
		t.Errorf("a path under no mount: %v, want no such secret", err)
	}
}

// TestVaultKVFieldsThatCannotBeSent: a field with a line break (a header
// it would split) or an empty one is refused, naming the field, never
// its value.
func TestVaultKVFieldsThatCannotBeSent(t *testing.T) {
	v := fake.NewVault(t, 0)
	v.Put("secret/x", map[string]string{"split": "sk-split-1\r\nX-Evil: 1", "empty": ""}, nil)
	src, err := NewVaultKV(VaultKVOptions{Address: v.URL, CAFile: v.CAFile, TokenFile: writeFile(t, "token", v.IssueToken(0))})
	if err != nil {
		t.Fatal(err)
	}
	c := NewCache(map[string]Spec{"corp": {Source: src, TTL: time.Minute}}, Options{})
	for _, field := range []string{"split", "empty"} {
		_, err := c.Get(context.Background(), "corp:secret/x#"+field)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("field %q: not a usable value", field)) {
			t.Errorf("#%s: got %v", field, err)
		}
		mustNotHold(t, err, "sk-split-1", "X-Evil")
	}
}

// TestVaultKVIgnoresItsEnvironment: the official client reads VAULT_*
// variables by itself. None of them may point the source at another
// server, turn certificate checks off, or lend it another token: the
// config says where Vault is and how it is trusted.
func TestVaultKVIgnoresItsEnvironment(t *testing.T) {
	v := fake.NewVault(t, 0)
	v.Put("secret/x", map[string]string{"k": "sk-configured"}, nil)
	other := fake.NewVault(t, 0)
	other.Put("secret/x", map[string]string{"k": "sk-from-the-environment"}, nil)
	t.Setenv("VAULT_ADDR", other.URL)
	t.Setenv("VAULT_AGENT_ADDR", other.URL)
	t.Setenv("VAULT_SKIP_VERIFY", "true")
	t.Setenv("VAULT_CACERT", other.CAFile)
	t.Setenv("VAULT_TOKEN", other.IssueToken(0))
	t.Setenv("VAULT_DISABLE_REDIRECTS", "false")
	token := writeFile(t, "token", v.IssueToken(0))

	src, err := NewVaultKV(VaultKVOptions{Address: v.URL, TokenFile: token})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := src.Fetch(context.Background(), "secret/x"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without ca_file, VAULT_SKIP_VERIFY and VAULT_CACERT set: %v, want a certificate error", err)
	}
	src, err = NewVaultKV(VaultKVOptions{Address: v.URL, CAFile: v.CAFile, TokenFile: token})
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := src.Fetch(context.Background(), "secret/x")
	if err != nil || !strings.Contains(string(raw), "sk-configured") {
		t.Errorf("got %q, %v; want the configured server's value", raw, err)
	}
	if n := other.Reads("secret/x") + other.Refused(); n != 0 {
		t.Errorf("the server in VAULT_ADDR got %d requests", n)
	}
}

// TestVaultKVFileTooLarge: a credential file or ca_file larger than any
// of its kind is refused, naming the file and its limit.
func TestVaultKVFileTooLarge(t *testing.T) {
	for name, tt := range map[string]struct {
		size int64
		read func(path string) error
		want string
	}{
		"credential": {maxCredentialFile + 1, func(path string) error { _, err := readCredential(path, "token"); return err },
			"read the token file: %s is larger than 64 KiB: is it the right file?"},
		"ca_file": {maxCAFile + 1, func(path string) error {
			_, err := NewVaultKV(VaultKVOptions{Address: "https://127.0.0.1:1", CAFile: path})
			return err
		}, "vault source ca_file: %s is larger than 1 MiB: is it the right file?"},
	} {
		t.Run(name, func(t *testing.T) {
			path := regfiletest.Sized(t, tt.size)
			if err, want := tt.read(path), fmt.Sprintf(tt.want, path); err == nil || err.Error() != want {
				t.Errorf("got %v, want %q", err, want)
			}
		})
	}
}

// TestVaultKVStandbyRedirectIsNoDeletion: an HA standby that cannot
// forward a request answers 307 to the active node, with no body. That
// is the server failing till (which follows no redirect), not the entry
// gone from it: the fetch fails as in an outage, so the last value
// stands in for failure_ttl rather than being dropped as revoked, and the
// error says what happened, not "no such secret".
func TestVaultKVStandbyRedirectIsNoDeletion(t *testing.T) {
	v, src, token, clk, get := cachedVaultValue(t, "sk-vault-standby-1")
	v.SetStandby("https://vault-active.invalid:8200")
	_, _, err := src.Fetch(context.Background(), "secret/openai")
	if err == nil || errors.Is(err, ErrGone) || !strings.Contains(err.Error(), "307") {
		t.Errorf("a standby's redirect: got %v, want a failure naming the 307, not ErrGone", err)
	}
	mustNotHold(t, err, token, "vault-active.invalid")
	clk.add(2 * time.Minute)
	if got, stale, err := get(); err != nil || got != "sk-vault-standby-1" || !stale {
		t.Errorf("past ttl, the standby redirecting: got %q stale=%v err=%v, want the last value, stale", got, stale, err)
	}
}

// cachedVaultValue serves value at secret/openai from a fake Vault, and
// has a cache (ttl a minute, failure_ttl an hour, on clk) read it once
// through get, as corp:secret/openai.
func cachedVaultValue(t *testing.T, value string) (v *fake.Vault, src *VaultKV, token string, clk *clock, get func() (string, bool, error)) {
	t.Helper()
	v = fake.NewVault(t, 0)
	v.Put("secret/openai", map[string]string{"api_key": value}, nil)
	token = v.IssueToken(0)
	src, err := NewVaultKV(VaultKVOptions{Address: v.URL, CAFile: v.CAFile, TokenFile: writeFile(t, "token", token)})
	if err != nil {
		t.Fatal(err)
	}
	clk = &clock{t: time.Unix(1_700_000_000, 0)}
	c := NewCache(map[string]Spec{"corp": {Source: src, TTL: time.Minute, FailureTTL: time.Hour}}, Options{Now: clk.now})
	get = getter(c, "corp:secret/openai")
	if got, _, err := get(); err != nil || got != value {
		t.Fatalf("got %q, %v", got, err)
	}
	return v, src, token, clk, get
}

// TestVaultKVAnswerNotVaultsIsNoDeletion: only Vault's own "not found" (a
// 404 with its {"errors": [...]}) or a version it says is deleted or
// destroyed takes a value for revoked. An answer of something in front of
// Vault (a load balancer's empty 200, a 204, a 404 page, an empty 404, a
// JSON document that is not Vault's), which the official client reads as
// no secret, is a failure as in an outage: the last value stands in for
// failure_ttl, and the error says what answered, never "no such secret".
func TestVaultKVAnswerNotVaultsIsNoDeletion(t *testing.T) {
	v, src, token, clk, get := cachedVaultValue(t, "sk-vault-front-1")
	for _, a := range []struct {
		code int
		body string
	}{
		{200, ""}, {204, ""}, {404, ""}, {404, "<html><body>404 Not Found</body></html>"},
		{404, "{}"}, {404, `{"message": "no route"}`}, {404, `{"errors": "not found"}`}, {404, "null"},
		{200, "{}"}, {200, `{"errors": []}`}, {200, `{"data": {}}`}, {200, `{"data": {"data": null}}`},
		{404, `{"data": {"data": null, "metadata": {"deletion_time": "", "destroyed": false}}}`},
	} {
		v.SetFront(0, "")
		clk.add(2 * time.Minute)
		if got, stale, err := get(); err != nil || got != "sk-vault-front-1" || stale {
			t.Fatalf("Vault again: got %q stale=%v err=%v", got, stale, err)
		}
		v.SetFront(a.code, a.body)
		_, _, err := src.Fetch(context.Background(), "secret/openai")
		if err == nil || errors.Is(err, ErrGone) || strings.Contains(err.Error(), "no such secret") || strings.Contains(err.Error(), "deleted") {
			t.Errorf("%d %q: got %v, want a failure like an outage, not ErrGone", a.code, a.body, err)
		}
		mustNotHold(t, err, token, "<html>")
		clk.add(2 * time.Minute)
		if got, stale, err := get(); err != nil || got != "sk-vault-front-1" || !stale {
			t.Errorf("%d %q past ttl: got %q stale=%v err=%v, want the last value, stale", a.code, a.body, got, stale, err)
		}
	}
	// Vault's own answers still revoke.
	v.SetFront(0, "")
	if _, _, err := src.Fetch(context.Background(), "secret/openai"); err != nil {
		t.Fatalf("Vault again: %v", err)
	}
	if _, _, err := src.Fetch(context.Background(), "secret/absent"); !errors.Is(err, ErrGone) {
		t.Errorf("Vault's 404: got %v, want ErrGone", err)
	}
	v.Delete("secret/openai")
	if _, _, err := src.Fetch(context.Background(), "secret/openai"); !errors.Is(err, ErrGone) {
		t.Errorf("a deleted version: got %v, want ErrGone", err)
	}
}

// TestVaultKVErrorQuotingTheCredentialStaysOut: an answer in Vault's own
// shape ({"errors": [...]}) whose words quote what till sent as a
// credential (the token, a login's secret id, role id or service-account
// JWT), whole, encoded or in part, as something at Vault's address may
// that echoes the request it refused, has its words left out of the
// fetch error, which is logged at every request of the route and printed
// by till check and till test. Its status stays, and words that quote
// nothing sent stay too.
func TestVaultKVErrorQuotingTheCredentialStaysOut(t *testing.T) {
	const token = "hvs.CAESIToken-quoted-back-by-the-server-1234"
	const roleID = "approle-role-id-quoted-back-5678"
	const secretID = "approle-secret-id-quoted-back-9012"
	const jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0aWxsIn0.service-account-signature-3456"
	var how atomic.Value
	how.Store("whole")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		sent := r.Header.Get("X-Vault-Token") + " " + string(body)
		var msgs []string
		switch how.Load() {
		case "whole":
			msgs = []string{"permission denied for " + sent}
		case "encoded":
			msgs = []string{"request " + base64.StdEncoding.EncodeToString([]byte("x"+sent)) + " refused"}
		case "part":
			var creds map[string]string
			_ = json.Unmarshal(body, &creds)
			for _, c := range []string{r.Header.Get("X-Vault-Token"), creds["role_id"], creds["secret_id"], creds["jwt"]} {
				if len(c) > 16 {
					msgs = append(msgs, "unknown credential "+c[4:16]+"…")
				}
			}
		case "plain":
			msgs = []string{"permission denied"}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_ = json.NewEncoder(w).Encode(map[string][]string{"errors": msgs})
	}))
	defer srv.Close()

	sources := map[string]VaultKVOptions{
		"token_file": {TokenFile: writeFile(t, "token", token+"\n")},
		"approle":    {Login: AppRoleLogin("approle", writeFile(t, "role", roleID), writeFile(t, "sid", secretID))},
		"kubernetes": {Login: KubernetesLogin("kubernetes", "till", writeFile(t, "jwt", jwt))},
	}
	for name, opts := range sources {
		opts.Address = srv.URL
		src, err := NewVaultKV(opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range []string{"whole", "encoded", "part"} {
			how.Store(h)
			_, _, err := src.Fetch(context.Background(), "secret/openai")
			if err == nil || !strings.Contains(err.Error(), "403 Forbidden") {
				t.Errorf("%s, quoted %s: got %v, want the status, 403 Forbidden", name, h, err)
			}
			for _, words := range []string{"denied for", "refused", "unknown credential"} {
				if err != nil && strings.Contains(err.Error(), words) {
					t.Errorf("%s, quoted %s: the error holds the answer's words, which quote a credential: %q", name, h, err)
				}
			}
			// Nor does it keep the client's error, answer whole, for
			// a caller to dig out and print.
			if re := (*api.ResponseError)(nil); errors.As(err, &re) {
				t.Errorf("%s, quoted %s: the error wraps the client's, which holds the answer: %v", name, h, re)
			}
		}
		how.Store("plain")
		if _, _, err := src.Fetch(context.Background(), "secret/openai"); err == nil || !strings.Contains(err.Error(), "403 permission denied") {
			t.Errorf("%s, Vault's own words: got %v, want them kept", name, err)
		}
	}
}
