package budget

import (
	"testing"
	"time"
)

// TestStreamLongerThanWindowCounts: a request whose answer lasts longer
// than its rolling window (a long reasoning stream) is settled after its
// Take's bucket stopped counting; what it used counts then. A client that
// keeps five such requests going under 10,000 tokens a minute, each
// reserving 1,000 and using 50,000, is refused.
func TestStreamLongerThanWindowCounts(t *testing.T) {
	addr, _ := startRedis(t)
	for name, s := range map[string]Store{"memory": NewMemory(), "redis": NewRedis(newClient(t, addr), nil, "window")} {
		t.Run(name, func(t *testing.T) {
			b := rolling("tpm", time.Minute)
			b.Tokens = 10000
			var spent, refused int64
			for i := range 10 {
				start := at(time.Duration(i) * 62 * time.Second)
				var tks []*Ticket
				for range 5 {
					tk, d, err := s.Take(t.Context(), start, one("web", b), 1000)
					if err != nil {
						t.Fatal(err)
					}
					if d != nil {
						refused++
						continue
					}
					tks = append(tks, tk)
				}
				for _, tk := range tks {
					settle(t, s, start.Add(61*time.Second), tk, 50000, 0)
					spent += 50000
				}
			}
			end := at(10 * 62 * time.Second)
			counted := used(t, s, end.Add(-time.Second), b, "web", KindTokens)
			if refused == 0 {
				t.Errorf("%d tokens spent in 10m20s under a budget of 10,000 a minute, none refused; counted in the last minute: %v",
					spent, counted)
			}
		})
	}
}

// TestRollingWindowStep pins what the reference says of a rolling
// window: use counts for the window and at most a sixtieth of it more,
// never less, so a spent 1h budget's Retry-After says 60 to 61 minutes.
func TestRollingWindowStep(t *testing.T) {
	for _, off := range []time.Duration{0, 17 * time.Second, 59*time.Second + 999*time.Millisecond} {
		s := NewMemory()
		b := rolling("hourly", time.Hour)
		b.Requests = 1
		start := at(off)
		if _, d, err := s.Take(t.Context(), start, one("web", b), 0); d != nil || err != nil {
			t.Fatalf("first take: %v, %v", d, err)
		}
		_, d, err := s.Take(t.Context(), start, one("web", b), 0)
		if err != nil || d == nil || d.RetryAfter <= time.Hour || d.RetryAfter > time.Hour+time.Minute {
			t.Fatalf("at +%v: got %v, %v; want a denial with Retry-After in (1h, 1h1m]", off, d, err)
		}
		if _, d, _ := s.Take(t.Context(), start.Add(time.Hour-time.Second), one("web", b), 0); d == nil {
			t.Errorf("at +%v: the use no longer counts a second before the window ends", off)
		}
		if _, d, _ := s.Take(t.Context(), start.Add(d.RetryAfter), one("web", b), 0); d != nil {
			t.Errorf("at +%v: still spent at its Retry-After: %v", off, d)
		}
	}
}

