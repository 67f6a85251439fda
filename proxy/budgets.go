package proxy

import (
	"context"
	"errors"
	"math"
	"slices"
	"time"

	"github.com/tillgw/till/budget"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/usage"
)

// budgetRule is a budget of the config with the spec its store counts.
type budgetRule struct {
	cfg  config.Budget
	spec *budget.Spec
}

// compileBudgets makes the snapshot's budget rules.
func compileBudgets(bs []config.Budget) []*budgetRule {
	out := make([]*budgetRule, 0, len(bs))
	for _, b := range bs {
		out = append(out, &budgetRule{cfg: b, spec: &budget.Spec{
			Name:     b.Name,
			Window:   budget.Window{Rolling: b.Window, Calendar: b.Calendar},
			Per:      budget.Per(b.Per),
			Requests: b.Requests,
			Tokens:   b.Tokens,
			USD:      b.USD,
			Warn:     b.Warn,
		}})
	}
	return out
}

// BudgetSpecs are the budgets the snapshot counts, for till usage.
func (s *Snapshot) BudgetSpecs() []*budget.Spec {
	out := make([]*budget.Spec, 0, len(s.budgets))
	for _, b := range s.budgets {
		out = append(out, b.spec)
	}
	return out
}

// charges lists the budgets a request on route from the client named
// client ("" for an anonymous caller) charges, with the counter of each.
func (s *Snapshot) charges(route, client string) []budget.Charge {
	var out []budget.Charge
	for _, b := range s.budgets {
		if !b.cfg.Covers(route, client) {
			continue
		}
		counter := "all"
		switch b.cfg.Per {
		case "client":
			counter = client
			if counter == "" {
				counter = anonymous
			}
		case "route":
			counter = route
		}
		out = append(out, budget.Charge{Spec: b.spec, Counter: counter})
	}
	return out
}

// unpriced reports whether a request for model on rt would be counted at
// no cost by a dollar budget that blocks: the price table has no entry
// for the model. A request that names no model (a model list, a file)
// costs nothing to price.
func (s *Snapshot) unpriced(rt *route, model string, charges []budget.Charge) bool {
	if model == "" || rt.usage == usage.None || s.prices.Priced(model) {
		return false
	}
	return slices.ContainsFunc(charges, func(c budget.Charge) bool { return c.Spec.USD > 0 && !c.Spec.Warn })
}

var errModelUnpriced = apiError{CodeModelNotAllowed, "a dollar budget covers this route and till has no price for this model: add it to the prices.file table"}

// storeTimeout bounds a request's wait for the rate and budget store, and
// a settlement's.
const storeTimeout = redisTimeout

// errNoStoreTime is a budget decision the rate's decision left no time for.
var errNoStoreTime = errors.New("the rate decision used the store's whole deadline")

// spend takes a request from the budgets it charges, reserving reserve
// output tokens, now: its body has been read since it began, which a slow
// upload can make longer than a window. The store has timeout to decide.
// It returns the ticket to settle, or the refusal and its Retry-After in
// seconds. A store that fails follows limits.on_redis_error: the request
// goes uncounted, or is refused.
func (g *Gateway) spend(ctx context.Context, charges []budget.Charge, reserve int64, timeout time.Duration) (*budget.Ticket, *apiError, int) {
	var t *budget.Ticket
	var denial *budget.Denial
	err := errNoStoreTime
	if timeout > 0 {
		storeCtx, cancel := context.WithTimeout(ctx, timeout)
		t, denial, err = g.budgets.Take(storeCtx, time.Now(), charges, reserve)
		cancel()
	}
	switch {
	case err != nil && ctx.Err() != nil:
		// The app left (or shutdown cut it): no fault of the store.
		return nil, &apiError{CodeBudgetExceeded, "the request ended while its budget was counted"}, 0
	case err != nil:
		g.budgetStoreFailed(err)
		if g.failOpen {
			return nil, nil, 0
		}
		return nil, &apiError{CodeBudgetExceeded, "the budget store cannot be reached, and limits.on_redis_error is deny"}, 1
	case denial != nil:
		return nil, &apiError{CodeBudgetExceeded, "a budget this request counts against is spent (" + denial.Budget + ", " + string(denial.Kind) + ")"},
			int(math.Ceil(denial.RetryAfter.Seconds()))
	}
	return t, nil, 0
}

// settle charges what a request used (tokens the provider reported, their
// price) in place of its reservation.
func (g *Gateway) settle(t *budget.Ticket, tokens int64, usd float64) {
	if t == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := g.budgets.Settle(ctx, time.Now(), t, tokens, usd); err != nil {
		g.budgetStoreFailed(err)
	}
}

// budgetStoreFailed logs a failure of the budget store, at most every 10
// seconds.
func (g *Gateway) budgetStoreFailed(err error) {
	g.metrics.limitStoreError()
	now := time.Now().Unix()
	if last := g.lastBudgetErr.Load(); now-last >= 10 && g.lastBudgetErr.CompareAndSwap(last, now) {
		g.log.Error().Str("error", err.Error()).Bool("fail_open", g.failOpen).Msg("budget store unavailable: limits.on_redis_error applies")
	}
}

// lateCounts is a budget store that tries again in the background what
// Redis missed (budget.Redis).
type lateCounts interface {
	Pending() int
	Wait(ctx context.Context) error
}

// awaitLate waits, until ctx ends, for the settlements and undos the
// budget store still tries to count in Redis: till stopping first would
// lose them.
func (g *Gateway) awaitLate(ctx context.Context) {
	late, ok := g.budgets.(lateCounts)
	if !ok || late.Pending() == 0 {
		return
	}
	g.log.Info().Int("pending", late.Pending()).Msg("shutting down: waiting for Redis to take what it missed (budget counts tried again)")
	if late.Wait(ctx) != nil {
		g.log.Warn().Int("lost", late.Pending()).Msg("grace period over: budget counts Redis missed are lost")
	}
}

// Usage lists every budget counter: its limit, use and reset time (GET
// /admin/usage, till usage).
func (g *Gateway) Usage(ctx context.Context) ([]budget.Row, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rows, err := g.budgets.Usage(ctx, time.Now(), g.Snapshot().BudgetSpecs())
	if rows == nil {
		rows = []budget.Row{}
	}
	return rows, err
}
