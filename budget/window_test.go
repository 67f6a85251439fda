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
