package proxy

import (
	"fmt"
	"io"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tillgw/till/audit"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// snapshotWith compiles n routes r0..r(n-1) to one upstream.
func snapshotWith(tb testing.TB, n int) *Snapshot {
	var b strings.Builder
	b.WriteString("version: 1\nclients:\n  - name: web\n    token_sha256: " + strings.Repeat("ab", 32) + "\nroutes:\n")
	for i := range n {
		allow := ""
		if i < 10 {
			allow = `, allow: {methods: [GET, POST], paths: ["/v1/chat/completions", "/v1/models/*"]}`
		}
		fmt.Fprintf(&b, "  - {name: r%d, preset: openai, upstream: \"https://api.example.com\", secret: openai%s}\n", i, allow)
	}
	cfg, err := config.Parse("till.yaml", []byte(b.String()), tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	return NewSnapshot(cfg, map[string]vault.Secret{"openai": vault.NewSecret("openai", testKey, time.Now())})
}

func BenchmarkMatch(b *testing.B) {
	for _, n := range []int{10, 10000} {
		s := snapshotWith(b, n)
		path := fmt.Sprintf("/r%d/v1/chat/completions", n/2)
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if rt, _ := s.match(path); rt == nil {
					b.Fatal("no route")
				}
			}
		})
	}
}

func BenchmarkPolicy(b *testing.B) {
	s := snapshotWith(b, 10)
	rt, _ := s.match("/r1/v1/chat/completions")
	r := httptest.NewRequest("POST", "/r1/v1/chat/completions", nil)
	r.Header.Set("Authorization", "Bearer sk-dummy")
	b.ReportAllocs()
	for b.Loop() {
		id := s.clients.identify(r, "", certID{}, rt.keyHeaders)
		if _, ok := id.admit(r.RemoteAddr, rt.clients); !ok {
			b.Fatal("refused")
		}
		if _, ok := rt.allows("POST", "/v1/chat/completions"); !ok {
			b.Fatal("refused")
		}
		if _, ok, _ := rt.injection.secretState(time.Now(), "block"); !ok {
			b.Fatal("refused")
		}
	}
}

func BenchmarkInject(b *testing.B) {
	s := snapshotWith(b, 10)
	rt, _ := s.match("/r1/v1/chat/completions")
	in := httptest.NewRequest("POST", "/r1/v1/chat/completions?x=1", nil)
	in.Header.Set("Authorization", "Bearer sk-dummy")
	in.Header.Set("Content-Type", "application/json")
	x := &exchange{route: rt, inj: rt.injection, outPath: "/v1/chat/completions", live: &live{Snapshot: &Snapshot{}}}
	b.ReportAllocs()
	for b.Loop() {
		out := x.outbound(in, in.Context())
		if out.Header.Get("Authorization") != "Bearer "+testKey {
			b.Fatal("not injected")
		}
	}
}

func BenchmarkAuditRecord(b *testing.B) {
	a := testAudit(io.Discard)
	r := &record{start: time.Now(), id: "0a1b2c3d4e5f-1", mode: modeReverse, client: "web", route: "openai", secret: "openai",
		keyFP: "sha256:0123456789abcdef", method: "POST", host: "api.openai.com", path: "/openai/v1/chat/completions",
		status: 200, bytesIn: 120, bytesOut: 2048, outcome: outcomeForwarded}
	b.ReportAllocs()
	for b.Loop() {
		a.writeUse(r, 1, time.Now())
		a.write(r, time.Now())
	}
}

func BenchmarkRequestID(b *testing.B) {
	ids := newRequestIDs()
	b.ReportAllocs()
	for b.Loop() {
		_ = ids.next()
	}
}

// TestRoutesShareEchoForms: routes to one key, attached the same way, hold
// one copy of the injection and its echo forms, of their upstream URL and of
// their credential header names, so a snapshot's size (and the collector's
// work) does not grow with them per route.
func TestRoutesShareEchoForms(t *testing.T) {
	s := snapshotWith(t, 3)
	a, b := s.routes[0], s.routes[2]
	if a.injection != b.injection || len(a.echoForms) == 0 {
		t.Errorf("two routes to one key hold separate injections")
	}
	if !echoes([]string{testKey}, a.echoForms) {
		t.Errorf("the shared forms miss the key itself")
	}
	if a.upstream != b.upstream {
		t.Errorf("two routes to one upstream hold separate URLs")
	}
	if &a.credentials[0] != &b.credentials[0] {
		t.Errorf("two routes with the same credential headers hold separate lists")
	}
	if a.name == b.name || a.prefix == b.prefix {
		t.Errorf("the routes' own fields were shared: %q %q", a.name, b.name)
	}
}

// TestRoutesShareOnlyTheSameInjection: routes that attach another key, or
// the same key another way, keep their own.
func TestRoutesShareOnlyTheSameInjection(t *testing.T) {
	cfg, err := config.Parse("till.yaml", []byte(`version: 1
routes:
  - {name: a, preset: openai, upstream: "https://api.example.com", secret: one}
  - {name: b, preset: anthropic, upstream: "https://api.example.com", secret: one}
  - {name: c, preset: openai, upstream: "https://api.example.com", secret: two}
  - {name: d, preset: openai, upstream: "https://api.example.com", secret: one}
`), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	s := NewSnapshot(cfg, map[string]vault.Secret{
		"one": vault.NewSecret("one", "sk-one-0123456789", now),
		"two": vault.NewSecret("two", "sk-two-0123456789", now),
	})
	a, b, c, d := s.routes[0], s.routes[1], s.routes[2], s.routes[3]
	if a.injection != d.injection {
		t.Errorf("routes a and d attach one key the same way but do not share")
	}
	for _, tt := range []struct {
		r            *route
		header, want string
	}{
		{a, "Authorization", "Bearer sk-one-0123456789"},
		{b, "X-Api-Key", "sk-one-0123456789"},
		{c, "Authorization", "Bearer sk-two-0123456789"},
	} {
		if tt.r.injectHeader != tt.header || tt.r.injectValue != tt.want {
			t.Errorf("route %s injects %s: %q, want %s: %q", tt.r.name, tt.r.injectHeader, tt.r.injectValue, tt.header, tt.want)
		}
	}
	if a.fp == c.fp || slices.Equal(a.echoForms, c.echoForms) {
		t.Errorf("routes to two keys share a fingerprint or echo forms")
	}
}

// BenchmarkAuditFile writes the records of a request (its use, then the
// request) to an audit file, as till does with audit.file set.
func BenchmarkAuditFile(b *testing.B) {
	sink, err := audit.Open(audit.Options{Path: filepath.Join(b.TempDir(), "audit.log")})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	a := NewAudit(sink)
	r := &record{start: time.Now(), id: "0a1b2c3d4e5f-1", mode: modeReverse, client: "web", route: "openai", secret: "openai",
		keyFP: "sha256:0123456789abcdef", method: "POST", host: "api.openai.com", path: "/openai/v1/chat/completions",
		status: 200, bytesIn: 120, bytesOut: 2048, outcome: outcomeForwarded}
	b.ReportAllocs()
	for b.Loop() {
		a.writeUse(r, 1, time.Now())
		a.write(r, time.Now())
	}
}
