package config

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tillgw/till/usage"
)

// Usage formats: how a route's responses report token usage.
const (
	UsageOpenAI    = "openai"
	UsageAnthropic = "anthropic"
	UsageGemini    = "gemini"
	UsageCohere    = "cohere"
	UsageNone      = "none"
)

// UsageFormats are the values of a route's usage setting.
var UsageFormats = []string{UsageOpenAI, UsageAnthropic, UsageGemini, UsageCohere, UsageNone}

// Budget caps what the requests it covers may spend in a window: requests,
// tokens the provider reported, and dollars priced from the model table.
type Budget struct {
	// Name identifies the budget in metrics, errors and till usage.
	Name string
	// Clients are the clients it covers; nil covers every caller,
	// anonymous ones included.
	Clients []string
	// Routes are the routes it covers; nil covers every route.
	Routes []string
	// Per is which counter a request charges: "client" (the default; an
	// anonymous caller counts as "anonymous"), "route" or "all".
	Per string
	// Window is a rolling window's length; zero when Calendar is set.
	Window time.Duration
	// Calendar is "day" or "month" (UTC) for a calendar window.
	Calendar string
	// Requests limits the requests; zero means no limit of that kind,
	// and at least one of Requests, Tokens and USD is set.
	Requests int64
	// Tokens limits the input and output tokens the provider reported.
	Tokens int64
	// USD limits the dollars the requests cost, priced from the table.
	USD float64
	// Warn forwards an over-budget request with reason budget_exceeded
	// instead of refusing it (on_exceeded: warn).
	Warn bool
	// Line is the budget's line in the config file.
	Line int
}

// Covers reports whether a request on route from client (the client's
// name, or "" for an anonymous caller) charges the budget.
func (b *Budget) Covers(route, client string) bool {
	if b.Routes != nil && !slices.Contains(b.Routes, route) {
		return false
	}
	return b.Clients == nil || (client != "" && slices.Contains(b.Clients, client))
}

// Prices says where the model price table comes from.
type Prices struct {
	// File, when set, is a YAML price table merged over the built-in one.
	File string
	// Table is the price table in force: File as WithPrices read it,
	// merged over the built-in table. It is nil, and the built-in table
	// is in force, in a Config that Load or Parse alone made.
	Table *usage.Prices
}

// WithPrices returns a copy of c whose Prices.Table holds the table
// prices.file names, read now and only now: what checks a load and what
// serves it use this one reading, never a later one of a file changed
// meanwhile, and a reload keeps the prices of the config it serves. c
// without prices.file is returned as it is. The error, for a file that
// cannot be read or does not parse, names the file (and line).
func (c *Config) WithPrices() (*Config, error) {
	if c.Prices.File == "" {
		return c, nil
	}
	table, err := usage.LoadPrices(c.Prices.File)
	if err != nil {
		return nil, err
	}
	priced := *c
	priced.Prices.Table = table
	return &priced, nil
}

// Budget limits and windows.
const (
	minBudgetWindow = time.Minute
	maxBudgetWindow = 90 * 24 * time.Hour
	maxBudgetUSD    = 1e9
)

// budgets decodes the budgets list.
func (d *decoder) budgets(n *yaml.Node, path string) []Budget {
	var out []Budget
	seen := map[string]int{}
	d.list(n, path, func(v *yaml.Node, p string) {
		b, ok := d.budget(v, p)
		if !ok {
			return
		}
		if first, dup := seen[b.Name]; dup {
			d.errorf(v, join(p, "name"), "duplicate budget name %q (first at line %d)", b.Name, first)
			return
		}
		seen[b.Name] = b.Line
		out = append(out, b)
	})
	return out
}

