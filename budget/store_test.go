package budget

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// t0 is aligned on an hour, so on the buckets of every window used here.
var t0 = time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)

// at is t0 plus d.
func at(d time.Duration) time.Time { return t0.Add(d) }

// rolling is a budget of window w.
func rolling(name string, w time.Duration) *Spec {
	return &Spec{Name: name, Window: Window{Rolling: w}}
}

// calendar is a budget of calendar window p.
func calendar(name, p string) *Spec {
	return &Spec{Name: name, Window: Window{Calendar: p}}
}

// one is the charges of counter in each of specs.
func one(counter string, specs ...*Spec) []Charge {
	var cs []Charge
	for _, s := range specs {
		cs = append(cs, Charge{Spec: s, Counter: counter})
	}
	return cs
}

// mustTake takes charges and fails the test unless they are taken.
func mustTake(t *testing.T, s Store, now time.Time, reserve int64, charges []Charge) *Ticket {
	t.Helper()
	tk, d, err := s.Take(context.Background(), now, charges, reserve)
	if err != nil {
		t.Fatalf("take at %v: %v", now, err)
	}
	if d != nil {
		t.Fatalf("take at %v: denied %+v, want taken", now.Format(time.TimeOnly), *d)
	}
	return tk
}

// mustDeny takes charges and fails the test unless they are refused with
// want.
func mustDeny(t *testing.T, s Store, now time.Time, reserve int64, charges []Charge, want Denial) {
	t.Helper()
	tk, d, err := s.Take(context.Background(), now, charges, reserve)
	if err != nil {
		t.Fatalf("take at %v: %v", now, err)
	}
	if d == nil {
		t.Fatalf("take at %v: taken (exceeded %v), want denied %+v", now.Format(time.TimeOnly), tk.Exceeded, want)
	}
	if *d != want {
		t.Errorf("take at %v: denied %+v, want %+v", now.Format(time.TimeOnly), *d, want)
	}
	if tk != nil {
		t.Error("a denial came with a ticket")
	}
}

// settle settles tk and fails the test on an error.
func settle(t *testing.T, s Store, now time.Time, tk *Ticket, tokens int64, usd float64) {
	t.Helper()
	if err := s.Settle(context.Background(), now, tk, tokens, usd); err != nil {
		t.Fatalf("settle: %v", err)
	}
}

// usage lists the rows of specs now.
func usage(t *testing.T, s Store, now time.Time, specs ...*Spec) []Row {
	t.Helper()
	rows, err := s.Usage(context.Background(), now, specs)
	if err != nil {
		t.Fatalf("usage: %v", err)
	}
	return rows
}

// used is the Used of the row of budget, counter and kind, or -1.
func used(t *testing.T, s Store, now time.Time, spec *Spec, counter string, kind Kind) float64 {
	t.Helper()
	for _, r := range usage(t, s, now, spec) {
		if r.Counter == counter && r.Kind == kind {
			return r.Used
		}
	}
	return -1
}

// deny is the Denial expected for counter of spec.
func deny(spec *Spec, counter string, kind Kind, retry time.Duration) Denial {
	return Denial{Budget: spec.Name, Counter: counter, Kind: kind, RetryAfter: retry}
}

