package proxy

import (
	"errors"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestPoolPick(t *testing.T) {
	p := &pool{cooldown: time.Minute}
	for range 3 {
		p.members = append(p.members, &member{injection: &injection{}, restUntil: new(atomic.Int64)})
	}
	now := time.Now()
	got := map[*member]int{}
	for range 6 {
		got[p.pick("", nil, now)]++
	}
	for _, m := range p.members {
		if got[m] != 2 {
			t.Errorf("round robin: a member taken %d times of 6, want 2", got[m])
		}
	}
	p.members[0].rest(now, time.Second)
	p.members[1].rest(now, 2*time.Second)
	for range 4 {
		if m := p.pick("", nil, now); m != p.members[2] {
			t.Fatal("a resting member was picked while another was ready")
		}
	}
	p.members[2].rest(now, 3*time.Second)
	if m := p.pick("", nil, now); m != p.members[0] {
		t.Error("with every member resting, want the one whose rest ends first")
	}
	if m := p.pick("", p.members, now); m != nil {
		t.Error("with every member tried, want none")
	}
	p.members[0].rest(now, -time.Hour) // a shorter rest does not shorten it
	if p.members[0].restUntil.Load() != now.Add(time.Second).UnixNano() {
		t.Error("rest shortened a longer rest")
	}

	sticky := &pool{sticky: true, members: p.members}
	later := now.Add(time.Hour)
	first := sticky.pick("web", nil, later)
	for range 5 {
		if sticky.pick("web", nil, later) != first {
			t.Fatal("sticky: one caller moved between keys")
		}
	}
}

func TestPoolRestFor(t *testing.T) {
	p := &pool{cooldown: time.Minute}
	now := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	res := func(code int, retry string) *http.Response {
		h := http.Header{}
		if retry != "" {
			h.Set("Retry-After", retry)
		}
		return &http.Response{StatusCode: code, Header: h}
	}
	for _, tt := range []struct {
		name string
		res  *http.Response
		err  error
		d    time.Duration
		ok   bool
	}{
		{"429 with seconds", res(429, "7"), nil, 7 * time.Second, true},
		{"429 with a date", res(429, now.Add(90*time.Second).Format(http.TimeFormat)), nil, 90 * time.Second, true},
		{"429 bad header", res(429, "soon"), nil, time.Minute, true},
		{"402", res(402, ""), nil, time.Minute, true},
		{"529", res(529, ""), nil, time.Minute, true},
		{"401", res(401, ""), nil, 10 * time.Minute, true},
		{"403", res(403, "5"), nil, 10 * time.Minute, true},
		{"huge retry", res(429, "99999999"), nil, maxRetryAfter, true},
		{"200", res(200, ""), nil, 0, false},
		{"500", res(500, ""), nil, 0, false},
		{"refused", nil, &netOpError{syscall.ECONNREFUSED}, time.Minute, true},
		{"timeout", nil, errors.New("timeout"), time.Minute, false},
	} {
		d, ok := p.restFor(tt.res, tt.err, now)
		if d != tt.d && tt.ok || ok != tt.ok {
			t.Errorf("%s: got %v %v, want %v %v", tt.name, d, ok, tt.d, tt.ok)
		}
	}
}

// netOpError wraps an errno as the transport's dial errors do.
type netOpError struct{ errno syscall.Errno }

func (e *netOpError) Error() string { return "dial tcp: " + e.errno.Error() }
func (e *netOpError) Unwrap() error { return e.errno }
