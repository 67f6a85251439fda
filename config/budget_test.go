package config

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseBudgets(t *testing.T) {
	y := `version: 1
clients:
  - {name: web, token_sha256: ` + strings.Repeat("ab", 32) + `}
routes:
  - {name: openai, preset: openai, allow: {models: ["gpt-4.1*", gpt-4o-mini]}}
  - {name: internal, upstream: "https://api.example.com", inject: {header: X-Key}, usage: anthropic}
  - {name: stripe, preset: stripe}
budgets:
  - {name: web-daily, clients: [web], routes: [openai], window: day, requests: 5000, tokens: 2000000, usd: 25}
  - {name: all-hour, per: all, window: 1h, usd: 0.5, on_exceeded: warn}
prices: {file: prices.yaml}
`
	c, err := Parse("till.yaml", []byte(y), "/etc/till")
	if err != nil {
		t.Fatal(err)
	}
	want := []Budget{
		{Name: "web-daily", Clients: []string{"web"}, Routes: []string{"openai"}, Per: "client", Calendar: "day", Requests: 5000, Tokens: 2000000, USD: 25, Line: 9},
		{Name: "all-hour", Per: "all", Window: time.Hour, USD: 0.5, Warn: true, Line: 10},
	}
	if !reflect.DeepEqual(c.Budgets, want) {
		t.Errorf("got  %+v\nwant %+v", c.Budgets, want)
	}
	if c.Prices.File != "/etc/till/prices.yaml" {
		t.Errorf("prices.file: %q", c.Prices.File)
	}
	for i, u := range []string{UsageOpenAI, UsageAnthropic, UsageNone} {
		if c.Routes[i].Usage != u {
			t.Errorf("routes[%d].usage = %q, want %q", i, c.Routes[i].Usage, u)
		}
	}
	if got := c.Routes[0].Allow.Models; !reflect.DeepEqual(got, []string{"gpt-4.1*", "gpt-4o-mini"}) {
		t.Errorf("models: %v", got)
	}
	if !c.Budgets[0].Covers("openai", "web") || c.Budgets[0].Covers("openai", "") || c.Budgets[0].Covers("internal", "web") {
		t.Error("web-daily covers the wrong requests")
	}
	if !c.Budgets[1].Covers("stripe", "") {
		t.Error("a budget without clients or routes must cover anonymous requests on any route")
	}
}