// testStore runs the behaviours every Store has, each on an empty store
// that newStore makes.
func testStore(t *testing.T, newStore func(t *testing.T) Store) {
	t.Run("requests", func(t *testing.T) {
		s, b := newStore(t), rolling("b", time.Hour)
		b.Requests = 3
		for i := range 3 {
			mustTake(t, s, at(time.Duration(i)*time.Second), 0, one("web", b))
		}
		// The bucket of t0 (1h/60 = 60s) frees at t0+1h+60s.
		mustDeny(t, s, at(3*time.Second), 0, one("web", b), deny(b, "web", KindRequests, 3657*time.Second))
		mustTake(t, s, at(3*time.Second), 0, one("api", b))
	})

	t.Run("tokens crossed", func(t *testing.T) {
		s, b := newStore(t), rolling("b", time.Hour)
		b.Tokens = 1000
		tk := mustTake(t, s, t0, 0, one("web", b))
		settle(t, s, at(5*time.Second), tk, 1500, 0)
		mustDeny(t, s, at(10*time.Second), 0, one("web", b), deny(b, "web", KindTokens, 3650*time.Second))
	})

	t.Run("usd", func(t *testing.T) {
		s, b := newStore(t), calendar("b", "day")
		b.USD = 0.01
		for range 3 {
			settle(t, s, t0, mustTake(t, s, t0, 0, one("web", b)), 0, 0.004)
		}
		until := 14 * time.Hour // t0 is 10:00 UTC
		mustDeny(t, s, t0, 0, one("web", b), deny(b, "web", KindUSD, until))
		if got := used(t, s, t0, b, "web", KindUSD); got != 0.012 {
			t.Errorf("used %v USD, want 0.012", got)
		}
	})

	t.Run("usd rounds up", func(t *testing.T) {
		// Answers cheaper than half a micro-dollar (a short prompt to a
		// cheap model) counted 0, and a budget of them never ran out; a
		// limit below one counted as none.
		s, b := newStore(t), calendar("b", "day")
		b.USD = 0.00001
		for range 10 {
			settle(t, s, t0, mustTake(t, s, t0, 0, one("web", b)), 0, 0.0000004)
		}
		mustDeny(t, s, t0, 0, one("web", b), deny(b, "web", KindUSD, 14*time.Hour))
		tiny := calendar("tiny", "day")
		tiny.USD = 0.0000004
		settle(t, s, t0, mustTake(t, s, t0, 0, one("web", tiny)), 0, 0.0000001)
		mustDeny(t, s, t0, 0, one("web", tiny), deny(tiny, "web", KindUSD, 14*time.Hour))
		// Exact amounts stay exact, whatever float64 makes of them.
		exact := calendar("exact", "day")
		exact.USD = 1
		settle(t, s, t0, mustTake(t, s, t0, 0, one("web", exact)), 0, 0.07)
		settle(t, s, t0, mustTake(t, s, t0, 0, one("web", exact)), 0, 0.1+0.2)
		if got := used(t, s, t0, exact, "web", KindUSD); got != 0.37 {
			t.Errorf("used %v USD, want 0.37", got)
		}
	})

	t.Run("rolling window ages", func(t *testing.T) {
		s, b := newStore(t), rolling("b", time.Minute) // 1s buckets
		b.Requests = 2
		mustTake(t, s, t0, 0, one("web", b))
		mustTake(t, s, at(30*time.Second), 0, one("web", b))
		mustDeny(t, s, at(40*time.Second), 0, one("web", b), deny(b, "web", KindRequests, 21*time.Second))
		mustDeny(t, s, at(60500*time.Millisecond), 0, one("web", b), deny(b, "web", KindRequests, time.Second))
		mustTake(t, s, at(61*time.Second), 0, one("web", b))
		mustDeny(t, s, at(61*time.Second), 0, one("web", b), deny(b, "web", KindRequests, 30*time.Second))
		if got := used(t, s, at(200*time.Second), b, "web", KindRequests); got != -1 {
			t.Errorf("a counter unused for a window is still listed, used %v", got)
		}
	})

	t.Run("rolling window frees enough", func(t *testing.T) {
		s, b := newStore(t), rolling("b", time.Minute)
		b.Tokens = 100
		for i, tokens := range []int64{20, 20, 90} {
			now := at(time.Duration(i) * 10 * time.Second)
			settle(t, s, now, mustTake(t, s, now, 0, one("web", b)), tokens, 0)
		}
		// 130 used: the first bucket freed leaves 110, the second 90.
		mustDeny(t, s, at(30*time.Second), 0, one("web", b), deny(b, "web", KindTokens, 41*time.Second))
		mustTake(t, s, at(71*time.Second), 0, one("web", b))
	})

	t.Run("calendar day", func(t *testing.T) {
		s, b := newStore(t), calendar("b", "day")
		b.Requests = 1
		evening := time.Date(2026, 11, 3, 23, 59, 0, 0, time.UTC)
		mustTake(t, s, evening, 0, one("web", b))
		mustDeny(t, s, evening.Add(30*time.Second), 0, one("web", b), deny(b, "web", KindRequests, 30*time.Second))
		midnight := time.Date(2026, 11, 4, 0, 0, 0, 0, time.UTC)
		mustTake(t, s, midnight, 0, one("web", b))
		mustDeny(t, s, midnight, 0, one("web", b), deny(b, "web", KindRequests, 24*time.Hour))
	})

	t.Run("calendar month", func(t *testing.T) {
		s, b := newStore(t), calendar("b", "month")
		b.Requests = 1
		mustTake(t, s, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), 0, one("web", b))
		last := time.Date(2026, 12, 31, 23, 59, 59, 500e6, time.UTC)
		mustDeny(t, s, last, 0, one("web", b), deny(b, "web", KindRequests, time.Second))
		newYear := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
		rows := usage(t, s, last, b)
		if len(rows) != 1 || rows[0].Reset == nil || !rows[0].Reset.Equal(newYear) {
			t.Errorf("usage on Dec 31: %+v, want reset %v", rows, newYear)
		}
		mustTake(t, s, newYear, 0, one("web", b))
		mustDeny(t, s, newYear, 0, one("web", b), deny(b, "web", KindRequests, 31*24*time.Hour))
	})

	t.Run("warn", func(t *testing.T) {
		s, w, b := newStore(t), rolling("w", time.Hour), rolling("b", time.Hour)
		w.Requests, w.Warn = 1, true
		b.Requests = 3
		if tk := mustTake(t, s, t0, 0, one("web", w, b)); len(tk.Exceeded) != 0 {
			t.Errorf("first request exceeded %+v", tk.Exceeded)
		}
		for i := range 2 {
			tk := mustTake(t, s, t0, 0, one("web", w, b))
			want := []Denial{deny(w, "web", KindRequests, time.Hour+time.Minute)}
			if !reflect.DeepEqual(tk.Exceeded, want) {
				t.Errorf("request %d exceeded %+v, want %+v", i+2, tk.Exceeded, want)
			}
		}
		if got := used(t, s, t0, w, "web", KindRequests); got != 3 {
			t.Errorf("warn budget used %v, want 3: over-budget requests count", got)
		}
		// The blocking budget is spent: nothing is taken, not even in w.
		mustDeny(t, s, t0, 0, one("web", w, b), deny(b, "web", KindRequests, time.Hour+time.Minute))
		if got := used(t, s, t0, w, "web", KindRequests); got != 3 {
			t.Errorf("warn budget used %v after a denial, want 3", got)
		}
	})

	t.Run("retry after reservations in flight", func(t *testing.T) {
		// A limit that reservations hold frees as a request in flight
		// ends: the wait is that of the tokens used alone, or a second
		// when they are below the limit, not the window's.
		s, b := newStore(t), rolling("b", time.Minute) // 1s buckets
		b.Tokens = 1000
		first := mustTake(t, s, t0, 0, one("web", b))
		second := mustTake(t, s, at(10*time.Second), 0, one("web", b))
		inFlight := mustTake(t, s, at(20*time.Second), 1000, one("web", b))
		mustDeny(t, s, at(20*time.Second), 0, one("web", b), deny(b, "web", KindTokens, time.Second))
		settle(t, s, at(25*time.Second), first, 500, 0)
		settle(t, s, at(25*time.Second), second, 500, 0)
		// 1000 used, 1000 reserved: the first bucket freed leaves 500 used.
		mustDeny(t, s, at(30*time.Second), 0, one("web", b), deny(b, "web", KindTokens, 31*time.Second))
		settle(t, s, at(30*time.Second), inFlight, 0, 0)
		mustDeny(t, s, at(30*time.Second), 0, one("web", b), deny(b, "web", KindTokens, 31*time.Second))
		mustTake(t, s, at(61*time.Second), 0, one("web", b))
	})

	t.Run("reservations", func(t *testing.T) {
		s, b := newStore(t), rolling("b", time.Hour)
		b.Tokens = 10000
		a := mustTake(t, s, t0, 6000, one("web", b))
		// 6000 in flight is below the limit: one more reservation passes.
		c := mustTake(t, s, t0, 6000, one("web", b))
		// Held by reservations alone: it frees as one of them settles.
		mustDeny(t, s, t0, 1, one("web", b), deny(b, "web", KindTokens, time.Second))
		settle(t, s, t0, a, 1000, 0) // lower than reserved
		if got := used(t, s, t0, b, "web", KindTokens); got != 7000 {
			t.Errorf("used %v, want 7000 (1000 used, 6000 reserved)", got)
		}
		d := mustTake(t, s, t0, 2000, one("web", b))
		settle(t, s, t0, c, 8500, 0) // higher than reserved
		settle(t, s, t0, c, 1, 0)    // a second settle does nothing
		if got := used(t, s, t0, b, "web", KindTokens); got != 11500 {
			t.Errorf("used %v, want 11500 (9500 used, 2000 reserved)", got)
		}
		settle(t, s, t0, d, 0, 0)
		if got := used(t, s, t0, b, "web", KindTokens); got != 9500 {
			t.Errorf("used %v, want 9500", got)
		}
		mustTake(t, s, t0, 0, one("web", b))
		settle(t, s, t0, nil, 5, 0) // no ticket: nothing to do
	})

	t.Run("huge reservations saturate", func(t *testing.T) {
		// Under a budget that only warns, reservations (an app's
		// max_tokens, up to maxAmount each) pile up unrefused. Summed
		// in int64, two buckets near 2^62 wrapped below 0: the warning
		// was lost and usage read negative (the Memory store's own
		// buckets wrapped to 0 sooner).
		s, b := newStore(t), rolling("b", time.Hour)
		b.Tokens, b.Warn = 1000, true
		for _, now := range []time.Time{t0, at(time.Minute)} {
			for range maxBucket/maxAmount + 1 {
				mustTake(t, s, now, maxAmount, one("web", b))
			}
		}
		tk := mustTake(t, s, at(time.Minute), 0, one("web", b))
		if want := []Denial{deny(b, "web", KindTokens, time.Second)}; !reflect.DeepEqual(tk.Exceeded, want) {
			t.Errorf("exceeded %+v, want %+v", tk.Exceeded, want)
		}
		if got := used(t, s, at(time.Minute), b, "web", KindTokens); got != maxBucket {
			t.Errorf("used %v tokens, want %v (saturated)", got, float64(maxBucket))
		}
	})

	t.Run("settle in the window taken", func(t *testing.T) {
		s, b := newStore(t), rolling("b", time.Minute)
		b.Tokens = 100
		// Settled 50s later, the tokens still free with t0's bucket.
		settle(t, s, at(50*time.Second), mustTake(t, s, t0, 10, one("web", b)), 150, 0)
		mustDeny(t, s, at(55*time.Second), 0, one("web", b), deny(b, "web", KindTokens, 6*time.Second))
		// Settled once t0's bucket no longer counts (a stream longer than
		// the window): all it used counts now, not nothing.
		tk := mustTake(t, s, at(100*time.Second), 10, one("web", b))
		settle(t, s, at(200*time.Second), tk, 5000, 0)
		mustDeny(t, s, at(200*time.Second), 0, one("web", b), deny(b, "web", KindTokens, time.Minute+time.Second))
		if got := used(t, s, at(200*time.Second), b, "web", KindTokens); got != 5000 {
			t.Errorf("used %v, want 5000: a stream ending after its window charged nothing", got)
		}

		day := calendar("d", "day")
		day.Tokens = 100
		tk = mustTake(t, s, time.Date(2026, 11, 3, 23, 59, 50, 0, time.UTC), 10, one("web", day))
		next := time.Date(2026, 11, 4, 0, 0, 10, 0, time.UTC)
		settle(t, s, next, tk, 5000, 0)
		if got := used(t, s, next, day, "web", KindTokens); got != 5000 {
			t.Errorf("used %v on the next day, want the 5000 the request used ending then", got)
		}
	})

	t.Run("all or nothing", func(t *testing.T) {
		s, c, all := newStore(t), rolling("per-client", time.Hour), rolling("total", time.Hour)
		c.Requests, all.Requests = 1, 10
		charges := []Charge{{Spec: c, Counter: "web"}, {Spec: all, Counter: "all"}}
		mustTake(t, s, t0, 0, charges)
		mustDeny(t, s, t0, 0, charges, deny(c, "web", KindRequests, time.Hour+time.Minute))
		if got := used(t, s, t0, all, "all", KindRequests); got != 1 {
			t.Errorf("total used %v, want 1: a refused request was counted", got)
		}
	})

	t.Run("denial frees last", func(t *testing.T) {
		s, short, long := newStore(t), rolling("short", time.Minute), calendar("long", "day")
		short.Requests, long.Requests = 1, 1
		mustTake(t, s, t0, 0, one("web", short, long))
		mustDeny(t, s, t0, 0, one("web", short, long), deny(long, "web", KindRequests, 14*time.Hour))
	})

	t.Run("spec changes", func(t *testing.T) {
		s, b := newStore(t), rolling("b", time.Hour)
		b.Requests = 1
		mustTake(t, s, t0, 0, one("web", b))
		raised := rolling("b", time.Hour)
		raised.Requests = 2
		mustTake(t, s, t0, 0, one("web", raised))
		mustDeny(t, s, t0, 0, one("web", raised), deny(b, "web", KindRequests, time.Hour+time.Minute))
		longer := rolling("b", 2*time.Hour)
		longer.Requests = 2
		mustTake(t, s, t0, 0, one("web", longer))
		if got := used(t, s, t0, longer, "web", KindRequests); got != 1 {
			t.Errorf("used %v after the window changed, want 1", got)
		}
	})

	t.Run("limit added", func(t *testing.T) {
		// A reload that adds a limit of a kind the budget did not limit
		// keeps what was spent in the window, as one that changes a
		// limit does: the spend before it, and that of the requests in
		// flight across it.
		s, before := newStore(t), rolling("b", time.Hour)
		before.Requests = 100
		settle(t, s, t0, mustTake(t, s, t0, 0, one("web", before)), 800, 2)
		inFlight := mustTake(t, s, t0, 0, one("web", before))
		after := rolling("b", time.Hour)
		after.Requests, after.Tokens, after.USD = 100, 1000, 3
		settle(t, s, t0, inFlight, 300, 1.5)
		mustDeny(t, s, t0, 0, one("web", after), deny(after, "web", KindTokens, time.Hour+time.Minute))
		if got := used(t, s, t0, after, "web", KindUSD); got != 3.5 {
			t.Errorf("used $%v once a usd limit was added, want the $3.5 spent", got)
		}
		tokensOnly := rolling("t", time.Hour)
		tokensOnly.Tokens = 1000
		for range 2 {
			settle(t, s, t0, mustTake(t, s, t0, 0, one("web", tokensOnly)), 1, 0)
		}
		withRequests := rolling("t", time.Hour)
		withRequests.Tokens, withRequests.Requests = 1000, 2
		mustDeny(t, s, t0, 0, one("web", withRequests), deny(withRequests, "web", KindRequests, time.Hour+time.Minute))
	})

	t.Run("per changes", func(t *testing.T) {
		// A reload that made a budget count per route found, under a route
		// named like a client, that client's counts: the counter said not
		// which kind of name it is.
		s, perClient := newStore(t), rolling("b", time.Hour)
		perClient.Requests = 2
		for range 2 {
			mustTake(t, s, t0, 0, one("web", perClient))
		}
		for _, per := range []Per{PerRoute, PerAll} {
			other := rolling("b", time.Hour)
			other.Requests, other.Per = 2, per
			name := "web"
			if per == PerAll {
				name = "all"
				for range 2 {
					mustTake(t, s, t0, 0, one("all", perClient)) // a client named all
				}
			}
			tk := mustTake(t, s, t0, 0, one(name, other))
			if got := used(t, s, t0, other, name, KindRequests); got != 1 {
				t.Errorf("per %s: counter %s used %v, want the 1 request it took", per, name, got)
			}
			settle(t, s, t0, tk, 0, 0)
		}
		// Back to per client within the window: its counts are found.
		mustDeny(t, s, t0, 0, one("web", perClient), deny(perClient, "web", KindRequests, time.Hour+time.Minute))
		if got := used(t, s, t0, perClient, "web", KindRequests); got != 2 {
			t.Errorf("per client again: web used %v, want the 2 spent", got)
		}
	})

	t.Run("window changed while in flight", func(t *testing.T) {
		s, hourly, daily := newStore(t), rolling("b", time.Hour), rolling("b", 24*time.Hour)
		hourly.Tokens, daily.Tokens = 10000, 10000
		hourly.Requests, daily.Requests = 3, 3
		// Taken before a reload made the window a day, settled after the
		// reload back to an hour: its reservation is released where it
		// was counted, not from another request's.
		early := mustTake(t, s, t0, 4000, one("web", hourly))
		for range 2 {
			mustTake(t, s, t0, 0, one("web", daily))
		}
		// A request decided under the config before the reload (a slow
		// upload) takes under the old window: the new one keeps its
		// counts.
		mustTake(t, s, t0, 0, one("web", hourly))
		mustTake(t, s, t0, 0, one("web", daily))
		mustDeny(t, s, t0, 0, one("web", daily), deny(daily, "web", KindRequests, 24*time.Hour+24*time.Minute))
		late := mustTake(t, s, t0, 5000, one("web", hourly))
		settle(t, s, t0, early, 0, 0)
		if got := used(t, s, t0, hourly, "web", KindTokens); got != 5000 {
			t.Errorf("hourly used %v tokens, want the 5000 reserved in flight", got)
		}
		settle(t, s, t0, late, 0, 0)
	})

	t.Run("usage", func(t *testing.T) {
		s, d, r := newStore(t), calendar("daily", "day"), rolling("hourly", time.Hour)
		d.Requests, d.Tokens, d.USD = 100, 1000, 2.5
		r.Tokens = 500
		for _, c := range []string{"web", "api", "web"} {
			settle(t, s, t0, mustTake(t, s, t0, 0, one(c, d, r)), 300, 1)
		}
		if rows := usage(t, s, t0); len(rows) != 0 {
			t.Errorf("usage of no specs: %v", rows)
		}
		midnight := time.Date(2026, 11, 4, 0, 0, 0, 0, time.UTC)
		want := []Row{
			{Budget: "daily", Counter: "api", Kind: KindRequests, Limit: 100, Used: 1, Remaining: 99, Reset: &midnight},
			{Budget: "daily", Counter: "api", Kind: KindTokens, Limit: 1000, Used: 300, Remaining: 700, Reset: &midnight},
			{Budget: "daily", Counter: "api", Kind: KindUSD, Limit: 2.5, Used: 1, Remaining: 1.5, Reset: &midnight},
			{Budget: "daily", Counter: "web", Kind: KindRequests, Limit: 100, Used: 2, Remaining: 98, Reset: &midnight},
			{Budget: "daily", Counter: "web", Kind: KindTokens, Limit: 1000, Used: 600, Remaining: 400, Reset: &midnight},
			{Budget: "daily", Counter: "web", Kind: KindUSD, Limit: 2.5, Used: 2, Remaining: 0.5, Reset: &midnight},
			{Budget: "hourly", Counter: "api", Kind: KindTokens, Limit: 500, Used: 300, Remaining: 200},
			{Budget: "hourly", Counter: "web", Kind: KindTokens, Limit: 500, Used: 600, Remaining: 0},
		}
		got := usage(t, s, at(time.Minute), r, d)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("usage:\n got %s\nwant %s", rowsString(got), rowsString(want))
		}
		if got := usage(t, s, at(2*time.Hour), r); len(got) != 0 {
			t.Errorf("usage once the window passed: %s, want none", rowsString(got))
		}
	})

	t.Run("parallel reservations", func(t *testing.T) {
		s, b := newStore(t), rolling("b", time.Hour)
		b.Tokens = 10000
		var wg sync.WaitGroup
		var taken, denied atomic.Int64
		for range 50 {
			wg.Go(func() {
				tk, d, err := s.Take(context.Background(), t0, one("web", b), 1000)
				switch {
				case err != nil:
					t.Error(err)
				case d != nil:
					denied.Add(1)
				case tk != nil:
					taken.Add(1)
				}
			})
		}
		wg.Wait()
		if taken.Load() != 10 || denied.Load() != 40 {
			t.Errorf("%d taken, %d denied; want 10 and 40", taken.Load(), denied.Load())
		}
	})

	t.Run("amounts out of range", func(t *testing.T) {
		s, b := newStore(t), rolling("b", time.Hour)
		b.Tokens, b.USD = 1<<60, 1e12
		tk := mustTake(t, s, t0, 1<<62, one("web", b))
		settle(t, s, t0, tk, -5, math.NaN())
		tk = mustTake(t, s, t0, -1, one("web", b))
		settle(t, s, t0, tk, 1<<62, math.Inf(1))
		rows := usage(t, s, t0, b)
		want := []Row{
			{Budget: "b", Counter: "web", Kind: KindTokens, Limit: 1 << 50, Used: 1 << 50},
			{Budget: "b", Counter: "web", Kind: KindUSD, Limit: 1 << 50 / 1e6, Used: 1 << 50 / 1e6},
		}
		if !reflect.DeepEqual(rows, want) {
			t.Errorf("usage:\n got %s\nwant %s", rowsString(rows), rowsString(want))
		}
	})

	t.Run("invalid specs", func(t *testing.T) {
		s := newStore(t)
		for _, spec := range []*Spec{
			nil,
			{Window: Window{Rolling: time.Hour}},
			{Name: "b"},
			{Name: "b", Window: Window{Rolling: time.Millisecond}},
			{Name: "b", Window: Window{Rolling: 1500 * time.Millisecond}},
			{Name: "b", Window: Window{Calendar: "week"}},
			{Name: "b", Window: Window{Rolling: time.Hour, Calendar: "day"}},
			{Name: "b", Window: Window{Rolling: time.Hour}, Tokens: -1},
			{Name: "b", Window: Window{Rolling: time.Hour}, Per: "team"},
		} {
			if _, _, err := s.Take(context.Background(), t0, one("web", spec), 0); err == nil {
				t.Errorf("take with %+v: no error", spec)
			}
			if _, err := s.Usage(context.Background(), t0, []*Spec{spec}); err == nil {
				t.Errorf("usage of %+v: no error", spec)
			}
		}
	})
}

