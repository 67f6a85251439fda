package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBudgetReloadKeepsSpend: a reload that changes a budget's clients,
// routes and limit keeps what was spent in the window, in memory and in
// Redis alike; one that changes per: counts in other counters, which start
// afresh (a route named like a client too), and going back finds the old
// counts, as docs/reference.md says.
func TestBudgetReloadKeepsSpend(t *testing.T) {
	for _, store := range []string{"memory", "redis"} {
		t.Run(store, func(t *testing.T) {
			redisAddr := ""
			if store == "redis" {
				redisAddr, _ = startRedis(t)
			}
			testBudgetReload(t, redisAddr)
		})
	}
}

// testBudgetReload runs TestBudgetReloadKeepsSpend on the Redis at
// redisAddr, or in memory when it is "".
func testBudgetReload(t *testing.T, redisAddr string) {
	up := newUpstream(t, &fakeLLM{})
	dir := t.TempDir()
	webTok, webLines := addClient(t, dir, "web")
	_, batchLines := addClient(t, dir, "batch")
	cfg := func(budget string) string {
		c := "version: 1\nadmin: {listen: 127.0.0.1:0}\nclients:\n" + webLines + batchLines
		if redisAddr != "" {
			c += "limits: {redis: \"redis://" + redisAddr + "/0\"}\n"
		}
		return c + "routes:\n" +
			"  - {name: openai, preset: openai, upstream: \"" + up.URL + "\"}\n" +
			"  - {name: second, preset: openai, upstream: \"" + up.URL + "\", secret: openai}\n" +
			"  - {name: web, preset: openai, upstream: \"" + up.URL + "\", secret: openai}\n" +
			"budgets:\n  - " + budget + "\n"
	}
	writeConfig(t, dir, cfg("{name: hourly, clients: [web], routes: [openai], window: 1h, requests: 2}"))
	setSecret(t, dir, "openai", openaiKey)
	tl := startTillIn(t, dir, up.caFile)
	admin := tl.adminAddr()
	post := func(route string) int {
		t.Helper()
		req := newRequest(t, "POST", tl.url("/"+route+"/v1/chat/completions"), strings.NewReader(chat))
		req.Header.Set("X-Till-Token", webTok)
		resp, _ := do(t, req)
		return resp.StatusCode
	}
	for i := range 2 {
		if code := post("openai"); code != 200 {
			t.Fatalf("request %d within the budget: got %d, want 200", i+1, code)
		}
	}

	reloadConfig(t, tl, cfg("{name: hourly, clients: [web, batch], routes: [openai, second], window: 1h, requests: 3}"))
	if got := budgetUsed(t, tl, admin, "hourly", "web"); got != 2 {
		t.Errorf("used %v after a reload that changed the clients, routes and limit, want the 2 spent before", got)
	}
	if code := post("second"); code != 200 {
		t.Errorf("the third request of 3: got %d, want 200", code)
	}
	if code := post("openai"); code != 429 {
		t.Errorf("the fourth request of 3: got %d, want 429: the reload forgave what was spent", code)
	}

	// per: route counts each route apart: counters that have not been
	// charged yet.
	reloadConfig(t, tl, cfg("{name: hourly, clients: [web, batch], routes: [openai, second, web], per: route, window: 1h, requests: 3}"))
	if code := post("second"); code != 200 {
		t.Errorf("the first request counted per route: got %d, want 200", code)
	}
	if got := budgetUsed(t, tl, admin, "hourly", "second"); got != 1 {
		t.Errorf("counter second used %v after per: became route, want 1", got)
	}
	// The route web is not the client web: it used to find the 3 the
	// client spent.
	if code := post("web"); code != 200 {
		t.Errorf("the first request on the route web: got %d, want 200", code)
	}
	if got := budgetUsed(t, tl, admin, "hourly", "web"); got != 1 {
		t.Errorf("counter of the route web used %v, want its 1 request", got)
	}

	// Back to per client within the window: the client's counts are found.
	reloadConfig(t, tl, cfg("{name: hourly, clients: [web, batch], routes: [openai, second, web], window: 1h, requests: 3}"))
	if got := budgetUsed(t, tl, admin, "hourly", "web"); got != 3 {
		t.Errorf("client web used %v once per: is client again, want the 3 spent before", got)
	}
	if code := post("openai"); code != 429 {
		t.Errorf("client web once per: is client again: got %d, want 429", code)
	}
}

// reloadConfig writes cfg as tl's till.yaml in one rename, signals till to
// reload it and waits until it has.
func reloadConfig(t *testing.T, tl *till, cfg string) {
	t.Helper()
	n := strings.Count(tl.stderr.String(), `"message":"reloaded"`)
	tmp := filepath.Join(tl.dir, ".till.yaml.tmp")
	if err := os.WriteFile(tmp, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(tl.dir, "till.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := tl.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a reload", func() bool {
		return strings.Count(tl.stderr.String(), `"message":"reloaded"`) > n
	})
}

// budgetUsed is the requests counter's use that till usage --json reports
// for budget and counter, or -1 when it lists none.
func budgetUsed(t *testing.T, tl *till, admin, budget, counter string) float64 {
	t.Helper()
	out, errOut, code := runTill(t, tl.dir, "", nil, "usage", "--json", "--url", admin)
	var rows []struct {
		Budget, Counter, Kind string
		Used                  float64
	}
	if code != 0 || json.Unmarshal([]byte(out), &rows) != nil {
		t.Fatalf("till usage --json: exit %d: %s %s", code, out, errOut)
	}
	for _, r := range rows {
		if r.Budget == budget && r.Counter == counter && r.Kind == "requests" {
			return r.Used
		}
	}
	t.Logf("till usage --json: %s", out)
	return -1
}
