// Package budget counts what clients spend (requests, tokens and USD) per
// budget and counter over a window, and refuses a request once a budget is
// spent.
//
// A budget ([Spec]) has a window, rolling or calendar, and limits on any of
// requests, tokens and USD. A request charges one counter of each budget
// that covers it ([Charge]): its client, its route or "all". A budget is
// spent when the counter's use, reservations in flight included, has
// reached a limit; the next request is then refused with a [Denial] that
// says how long to wait, unless the budget only warns.
//
// A request goes through two steps. [Store.Take], before it is forwarded,
// checks every charge and, when none is spent, counts the request and
// reserves its maximum output tokens in each, all or nothing. [Store.Settle],
// when the response has told what it used, replaces the reservation by the
// tokens and USD used, in the window the request was taken in.
//
// Two stores implement it with the same behaviour: [Memory], in process,
// and [Redis], shared by every till using the same Redis.
//
// # Windows and buckets
//
// A rolling window of W counts use in buckets of B = W/60 (at least one
// second), aligned on the Unix epoch. Use counts until the end of its
// bucket plus W: it ages out between W and W+B after it was taken, never
// earlier. A calendar window ("day" or "month", UTC) counts use in one
// bucket per period, which ends at the next UTC midnight or first of the
// month.
//
// # Overshoot
//
// Take checks and counts atomically, so the requests limit is never
// exceeded and parallel requests that reserve tokens cannot get past the
// tokens limit by more than one reservation: with 10,000 tokens left and
// 1,000 reserved each, at most 10 of any number of parallel requests pass
// before one settles. What is not reserved is only known afterwards, so a
// tokens or USD limit may be overshot by what the requests in flight when
// it was reached use beyond their reservations (all of their USD, which is
// never reserved).
//
// Amounts are counted within 0..2^50 (USD in whole micro-dollars, each
// charge and limit rounded up), so that a hostile max_tokens cannot break
// the counts. A request that is never
// settled (till stopped) keeps its reservation as use until it ages out.
package budget

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
)

// Window is a budget's period: either Rolling, a duration ending now, or
// Calendar, the current UTC "day" or "month".
type Window struct {
	// Rolling is the length of a rolling window: whole seconds, at least
	// one.
	Rolling time.Duration
	// Calendar is "day" or "month" for a calendar window in UTC.
	Calendar string
}

// Validate says whether w is exactly one of a rolling window of at least
// one second and a calendar "day" or "month".
func (w Window) Validate() error {
	switch {
	case w.Rolling != 0 && w.Calendar != "":
		return errors.New("both rolling and calendar")
	case w.Calendar != "":
		if w.Calendar != "day" && w.Calendar != "month" {
			return fmt.Errorf("calendar window %q: want day or month", w.Calendar)
		}
	case w.Rolling < time.Second || w.Rolling%time.Second != 0:
		return fmt.Errorf("rolling window %v: want whole seconds, at least 1s", w.Rolling)
	}
	return nil
}

// String is the window as a config would write it: "day", "month", or the
// rolling duration in seconds ("86400s").
func (w Window) String() string {
	if w.Calendar != "" {
		return w.Calendar
	}
	return strconv.FormatInt(int64(w.Rolling/time.Second), 10) + "s"
}

// seconds is the rolling window's length in whole seconds.
func (w Window) seconds() int64 { return int64(w.Rolling / time.Second) }

// bucket is the length of a rolling window's buckets in seconds.
func (w Window) bucket() int64 { return max(1, w.seconds()/60) }

// periodStart is the start of the calendar period holding unix second t.
func (w Window) periodStart(t int64) int64 {
	u := time.Unix(t, 0).UTC()
	if w.Calendar == "month" {
		return time.Date(u.Year(), u.Month(), 1, 0, 0, 0, 0, time.UTC).Unix()
	}
	return time.Date(u.Year(), u.Month(), u.Day(), 0, 0, 0, 0, time.UTC).Unix()
}

