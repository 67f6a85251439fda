package usage

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tillgw/till/internal/regfile/regfiletest"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-12 }

func TestDefaultPrices(t *testing.T) {
	p := DefaultPrices()
	if _, err := time.Parse(time.DateOnly, p.Date()); err != nil {
		t.Fatalf("Date() = %q: %v", p.Date(), err)
	}
	tests := []struct {
		model string
		u     Usage
		want  float64
	}{
		// 1M uncached input at $2.50, 1M output at $10.
		{"gpt-4o", Usage{InputTokens: 1e6, OutputTokens: 1e6}, 12.5},
		// Cached tokens at cached_input, the rest of the input at input.
		{"gpt-4.1", Usage{InputTokens: 1e6, CachedInputTokens: 4e5, OutputTokens: 0}, 0.6*2 + 0.4*0.5},
		{"gpt-4.1-2025-04-14", Usage{InputTokens: 1e6}, 2},
		{"gpt-4.1-mini-2025-04-14", Usage{OutputTokens: 1e6}, 1.6},
		{"gpt-4o-mini", Usage{InputTokens: 2e6}, 0.3},
		{"claude-sonnet-4-5-20250929", Usage{InputTokens: 2112, CachedInputTokens: 2000, OutputTokens: 6},
			(112*3 + 2000*0.3 + 6*15) / 1e6},
		{"claude-opus-4-20250514", Usage{OutputTokens: 1e6}, 75},
		{"claude-opus-4-1-20250805", Usage{OutputTokens: 1e6}, 75},
		{"claude-opus-4-5-20251101", Usage{OutputTokens: 1e6}, 25},
		{"claude-3-5-haiku-20241022", Usage{InputTokens: 1e6}, 0.8},
		{"gemini-2.5-flash-lite", Usage{InputTokens: 1e6, OutputTokens: 1e6}, 0.5},
		// Without cached_input, cached input costs input.
		{"gemini-2.5-flash", Usage{InputTokens: 1e6, CachedInputTokens: 1e6}, 0.3},
		{"llama-3.3-70b-versatile", Usage{InputTokens: 1e6, OutputTokens: 1e6}, 0.59 + 0.79},
		{"command-r-08-2024", Usage{InputTokens: 1e6, OutputTokens: 1e6}, 0.75},
		// Anthropic's web searches cost $10 per 1,000 besides tokens.
		{"claude-sonnet-4-5-20250929", Usage{InputTokens: 1e6, WebSearches: 3}, 3 + 3*0.01},
		{"claude-haiku-4-5", Usage{WebSearches: 1000}, 10},
		// OpenAI's web search calls: $10, or $25 on gpt-4o and gpt-4.1.
		{"gpt-5-2025-08-07", Usage{WebSearches: 3}, 0.03},
		{"gpt-4.1-mini", Usage{WebSearches: 2}, 0.05},
		// Gemini 2.5's grounding: $35 per 1,000 answers that searched,
		// however many queries each ran.
		{"gemini-2.5-pro", Usage{WebSearches: 4}, 0.035},
		{"gemini-2.5-flash", Usage{InputTokens: 1e6}, 0.3},
		// An advisor's iterations at the advisor's prices, the rest at
		// the executor's; cached input is the executor's.
		{"claude-haiku-4-5", Usage{InputTokens: 3e6, CachedInputTokens: 1e6, OutputTokens: 2e6,
			Sub: SubUsage{"claude-opus-4-8", 1e6, 1e6}}, 1*1 + 1*0.1 + 1*5 + 1*5 + 1*25},
		// Several models, or one the table lacks: its highest prices.
		{"claude-haiku-4-5", Usage{InputTokens: 1e6, Sub: SubUsage{"", 1e6, 0}}, 15},
		{"claude-haiku-4-5", Usage{OutputTokens: 1e6, Sub: SubUsage{"claude-x", 0, 1e6}}, 75},
		// Nonsense counts never make a negative or inflated cost.
		{"gpt-4o", Usage{InputTokens: 10, CachedInputTokens: 50, OutputTokens: -5}, 10 * 1.25 / 1e6},
	}
	for _, tt := range tests {
		got, ok := p.Cost(tt.model, tt.u)
		if !ok || !near(got, tt.want) {
			t.Errorf("Cost(%q, %+v) = %v, %v; want %v", tt.model, tt.u, got, ok, tt.want)
		}
	}
	for _, model := range []string{"gpt-4o-2024-05-13", "gpt-4o-realtime-preview", "gemini-2.5-flash-image", "my-model"} {
		if usd, ok := p.Cost(model, Usage{InputTokens: 5}); ok || usd != 0 {
			t.Errorf("Cost(%q) = %v, %v; want unpriced", model, usd, ok)
		}
	}
	// An unpriced answer still counts what a priced model ran for it.
	if usd, ok := p.Cost("my-model", Usage{InputTokens: 2e6, Sub: SubUsage{"claude-opus-4-8", 1e6, 0}}); ok || !near(usd, 5) {
		t.Errorf(`Cost("my-model") with an advisor = %v, %v; want 5, unpriced`, usd, ok)
	}
	// Usage of no model named is priced at the table's highest prices
	// (claude-opus-4-1's input and output, gpt-4o's search calls,
	// Gemini's grounding), not as free.
	if usd, ok := p.Cost("", Usage{InputTokens: 1e6, OutputTokens: 1e6, WebSearches: 100}); ok || !near(usd, 15+75+2.5+0.035) {
		t.Errorf(`Cost("") = %v, %v; want 92.535, unpriced`, usd, ok)
	}
	var none *Prices
	if _, ok := none.Cost("gpt-4o", Usage{}); ok || none.Date() != "" {
		t.Error("a nil *Prices prices something")
	}
}

