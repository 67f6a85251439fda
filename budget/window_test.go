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