// TestCalendarClockStepBackOverMidnight: a clock stepped back over the
// start of a calendar period (a VM restored, NTP mending a clock that ran
// ahead) charges the period the counter was last charged in, not the one
// before: what the step lets through counts in the day it was spent, in
// memory and in Redis alike. It used to count in the day before, which
// stopped counting a minute later: a day's 3 requests went 5 times.
func TestCalendarClockStepBackOverMidnight(t *testing.T) {
	addr, _ := startRedis(t)
	mem := NewMemory()
	mono := steady(mem)
	for _, tt := range []struct {
		name string
		s    Store
		// retry is what is left of the new day by the clock (Redis) or,
		// in memory, by the monotonic clock, which the step did not set
		// back: 2.5 minutes less.
		retry time.Duration
	}{
		{"memory", mem, 23*time.Hour + 56*time.Minute + 30*time.Second},
		{"redis", NewRedis(newClient(t, addr), nil, "step"), 23*time.Hour + 59*time.Minute},
	} {
		s := tt.s
		t.Run(tt.name, func(t *testing.T) {
			b := calendar("daily", "day")
			b.Requests = 3
			midnight := time.Date(2026, 11, 4, 0, 0, 0, 0, time.UTC)
			step := func(wall time.Time, sinceStart time.Duration) time.Time {
				*mono = sinceStart
				return wall
			}
			for range 3 {
				mustTake(t, s, step(midnight.Add(-time.Minute), 0), 0, one("web", b))
			}
			mustTake(t, s, step(midnight.Add(30*time.Second), 90*time.Second), 0, one("web", b))
			// Stepped back 2 minutes: 2 more go, in the new day.
			back := step(midnight.Add(-90*time.Second), 120*time.Second)
			mustTake(t, s, back, 0, one("web", b))
			mustTake(t, s, back, 0, one("web", b))
			// Past midnight again, the new day's 3 are spent.
			again := step(midnight.Add(time.Minute), 270*time.Second)
			mustDeny(t, s, again, 0, one("web", b), deny(b, "web", KindRequests, tt.retry))
			if got := used(t, s, again, b, "web", KindRequests); got != 3 {
				t.Errorf("used %v in the new day, want 3", got)
			}
		})
	}
}

// TestRedisUndoInLaterPeriod: taking back a Take that a clock stepped back
// over midnight counted in the new day takes it from that day, not from
// the day the clock read.
func TestRedisUndoInLaterPeriod(t *testing.T) {
	addr, _ := startRedis(t)
	s := NewRedis(newClient(t, addr), nil, "undo")
	b := calendar("daily", "day")
	b.Requests = 3
	midnight := time.Date(2026, 11, 4, 0, 0, 0, 0, time.UTC)
	mustTake(t, s, midnight.Add(30*time.Second), 0, one("web", b))
	back := midnight.Add(-90 * time.Second)
	tk := mustTake(t, s, back, 0, one("web", b))
	s.undo(tk.id, back, one("web", b), 0)
	if err := s.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := used(t, s, midnight.Add(time.Minute), b, "web", KindRequests); got != 1 {
		t.Errorf("used %v in the new day after the undo, want 1", got)
	}
}

// TestCalendarStepBackAfterStreamSettledInNewDay: a counter whose only
// use in the new day is a stream settled there (taken before midnight)
// holds that day too: a clock stepped back over midnight charges it
// there, in Redis as in memory. Redis looked for the new day in the
// requests counted alone, charged the day before, which stopped counting
// a minute later: 1,400 tokens went in a day of 1,000.
func TestCalendarStepBackAfterStreamSettledInNewDay(t *testing.T) {
	addr, _ := startRedis(t)
	mem := NewMemory()
	mono := steady(mem)
	for name, s := range map[string]Store{"memory": mem, "redis": NewRedis(newClient(t, addr), nil, "stream")} {
		t.Run(name, func(t *testing.T) {
			b := calendar("daily", "day")
			b.Tokens = 1000
			midnight := time.Date(2026, 11, 4, 0, 0, 0, 0, time.UTC)
			step := func(wall time.Time, sinceStart time.Duration) time.Time {
				*mono = sinceStart
				return wall
			}
			stream := mustTake(t, s, step(midnight.Add(-time.Minute), 0), 0, one("web", b))
			settle(t, s, step(midnight.Add(20*time.Second), 80*time.Second), stream, 600, 0)
			// Stepped back 90 s: 400 more go, in the new day.
			back := step(midnight.Add(-70*time.Second), 90*time.Second)
			settle(t, s, back, mustTake(t, s, back, 0, one("web", b)), 400, 0)
			// Past midnight again, the new day's 1,000 are spent.
			again := step(midnight.Add(30*time.Second), 190*time.Second)
			if tk, d, err := s.Take(t.Context(), again, one("web", b), 0); err != nil || d == nil {
				t.Errorf("taken (ticket %v, error %v) with 1,000 tokens used in the new day, want denied", tk, err)
			}
			if got := used(t, s, again, b, "web", KindTokens); got != 1000 {
				t.Errorf("used %v tokens in the new day, want 1000", got)
			}
		})
	}
}