// rowsString prints rows one a line.
func rowsString(rows []Row) string {
	out := ""
	for _, r := range rows {
		reset := "nil"
		if r.Reset != nil {
			reset = r.Reset.Format(time.RFC3339)
		}
		out += fmt.Sprintf("\n  %s %s %s %v %v %v %s", r.Budget, r.Counter, r.Kind, r.Limit, r.Used, r.Remaining, reset)
	}
	return out
}

func TestMemory(t *testing.T) {
	testStore(t, func(*testing.T) Store { return NewMemory() })
}

// steady gives m a monotonic clock that the test moves: it reads *mono.
func steady(m *Memory) *time.Duration {
	mono := new(time.Duration)
	m.elapsed = func() time.Duration { return *mono }
	return mono
}

// TestMemoryDropsCounters: counters not charged within their window are
// dropped, so that memory stays bounded.
func TestMemoryDropsCounters(t *testing.T) {
	m, b := NewMemory(), rolling("b", time.Minute)
	mono := steady(m)
	b.Requests = 10
	for i := range 100 {
		mustTake(t, m, t0, 0, one(fmt.Sprint("client-", i), b))
	}
	*mono = 2 * time.Minute
	mustTake(t, m, at(2*time.Minute), 0, one("web", b))
	if n := len(m.budgets[memKey{"b", b.Window, PerClient}].counters); n != 1 {
		t.Errorf("%d counters kept, want 1", n)
	}
	// A window no longer configured is dropped once nothing counts in it.
	longer := rolling("b", time.Hour)
	*mono = 4 * time.Minute
	mustTake(t, m, at(4*time.Minute), 0, one("web", longer))
	if n := len(m.budgets); n != 1 {
		t.Errorf("%d windows of b kept, want 1", n)
	}
}