func TestParseBudgetErrors(t *testing.T) {
	for _, tt := range []struct{ name, yaml, want string }{
		{"no window", "budgets:\n  - {name: b, requests: 1}\n", `till.yaml:3: budgets[0].window: required (hint: a rolling window from 1m to 90d such as 1h or 30d, or day or month for a calendar one, UTC)`},
		{"window too long", "budgets:\n  - {name: b, window: 100d, requests: 1}\n", `till.yaml:3: budgets[0].window: must be a rolling window from 1m to 90d such as 1h or 30d, or day or month (calendar, UTC)`},
		{"window too short", "budgets:\n  - {name: b, window: 30s, requests: 1}\n", `till.yaml:3: budgets[0].window: must be a rolling window from 1m to 90d such as 1h or 30d, or day or month (calendar, UTC)`},
		// Counted in whole seconds: any other window failed every count,
		// and on_redis_error: allow let every request through uncounted.
		{"window not whole seconds", "budgets:\n  - {name: b, window: 61500ms, requests: 1}\n", `till.yaml:3: budgets[0].window: must be a whole number of seconds (hint: 1m or 90s)`},
		{"no limit", "budgets:\n  - {name: b, window: 1h}\n", `till.yaml:3: budgets[0]: sets no limit (hint: requests, tokens or usd)`},
		{"bad usd", "budgets:\n  - {name: b, window: 1h, usd: lots}\n", `till.yaml:3: budgets[0].usd: must be a number such as 25 or 0.5`},
		{"negative tokens", "budgets:\n  - {name: b, window: 1h, tokens: -5}\n", `till.yaml:3: budgets[0].tokens: must be at least 1`},
		{"bad per", "budgets:\n  - {name: b, window: 1h, requests: 1, per: team}\n", `till.yaml:3: budgets[0].per: must be "client" or "route" or "all"`},
		{"unknown client", "budgets:\n  - {name: b, window: 1h, requests: 1, clients: [web]}\n", `till.yaml:3: budgets[0].clients[0]: unknown client "web" (hint: define it under clients, or run "till client add web")`},
		{"unknown route", "routes:\n  - {name: openai, preset: openai}\nbudgets:\n  - {name: b, window: 1h, requests: 1, routes: [opnai]}\n", `till.yaml:5: budgets[0].routes[0]: unknown route "opnai" (did you mean "openai"?)`},
		{"token as route", "routes:\n  - {name: openai, preset: openai}\nbudgets:\n  - {name: b, window: 1h, requests: 1, routes: [sk-proj-abcdefghijklmnopqrstuvwxyz0123456789]}\n", `till.yaml:5: budgets[0].routes[0]: unknown route`},
		{"duplicate", "budgets:\n  - {name: b, window: 1h, requests: 1}\n  - {name: b, window: 1h, requests: 2}\n", `till.yaml:4: budgets[1].name: duplicate budget name "b" (first at line 3)`},
		{"models without usage", "routes:\n  - {name: x, upstream: 'https://a.example', inject: {header: X-Key}, allow: {models: [m]}}\n", `till.yaml:3: routes[0].allow.models: needs a route whose usage is known (hint: a preset such as openai, or usage: openai)`},
		{"models without usage, SigV4 not for Bedrock", "routes:\n  - {name: x, upstream: 'https://a.example', inject: {aws_sigv4: {service: s3, region: us-east-1}}, allow: {models: [m]}}\n", `till.yaml:3: routes[0].allow.models: needs a route whose usage is known (hint: a preset such as openai, or usage: openai)`},
		{"bad usage", "routes:\n  - {name: x, preset: openai, usage: claude}\n", `till.yaml:3: routes[0].usage: must be "openai" or "anthropic" or "gemini" or "cohere" or "none"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("till.yaml", []byte("version: 1\n"+tt.yaml), "/")
			if err == nil || err.Error() != tt.want {
				t.Errorf("got %v\nwant %s", err, tt.want)
			}
		})
	}
}

// TestEmptyBudgetScopeRefused: budgets[].clients: [] or routes: []
// loaded, and the budget then covered no request at all (Covers is false
// for every route and client): a spending cap that silently caps nothing.
// Written null (every entry commented out), the same list covered every
// caller instead; both are refused.
func TestEmptyBudgetScopeRefused(t *testing.T) {
	for name, extra := range map[string]string{
		"clients: []": "clients: []",
		"routes: []":  "routes: []",
		"clients: ~":  "clients: ~",
		"routes:":     "routes: ",
	} {
		t.Run(name, func(t *testing.T) {
			doc := "version: 1\nclients:\n  - {name: web, token_sha256: " + testHash + "}\nroutes:\n  - {name: x, preset: openai, clients: [web]}\nbudgets:\n  - {name: daily, window: 1d, usd: 25, " + extra + "}\n"
			c, err := Parse("till.yaml", []byte(doc), t.TempDir())
			if err == nil {
				b := c.Budgets[0]
				t.Fatalf("budget %q with %s loaded (covers route x for web: %v)", b.Name, name, b.Covers("x", "web"))
			}
			key := strings.Fields(extra)[0]
			if want := "till.yaml:7: budgets[0]." + strings.TrimSuffix(key, ":") + ": is empty"; !strings.Contains(err.Error(), want) {
				t.Errorf("got %q, want %q", err, want)
			}
		})
	}
}

func TestParsePool(t *testing.T) {
	y := "version: 1\nsources:\n  - {name: m, type: files, dir: /s}\nroutes:\n  - {name: openai, preset: openai, secret: [openai-a, \"m:openai-b\"], pool: {strategy: sticky, cooldown: 30s}}\n  - {name: plain, preset: anthropic, secret: [a, b]}\n"
	c, err := Parse("till.yaml", []byte(y), "/")
	if err != nil {
		t.Fatal(err)
	}
	want := &Pool{Members: []PoolMember{{Secret: "openai-a"}, {Secret: "m:openai-b", Ref: &SecretRef{Source: "m", Path: "openai-b"}}}, Strategy: PoolSticky, Cooldown: 30 * time.Second}
	if got := c.Routes[0].Pool; !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if r := c.Routes[0]; r.Secret != "openai-a" || r.Ref != nil {
		t.Errorf("a pool's route names its first member: %q %v", r.Secret, r.Ref)
	}
	if p := c.Routes[1].Pool; p == nil || p.Strategy != PoolRoundRobin || p.Cooldown != DefaultPoolCooldown {
		t.Errorf("pool defaults: %+v", p)
	}
	for _, tt := range []struct{ name, yaml, want string }{
		{"one member", "routes:\n  - {name: x, preset: openai, secret: [a]}\n", `till.yaml:3: routes[0].secret: a pool needs 2 to 16 secrets (hint: one secret is written secret: NAME)`},
		{"twice", "routes:\n  - {name: x, preset: openai, secret: [a, a]}\n", `till.yaml:3: routes[0].secret[1]: "a" is listed twice`},
		{"pool without list", "routes:\n  - {name: x, preset: openai, pool: {strategy: sticky}}\n", `till.yaml:3: routes[0].pool: needs a list of secrets (hint: secret: [openai-a, openai-b])`},
		{"bad strategy", "routes:\n  - {name: x, preset: openai, secret: [a, b], pool: {strategy: random}}\n", `till.yaml:3: routes[0].pool.strategy: must be "round_robin" or "sticky"`},
		{"cooldown too long", "routes:\n  - {name: x, preset: openai, secret: [a, b], pool: {cooldown: 36500d}}\n", `till.yaml:3: routes[0].pool.cooldown: at most 30d (a key the upstream rejects rests ten cooldowns)`},
		{"till-ca member", "routes:\n  - {name: x, preset: openai, secret: [a, till-ca]}\n", `till.yaml:3: routes[0].secret[1]: "till-ca" holds till's CA key and can never be injected`},
		{"unknown source member", "routes:\n  - {name: x, preset: openai, secret: [a, \"corp:x\"]}\n", `till.yaml:3: routes[0].secret[1]: unknown source "corp" (hint: define it under sources:, or use a vault secret name without ":")`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("till.yaml", []byte("version: 1\n"+tt.yaml), "/")
			if err == nil || err.Error() != tt.want {
				t.Errorf("got %v\nwant %s", err, tt.want)
			}
		})
	}
}