func (d *decoder) budget(n *yaml.Node, path string) (Budget, bool) {
	b := Budget{Line: n.Line, Per: "client"}
	f := d.fields(n, path, budgetKeys)
	if f == nil {
		return b, false
	}
	ok := true
	if v := f["name"]; v == nil {
		d.errorf(n, join(path, "name"), "required")
		ok = false
	} else if s, good := d.nonEmpty(v, join(path, "name")); good && d.check(v, join(path, "name"), ValidName(s)) {
		b.Name = s
	} else {
		ok = false
	}
	// An empty scope covers nothing ([]) or, written null, everything:
	// neither is a cap anyone meant, so both are refused.
	if v := emptyList(n, "clients"); v != nil {
		d.errorf(v, join(path, "clients"), "is empty, which would cap no client (hint: remove the key to cover every client, anonymous ones included, or list clients such as [web])")
		ok = false
	} else if v := f["clients"]; v != nil {
		b.Clients = d.strs(v, join(path, "clients"))
		if b.Clients == nil {
			b.Clients = []string{}
		}
	}
	if v := emptyList(n, "routes"); v != nil {
		d.errorf(v, join(path, "routes"), "is empty, which would cap no route (hint: remove the key to cover every route, or list routes such as [openai])")
		ok = false
	} else if v := f["routes"]; v != nil {
		b.Routes = d.strs(v, join(path, "routes"))
		if b.Routes == nil {
			b.Routes = []string{}
		}
	}
	if v := f["per"]; v != nil {
		if s, good := d.enum(v, join(path, "per"), "client", "route", "all"); good {
			b.Per = s
		} else {
			ok = false
		}
	}
	if v := f["window"]; v == nil {
		d.errorf(n, join(path, "window"), "required (hint: a rolling window from 1m to 90d such as 1h or 30d, or day or month for a calendar one, UTC)")
		ok = false
	} else if s, good := d.str(v, join(path, "window")); good {
		switch s {
		case "day", "month":
			b.Calendar = s
		default:
			w, err := ParseDuration(s)
			switch {
			case err != nil || w < minBudgetWindow || w > maxBudgetWindow:
				d.errorf(v, join(path, "window"), "must be a rolling window from 1m to 90d such as 1h or 30d, or day or month (calendar, UTC)")
				ok = false
			case w%time.Second != 0:
				// Budgets count in whole seconds: the store would refuse
				// every count, and on_redis_error decide each request.
				d.errorf(v, join(path, "window"), "must be a whole number of seconds (hint: 1m or 90s)")
				ok = false
			default:
				b.Window = w
			}
		}
	} else {
		ok = false
	}
	if v := f["requests"]; v != nil {
		if x, good := d.intBetween(v, join(path, "requests"), 1, math.MaxInt32, ""); good {
			b.Requests = int64(x)
		} else {
			ok = false
		}
	}
	if v := f["tokens"]; v != nil {
		if x, good := d.integer(v, join(path, "tokens")); !good {
			ok = false
		} else if x < 1 {
			d.errorf(v, join(path, "tokens"), "must be at least 1")
			ok = false
		} else {
			b.Tokens = x
		}
	}
	if v := f["usd"]; v != nil {
		if x, good := d.number(v, join(path, "usd")); !good {
			ok = false
		} else if x <= 0 || x > maxBudgetUSD {
			d.errorf(v, join(path, "usd"), "must be more than 0 and at most %g", float64(maxBudgetUSD))
			ok = false
		} else {
			b.USD = x
		}
	}
	if ok && b.Requests == 0 && b.Tokens == 0 && b.USD == 0 {
		d.errorf(n, path, "sets no limit (hint: requests, tokens or usd)")
		ok = false
	}
	if v := f["on_exceeded"]; v != nil {
		if s, good := d.enum(v, join(path, "on_exceeded"), "block", "warn"); good {
			b.Warn = s == "warn"
		} else {
			ok = false
		}
	}
	return b, ok
}

// number reads a decimal number such as 25 or 0.5.
func (d *decoder) number(n *yaml.Node, path string) (float64, bool) {
	var x float64
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" && d.leadingZero(n, path) {
		return 0, false
	}
	if n.Kind == yaml.ScalarNode && (n.ShortTag() == "!!int" || n.ShortTag() == "!!float") && n.Decode(&x) == nil && !math.IsNaN(x) && !math.IsInf(x, 0) {
		return x, true
	}
	d.errorf(n, path, "must be a number such as 25 or 0.5")
	return 0, false
}

// prices decodes prices: {file: PATH}.
func (d *decoder) prices(n *yaml.Node, path string, p *Prices) {
	f := d.fields(n, path, pricesKeys)
	if v := f["file"]; v != nil {
		p.File, _ = d.filePath(v, join(path, "file"))
	}
}

