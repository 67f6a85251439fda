package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy"
	"github.com/tillgw/till/reload"
	"github.com/tillgw/till/vault/source"
)

// TestReloadRenamedSource: while a reload that renames a source builds
// its snapshot, the snapshot still serving reads its refs with the
// source's old name; once the new one serves (commit), only the new name
// is read.
func TestReloadRenamedSource(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "key"), []byte("sk-files-0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgWith := func(name string) *config.Config {
		y := "version: 1\nsources:\n  - {name: " + name + ", type: files, dir: " + dir + "}\nroutes:\n  - {name: api, upstream: https://api.example.com, secret: \"" + name + ":key\", inject: {header: X-Api-Key}}\n"
		cfg, err := config.Parse(filepath.Join(dir, "till.yaml"), []byte(y), dir)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	k, err := newSourceKeys(cfgWith("one"), zerolog.Nop(), proxy.NewMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	get := func(ref string) error {
		_, err := k.cache.GetAs(context.Background(), ref, source.FormValue)
		return err
	}
	if _, err := k.forConfig(cfgWith("two")); err != nil {
		t.Fatal(err)
	}
	if err := get("one:key"); err != nil {
		t.Errorf("during the reload, the serving snapshot's ref: %v", err)
	}
	if err := get("two:key"); err != nil {
		t.Errorf("during the reload, the new snapshot's ref: %v", err)
	}
	k.commit()
	if err := get("one:key"); !errors.Is(err, source.ErrUnavailable) {
		t.Errorf("after the reload, the old name's ref: %v, want it unavailable", err)
	}
	if err := get("two:key"); err != nil {
		t.Errorf("after the reload: %v", err)
	}
}

// TestCheckFetchesEveryPoolMember: till check and till secret list fetch
// every ref a route uses, each member of a key pool, not only its first:
// a pool member that cannot be fetched fails check, named.
func TestCheckFetchesEveryPoolMember(t *testing.T) {
	c := newCLI(t)
	keys := filepath.Join(c.dir, "keys")
	if err := os.Mkdir(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keys, "a"), []byte("sk-files-0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	y := "version: 1\nsources:\n  - {name: m, type: files, dir: keys}\nroutes:\n" +
		"  - {name: api, upstream: https://api.example.com, secret: [\"m:a\", \"m:missing\"], inject: {header: X-Api-Key}}\n"
	if err := os.WriteFile(filepath.Join(c.dir, "till.yaml"), []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := c.run("", "check")
	if code != 1 || !strings.Contains(errOut, `secret "m:missing" (source "m") cannot be fetched`) {
		t.Errorf("check: exit %d, stderr %q; want exit 1 naming m:missing", code, errOut)
	}
	if strings.Contains(errOut, `"m:a"`) {
		t.Errorf("check reports the member that can be fetched: %q", errOut)
	}
	out := c.must("", "secret", "list", "--json")
	var rows []struct{ Name, Status string }
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatal(err)
	}
	status := map[string]string{}
	for _, r := range rows {
		status[r.Name] = r.Status
	}
	if status["m:a"] != "ok" || status["m:missing"] != "unavailable" {
		t.Errorf("secret list: got %v, want m:a ok and m:missing unavailable", status)
	}
}

// TestCheckSourcedFields: an entry read as fields may hold fields the
// route does not read (an "Owner", a "rotated_at" number): check passes;
// a field the route needs that is missing or not a string fails check,
// named, as serve would refuse the route.
func TestCheckSourcedFields(t *testing.T) {
	for _, tt := range []struct {
		name, doc string
		want      string // "" for exit 0
	}{
		{"metadata beside the credential", `{"client_id":"app","client_secret":"s3cret-0123456789","Owner":"team-a","rotated_at":1700000000}`, ""},
		{"needed field not a string", `{"client_id":"app","client_secret":987654321987,"Owner":"team-a"}`,
			`route "api": secret "m:app.json": oauth2 needs a secret with the fields client_id and client_secret: field "client_secret" is missing or not a string`},
		{"needed field missing", `{"client_id":"app","Owner":"team-a"}`, `field "client_secret" is missing or not a string`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newCLI(t)
			if err := os.Mkdir(filepath.Join(c.dir, "keys"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(c.dir, "keys", "app.json"), []byte(tt.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			y := "version: 1\nsources:\n  - {name: m, type: files, dir: keys}\nroutes:\n" +
				"  - {name: api, upstream: https://api.example.com, secret: \"m:app.json\", inject: {oauth2: {token_url: https://login.example.com/token}}}\n"
			if err := os.WriteFile(filepath.Join(c.dir, "till.yaml"), []byte(y), 0o600); err != nil {
				t.Fatal(err)
			}
			_, errOut, code := c.run("", "check")
			if strings.Contains(errOut, "s3cret") || strings.Contains(errOut, "987654321987") {
				t.Fatal("check's output holds a value")
			}
			switch {
			case tt.want == "" && code != 0:
				t.Errorf("check: exit %d, stderr %q; want exit 0", code, errOut)
			case tt.want != "" && (code != 1 || !strings.Contains(errOut, tt.want)):
				t.Errorf("check: exit %d, stderr %q; want exit 1 and %q", code, errOut, tt.want)
			}
		})
	}
}

// TestTestSaysWhetherCached: till test names a route's ref and whether
// the running till's cache holds it, as its admin listener tells (till
// test's own fetch, in a process of its own, says nothing of that), in
// its text and in its --json output; and says so when no running till
// answers.
func TestTestSaysWhetherCached(t *testing.T) {
	c := newCLI(t)
	if err := os.Mkdir(filepath.Join(c.dir, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(c.dir, "keys", "a"), []byte("sk-files-0123456789abcdef"), 0o600)
	var answer atomic.Value
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/admin/routes" || r.Header.Get("Authorization") != "Bearer admin-token" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, answer.Load().(string))
	}))
	defer admin.Close()
	y := "version: 1\nadmin: {listen: \"" + admin.Listener.Addr().String() + "\", token_sha256: " + sha256Hex("admin-token") + "}\nsources:\n  - {name: m, type: files, dir: keys}\nroutes:\n" +
		"  - {name: api, upstream: https://api.example.com, secret: \"m:a\", inject: {header: X-Api-Key}}\n"
	os.WriteFile(filepath.Join(c.dir, "till.yaml"), []byte(y), 0o600)
	c.env["TILL_ADMIN_TOKEN"] = "admin-token"
	for _, tt := range []struct{ answer, want string }{
		{`[{"name":"api","cached":true,"fetched":"2026-12-04T10:00:00Z"}]`, "cached:   yes, by the running till, fetched 2026-12-04T10:00:00Z\n"},
		{`[{"name":"api","cached":false}]`, "cached:   no: the running till has not fetched it yet\n"},
		{`[{"name":"other","cached":true}]`, "cached:   unknown: the running till does not say"},
	} {
		answer.Store(tt.answer)
		if out := c.must("", "test", "GET", "/api/x"); !strings.Contains(out, "secret:   m:a (sha256:") || !strings.Contains(out, tt.want) {
			t.Errorf("admin answering %s: till test printed\n%s", tt.answer, out)
		}
		var v struct{ Secret, Cached string }
		if err := json.Unmarshal([]byte(c.must("", "test", "--json", "GET", "/api/x")), &v); err != nil {
			t.Fatal(err)
		}
		if want := strings.TrimSuffix(strings.TrimPrefix(tt.want, "cached:   "), "\n"); v.Secret != "m:a" || !strings.HasPrefix(v.Cached, want) {
			t.Errorf("admin answering %s: till test --json gave secret %q, cached %q; want m:a, %q", tt.answer, v.Secret, v.Cached, want)
		}
	}
	admin.Close()
	if out := c.must("", "test", "GET", "/api/x"); !strings.Contains(out, "cached:   unknown: http://"+admin.Listener.Addr().String()+"/admin/routes: ") {
		t.Errorf("no running till: till test printed\n%s", out)
	}
}

// TestShortSourcedKeyWarned: a key fetched from a source that is shorter
// than proxy.MinEchoLength, whose echo the filter does not look for on
// its own, is warned of as one in the vault is: by check, naming the ref
// and its source, and in serve's log when its value is fetched. One long
// enough is not. Caught: only vault secrets were warned of.
func TestShortSourcedKeyWarned(t *testing.T) {
	c := newCLI(t)
	keys := filepath.Join(c.dir, "keys")
	if err := os.Mkdir(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, value := range map[string]string{"short": "abc123", "long": "sk-files-0123456789abcdef"} {
		if err := os.WriteFile(filepath.Join(keys, name), []byte(value), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	y := "version: 1\nsources:\n  - {name: m, type: files, dir: keys}\nroutes:\n" +
		"  - {name: a, upstream: https://a.example.com, secret: \"m:short\", inject: {header: X-Api-Key}}\n" +
		"  - {name: b, upstream: https://b.example.com, secret: \"m:long\", inject: {header: X-Api-Key}}\n"
	if err := os.WriteFile(filepath.Join(c.dir, "till.yaml"), []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := c.run("", "check")
	if code != 0 || !strings.Contains(errOut, `till: warning: secret "m:short" (source "m") is a key shorter than 8 characters`) || strings.Contains(errOut, `"m:long"`) {
		t.Errorf("check: exit %d, stderr %q; want exit 0 and a warning of m:short alone", code, errOut)
	}

	cfg, err := config.Parse(filepath.Join(c.dir, "till.yaml"), []byte(y), c.dir)
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	k, err := newSourceKeys(cfg, zerolog.New(&log), proxy.NewMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"m:short", "m:long"} {
		if _, err := k.cache.GetAs(context.Background(), ref, source.FormValue); err != nil {
			t.Fatal(err)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(log.String()), "\n") {
		short := strings.Contains(line, `"secret":"m:short"`)
		if got := strings.Contains(line, `"level":"warn"`) && strings.Contains(line, reload.ShortKeyWarning); got != short {
			t.Errorf("serve's log warns of a short key: %v, want %v:\n%s", got, short, line)
		}
	}
	if !strings.Contains(log.String(), `"secret":"m:short"`) {
		t.Errorf("serve's log says nothing of m:short's fetch: %s", log.String())
	}
}
