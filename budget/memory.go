package budget

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Memory counts budgets in process, under one lock. Keep it across config
// reloads: a budget whose window or per changed starts afresh, one whose
// limits changed keeps its counts. As in Redis, a budget is counted apart in each
// window, so that a request decided under the config before a reload
// neither resets the new window's counts nor settles in them. It holds
// about one window of buckets per counter and drops the counters no
// longer charged within their window.
//
// A bucket counts while it counts by the wall clock it is given and by
// the monotonic clock: a wall clock stepped forward past the window (a VM
// restored from a snapshot, a clock set by hand) starts it afresh, and
// stepped back again finds what was spent before, as Redis does for a
// till whose clock runs ahead; a wall clock stepped back finds what was
// counted ahead of it, which counts for as long as it would have on a
// steady clock, not until the wall clock gets there again.
type Memory struct {
	mu      sync.Mutex
	budgets map[memKey]*memBudget
	// elapsed is the time since the store was made by the monotonic
	// clock, which a step of the wall clock does not move.
	elapsed func() time.Duration
}

// memKey names a budget's counts in one window, of one kind of counter.
type memKey struct {
	budget string
	window Window
	per    Per
}

var _ Store = (*Memory)(nil)

// memBudget is the counters of one budget in one window and per.
type memBudget struct {
	counters map[string]*memCounter
	swept    int64 // the bucket in which dead counters were last dropped
}

// memCounter is one counter's live buckets.
type memCounter struct {
	last  int64                    // the bucket of its last Take
	kinds [numKinds][]bucketAmount // per kind, oldest first
	// reserved is the part of kinds[toks] that requests in flight
	// reserved, by bucket, for the wait a denial gives (check).
	reserved []bucketAmount
}

// NewMemory returns an empty in-process store.
func NewMemory() *Memory {
	made := time.Now()
	return &Memory{budgets: map[memKey]*memBudget{}, elapsed: func() time.Duration { return time.Since(made) }}
}