func TestUnmeteredBudgets(t *testing.T) {
	y := "version: 1\nroutes:\n  - {name: openai, preset: openai}\n  - {name: stripe, preset: stripe}\nbudgets:\n  - {name: money, window: day, usd: 5}\n  - {name: calls, window: day, requests: 5}\n  - {name: ai, window: day, tokens: 5, routes: [openai]}\n"
	c, err := Parse("till.yaml", []byte(y), "/")
	if err != nil {
		t.Fatal(err)
	}
	got := c.UnmeteredBudgets()
	if len(got) != 1 || !strings.Contains(got[0], `budget "money" limits tokens or usd, and route "stripe" reports no usage`) {
		t.Errorf("got %q", got)
	}
}

func TestDodgeableBudgets(t *testing.T) {
	tok := strings.Repeat("ab", 32)
	y := "version: 1\nclients:\n  - {name: web, token_sha256: " + tok + "}\nroutes:\n  - {name: open, preset: openai}\n" +
		"  - {name: closed, preset: openai, secret: openai, clients: [web]}\nbudgets:\n  - {name: web-daily, window: day, tokens: 5, clients: [web]}\n" +
		"  - {name: all, window: day, tokens: 5}\n"
	c, err := Parse("till.yaml", []byte(y), "/")
	if err != nil {
		t.Fatal(err)
	}
	got := c.DodgeableBudgets()
	if len(got) != 1 || !strings.Contains(got[0], `budget "web-daily" counts clients web only, and route "open" takes callers without a token`) {
		t.Errorf("got %q", got)
	}
}

