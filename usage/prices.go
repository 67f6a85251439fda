package usage

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tillgw/till/internal/regfile"
)

//go:embed prices.yaml
var builtinPrices []byte

// Prices is a per-model price table in US dollars per million tokens. A
// model's name is looked up among the table's patterns, where "*" matches
// any run of characters ("/" included); the most specific pattern that
// matches wins: the one with the most characters other than "*", then one
// without "*", then the first in byte order. A Prices is immutable and
// safe for concurrent use.
type Prices struct {
	date    string
	entries []price // most specific first
}

// price is one model pattern's prices, per million tokens.
type price struct {
	pattern               string
	literal               int  // bytes other than '*'
	star                  bool // the pattern has a '*'
	input, cached, output float64
	webSearch             float64 // per 1,000 server-side web searches
	groundedPrompt        float64 // per 1,000 answers that searched at all
}

// priceFile is the YAML form of a price table.
type priceFile struct {
	Date   string                `yaml:"date"`
	Models map[string]priceEntry `yaml:"models"`
}

type priceEntry struct {
	Input       *float64 `yaml:"input"`
	CachedInput *float64 `yaml:"cached_input"`
	Output      *float64 `yaml:"output"`
	WebSearch   *float64 `yaml:"web_search"`
	// GroundedPrompt is charged once for an answer that ran any web
	// search, as Google bills Gemini 2.5's grounding.
	GroundedPrompt *float64 `yaml:"grounded_prompt"`
}

var defaultPrices = sync.OnceValue(func() *Prices {
	p, err := parsePrices("usage/prices.yaml", builtinPrices, true)
	if err != nil {
		panic("usage: built-in price table: " + err.Error())
	}
	return p
})

// DefaultPrices returns the built-in price table, as list prices stood on
// its Date.
func DefaultPrices() *Prices { return defaultPrices() }

// MaxPricesSize caps a price table file (prices.file).
const MaxPricesSize = 1 << 20

// LoadPrices reads a price table file and returns the built-in table with
// the file's models merged over it: a pattern in the file replaces the
// same pattern in the built-in table, and new patterns join it. The file
// has the built-in table's form:
//
//	date: 2026-11-01        # optional here; when present, Date reports it
//	models:
//	  gpt-4.1*: {input: 2, cached_input: 0.5, output: 8}
//	  my-finetune: {input: 3, output: 12}   # cached_input defaults to input
//	  claude-x*: {input: 3, output: 15, web_search: 10}  # per 1,000 searches
//	  gemini-x: {input: 1, output: 4, grounded_prompt: 35}  # per 1,000 answers that searched
//
// Unknown keys, duplicate models, missing or negative prices are errors
// naming the file and line. The file is a regular one (a link to one
// counts) of at most MaxPricesSize bytes: it is read again at each
// reload, where /dev/zero would take all memory and a named pipe would
// hold the reload.
func LoadPrices(path string) (*Prices, error) {
	data, err := regfile.Read(path, MaxPricesSize)
	if err != nil {
		return nil, fmt.Errorf("price table: %w", err)
	}
	over, err := parsePrices(path, data, false)
	if err != nil {
		return nil, err
	}
	base := DefaultPrices()
	merged := &Prices{date: base.date}
	if over.date != "" {
		merged.date = over.date
	}
	for _, e := range base.entries {
		if !slices.ContainsFunc(over.entries, func(o price) bool { return o.pattern == e.pattern }) {
			merged.entries = append(merged.entries, e)
		}
	}
	merged.entries = append(merged.entries, over.entries...)
	merged.sort()
	return merged, nil
}

// Date is the day the table's prices were taken, as YYYY-MM-DD.
func (p *Prices) Date() string {
	if p == nil {
		return ""
	}
	return p.date
}

// Cost prices usage u of model: cached input tokens at the model's
// cached_input price, the rest of the input at its input price, and output
// at its output price, the web searches a provider ran for it at the
// model's web_search price, and, when it ran any, the model's
// grounded_prompt price once. priced is false when no pattern matches model (the
// cost is then 0), or when model is "": neither a request nor its answer
// named one, and u is priced at the table's highest prices, since what
// such an answer used must not count as free. The part of u another
// model ran (u.Sub) is priced at that model's prices, or the table's
// highest when it lacks them (or several models ran it), and added.
func (p *Prices) Cost(model string, u Usage) (usd float64, priced bool) {
	own, sub := u.split()
	if sub.InputTokens > 0 || sub.OutputTokens > 0 {
		e := p.lookup(u.Sub.Model)
		if e == nil || u.Sub.Model == "" {
			e = p.dearest()
		}
		usd = e.cost(sub)
	}
	if model == "" {
		return usd + p.dearest().cost(own), false
	}
	e := p.lookup(model)
	if e == nil {
		return usd, false
	}
	return usd + e.cost(own), true
}