// periodEnd is the start of the calendar period after the one starting at
// start.
func (w Window) periodEnd(start int64) int64 {
	u := time.Unix(start, 0).UTC()
	if w.Calendar == "month" {
		return u.AddDate(0, 1, 0).Unix()
	}
	return u.AddDate(0, 0, 1).Unix()
}

// span is where a moment falls in a window, in unix seconds.
type span struct {
	bucket  int64 // start of the bucket now counts in
	liveMin int64 // buckets starting before it no longer count
}

// at places now in w.
func (w Window) at(now time.Time) span {
	t := now.Unix()
	if w.Calendar != "" {
		p := w.periodStart(t)
		return span{bucket: p, liveMin: p}
	}
	b := w.bucket()
	// A bucket counts while its start + B + W is after now.
	return span{bucket: t - mod(t, b), liveMin: t - w.seconds() - b + 1}
}

// freeAt is when use counted in the bucket starting at start stops
// counting, in unix seconds.
func (w Window) freeAt(start int64) int64 {
	if w.Calendar != "" {
		return w.periodEnd(start)
	}
	return start + w.seconds() + w.bucket()
}

// life is the longest use counts from the start of its bucket, in
// seconds: freeAt(start) - start, or more (a calendar month's longest).
func (w Window) life() int64 {
	switch w.Calendar {
	case "day":
		return 24 * 60 * 60
	case "month":
		return 31 * 24 * 60 * 60
	}
	return w.seconds() + w.bucket()
}

// expireAt is when the bucket starting at start, and so a Redis key whose
// newest bucket it is, can be dropped: a bucket after it stops counting.
func (w Window) expireAt(start int64) int64 {
	if w.Calendar != "" {
		// A calendar bucket is a whole period: a minute is margin enough
		// for clocks that differ.
		return w.periodEnd(start) + 60
	}
	return w.freeAt(start) + w.bucket()
}

// slack is how far ahead of the clock, in seconds, a rolling window's
// bucket may start before the Redis store takes it for one counted by a
// clock since stepped back, and moves what it holds to now's bucket, so
// that it counts a window from now rather than until the clock gets there
// again: more than the clocks of tills that count together differ. It is
// 0 for a calendar window, whose periods are the clock's.
func (w Window) slack() int64 {
	if w.Calendar != "" {
		return 0
	}
	return 60
}

// reset is when a calendar window next starts afresh; nil for a rolling
// window.
func (w Window) reset(now time.Time) *time.Time {
	if w.Calendar == "" {
		return nil
	}
	r := time.Unix(w.periodEnd(w.periodStart(now.Unix())), 0).UTC()
	return &r
}

// mod is a modulo whose result is never negative.
func mod(a, b int64) int64 { return (a%b + b) % b }

// Per is what each counter of a budget counts, and so which kind of name
// a [Charge]'s Counter is.
type Per string

// The kinds of counters.
const (
	// PerClient counts each client apart ("" is PerClient too).
	PerClient Per = "client"
	// PerRoute counts each route apart.
	PerRoute Per = "route"
	// PerAll counts every request in one counter, "all".
	PerAll Per = "all"
)

// Spec is one budget. A Store reads it, never changes it; give a Store a
// new Spec rather than changing one it may be using.
//
// A budget's counts belong to its Name, its Window and its Per: a Spec
// that differs from the last only in its limits or Warn finds what was
// counted (every kind is counted, limited or not, so a limit added finds
// what was spent); one whose Window or Per differs counts apart, so that
// a route named like a client never finds that client's counts.
type Spec struct {
	// Name is the budget's name, unique among budgets.
	Name string
	// Window is the period counted.
	Window Window
	// Per is what its counters count: the Counter of its charges is a
	// client's name, a route's, or "all".
	Per Per
	// Requests limits the number of requests; 0 means no limit.
	Requests int64
	// Tokens limits input plus output tokens; 0 means no limit.
	Tokens int64
	// USD limits the cost in US dollars; 0 means no limit.
	USD float64
	// Warn makes a spent budget report, in Ticket.Exceeded, instead of
	// refusing.
	Warn bool
}

