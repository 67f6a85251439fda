package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
)

// TestUsageURLWithRedis: till usage --url asks that admin listener even
// when the config sets limits.redis. It read Redis instead, saying
// nothing of the --url it was given: from a machine that reaches the
// admin listener and not Redis, it failed on a Redis it was not asked to
// read.
func TestUsageURLWithRedis(t *testing.T) {
	c := newCLI(t)
	var asked atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		w.Write([]byte(`[{"budget":"web-daily","counter":"anonymous","kind":"requests","limit":5,"used":1,"remaining":4,"reset":null}]`))
	}))
	defer srv.Close()
	// Port 1: no Redis answers there.
	os.WriteFile("till.yaml", []byte("version: 1\nlimits: {redis: \"redis://127.0.0.1:1/0\"}\nroutes: []\nbudgets: [{name: web-daily, window: day, requests: 5}]\n"), 0o644)
	out, errOut, code := c.run("", "usage", "--url", srv.URL)
	if code != 0 || !strings.Contains(out, "web-daily") || asked.Load() != 1 {
		t.Errorf("usage --url with limits.redis: exit %d, admin asked %d times: %s%s", code, asked.Load(), out, errOut)
	}
}

// TestAdminListenerHints: till usage and till health, asking the admin
// listener of the config, say how to get one (health, a probe, keeps to
// one line when the listener does not answer). A user who added a budget
// and ran till usage was told to set admin.listen "(till serves /readyz
// there)"; did so, and was then asked "is till serve running with this
// config?" while it was: admin.listen opens when till serve starts, and
// a reload (the file watch, SIGHUP) leaves it for the restart. Without a
// config file the hint spoke of a config there was none of.
func TestAdminListenerHints(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	const budget = "budgets: [{name: daily, window: day, tokens: 100}]\nroutes: []\n"
	tests := []struct {
		name, config string
		args         []string
		want         string
	}{
		{"usage, no admin listener", "version: 1\n" + budget, []string{"usage"}, "and restart till serve"},
		{"health, no admin listener", "version: 1\n", []string{"health"}, "and restart till serve"},
		{"health, no config file", "", []string{"health"}, "till init writes a config"},
		{"usage, admin listener down", "version: 1\nadmin: {listen: " + closed + "}\n" + budget, []string{"usage"}, "restart it if you set admin.listen since"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCLI(t)
			if tt.config != "" {
				os.WriteFile("till.yaml", []byte(tt.config), 0o644)
			}
			_, errOut, code := c.run("", tt.args...)
			if code != 1 || !strings.Contains(errOut, "till: hint: ") || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d, stderr %q; want 1 and a hint with %q", code, errOut, tt.want)
			}
		})
	}
}

// TestUsageNoCounterYet: before any request charges a budget, till usage
// printed its table's header alone, which reads as "nothing is counted"
// or "it is broken"; it now says on stderr why the table is empty, the
// table (and --json's []) staying as scripts read them.
func TestUsageNoCounterYet(t *testing.T) {
	c := newCLI(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`[]`))
	}))
	defer srv.Close()
	os.WriteFile("till.yaml", []byte("version: 1\nroutes: []\nbudgets: [{name: web-daily, window: day, requests: 5}]\n"), 0o644)
	const want = "no budget counter yet: a counter shows once a request charges it"
	out, errOut, code := c.run("", "usage", "--url", srv.URL)
	if code != 0 || strings.TrimSpace(out) != "BUDGET  COUNTER  KIND  LIMIT  USED  REMAINING  RESET" || !strings.Contains(errOut, want) {
		t.Errorf("usage before any charge: exit %d, want the header alone and %q on stderr:\n%s%s", code, want, out, errOut)
	}
	out, errOut, code = c.run("", "usage", "--json", "--url", srv.URL)
	if code != 0 || strings.TrimSpace(out) != "[]" || !strings.Contains(errOut, want) {
		t.Errorf("usage --json before any charge: exit %d:\n%s%s", code, out, errOut)
	}
}