// split parts u into the usage of the answer's model and that of
// u.Sub's, which has no cached input and no searches.
func (u Usage) split() (own, sub Usage) {
	sub.InputTokens = min(max(u.Sub.InputTokens, 0), max(u.InputTokens, 0))
	sub.OutputTokens = min(max(u.Sub.OutputTokens, 0), max(u.OutputTokens, 0))
	own = u
	own.InputTokens -= sub.InputTokens
	own.OutputTokens -= sub.OutputTokens
	own.Sub = SubUsage{}
	return own, sub
}

// cost prices u at e's prices.
func (e *price) cost(u Usage) float64 {
	in := max(u.InputTokens, 0)
	cached := min(max(u.CachedInputTokens, 0), in)
	out := max(u.OutputTokens, 0)
	searches := float64(max(u.WebSearches, 0)) * e.webSearch / 1e3
	if u.WebSearches > 0 {
		searches += e.groundedPrompt / 1e3
	}
	return (float64(in-cached)*e.input+float64(cached)*e.cached+float64(out)*e.output)/1e6 + searches
}

// dearest is the table's highest input, cached input, output and search
// prices, each of whichever model has it.
func (p *Prices) dearest() *price {
	var d price
	if p != nil {
		for _, e := range p.entries {
			d.input, d.cached, d.output = max(d.input, e.input), max(d.cached, e.cached), max(d.output, e.output)
			d.webSearch = max(d.webSearch, e.webSearch)
			d.groundedPrompt = max(d.groundedPrompt, e.groundedPrompt)
		}
	}
	return &d
}

// Priced reports whether the table has a price for model.
func (p *Prices) Priced(model string) bool { return p.lookup(model) != nil }

// lookup returns the most specific entry matching model, or nil.
func (p *Prices) lookup(model string) *price {
	if p == nil {
		return nil
	}
	for i := range p.entries {
		if MatchModel(p.entries[i].pattern, model) {
			return &p.entries[i]
		}
	}
	return nil
}

// sort orders the entries most specific first.
func (p *Prices) sort() {
	slices.SortFunc(p.entries, func(a, b price) int {
		if a.literal != b.literal {
			return b.literal - a.literal
		}
		if a.star != b.star {
			if a.star {
				return 1
			}
			return -1
		}
		return strings.Compare(a.pattern, b.pattern)
	})
}

// MatchModel reports whether a model name matches a pattern in which "*"
// matches any run of characters, "/" included, and every other character
// matches itself. It is the glob of price tables and model rules.
func MatchModel(pattern, name string) bool {
	px, nx := 0, 0
	star, mark := -1, 0
	for nx < len(name) {
		switch {
		case px < len(pattern) && pattern[px] == '*':
			star, mark = px, nx
			px++
		case px < len(pattern) && pattern[px] == name[nx]:
			px++
			nx++
		case star >= 0:
			mark++
			px, nx = star+1, mark
		default:
			return false
		}
	}
	for px < len(pattern) && pattern[px] == '*' {
		px++
	}
	return px == len(pattern)
}