func TestPriceSpecificity(t *testing.T) {
	p, err := parsePrices("t.yaml", []byte(`
date: 2026-01-02
models:
  "*":          {input: 1, output: 1}
  gpt-*:        {input: 2, output: 2}
  gpt-4o*:      {input: 3, output: 3}
  gpt-4o:       {input: 4, output: 4}
  "*-mini":     {input: 5, output: 5}
  "gpt-4o-m*":  {input: 6, output: 6}
  "gpt-4o-*":   {input: 7, output: 7}
`), true)
	if err != nil {
		t.Fatal(err)
	}
	for model, want := range map[string]float64{
		"gpt-4o":      4, // as long as gpt-4o*, and without "*"
		"gpt-4o-2024": 7, // gpt-4o-* beats gpt-4o*
		"gpt-4o-mini": 6, // gpt-4o-m* (8 characters) beats gpt-4o-* (7) and *-mini (5)
		"gpt-5":       2,
		"x-mini":      5,
		"claude":      1,
	} {
		got, _ := p.Cost(model, Usage{InputTokens: 1e6})
		if got != want {
			t.Errorf("%s: priced at %v, want %v", model, got, want)
		}
	}
}

func TestLoadPricesMerges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "prices.yaml")
	os.WriteFile(path, []byte(`date: 2027-01-15
models:
  gpt-4o: {input: 1, cached_input: 0.1, output: 2}
  my-finetune-*: {input: 3, output: 12}
  my-searcher: {input: 1, output: 1, web_search: 25}
  my-grounded: {input: 1, output: 1, grounded_prompt: 35}
`), 0o600)
	p, err := LoadPrices(path)
	if err != nil {
		t.Fatal(err)
	}
	if p.Date() != "2027-01-15" {
		t.Errorf("Date() = %q", p.Date())
	}
	check := func(model string, u Usage, want float64) {
		t.Helper()
		if got, ok := p.Cost(model, u); !ok || !near(got, want) {
			t.Errorf("Cost(%q) = %v, %v; want %v", model, got, ok, want)
		}
	}
	check("gpt-4o", Usage{InputTokens: 1e6, CachedInputTokens: 1e6, OutputTokens: 1e6}, 2.1) // replaced
	check("my-finetune-7", Usage{InputTokens: 1e6, CachedInputTokens: 5e5}, 3)               // added; cached at input
	check("gpt-4.1", Usage{OutputTokens: 1e6}, 8)                                            // kept
	check("my-searcher", Usage{WebSearches: 4}, 0.1)                                         // a search fee of its own
	check("my-grounded", Usage{WebSearches: 4}, 0.035)                                       // once for the answer
	check("my-grounded", Usage{OutputTokens: 1e6}, 1)                                        // no search, no fee
	if got, _ := DefaultPrices().Cost("gpt-4o", Usage{InputTokens: 1e6}); got != 2.5 {
		t.Errorf("loading changed the built-in table: gpt-4o input %v", got)
	}

	undated := filepath.Join(t.TempDir(), "undated.yaml")
	os.WriteFile(undated, []byte("models: {x: {input: 1, output: 1}}\n"), 0o600)
	if p, err := LoadPrices(undated); err != nil || p.Date() != DefaultPrices().Date() {
		t.Errorf("undated override: %v, date %q", err, p.Date())
	}
}

