package source

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestSameValueKeepsItsVersionTime: a value fetched again with a later
// version time (a Vault version written with the same value, a file
// rewritten or touched, as a Kubernetes Secret volume does to every key
// when one changes, a helper that reports no time) is no rotation: its
// version time, from which vault.max_age counts, stays the first one. A
// new value takes its own.
func TestSameValueKeepsItsVersionTime(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	clk := &clock{t: start}
	var mu sync.Mutex
	value, version := "sk-same-0123456789", start.Add(-40*24*time.Hour)
	src := fakeSource{func(context.Context, string) ([]byte, Meta, error) {
		mu.Lock()
		defer mu.Unlock()
		return []byte(value), Meta{Version: version}, nil
	}}
	c := NewCache(map[string]Spec{"s": {Source: src, TTL: time.Minute}}, Options{Now: clk.now, Log: zerolog.Nop()})
	updated := func() time.Time {
		t.Helper()
		r, err := c.Get(context.Background(), "s:k")
		if err != nil {
			t.Fatal(err)
		}
		return r.Secret.Updated
	}
	first := updated()
	for _, tt := range []struct {
		name, value string
		version     time.Time // zero: the source tells none
		want        time.Time
	}{
		{"same value, later version", "sk-same-0123456789", start, first},
		{"same value, no version time", "sk-same-0123456789", time.Time{}, first},
		{"new value", "sk-new-0123456789", start.Add(time.Hour), start.Add(time.Hour)},
	} {
		mu.Lock()
		value, version = tt.value, tt.version
		mu.Unlock()
		clk.add(2 * time.Minute) // past ttl: fetched again
		if got := updated(); !got.Equal(tt.want) {
			t.Errorf("%s: version time %v, want %v", tt.name, got, tt.want)
		}
	}
}