// parsePrices decodes and checks a price table. The built-in table must
// have a date; an override need not.
func parsePrices(name string, data []byte, needDate bool) (*Prices, error) {
	var f priceFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: the price table is empty (write date: and models:, see the built-in usage/prices.yaml)", name)
		}
		return nil, yamlError(name, err)
	}
	if line := secondDocument(dec); line > 0 {
		return nil, fmt.Errorf(`%s:%d: more than one yaml document: till reads the first alone (hint: remove the "---" separator and merge the models)`, name, line)
	}
	lines := keyLines(data)
	var errs []error
	bad := func(line int, path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s:%d: %s: %s", name, line, path, fmt.Sprintf(format, args...)))
	}
	p := &Prices{date: f.Date}
	if f.Date == "" && needDate {
		bad(1, "date", "missing (write the day the prices were taken, as date: YYYY-MM-DD)")
	} else if f.Date != "" {
		if _, err := time.Parse(time.DateOnly, f.Date); err != nil {
			bad(lines["date"], "date", "%q is not a date (write it as YYYY-MM-DD)", f.Date)
		}
	}
	for model, e := range f.Models {
		line := lines["models."+model]
		path := "models." + strconv.Quote(model)
		if model == "" || strings.ContainsFunc(model, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			bad(line, path, "a model pattern must be non-empty, without spaces or control characters")
			continue
		}
		check := func(key string, v *float64, required bool) float64 {
			unit := "USD per million tokens"
			switch key {
			case "web_search":
				unit = "USD per 1,000 searches"
			case "grounded_prompt":
				unit = "USD per 1,000 answers that searched"
			}
			switch {
			case v == nil && required:
				bad(line, path, "%s is missing (%s)", key, unit)
			case v == nil:
			case *v < 0 || math.IsNaN(*v) || math.IsInf(*v, 0):
				bad(lines["models."+model+"."+key], path+"."+key, "must be a number ≥ 0 (%s)", unit)
			default:
				return *v
			}
			return 0
		}
		in := check("input", e.Input, true)
		out := check("output", e.Output, true)
		cached := in
		if e.CachedInput != nil {
			cached = check("cached_input", e.CachedInput, false)
		}
		p.entries = append(p.entries, price{
			pattern: model,
			literal: len(model) - strings.Count(model, "*"),
			star:    strings.Contains(model, "*"),
			input:   in, cached: cached, output: out,
			webSearch:      check("web_search", e.WebSearch, false),
			groundedPrompt: check("grounded_prompt", e.GroundedPrompt, false),
		})
	}
	if len(errs) > 0 {
		slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
		return nil, errors.Join(errs...)
	}
	p.sort()
	return p, nil
}

// secondDocument returns the line of the document dec holds after the
// one it decoded, or 0 when there is none (a syntax error after the
// first document counts as one, at its line).
func secondDocument(dec *yaml.Decoder) int {
	var extra yaml.Node
	err := dec.Decode(&extra)
	switch {
	case err == nil:
		return max(extra.Line, 1)
	case errors.Is(err, io.EOF):
		return 0
	}
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return max(line, 1)
	}
	return 1
}

// keyLines maps the keys of a price table ("date", "models.NAME",
// "models.NAME.input", …) to their lines, for error messages.
func keyLines(data []byte) map[string]int {
	lines := map[string]int{}
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 {
		return lines
	}
	var walk func(n *yaml.Node, prefix string, depth int)
	walk = func(n *yaml.Node, prefix string, depth int) {
		if n.Kind != yaml.MappingNode || depth > 2 {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := prefix + n.Content[i].Value
			lines[k] = n.Content[i].Line
			walk(n.Content[i+1], k+".", depth+1)
		}
	}
	walk(doc.Content[0], "", 0)
	return lines
}

// yamlLine matches the line numbers yaml.v3 puts in its messages.
var (
	yamlLine      = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	yamlUnknown   = regexp.MustCompile(`^field (.*) not found in type usage\.(priceEntry|priceFile)$`)
	yamlNotNumber = regexp.MustCompile("^cannot unmarshal !!\\w+ (`.*`) into float64$")
)

// yamlError restates a yaml.v3 decoding error as "file:line: message"
// lines, with hints for the common mistakes.
func yamlError(name string, err error) error {
	var msgs []string
	if te, ok := err.(*yaml.TypeError); ok {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	var errs []error
	for _, msg := range msgs {
		where := name
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			where, msg = name+":"+m[1], m[2]
		}
		if m := yamlUnknown.FindStringSubmatch(msg); m != nil {
			msg = fmt.Sprintf("unknown key %q", m[1])
			if m[2] == "priceEntry" {
				msg += " (a model takes input, cached_input, output, web_search and grounded_prompt)"
			} else {
				msg += " (a price table takes date and models)"
			}
		} else if m := yamlNotNumber.FindStringSubmatch(msg); m != nil {
			msg = m[1] + " is not a number (prices are USD per million tokens)"
		}
		errs = append(errs, fmt.Errorf("%s: %s", where, msg))
	}
	return errors.Join(errs...)
}