// per is what the spec's counters count, PerClient when unset.
func (s *Spec) per() Per {
	if s.Per == "" {
		return PerClient
	}
	return s.Per
}

// limits is the spec's limits by kind, USD in micro-dollars; 0 is none.
func (s *Spec) limits() [numKinds]int64 {
	return [numKinds]int64{clamp(s.Requests), clamp(s.Tokens), micros(s.USD)}
}

// Validate says whether the spec can be counted: it has a name and a valid
// window, and no limit is negative.
func (s *Spec) Validate() error {
	if s == nil {
		return errors.New("budget: no spec")
	}
	if s.Name == "" {
		return errors.New("budget: a spec has no name")
	}
	if err := s.Window.Validate(); err != nil {
		return fmt.Errorf("budget %s: %w", s.Name, err)
	}
	if p := s.per(); p != PerClient && p != PerRoute && p != PerAll {
		return fmt.Errorf("budget %s: per %q: want client, route or all", s.Name, p)
	}
	if s.Requests < 0 || s.Tokens < 0 || s.USD < 0 || math.IsNaN(s.USD) || math.IsInf(s.USD, 0) {
		return fmt.Errorf("budget %s: a limit is negative or not a number", s.Name)
	}
	return nil
}

// Charge is one counter of one budget that a request charges, e.g.
// {spec, "web"} for the client web.
type Charge struct {
	// Spec is the budget.
	Spec *Spec
	// Counter is the client, route or "all" counted ("anonymous" for a
	// request without a client), as Spec.Per says.
	Counter string
}

// Kind is what a limit counts.
type Kind string

// The kinds a budget limits.
const (
	// KindRequests counts requests.
	KindRequests Kind = "requests"
	// KindTokens counts input plus output tokens.
	KindTokens Kind = "tokens"
	// KindUSD counts US dollars.
	KindUSD Kind = "usd"
)

// Indexes of the kinds in per-kind arrays, in the order they are checked.
const (
	reqs = iota
	toks
	usd
	numKinds
)

// kinds names each kind index.
var kinds = [numKinds]Kind{KindRequests, KindTokens, KindUSD}

// maxAmount bounds every amount and limit counted (2^50, about 10^15), so
// that sums stay exact in Lua's numbers and never overflow in Redis.
const maxAmount = 1 << 50

// clamp brings an amount into 0..maxAmount.
func clamp(v int64) int64 { return min(max(0, v), maxAmount) }

// maxBucket bounds what a bucket holds and what buckets sum to (2^62, as
// the Redis scripts' incr caps a field): reservations under a budget that
// only warns pile up unrefused, and a count that wrapped past int64 would
// read as below its limit.
const maxBucket = 1 << 62

// plus adds v (none below 0) to t, saturating at maxBucket.
func plus(t, v int64) int64 { return t + min(max(0, v), maxBucket-t) }

// total sums the amounts of bs, saturating at maxBucket.
func total(bs []bucketAmount) int64 {
	var t int64
	for _, b := range bs {
		t = plus(t, b.v)
	}
	return t
}

// micros converts dollars to whole micro-dollars, the unit stored, within
// 0..maxAmount (NaN is 0). It rounds up, so that an answer cheaper than
// half a micro-dollar does not count as free, nor a limit below one as
// none; a millionth of a micro-dollar is forgiven first, so that
// float64's error on an exact amount (0.07 is 70000.00000000001) does
// not make it one more.
func micros(usd float64) int64 {
	m := math.Ceil(usd*1e6 - 1e-6)
	switch {
	case !(m > 0):
		return 0
	case m >= maxAmount:
		return maxAmount
	}
	return int64(m)
}

// amount is a stored amount of kind k as reported: dollars for USD.
func amount(k int, v int64) float64 {
	if k == usd {
		return float64(v) / 1e6
	}
	return float64(v)
}