func TestLoadPricesErrors(t *testing.T) {
	tests := []struct {
		name, body string
		want       []string // parts of the error
	}{
		{"unknown model key", "date: 2026-01-01\nmodels:\n  gpt-4o: {input: 1, output: 2, cache: 3}\n",
			[]string{"p.yaml:3:", `unknown key "cache"`, "input, cached_input, output, web_search and grounded_prompt"}},
		{"negative search fee", "models:\n  a:\n    input: 1\n    output: 2\n    web_search: -10\n",
			[]string{"p.yaml:5:", `models."a".web_search`, "≥ 0 (USD per 1,000 searches)"}},
		{"negative grounding fee", "models:\n  a:\n    input: 1\n    output: 2\n    grounded_prompt: -1\n",
			[]string{"p.yaml:5:", `models."a".grounded_prompt`, "≥ 0 (USD per 1,000 answers that searched)"}},
		{"unknown top key", "date: 2026-01-01\nprice: {}\n",
			[]string{"p.yaml:2:", `unknown key "price"`, "date and models"}},
		{"not a number", "models:\n  a: {input: cheap, output: 2}\n",
			[]string{"p.yaml:2:", "`cheap` is not a number"}},
		{"negative", "models:\n  a:\n    input: 1\n    output: -2\n",
			[]string{"p.yaml:4:", `models."a".output`, "≥ 0"}},
		{"missing input", "models:\n  a: {output: 2}\n",
			[]string{"p.yaml:2:", `models."a"`, "input is missing"}},
		{"missing output", "models:\n  a: {input: 2}\n",
			[]string{"p.yaml:2:", "output is missing"}},
		{"duplicate model", "models:\n  a: {input: 1, output: 1}\n  a: {input: 2, output: 2}\n",
			[]string{"p.yaml:3:", `"a" already defined`}},
		{"bad date", "date: 15/01/2027\nmodels: {}\n",
			[]string{"p.yaml:1:", "not a date", "YYYY-MM-DD"}},
		{"blank pattern", "models:\n  \"a b\": {input: 1, output: 1}\n",
			[]string{"p.yaml:2:", "without spaces"}},
		{"syntax", "models: {a: [\n", []string{"p.yaml:"}},
		{"empty", "", []string{"p.yaml", "empty"}},
		// The second document was ignored, without a word: its models
		// were priced by the built-in table, or not at all.
		{"two documents", "models:\n  a: {input: 1, output: 1}\n---\nmodels:\n  b: {input: 2, output: 2}\n",
			[]string{"p.yaml:3:", "more than one yaml document", `remove the "---"`}},
		{"two problems", "models:\n  a: {output: 1}\n  b: {input: 1}\n",
			[]string{"p.yaml:2:", "p.yaml:3:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "p.yaml")
			os.WriteFile(path, []byte(tt.body), 0o600)
			_, err := LoadPrices(path)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	if _, err := LoadPrices(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("a missing file loads")
	}
}

func TestBuiltinNeedsDate(t *testing.T) {
	if _, err := parsePrices("b.yaml", []byte("models: {}\n"), true); err == nil || !strings.Contains(err.Error(), "date") {
		t.Fatalf("err = %v", err)
	}
}

func TestMatchModel(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"gpt-4o", "gpt-4o", true},
		{"gpt-4o", "gpt-4o-mini", false},
		{"gpt-4.1*", "gpt-4.1", true},
		{"gpt-4.1*", "gpt-4.1-mini-2025-04-14", true},
		{"gpt-4.1*", "gpt-4.2", false},
		{"*", "", true},
		{"", "", true},
		{"", "x", false},
		{"*/*", "accounts/fireworks/models/llama", true},
		{"accounts/*/llama", "accounts/a/b/llama", true},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXbYbZ", false},
		{"*mini", "gpt-4o-mini", true},
		{"**x**", "x", true},
		{"gpt-?o", "gpt-4o", false},
		{"[a]", "a", false},
	}
	for _, tt := range tests {
		if got := MatchModel(tt.pattern, tt.name); got != tt.want {
			t.Errorf("MatchModel(%q, %q) = %v", tt.pattern, tt.name, got)
		}
	}
}

// TestLoadPricesOnlyRegularFiles: prices.file is read at each load and
// reload, where os.ReadFile of /dev/zero took all memory and brought the
// running till down. Only a regular file of at most 1 MiB is read; a
// device or a folder is named as such.
func TestLoadPricesOnlyRegularFiles(t *testing.T) {
	big := regfiletest.Sized(t, 2<<20)
	for path, want := range map[string]string{
		big:         big + " is larger than 1 MiB: is it the right file?",
		os.DevNull:  "is not a regular file but a device",
		t.TempDir(): "is not a regular file but a folder",
	} {
		if _, err := LoadPrices(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", path, err, want)
		}
	}
}