// TestBudgetWarningsOneLinePerBudget: till check warned once per budget
// and route, so a config of 6,000 budgets over 6,000 unmetered routes
// printed 36 million lines (13 GB in 11 minutes, 17 GB of memory). One
// line per budget names a few routes and counts the rest.
func TestBudgetWarningsOneLinePerBudget(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: 1\nclients:\n  - {name: web, token_sha256: " + strings.Repeat("ab", 32) + "}\nroutes:\n")
	for i := range 200 {
		fmt.Fprintf(&b, "  - {name: r%d, upstream: 'https://h%d.example', inject: {query: k}, secret: k}\n", i, i)
	}
	b.WriteString("budgets:\n")
	for i := range 100 {
		fmt.Fprintf(&b, "  - {name: b%d, clients: [web], window: 1h, tokens: 1}\n", i)
	}
	b.WriteString("  - {name: two, clients: [web], routes: [r1, r2], window: 1h, tokens: 1}\n")
	c, err := Parse("till.yaml", []byte(b.String()), "/")
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string][]string{"unmetered": c.UnmeteredBudgets(), "dodgeable": c.DodgeableBudgets()} {
		if len(got) != 101 {
			t.Fatalf("%s: %d warnings, want one per budget (101)", name, len(got))
		}
		if !strings.Contains(got[0], `budget "b0"`) || !strings.Contains(got[0], `routes "r0", "r1", "r2" and 197 more`) {
			t.Errorf("%s: got %q", name, got[0])
		}
		if !strings.Contains(got[100], `budget "two"`) || !strings.Contains(got[100], `routes "r1" and "r2" `) {
			t.Errorf("%s: got %q", name, got[100])
		}
	}
}

func TestParseSigV4(t *testing.T) {
	y := "version: 1\nroutes:\n  - {name: aws, upstream: \"https://bedrock-runtime.us-east-1.amazonaws.com\", inject: {aws_sigv4: {service: bedrock, region: us-east-1}}}\n"
	c, err := Parse("till.yaml", []byte(y), "/")
	if err != nil {
		t.Fatal(err)
	}
	r := c.Routes[0]
	if r.Inject.AWSSigV4 == nil || *r.Inject.AWSSigV4 != (AWSSigV4{Service: "bedrock", Region: "us-east-1"}) || r.MaxBody != DefaultSigV4MaxBody {
		t.Errorf("got %+v, max_body %d", r.Inject.AWSSigV4, r.MaxBody)
	}
	for _, tt := range []struct{ yaml, want string }{
		{"{aws_sigv4: {service: bedrock}}", `till.yaml:3: routes[0].inject.aws_sigv4.region: required (hint: such as us-east-1)`},
		{"{aws_sigv4: {service: Bedrock!, region: us-east-1}}", `till.yaml:3: routes[0].inject.aws_sigv4.service: must be an AWS service's signing name such as bedrock, s3 or execute-api`},
		{"{aws_sigv4: {service: s3, region: us-east-1}, header: X-Key}", `till.yaml:3: routes[0].inject: needs exactly one of header, query, basic, aws_sigv4, oauth2, github_app or google`},
	} {
		_, err := Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: aws, upstream: \"https://s3.amazonaws.com\", inject: "+tt.yaml+"}\n"), "/")
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s: got %v\nwant %s", tt.yaml, err, tt.want)
		}
	}
}

// TestSigV4DefaultMaxBody: a route that signs with SigV4 and sets no
// max_body holds bodies up to 10 MB, as the contract says, the cap that
// max_body: 10MB gives, not 10 MiB.
func TestSigV4DefaultMaxBody(t *testing.T) {
	route := "  - {name: aws, preset: bedrock, region: us-east-1%s}\n"
	var got [2]int64
	for i, extra := range []string{"", ", max_body: 10MB"} {
		c, err := Parse("till.yaml", []byte("version: 1\nroutes:\n"+fmt.Sprintf(route, extra)), "/")
		if err != nil {
			t.Fatal(err)
		}
		got[i] = c.Routes[0].MaxBody
	}
	if got[0] != got[1] || got[0] != 10_000_000 {
		t.Errorf("got max_body %d unset, %d with max_body: 10MB; want 10000000 for both", got[0], got[1])
	}
}