// Denial says which budget is spent and when to retry.
type Denial struct {
	// Budget is the spent budget's name.
	Budget string
	// Counter is its spent counter.
	Counter string
	// Kind is the limit reached.
	Kind Kind
	// RetryAfter is how long until the window frees enough use to get
	// below the limit, in whole seconds, at least one. For a calendar
	// window it is the time left until the next period. Tokens reserved
	// by requests in flight free as those end, not with the window: when
	// the tokens used without them are below the limit, it is a second.
	RetryAfter time.Duration
}

// Ticket is what Take counted for one request, to be given to Settle once
// the request ends, also when it failed (with 0 tokens), so that its
// reservation is released.
type Ticket struct {
	// Exceeded lists the warn-only budgets that were spent when the
	// request was taken; it was counted in them anyway.
	Exceeded []Denial

	reserve int64
	charges []taken
	settled atomic.Bool
	id      string // the Redis store's key of the Take
}

// Reserved is the output tokens the ticket reserved.
func (t *Ticket) Reserved() int64 { return t.reserve }

// taken is one charge as Take counted it.
type taken struct {
	budget  string
	window  Window
	per     Per
	counter string
	bucket  int64 // the bucket Take counted in
}

// Row is one counter's use of one limit, as `till usage --json` prints it.
type Row struct {
	// Budget is the budget's name.
	Budget string `json:"budget"`
	// Counter is the client, route or "all".
	Counter string `json:"counter"`
	// Kind is the limit's kind.
	Kind Kind `json:"kind"`
	// Limit is the limit (dollars for USD).
	Limit float64 `json:"limit"`
	// Used is what counts in the window now, reservations in flight
	// included.
	Used float64 `json:"used"`
	// Remaining is Limit minus Used, 0 when spent.
	Remaining float64 `json:"remaining"`
	// Reset is when a calendar window starts afresh; nil for a rolling
	// window.
	Reset *time.Time `json:"reset"`
}

// sortRows orders rows by budget, counter and kind.
func sortRows(rows []Row) {
	slices.SortFunc(rows, func(a, b Row) int {
		switch {
		case a.Budget != b.Budget:
			return cmp.Compare(a.Budget, b.Budget)
		case a.Counter != b.Counter:
			return cmp.Compare(a.Counter, b.Counter)
		}
		return cmp.Compare(a.Kind, b.Kind)
	})
}

// row builds the Row of kind k for a counter that has used used.
func row(s *Spec, counter string, k int, limit, used int64, now time.Time) Row {
	return Row{
		Budget: s.Name, Counter: counter, Kind: kinds[k],
		Limit: amount(k, limit), Used: amount(k, used),
		Remaining: amount(k, max(0, limit-used)),
		Reset:     s.Window.reset(now),
	}
}

// Store counts budgets. Its methods are safe for concurrent use. An error
// means the store could not decide (Redis failed): the caller applies its
// on_redis_error rule.
type Store interface {
	// Take checks every charge and, when none is spent, counts one
	// request and reserves reserve tokens in each, atomically; it returns
	// a Ticket to settle. When one is spent and its budget does not only
	// warn, it takes nothing and returns a Denial for the spent limit that
	// frees last.
	Take(ctx context.Context, now time.Time, charges []Charge, reserve int64) (*Ticket, *Denial, error)
	// Settle replaces the ticket's reservation by what the request used,
	// in the buckets it was taken in: a window that has moved on since is
	// not charged. It gives back no more of the reservation than the
	// store still holds (Redis lost its data, the bucket aged out), so
	// that what was counted since is kept. A ticket is settled once;
	// later calls do nothing.
	Settle(ctx context.Context, now time.Time, t *Ticket, tokens int64, usd float64) error
	// Usage lists the limits of each counter of specs charged within its
	// window, sorted by budget, counter and kind.
	Usage(ctx context.Context, now time.Time, specs []*Spec) ([]Row, error)
}

// bucketAmount is one bucket's amount of one kind.
type bucketAmount struct {
	start int64
	v     int64
	// until is, in the Memory store, when by its monotonic clock the
	// bucket stops counting (see Memory.elapsed); 0 in Redis, where the
	// wall clock alone says.
	until time.Duration
}

