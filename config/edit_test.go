package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tillgw/till/internal/atomicfile"
)

func TestRemoveClient(t *testing.T) {
	const two = "version: 1\n# clients below\nclients:\n  - name: old # leaving\n    token_sha256: " + testHash + "\n  - name: web\n    token_sha256: " + testHash + "\n"
	tests := []struct {
		name    string
		yaml    string
		client  string
		want    string
		wantErr string
	}{
		{name: "one of two", yaml: two, client: "old",
			want: "version: 1\n# clients below\nclients:\n  - name: web\n    token_sha256: " + testHash + "\n"},
		{name: "the last one takes the list", yaml: "version: 1\nclients:\n  - name: web\n    token_sha256: " + testHash + "\nlisten: 127.0.0.1:8080\n", client: "web",
			want: "version: 1\nlisten: 127.0.0.1:8080\n"},
		{name: "flow style", yaml: "version: 1\nclients: [{name: a, token_sha256: " + testHash + "}, {name: b, token_sha256: " + testHash + "}]\n", client: "a",
			want: "version: 1\nclients: [{name: b, token_sha256: " + testHash + "}]\n"},
		{name: "unknown client", yaml: two, client: "nobody", wantErr: `till.yaml: no client "nobody"`},
		{name: "no clients list", yaml: "version: 1\n", client: "web", wantErr: `till.yaml: no client "web"`},
		{name: "not a mapping", yaml: "- a\n", client: "web", wantErr: "till.yaml: not a YAML mapping"},
		{name: "route still names it", yaml: two + "routes:\n  - {name: openai, preset: openai, clients: [old]}\n", client: "old",
			wantErr: "with this change the config would not parse: till.yaml:7: routes[0].clients[0]: unknown client \"old\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RemoveClient("till.yaml", []byte(tt.yaml), tt.client)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestSetClientToken: a rotation replaces only the client's digest; its
// cidrs, cert, the other clients, the routes naming it and the comments
// stay.
func TestSetClientToken(t *testing.T) {
	newHash := strings.Repeat("ab", 32)
	const two = "version: 1\ntls: {names: [till.internal]}\n# clients below\nclients:\n  - name: web # the web app\n    token_sha256: \"" + testHash + "\" # rotated 2026\n    cidrs: [10.0.0.0/8]\n    cert: true\n  - name: batch\n    token_sha256: " + testHash + "\nroutes:\n  - {name: openai, preset: openai, clients: [web]}\n"
	tests := []struct {
		name, yaml, client, want, wantErr string
	}{
		{name: "block style", yaml: two, client: "web",
			want: "version: 1\ntls: {names: [till.internal]}\n# clients below\nclients:\n  - name: web # the web app\n    token_sha256: \"" + newHash + "\" # rotated 2026\n    cidrs: [10.0.0.0/8]\n    cert: true\n  - name: batch\n    token_sha256: " + testHash + "\nroutes:\n  - {name: openai, preset: openai, clients: [web]}\n"},
		{name: "flow style", yaml: "version: 1\nclients: [{name: a, token_sha256: " + testHash + "}, {name: b, token_sha256: " + testHash + "}]\n", client: "b",
			want: "version: 1\nclients: [{name: a, token_sha256: " + testHash + "}, {name: b, token_sha256: " + newHash + "}]\n"},
		{name: "unknown client", yaml: two, client: "nobody", wantErr: `till.yaml: no client "nobody"`},
		{name: "no clients list", yaml: "version: 1\n", client: "web", wantErr: `till.yaml: no client "web"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SetClientToken("till.yaml", []byte(tt.yaml), tt.client, newHash)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestClientRoutes(t *testing.T) {
	c := &Config{Routes: []Route{
		{Name: "openai", Clients: []string{"web", "batch"}},
		{Name: "open"},
		{Name: "anthropic", Clients: []string{"web"}},
	}, Budgets: []Budget{{Name: "daily", Clients: []string{"batch"}}}}
	if got := c.ClientBudgets("batch"); !slices.Equal(got, []string{"daily"}) {
		t.Errorf("ClientBudgets(batch) = %q, want [daily]", got)
	}
	if got := c.ClientBudgets("web"); got != nil {
		t.Errorf("ClientBudgets(web) = %q, want none", got)
	}
	tests := []struct {
		client string
		want   []string
	}{
		{"web", []string{"openai", "anthropic"}},
		{"batch", []string{"openai"}},
		{"nobody", nil},
	}
	for _, tt := range tests {
		t.Run(tt.client, func(t *testing.T) {
			if got := c.ClientRoutes(tt.client); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAddClient(t *testing.T) {
	web := Client{Name: "web", TokenSHA256: testHash}
	tests := []struct {
		name    string
		yaml    string
		client  Client
		want    string
		wantErr string
	}{
		{name: "to a list", yaml: "version: 1\n# clients below\nclients:\n  - name: old # staying\n    token_sha256: " + otherHash + "\n", client: web,
			want: "version: 1\n# clients below\nclients:\n  - name: old # staying\n    token_sha256: " + otherHash + "\n  - name: web\n    token_sha256: " + testHash + "\n"},
		{name: "no list: before routes", yaml: "version: 1\ntls: {names: [till.internal]}\nroutes:\n  - {name: openai, preset: openai}\n",
			client: Client{Name: "web", TokenSHA256: testHash, CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}, Cert: true},
			want:   "version: 1\ntls: {names: [till.internal]}\nclients:\n  - name: web\n    token_sha256: " + testHash + "\n    cidrs: [10.0.0.0/8, '::1/128']\n    cert: true\nroutes:\n  - {name: openai, preset: openai}\n"},
		{name: "no list, no routes: at the end", yaml: "version: 1 # v\n", client: web,
			want: "version: 1 # v\nclients:\n  - name: web\n    token_sha256: " + testHash + "\n"},
		{name: "the commented example stays above", yaml: "version: 1\n\n# clients:\n#   - name: web\nroutes: []\n", client: web,
			want: "version: 1\n\n# clients:\n#   - name: web\nclients:\n  - name: web\n    token_sha256: " + testHash + "\nroutes: []\n"},
		{name: "empty key", yaml: "version: 1\nclients: # none yet\n", client: web,
			want: "version: 1\nclients: # none yet\n  - name: web\n    token_sha256: " + testHash + "\n"},
		{name: "flow entries", yaml: "version: 1\nclients:\n    -   {name: a, token_sha256: " + otherHash + "}   # a\n\nroutes: []\n", client: web,
			want: "version: 1\nclients:\n    -   {name: a, token_sha256: " + otherHash + "}   # a\n    -   {name: web, token_sha256: " + testHash + "}\n\nroutes: []\n"},
		{name: "flow style", yaml: "version: 1\nclients: [{name: a, token_sha256: " + otherHash + "}]\n", client: web,
			want: "version: 1\nclients: [{name: a, token_sha256: " + otherHash + "}, {name: web, token_sha256: " + testHash + "}]\n"},
		{name: "a name taken", yaml: "version: 1\nclients:\n  - name: web\n    token_sha256: " + testHash + "\n", client: web,
			wantErr: "with this change the config would not parse: till.yaml:5: clients[1].name: duplicate"},
		{name: "not a list", yaml: "version: 1\nclients: web\n", client: web, wantErr: "till.yaml: clients: is not a list"},
		{name: "not a mapping", yaml: "- a\n", client: web, wantErr: "till.yaml: not a YAML mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AddClient("till.yaml", []byte(tt.yaml), tt.client)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestEditsKeepTheLayout: adding, rotating and removing a client in the
// file till init writes changes only the client's lines: the comments'
// columns, the blank lines and the rest stay byte for byte, and removing
// what was added gives the file back.
func TestEditsKeepTheLayout(t *testing.T) {
	start := StarterConfig()
	cidr := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	added, err := AddClient("till.yaml", start, Client{Name: "web", TokenSHA256: testHash, CIDRs: cidr})
	if err != nil {
		t.Fatal(err)
	}
	added, err = AddClient("till.yaml", added, Client{Name: "batch", TokenSHA256: otherHash})
	if err != nil {
		t.Fatal(err)
	}
	want := "clients:\n  - name: web\n    token_sha256: " + testHash + "\n    cidrs: [10.0.0.0/8]\n  - name: batch\n    token_sha256: " + otherHash + "\nroutes: []"
	if before, after, ok := strings.Cut(string(added), want); !ok || before+"routes: []"+after != string(start) {
		t.Fatalf("added two clients; want only these lines before routes: [] added:\n%s\ngot:\n%s", want, added)
	}
	newHash := strings.Repeat("ab", 32)
	rotated, err := SetClientToken("till.yaml", added, "web", newHash)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Replace(string(rotated), newHash, testHash, 1); got != string(added) {
		t.Errorf("a rotation changed more than the digest:\n%s", rotated)
	}
	for _, name := range []string{"web", "batch"} {
		if rotated, err = RemoveClient("till.yaml", rotated, name); err != nil {
			t.Fatal(err)
		}
	}
	if string(rotated) != string(start) {
		t.Errorf("removing the clients added did not give the file back:\n%s", rotated)
	}
}

// TestEditsAfterOtherLineBreaks: YAML also breaks lines at a lone CR, NEL,
// U+2028 and U+2029. Before an entry, they move the lines yaml.v3 reports
// away from the lines of the text: every edit still changes its client
// and nothing else (removing "old" once deleted a route's only clients:
// entry instead, which opened the route to every caller).
func TestEditsAfterOtherLineBreaks(t *testing.T) {
	other := strings.Repeat("ab", 32)
	for _, br := range []string{"\r", "\u0085", "\u2028", "\u2029"} {
		in := []byte("version: 1\nclients:\n" +
			"    - {name: web, token_sha256: " + testHash + "} # web app" + strings.Repeat(br, 5) + " \n" +
			"    - {name: old, token_sha256: " + otherHash + "}\n" +
			"routes:\n  - name: openai\n    preset: openai\n    clients:\n    - web\n")
		before, err := Parse("till.yaml", in, "/etc/till")
		if err != nil {
			t.Fatalf("%q: %v", br, err)
		}
		check := func(edit string, out []byte, err error, clients ...string) *Config {
			t.Helper()
			if err != nil {
				t.Fatalf("%q: %s: %v", br, edit, err)
			}
			after, err := Parse("till.yaml", out, "/etc/till")
			if err != nil {
				t.Fatalf("%q: %s: %v", br, edit, err)
			}
			var names []string
			for _, c := range after.Clients {
				names = append(names, c.Name)
			}
			if !slices.Equal(names, clients) || clientless(after) != clientless(before) {
				t.Errorf("%q: %s: clients %v, routes %+v; want clients %v and the routes as they were:\n%q", br, edit, names, after.Routes[0].Clients, clients, out)
			}
			return after
		}
		out, err := RemoveClient("till.yaml", in, "old")
		check("rm old", out, err, "web")
		out, err = SetClientToken("till.yaml", in, "old", other)
		if c := check("rotate old", out, err, "web", "old"); c.Clients[1].TokenSHA256 != other || c.Clients[0].TokenSHA256 != testHash {
			t.Errorf("%q: rotate old: got digests %s, %s", br, c.Clients[0].TokenSHA256, c.Clients[1].TokenSHA256)
		}
		out, err = AddClient("till.yaml", in, Client{Name: "new", TokenSHA256: other})
		check("add new", out, err, "web", "old", "new")
	}
}

// TestEditFileConcurrent: edits at once, also from other processes, take
// turns: every one lands on the result of the one before (none is lost),
// the file keeps its mode, and no temp file is left.
func TestEditFileConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "till.yaml")
	const base = "version: 1\n"
	if err := os.WriteFile(path, []byte(base), 0o640); err != nil {
		t.Fatal(err)
	}
	line := func(i int) string { return "# edit " + strings.Repeat(strconv.Itoa(i%10), 4000) + "\n" }
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			err := EditFile(path, func(b []byte) ([]byte, error) {
				runtime.Gosched() // let the others read the same file, were they not waiting
				return append(b, line(i)...), nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(got), base) || len(got) != len(base)+40*len(line(0)) {
		t.Errorf("the config has %d bytes, want %d: an edit was lost or mixed", len(got), len(base)+40*len(line(0)))
	}
	for i := range 10 {
		if n := strings.Count(string(got), line(i)); n != 4 {
			t.Errorf("edit %d appears %d times, want 4", i, n)
		}
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", st.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".till.yaml.*")); len(left) > 0 {
		t.Errorf("temp files left: %v", left)
	}
}

// TestEditFileLocked: an edit waits for the one in progress and, when it
// does not finish in time, fails saying so, leaving the file as it was.
func TestEditFileLocked(t *testing.T) {
	old := editLockTimeout
	editLockTimeout = 100 * time.Millisecond
	t.Cleanup(func() { editLockTimeout = old })
	path := filepath.Join(t.TempDir(), "till.yaml")
	if err := os.WriteFile(path, []byte("version: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	held := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error)
	go func() {
		done <- EditFile(path, func(b []byte) ([]byte, error) {
			close(held)
			<-release
			return append(b, "# first\n"...), nil
		})
	}()
	<-held
	err := EditFile(path, func(b []byte) ([]byte, error) { return append(b, "# second\n"...), nil })
	close(release)
	if err == nil || !errors.Is(err, atomicfile.ErrLocked) || !strings.Contains(err.Error(), path) {
		t.Errorf("edit while locked: %v, want the path and ErrLocked", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "version: 1\n# first\n" {
		t.Errorf("config %q", got)
	}
}
