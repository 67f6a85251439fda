package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tillgw/till/budget"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/internal/unixsock"
	"github.com/tillgw/till/proxy"
	"github.com/tillgw/till/vault/source"
)

// usageTimeout bounds till usage's read of the counters.
const usageTimeout = 10 * time.Second

// runUsage prints each budget counter: its limit, use, what remains and
// when a calendar window resets. With --url it asks that admin listener
// (GET /admin/usage), with $TILL_ADMIN_TOKEN when the listener wants one;
// else, with limits.redis, it reads Redis, where every till counts;
// otherwise it asks the running till's admin listener of admin.listen.
func runUsage(ctx context.Context, args []string, e *env) error {
	var cfgPath, client, name, rawURL string
	var asJSON bool
	fs := newFlags("usage", e.stderr, &cfgPath)
	fs.StringVar(&rawURL, "url", "", "the admin listener's base `URL` (or unix:PATH, its socket) to ask (default: from admin.listen)")
	fs.BoolVar(&asJSON, "json", false, "print a JSON array")
	fs.StringVar(&client, "client", "", "only the counters of client `NAME`")
	fs.StringVar(&name, "budget", "", "only budget `NAME`")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, "till usage [-c FILE] [--json] [--client NAME] [--budget NAME] [--url URL]"); err != nil {
		return err
	}
	if client != "" && client != "anonymous" {
		if err := clientNameArg(client, "--client"); err != nil {
			return err
		}
	}
	cfg, err := configFor(cfgPath, e)
	if err != nil {
		return err
	}
	if len(cfg.Budgets) == 0 && name == "" {
		// Nothing is counted: an empty answer, not an error, for scripts.
		fmt.Fprintf(e.stderr, "till: warning: %s sets no budgets\n", displayPath(configName(cfg)))
		fmt.Fprintln(e.stderr, `till: hint: add one: budgets: [{name: daily, window: day, tokens: 2000000}] (the README's "Budgets and usage" has every key)`)
		if asJSON {
			fmt.Fprintln(e.stdout, "[]")
		}
		return nil
	}
	if name != "" && !slices.ContainsFunc(cfg.Budgets, func(b config.Budget) bool { return b.Name == name }) {
		names := make([]string, len(cfg.Budgets))
		for i, b := range cfg.Budgets {
			names[i] = b.Name
		}
		// The name is not echoed: it could be a key pasted in the wrong place.
		hint := "its budgets: " + strings.Join(names, ", ")
		if len(names) == 0 {
			hint = "it sets no budgets"
		}
		return withHint(usageError{fmt.Sprintf("--budget: %s has no such budget", displayPath(configName(cfg)))}, hint)
	}
	if client != "" && client != "anonymous" {
		if err := knownClient(cfg, client); err != nil {
			return withHint(err, "anonymous counts callers without a token")
		}
	}
	ctx, cancel := answerWithin(ctx, usageTimeout)
	defer cancel()
	rows, err := readUsage(ctx, cfg, cfgPath, rawURL, e)
	if err != nil {
		return err
	}
	kept := rows[:0]
	for _, r := range rows {
		if (name == "" || r.Budget == name) && (client == "" || r.Counter == client) {
			kept = append(kept, r)
		}
	}
	if len(kept) == 0 {
		// On stderr: the table (or []) stays as scripts read it.
		fmt.Fprintln(e.stderr, "note: no budget counter yet: a counter shows once a request charges it")
	}
	if asJSON {
		return writeJSON(e.stdout, kept)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BUDGET\tCOUNTER\tKIND\tLIMIT\tUSED\tREMAINING\tRESET")
	for _, r := range kept {
		reset := "rolling"
		if r.Reset != nil {
			reset = r.Reset.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", printable(r.Budget, 80), printable(r.Counter, 80), printable(string(r.Kind), 16),
			amount(r.Limit), amount(r.Used), amount(r.Remaining), reset)
	}
	return tw.Flush()
}