// freeAt is when b stops counting, in unix seconds: when w frees its
// bucket by the wall clock, or, in the Memory store (mono, its monotonic
// now; nil in Redis), sooner when its monotonic clock says so: a wall
// clock stepped back finds the buckets it counted ahead, which count no
// longer than on a steady clock.
func (b bucketAmount) freeAt(w Window, now time.Time, mono *time.Duration) int64 {
	free := w.freeAt(b.start)
	if mono != nil {
		left := (b.until - *mono + time.Second - 1) / time.Second
		free = min(free, now.Unix()+int64(left))
	}
	return free
}

// live is the buckets of bs, oldest first, that start at liveMin or
// later: those that count.
func live(bs []bucketAmount, liveMin int64) []bucketAmount {
	i := 0
	for i < len(bs) && bs[i].start < liveMin {
		i++
	}
	return bs[i:]
}

// check reports whether kind k of charge c, whose live buckets are given,
// is spent, and if so the Denial. reserved is the part of live's tokens
// that requests in flight reserved, by bucket (nil for other kinds). mono
// is the Memory store's monotonic now (see bucketAmount.freeAt); nil in
// Redis.
func check(c Charge, k int, limit int64, live, reserved []bucketAmount, now time.Time, mono *time.Duration) *Denial {
	if limit <= 0 || total(live) < limit {
		return nil
	}
	// A reservation frees when its request ends, not with its bucket:
	// the wait is that of what was used alone, and a second (the least
	// Retry-After says) when that is below the limit.
	spent := withoutReserved(live, reserved)
	if total(spent) < limit {
		return &Denial{Budget: c.Spec.Name, Counter: c.Counter, Kind: kinds[k], RetryAfter: time.Second}
	}
	// Free the buckets that free first until what is left is below the
	// limit: the latest to free whose own amount, with all that frees
	// after it, reaches the limit (summed from the last, so that a sum
	// that saturated takes nothing off).
	w := c.Spec.Window
	frees := make([]bucketAmount, len(spent)) // start: when it frees
	for i, b := range spent {
		frees[i] = bucketAmount{start: b.freeAt(w, now, mono), v: b.v}
	}
	slices.SortFunc(frees, func(a, b bucketAmount) int { return cmp.Compare(a.start, b.start) })
	var left int64
	free := frees[len(frees)-1].start
	for i := len(frees) - 1; i >= 0; i-- {
		if left = plus(left, frees[i].v); left >= limit {
			free = frees[i].start
			break
		}
	}
	wait := math.Ceil(time.Unix(free, 0).Sub(now).Seconds())
	return &Denial{
		Budget: c.Spec.Name, Counter: c.Counter, Kind: kinds[k],
		RetryAfter: time.Duration(max(1, wait)) * time.Second,
	}
}

// withoutReserved returns live with what reserved holds of each bucket
// taken out (none below 0).
func withoutReserved(live, reserved []bucketAmount) []bucketAmount {
	if len(reserved) == 0 {
		return live
	}
	out := slices.Clone(live)
	for i := range out {
		for _, r := range reserved {
			if r.start == out[i].start {
				out[i].v = max(0, out[i].v-r.v)
			}
		}
	}
	return out
}

// decide turns the spent limits Take found into its answer: the denial
// that frees last among blocking budgets, or the warnings for a ticket.
func decide(spent []spentLimit) (denial *Denial, warnings []Denial) {
	for _, s := range spent {
		switch {
		case s.warn:
			warnings = append(warnings, *s.d)
		case denial == nil || s.d.RetryAfter > denial.RetryAfter:
			denial = s.d
		}
	}
	return denial, warnings
}

// spentLimit is a limit Take found spent.
type spentLimit struct {
	d    *Denial
	warn bool
}

// validate checks the charges' specs.
func validate(charges []Charge) error {
	for _, c := range charges {
		if err := c.Spec.Validate(); err != nil {
			return err
		}
	}
	return nil
}
