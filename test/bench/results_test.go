package main

import (
	"io"
	"strings"
	"testing"
)

func TestCompareWithinRounds(t *testing.T) {
	r := newResults()
	// A slow third round for both: per round, till is always 0.2 ms over.
	for _, v := range []float64{1.0, 1.1, 5.0} {
		r.add("direct", "p99", v)
		r.add("till", "p99", v+0.2)
	}
	if d, ok := r.compare("till", "direct", "p99", true); !ok || d < 0.1999 || d > 0.2001 {
		t.Errorf("difference: got %v %v, want +0.2", d, ok)
	}
	r.add("nginx", "cpu", 50)
	r.add("nginx", "cpu", 40)
	r.add("nginx", "cpu", 60)
	r.add("till", "cpu", 100)
	r.add("till", "cpu", 60)
	r.add("till", "cpu", 90)
	if q, ok := r.compare("till", "nginx", "cpu", false); !ok || q != 1.5 {
		t.Errorf("ratio: got %v %v, want 1.5 (the median of 2, 1.5, 1.5)", q, ok)
	}
	r.add("nginx", "hwm", 10)
	r.add("till", "hwm", 20)
	r.add("till", "hwm", 30) // counts differ: the medians are compared
	if q, ok := r.compare("till", "nginx", "hwm", false); !ok || q != 3 {
		t.Errorf("ratio of medians: got %v %v, want 3", q, ok)
	}
	if _, ok := r.compare("till", "absent", "cpu", false); ok {
		t.Error("a comparison with a missing target")
	}
}

func TestFailedRoundsReported(t *testing.T) {
	*rounds = 3
	var out strings.Builder
	if err := reportFailed(&out, []string{"nginx", "till", "paired"}, map[string]int{"till": 1}); err != nil {
		t.Errorf("one failed round of three failed the run: %v", err)
	}
	if want := "till: 1 of 3 round(s) failed"; !strings.Contains(out.String(), want) || strings.Contains(out.String(), "nginx") {
		t.Errorf("report %q, want only %q", out.String(), want)
	}
	err := reportFailed(io.Discard, []string{"nginx", "till", "paired"}, map[string]int{"till": 1, "paired": 3})
	if err == nil || !strings.Contains(err.Error(), "paired") || strings.Contains(err.Error(), "till") {
		t.Errorf("a figure with no round left: got %v, want an error naming paired alone", err)
	}
}

// TestFiguresOnlyKnown: -only takes the figures the harness measures
// (the README's -only usage,creds among them) and refuses a misspelt one,
// which would otherwise measure nothing and say nothing.
func TestFiguresOnlyKnown(t *testing.T) {
	for _, only := range []string{"", "nginx,till,paired", "usage,creds"} {
		if _, err := figures(only); err != nil {
			t.Errorf("-only %q: %v", only, err)
		}
	}
	if got, _ := figures("usage,creds"); len(got) != 2 || got[0] != "usage" || got[1] != "creds" {
		t.Errorf("-only usage,creds: got %q", got)
	}
	for _, only := range []string{"cred", "nginx,til", "nginx,"} {
		if _, err := figures(only); err == nil {
			t.Errorf("-only %q: no error", only)
		}
	}
}