// TestMemoryClockStepKeepsCounts: a wall clock stepped forward past the
// window, then back (a VM restored from a snapshot, a clock set by hand
// and corrected), must not forgive what was spent: by the monotonic clock
// the spend still counts. The store used to drop it at the first request
// in the future, so back on time the budget could be spent again.
func TestMemoryClockStepKeepsCounts(t *testing.T) {
	for _, tt := range []struct {
		name  string
		spec  *Spec
		ahead time.Duration
		retry time.Duration
	}{
		{"rolling hour, 2h ahead", rolling("hourly", time.Hour), 2 * time.Hour, time.Hour + time.Minute - time.Second},
		{"calendar day, a day ahead", calendar("daily", "day"), 24 * time.Hour, 14*time.Hour - time.Second},
		{"calendar month, 32 days ahead", calendar("monthly", "month"), 32 * 24 * time.Hour, 27*24*time.Hour + 14*time.Hour - time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMemory()
			mono := steady(m)
			tt.spec.Requests = 3
			for range 3 {
				mustTake(t, m, t0, 0, one("web", tt.spec))
			}
			// By the clock ahead, the window has passed: it starts afresh.
			*mono = time.Second / 2
			mustTake(t, m, t0.Add(tt.ahead), 0, one("web", tt.spec))
			if got := used(t, m, t0.Add(tt.ahead), tt.spec, "web", KindRequests); got != 1 {
				t.Errorf("used %v by the clock ahead, want 1", got)
			}
			// Back on time, the 3 spent (and the one ahead) count.
			*mono = time.Second // in step with the wall clock again
			mustDeny(t, m, at(time.Second), 0, one("web", tt.spec), deny(tt.spec, "web", KindRequests, tt.retry))
			if got := used(t, m, at(time.Second), tt.spec, "web", KindRequests); got != 4 {
				t.Errorf("used %v back on time, want 4", got)
			}
			// Once the window has passed by the monotonic clock too, the
			// spend is dropped.
			*mono = tt.ahead + time.Hour
			mustTake(t, m, t0.Add(tt.ahead+time.Hour), 0, one("web", tt.spec))
			for _, b := range m.budgets[memKey{tt.spec.Name, tt.spec.Window, PerClient}].counters["web"].kinds[reqs] {
				if b.start <= t0.Unix() {
					t.Errorf("the bucket of %v kept once the window passed by both clocks", time.Unix(b.start, 0).UTC())
				}
			}
		})
	}
}