// readUsage reads the budget counters: from the admin listener at rawURL
// when given (a till's answer, which reads Redis too when it shares one);
// else from limits.redis, where every till counts; else from the admin
// listener of the config's admin.listen.
func readUsage(ctx context.Context, cfg *config.Config, cfgPath, rawURL string, e *env) ([]budget.Row, error) {
	if cfg.Limits.Redis != "" && rawURL == "" {
		rl, err := proxy.NewRedisLimits(cfg.Limits.Redis)
		if err != nil {
			return nil, err
		}
		defer rl.Close()
		rows, err := rl.Budgets().Usage(ctx, time.Now(), proxy.NewSnapshot(cfg, nil).BudgetSpecs())
		if err != nil {
			return nil, withHint(fmt.Errorf("read the budgets in limits.redis: %w", err), "--url asks a running till's admin listener instead")
		}
		return rows, nil
	}
	var t adminTarget
	var err error
	if rawURL != "" {
		t, err = healthURL(rawURL)
	} else {
		t, err = adminURL(ctx, cfgPath, e, withURLFlag)
	}
	if err != nil {
		return nil, err
	}
	return askUsage(ctx, t.at("/admin/usage"), e.getenv("TILL_ADMIN_TOKEN"))
}

// answerText is an admin answer's body as an error shows it: printable,
// and cut short. What answered may not be till and may quote the
// Authorization it was sent: a body that quotes token, once printable,
// as source.QuotesCredential finds one (whole, encoded, or 8 of its
// characters), is not shown. What is looked at runs past what is shown,
// as the cut would keep the start of a token quoted across it.
func answerText(body []byte, token string) string {
	text := printable(strings.TrimSpace(string(body)), len(body))
	if token != "" && source.QuotesCredential(text[:min(len(text), 2*shownAnswer)], []string{token}) {
		return "(an answer that quotes TILL_ADMIN_TOKEN, not shown)"
	}
	return printable(text, shownAnswer)
}

// shownAnswer is how much of an admin answer an error shows.
const shownAnswer = 200

// amount prints a count, or dollars to the cent's hundredth.
func amount(v float64) string {
	if v == float64(int64(v)) {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'f', 4, 64)
}

// askUsage reads GET /admin/usage of a running till.
func askUsage(ctx context.Context, t adminTarget, token string) ([]budget.Row, error) {
	var rows []budget.Row
	if err := askAdmin(ctx, t, token, &rows); err != nil {
		return nil, err
	}
	return rows, nil
}

// adminDownHint is the hint when the admin listener a config names does
// not answer: till serve opens admin.listen when it starts, and a reload
// (SIGHUP, the file watch) that adds or moves it waits for the restart.
// (till health keeps to one line, a probe's output.)
const adminDownHint = "till serve opens admin.listen when it starts, not at a reload: start it, or restart it if you set admin.listen since"

// askAdmin reads the JSON answer to GET t from a running till's admin
// listener into out, sending token when set and t.sends it. Its errors show t without a
// password, and only printable text of what answered, which may not be
// till. The token goes through a socket only when no user but the
// folder's owner can have put it there (unixsock.CheckFolder).
func askAdmin(ctx context.Context, t adminTarget, token string, out any) error {
	return callAdmin(ctx, t, token, nil, out)
}

// callAdmin is askAdmin, with a POST of in as JSON when in is not nil.
func callAdmin(ctx context.Context, t adminTarget, token string, in, out any) error {
	shown := t.String()
	method, sent := http.MethodGet, io.Reader(nil)
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		method, sent = http.MethodPost, bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, t.url.String(), sent)
	if err != nil {
		return fmt.Errorf("%s: %w", shown, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	send, err := t.sends(token)
	if err != nil {
		return err
	}
	if send && t.socket != "" {
		if err := unixsock.CheckFolder(t.socket); err != nil {
			return withHint(fmt.Errorf("%s: TILL_ADMIN_TOKEN not sent: %w", shown, err), socketFolderHint)
		}
	}
	if send {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := t.client().Do(req)
	if err != nil {
		err = fmt.Errorf("%s: %s", shown, probeFailure(ctx, err))
		if t.fromConfig {
			return withHint(err, adminDownHint)
		}
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode == http.StatusUnauthorized {
		return withHint(fmt.Errorf("%s: 401", shown), "the admin listener wants its token: set TILL_ADMIN_TOKEN")
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d %s", shown, resp.StatusCode, answerText(body, token))
	}
	if token != "" && source.QuotesCredential(string(body), []string{token}) {
		// Not till's: something at the address echoes what it got, into
		// fields that would be printed.
		return fmt.Errorf("%s: not the answer of a till admin listener: it quotes TILL_ADMIN_TOKEN (not shown)", shown)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s: not the answer of a till admin listener: %w", shown, err)
	}
	return nil
}