func TestRegionPresets(t *testing.T) {
	y := "version: 1\nroutes:\n  - {name: bedrock, preset: bedrock, region: us-west-2, secret: aws}\n  - {name: vertex, preset: vertex, region: europe-west4, secret: sa}\n"
	c, err := Parse("till.yaml", []byte(y), "/")
	if err != nil {
		t.Fatal(err)
	}
	b, v := c.Routes[0], c.Routes[1]
	if b.Upstream.String() != "https://bedrock-runtime.us-west-2.amazonaws.com" || b.Inject.AWSSigV4 == nil || *b.Inject.AWSSigV4 != (AWSSigV4{Service: "bedrock", Region: "us-west-2"}) || b.MaxBody != DefaultSigV4MaxBody {
		t.Errorf("bedrock: %v %+v %d", b.Upstream, b.Inject.AWSSigV4, b.MaxBody)
	}
	// Bedrock names the model in the path: model rules need no usage.
	if _, err := Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: b, preset: bedrock, region: us-west-2, allow: {models: [anthropic.claude-3-haiku*]}}\n"), "/"); err != nil {
		t.Errorf("allow.models on preset bedrock: %v", err)
	}
	if p, _ := LookupPreset("bedrock"); p.Inject.AWSSigV4.Region != RegionPlaceholder {
		t.Error("a route changed the preset's region")
	}
	if v.Upstream.String() != "https://europe-west4-aiplatform.googleapis.com" || v.Inject.Google == nil {
		t.Errorf("vertex: %v %+v", v.Upstream, v.Inject)
	}
	for _, tt := range []struct{ route, want string }{
		{"{name: b, preset: bedrock}", `till.yaml:3: routes[0].region: required with preset bedrock (hint: such as us-east-1)`},
		{"{name: b, preset: openai, region: us-east-1}", `till.yaml:3: routes[0].region: only used with the presets bedrock, bedrock-agent and vertex (hint: set aws_sigv4's region in inject)`},
		{"{name: b, preset: bedrock, region: mars}", `till.yaml:3: routes[0].region: must be a region such as us-east-1 or europe-west4`},
	} {
		_, err := Parse("till.yaml", []byte("version: 1\nroutes:\n  - "+tt.route+"\n"), "/")
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s: got %v\nwant %s", tt.route, err, tt.want)
		}
	}
}

// TestGitHubAppPreset: the github-app preset gives the upstream and the
// headers to strip; the route names the app and the installation, which
// have no default, and a vault holding the preset's secret gives no
// route on built-in defaults.
func TestGitHubAppPreset(t *testing.T) {
	y := "version: 1\nroutes:\n  - {name: gh, preset: github-app, inject: {github_app: {app_id: 12345, installation_id: 678}}}\n"
	c, err := Parse("till.yaml", []byte(y), "/")
	if err != nil {
		t.Fatal(err)
	}
	r := c.Routes[0]
	if r.Upstream.String() != "https://api.github.com" || r.Inject.GitHubApp == nil || *r.Inject.GitHubApp != (GitHubApp{AppID: 12345, InstallationID: 678}) ||
		r.Secret != "gh" || !slices.Contains(r.Strip, "Authorization") {
		t.Errorf("github-app route: %v %+v %q %v", r.Upstream, r.Inject.GitHubApp, r.Secret, r.Strip)
	}
	_, err = Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: gh, preset: github-app}\n"), "/")
	want := `till.yaml:3: routes[0].inject: required with preset github-app: inject: {github_app: {app_id: N, installation_id: N}} (hint: the app's id is on its settings page, the installation's id ends its settings URL)`
	if err == nil || err.Error() != want {
		t.Errorf("without inject: got %v\nwant %s", err, want)
	}
	_, err = Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: gh, preset: github-app, inject: {github_app: {app_id: 1}}}\n"), "/")
	if err == nil || !strings.Contains(err.Error(), "routes[0].inject.github_app.installation_id: required") {
		t.Errorf("without installation_id: %v", err)
	}
	if d := Default("/", "", func(s string) bool { return s == "github-app" }); len(d.Routes) != 0 {
		t.Errorf("built-in defaults with a github-app secret: %d routes, want 0", len(d.Routes))
	}
}