// checkBudgets checks that budgets name known clients and routes.
func (d *decoder) checkBudgets(c *Config, n *yaml.Node) {
	// Sets, as well as the lists that suggestions are drawn from: a
	// budget may list thousands of names.
	clients := make([]string, 0, len(c.Clients))
	isClient := make(map[string]bool, len(c.Clients))
	for _, cl := range c.Clients {
		clients = append(clients, cl.Name)
		isClient[cl.Name] = true
	}
	routes := make([]string, 0, len(c.Routes))
	isRoute := make(map[string]bool, len(c.Routes))
	for _, r := range c.Routes {
		routes = append(routes, r.Name)
		isRoute[r.Name] = true
	}
	for i, b := range c.Budgets {
		at := budgetNode(n, i)
		p := fmt.Sprintf("budgets[%d]", i)
		for j, name := range b.Clients {
			if !isClient[name] {
				d.unknownClient(at, fmt.Sprintf("%s.clients[%d]", p, j), name, clients)
			}
		}
		for j, name := range b.Routes {
			if isRoute[name] {
				continue
			}
			q := fmt.Sprintf("%s.routes[%d]", p, j)
			switch {
			case !plausibleKey(name):
				d.errorf(at, q, "unknown route")
			case d.suggest(name, routes) != "":
				d.errorf(at, q, "unknown route %q (did you mean %q?)", name, d.suggest(name, routes))
			default:
				d.errorf(at, q, "unknown route %q (known: %s)", name, strings.Join(routes, ", "))
			}
		}
	}
}

// budgetNode returns the i-th budget's node, for messages.
func budgetNode(n *yaml.Node, i int) *yaml.Node {
	if n != nil && n.Kind == yaml.SequenceNode && i < len(n.Content) {
		return n.Content[i]
	}
	return n
}

// DodgeableBudgets names the budgets limited to some clients that cover a
// route any caller may use: a client that leaves its token out comes as
// anonymous, which such a budget does not count. One line per budget.
func (c *Config) DodgeableBudgets() []string {
	var out []string
	for _, b := range c.Budgets {
		if b.Clients == nil {
			continue
		}
		open := c.coveredRoutes(b, func(r Route) bool { return r.Clients == nil })
		if len(open) > 0 {
			names, one := someRoutes(open)
			verb := "take"
			if one {
				verb = "takes"
			}
			out = append(out, fmt.Sprintf("budget %q counts clients %s only, and %s %s callers without a token, whom it does not count: a client that leaves its token out is not held to it (hint: set clients: on the route)", b.Name, strings.Join(b.Clients, ", "), names, verb))
		}
	}
	return out
}

// UnmeteredBudgets names the budgets limiting tokens or dollars that cover
// a route whose usage is not metered (usage: none): those routes count
// against their requests limit only. One line per budget.
func (c *Config) UnmeteredBudgets() []string {
	var out []string
	for _, b := range c.Budgets {
		if b.Tokens == 0 && b.USD == 0 {
			continue
		}
		unmetered := c.coveredRoutes(b, func(r Route) bool { return r.Usage == UsageNone })
		if len(unmetered) > 0 {
			names, one := someRoutes(unmetered)
			verb := "report"
			if one {
				verb = "reports"
			}
			out = append(out, fmt.Sprintf("budget %q limits tokens or usd, and %s %s no usage (hint: set usage: on the route, or limit its requests only)", b.Name, names, verb))
		}
	}
	return out
}

// coveredRoutes returns the names of the routes b covers for which is
// holds.
func (c *Config) coveredRoutes(b Budget, is func(Route) bool) []string {
	var scope map[string]bool
	if b.Routes != nil {
		scope = make(map[string]bool, len(b.Routes))
		for _, name := range b.Routes {
			scope[name] = true
		}
	}
	var out []string
	for _, r := range c.Routes {
		if (scope == nil || scope[r.Name]) && is(r) {
			out = append(out, r.Name)
		}
	}
	return out
}

// someRoutes names routes in a warning: route "a", routes "a" and "b",
// or the first three and how many more, so that a warning stays a line
// however many routes a budget covers. one reports a single route.
func someRoutes(names []string) (phrase string, one bool) {
	const shown = 3
	q := make([]string, 0, shown)
	for _, n := range names[:min(len(names), shown)] {
		q = append(q, strconv.Quote(n))
	}
	switch {
	case len(names) == 1:
		return "route " + q[0], true
	case len(names) <= shown:
		return "routes " + strings.Join(q[:len(q)-1], ", ") + " and " + q[len(q)-1], false
	}
	return fmt.Sprintf("routes %s and %d more", strings.Join(q, ", "), len(names)-shown), false
}