// Take checks every charge and, when none is spent, counts one request and
// reserves reserve tokens in each. See [Store].
func (m *Memory) Take(_ context.Context, now time.Time, charges []Charge, reserve int64) (*Ticket, *Denial, error) {
	if err := validate(charges); err != nil {
		return nil, nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	elapsed := m.elapsed()
	counters := make([]*memCounter, len(charges))
	var spent []spentLimit
	for i, c := range charges {
		mc := m.counter(c, now, elapsed)
		counters[i] = mc
		liveMin := c.Spec.Window.at(now).liveMin
		for k, limit := range c.Spec.limits() {
			var reserved []bucketAmount
			if k == toks {
				reserved = live(mc.reserved, liveMin)
			}
			if d := check(c, k, limit, live(mc.kinds[k], liveMin), reserved, now, &elapsed); d != nil {
				spent = append(spent, spentLimit{d: d, warn: c.Spec.Warn})
			}
		}
	}
	denial, warnings := decide(spent)
	if denial != nil {
		return nil, denial, nil
	}
	t := newTicket(now, charges, reserve, warnings)
	for i, tk := range t.charges {
		mc := counters[i]
		until := untilOf(tk.window, tk.bucket, now, elapsed)
		if later, laterUntil, ok := mc.later(tk.window, tk.bucket); ok {
			tk.bucket, until = later, laterUntil
			t.charges[i].bucket = later
		}
		mc.last = max(mc.last, tk.bucket) // takes may finish out of order
		add(&mc.kinds[reqs], tk.bucket, 1, until)
		add(&mc.kinds[toks], tk.bucket, t.reserve, until)
		add(&mc.reserved, tk.bucket, t.reserve, until)
	}
	return t, nil, nil
}

// newTicket is the ticket of a Take that counts charges now.
func newTicket(now time.Time, charges []Charge, reserve int64, warnings []Denial) *Ticket {
	t := &Ticket{Exceeded: warnings, reserve: clamp(reserve)}
	for _, c := range charges {
		t.charges = append(t.charges, taken{budget: c.Spec.Name, window: c.Spec.Window, per: c.Spec.per(), counter: c.Counter, bucket: c.Spec.Window.at(now).bucket})
	}
	return t
}

// counter returns c's counter, made if needed, without the buckets that no
// longer count by the monotonic clock (elapsed is its now). A
// budget whose window or per changed starts afresh.
func (m *Memory) counter(c Charge, now time.Time, elapsed time.Duration) *memCounter {
	w := c.Spec.Window
	sp := w.at(now)
	mb := m.budget(memKey{c.Spec.Name, w, c.Spec.per()}, now, elapsed)
	if mb.swept != sp.bucket {
		mb.sweep(sp, elapsed)
	}
	mc := mb.counters[c.Counter]
	if mc == nil {
		mc = &memCounter{last: sp.liveMin - 1}
		mb.counters[c.Counter] = mc
	}
	mc.prune(elapsed)
	return mc
}

// untilOf is when, by the monotonic clock (elapsed now), use counted now
// in the bucket of w starting at start stops counting: when the wall
// clock says, but never longer than a bucket's life from now (a request
// taken before the wall clock was stepped back, settled after, in a
// bucket that starts ahead of it).
func untilOf(w Window, start int64, now time.Time, elapsed time.Duration) time.Duration {
	return elapsed + time.Duration(min(w.freeAt(start)-now.Unix(), w.life()))*time.Second
}

// budget returns the counters of key, made if needed.
func (m *Memory) budget(key memKey, now time.Time, elapsed time.Duration) *memBudget {
	mb := m.budgets[key]
	if mb == nil {
		m.dropDead(key.budget, now, elapsed)
		mb = &memBudget{counters: map[string]*memCounter{}, swept: key.window.at(now).bucket}
		m.budgets[key] = mb
	}
	return mb
}

// sweep drops the counters not charged within the window that hold no
// bucket the monotonic clock, elapsed now, still counts, once per bucket.
func (mb *memBudget) sweep(sp span, elapsed time.Duration) {
	for name, mc := range mb.counters {
		if mc.last >= sp.liveMin {
			continue
		}
		if mc.prune(elapsed); mc.empty() {
			delete(mb.counters, name)
		}
	}
	mb.swept = sp.bucket
}

// dropDead drops the counts of budget, in windows (or pers) no longer configured,
// that no longer count anything, when it starts in a new window.
func (m *Memory) dropDead(budget string, now time.Time, elapsed time.Duration) {
	for key, mb := range m.budgets {
		if key.budget != budget {
			continue
		}
		mb.sweep(key.window.at(now), elapsed)
		if len(mb.counters) == 0 {
			delete(m.budgets, key)
		}
	}
}

// prune drops the buckets that the monotonic clock, elapsed now, no
// longer counts: on a steady clock the wall clock no longer counts them
// either (until is never sooner than it), and on a wall clock stepped
// back they must not count again.
func (mc *memCounter) prune(elapsed time.Duration) {
	gone := func(b bucketAmount) bool { return b.until <= elapsed }
	for k, bs := range mc.kinds {
		mc.kinds[k] = slices.DeleteFunc(bs, gone)
	}
	mc.reserved = slices.DeleteFunc(mc.reserved, gone)
}

// later is the period after bucket, and when it stops counting, that a
// counter of calendar window w holds when the clock is stepped back
// over that period's start: a Take charges it, not bucket, so that what
// the step lets through counts in the period it is spent in, for as long
// as that period counts, rather than in one that stops counting when the
// clock gets there again (as the Redis store does).
func (mc *memCounter) later(w Window, bucket int64) (start int64, until time.Duration, ok bool) {
	if w.Calendar == "" || mc.last <= bucket {
		return 0, 0, false
	}
	for _, bs := range mc.kinds {
		for _, b := range bs {
			if b.start == mc.last {
				until = max(until, b.until)
				ok = true
			}
		}
	}
	return mc.last, until, ok
}

// empty reports whether the counter holds no bucket.
func (mc *memCounter) empty() bool {
	for _, bs := range mc.kinds {
		if len(bs) > 0 {
			return false
		}
	}
	return true
}

// add adds v to the bucket starting at start, made if needed, which
// counts until at least until by the monotonic clock; a bucket stays
// within 0..maxBucket, as in Redis.
func add(bs *[]bucketAmount, start, v int64, until time.Duration) {
	s := *bs
	i := len(s)
	for i > 0 && s[i-1].start > start {
		i--
	}
	if i > 0 && s[i-1].start == start {
		s[i-1].v = min(max(0, s[i-1].v+v), maxBucket)
		s[i-1].until = max(s[i-1].until, until)
		return
	}
	if v > 0 {
		*bs = slices.Insert(s, i, bucketAmount{start: start, v: v, until: until})
	}
}

// settledIn returns the bucket a request taken in bucket is settled in at
// sp: its own, where its reservation is taken off what it used; or, when
// the window moved on while it ran (a stream longer than the window),
// now's, where all it used is added (the reservation went with its
// bucket).
func settledIn(bucket int64, sp span) int64 {
	if bucket < sp.liveMin {
		return sp.bucket
	}
	return bucket
}

// amountAt is what bs holds in the bucket starting at start.
func amountAt(bs []bucketAmount, start int64) int64 {
	for _, b := range bs {
		if b.start == start {
			return b.v
		}
	}
	return 0
}

// Settle replaces the ticket's reservation by what the request used. See
// [Store].
func (m *Memory) Settle(_ context.Context, now time.Time, t *Ticket, tokens int64, usdUsed float64) error {
	if t == nil || t.settled.Swap(true) {
		return nil
	}
	tokens, cost := clamp(tokens), micros(usdUsed)
	m.mu.Lock()
	defer m.mu.Unlock()
	elapsed := m.elapsed()
	for _, tk := range t.charges {
		mb := m.budget(memKey{tk.budget, tk.window, tk.per}, now, elapsed)
		sp := tk.window.at(now)
		bucket := settledIn(tk.bucket, sp)
		mc := mb.counters[tk.counter]
		if mc == nil {
			mc = &memCounter{last: sp.liveMin - 1}
			mb.counters[tk.counter] = mc
		}
		// Only what is still reserved is taken off: a reservation that
		// aged out by the monotonic clock is not taken again from what
		// was counted in its bucket since.
		held := min(t.reserve, amountAt(mc.reserved, tk.bucket))
		used := tokens
		if bucket == tk.bucket {
			used -= held
		}
		mc.last = max(mc.last, bucket)
		until := untilOf(tk.window, bucket, now, elapsed)
		add(&mc.kinds[toks], bucket, used, until)
		add(&mc.kinds[usd], bucket, cost, until)
		add(&mc.reserved, tk.bucket, -held, 0)
	}
	return nil
}

// Usage lists the limits of each counter of specs charged within its
// window. See [Store].
func (m *Memory) Usage(_ context.Context, now time.Time, specs []*Spec) ([]Row, error) {
	for _, s := range specs {
		if err := s.Validate(); err != nil {
			return nil, err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	elapsed := m.elapsed()
	var rows []Row
	for _, s := range specs {
		mb := m.budgets[memKey{s.Name, s.Window, s.per()}]
		if mb == nil {
			continue
		}
		liveMin := s.Window.at(now).liveMin
		for name, mc := range mb.counters {
			if mc.last < liveMin {
				continue
			}
			mc.prune(elapsed)
			for k, limit := range s.limits() {
				if limit > 0 {
					used := total(live(mc.kinds[k], liveMin))
					rows = append(rows, row(s, name, k, limit, used, now))
				}
			}
		}
	}
	sortRows(rows)
	return rows, nil
}