// TestMemoryClockStepBack: a wall clock stepped back by hours finds what
// was counted ahead of it; that spend is not forgiven, but counts for as
// long as it would have on a steady clock, not until the wall clock gets
// there again. A budget used to stay spent for the step plus its window.
func TestMemoryClockStepBack(t *testing.T) {
	t.Run("rolling hour, 5h back", func(t *testing.T) {
		m, b := NewMemory(), rolling("hourly", time.Hour)
		mono := steady(m)
		b.Requests = 3
		for range 3 {
			mustTake(t, m, t0, 0, one("web", b))
		}
		back := t0.Add(-5 * time.Hour)
		*mono = time.Second
		mustDeny(t, m, back.Add(time.Second), 0, one("web", b), deny(b, "web", KindRequests, time.Hour+time.Minute-time.Second))
		*mono = 30 * time.Minute
		mustDeny(t, m, back.Add(30*time.Minute), 0, one("web", b), deny(b, "web", KindRequests, 31*time.Minute))
		if got := used(t, m, back.Add(30*time.Minute), b, "web", KindRequests); got != 3 {
			t.Errorf("used %v half an hour after the step, want the 3 spent", got)
		}
		*mono = time.Hour + time.Minute
		mustTake(t, m, back.Add(time.Hour+time.Minute), 0, one("web", b))
		if got := used(t, m, back.Add(time.Hour+time.Minute), b, "web", KindRequests); got != 1 {
			t.Errorf("used %v a window after the step, want 1", got)
		}
	})

	t.Run("calendar day, back over midnight", func(t *testing.T) {
		m, b := NewMemory(), calendar("daily", "day")
		mono := steady(m)
		b.Requests = 3
		spent := time.Date(2026, 11, 4, 0, 30, 0, 0, time.UTC)
		for range 3 {
			mustTake(t, m, spent, 0, one("web", b))
		}
		// Stepped back 4.5 h, the clock reads the day before: the day
		// spent ends when it would have, 23.5 h on, not 28 h.
		back := spent.Add(-4*time.Hour - 30*time.Minute)
		*mono = time.Second
		mustDeny(t, m, back.Add(time.Second), 0, one("web", b), deny(b, "web", KindRequests, 23*time.Hour+30*time.Minute-time.Second))
		*mono = 23*time.Hour + 30*time.Minute
		mustTake(t, m, back.Add(*mono), 0, one("web", b))
	})

	t.Run("settled after its reservation aged out", func(t *testing.T) {
		// A request taken before the wall clock was stepped back by more
		// than the window, still in flight once its bucket no longer
		// counts by the monotonic clock, and settled after others were
		// counted in that bucket afresh: its reservation went with the
		// bucket, and taking it off again wiped what they used.
		m, b := NewMemory(), rolling("hourly", time.Hour)
		mono := steady(m)
		b.Tokens = 100000
		early := mustTake(t, m, t0, 5000, one("web", b))
		*mono = time.Hour + 2*time.Minute // the wall clock reads t0 still
		settle(t, m, t0, mustTake(t, m, t0, 1000, one("web", b)), 800, 0)
		settle(t, m, t0, early, 300, 0)
		if got := used(t, m, t0, b, "web", KindTokens); got != 800+300 {
			t.Errorf("used %v tokens, want the 800 used since and the 300 of the request whose reservation aged out", got)
		}
	})

	t.Run("settled after the step", func(t *testing.T) {
		m, b := NewMemory(), rolling("hourly", time.Hour)
		mono := steady(m)
		b.Tokens = 1000
		tk := mustTake(t, m, t0, 500, one("web", b))
		back := t0.Add(-5 * time.Hour)
		*mono = time.Second
		settle(t, m, back, tk, 800, 0)
		if got := used(t, m, back, b, "web", KindTokens); got != 800 {
			t.Errorf("used %v tokens, want the 800 settled", got)
		}
		*mono = time.Hour + 2*time.Minute
		if got := used(t, m, back.Add(*mono), b, "web", KindTokens); got > 0 {
			t.Errorf("used %v tokens a window after the settlement, want none", got)
		}
	})
}

func TestWindowString(t *testing.T) {
	for w, want := range map[Window]string{
		{Rolling: 24 * time.Hour}: "86400s",
		{Calendar: "month"}:       "month",
	} {
		if got := w.String(); got != want {
			t.Errorf("%+v: %q, want %q", w, got, want)
		}
	}
}

// benchmarkStore measures one Take and its Settle of a request charging a
// per-client and a total budget.
func benchmarkStore(b *testing.B, s Store) {
	c, all := calendar("client", "day"), rolling("all", time.Hour)
	c.Requests, c.Tokens, c.USD = 1<<40, 1<<40, 1e9
	all.Tokens = 1 << 40
	charges := []Charge{{Spec: c, Counter: "web"}, {Spec: all, Counter: "all"}}
	ctx := context.Background()
	for b.Loop() {
		now := time.Now()
		tk, d, err := s.Take(ctx, now, charges, 1000)
		if err != nil || d != nil {
			b.Fatal(err, d)
		}
		if err := s.Settle(ctx, now, tk, 500, 0.001); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMemory(b *testing.B) { benchmarkStore(b, NewMemory()) }

// TestRowJSON: rows print as `till usage --json` does.
func TestRowJSON(t *testing.T) {
	reset := time.Date(2026, 11, 4, 0, 0, 0, 0, time.UTC)
	rows := []Row{
		{Budget: "d", Counter: "web", Kind: KindUSD, Limit: 25, Used: 0.5, Remaining: 24.5, Reset: &reset},
		{Budget: "r", Counter: "all", Kind: KindTokens, Limit: 2000000, Used: 3, Remaining: 1999997},
	}
	got, err := json.Marshal(rows)
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"budget":"d","counter":"web","kind":"usd","limit":25,"used":0.5,"remaining":24.5,"reset":"2026-11-04T00:00:00Z"},` +
		`{"budget":"r","counter":"all","kind":"tokens","limit":2000000,"used":3,"remaining":1999997,"reset":null}]`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// TestOutOfOrderTakes: a Take dated before the last one (a request whose
// body took longer than a window to arrive) neither drops the counter's
// live usage (memory) nor hides it from Usage (Redis).
func TestOutOfOrderTakes(t *testing.T) {
	addr, _ := startRedis(t)
	for name, s := range map[string]Store{"memory": NewMemory(), "redis": NewRedis(newClient(t, addr), nil, "")} {
		t.Run(name, func(t *testing.T) {
			b := rolling("b", time.Hour)
			b.Tokens = 1000
			now := at(3 * time.Hour)
			settle(t, s, now, mustTake(t, s, now, 0, one("web", b)), 900, 0)
			settle(t, s, now, mustTake(t, s, now.Add(-62*time.Minute), 0, one("web", b)), 0, 0)
			later := now.Add(2 * time.Minute)
			settle(t, s, later, mustTake(t, s, later, 0, one("api", b)), 0, 0) // anyone's Take sweeps
			if got := used(t, s, later, b, "web", KindTokens); got != 900 {
				t.Errorf("web has used %v tokens in the last hour, want 900", got)
			}
		})
	}
}
