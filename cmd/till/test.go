package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tillgw/till/proxy"
)

// runTest dry-runs a request through the config: which route, which client,
// which secret would be injected, or why it would be refused. Exit code 0
// when allowed, 1 when refused, so policies can be tested in CI.
func runTest(args []string, e *env) error {
	var cfgPath, client, from string
	var asJSON bool
	flags := newFlags("test", e.stderr, &cfgPath)
	flags.StringVar(&client, "client", "", "client `name` making the request (default: none)")
	flags.StringVar(&from, "from", "127.0.0.1", "source `address` of the request, for client CIDRs")
	flags.BoolVar(&asJSON, "json", false, "print the verdict as JSON")
	pos, err := parseInterleaved(flags, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 2, "till test [-c FILE] [--client NAME] METHOD URL"); err != nil {
		return err
	}
	if client != "" {
		if err := clientNameArg(client, "--client"); err != nil {
			return err
		}
	}
	method := strings.ToUpper(pos[0])
	if strings.Trim(method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
		return usageError{"METHOD must be an HTTP method such as GET or POST"}
	}
	cfg, secrets, err := loadAll(cfgPath, e)
	if err != nil {
		return err
	}
	v := proxy.NewSnapshot(cfg, secrets).Explain(method, pos[1], client, from+":0", time.Now())
	if asJSON {
		b, _ := json.MarshalIndent(v, "", "  ")
		fmt.Fprintln(e.stdout, string(b))
	} else {
		printVerdict(e, method, v)
	}
	if !v.Allowed {
		return errRefused
	}
	return nil
}

// errRefused makes till test exit 1 without another message.
var errRefused = errors.New("")

func printVerdict(e *env, method string, v proxy.Verdict) {
	verdict := "allowed"
	if !v.Allowed {
		verdict = "refused: " + v.Code
	}
	fmt.Fprintf(e.stdout, "%s\n", verdict)
	row := func(k, val string) {
		if val != "" {
			fmt.Fprintf(e.stdout, "  %-9s %s\n", k+":", val)
		}
	}
	row("mode", v.Mode)
	row("route", v.Route)
	row("client", v.Client)
	if v.Secret != "" {
		fp := v.Fingerprint
		if fp == "" {
			fp = "missing"
		}
		row("secret", v.Secret+" ("+fp+")")
	}
	if v.Upstream != "" {
		row("upstream", method+" "+v.Upstream)
	}
	row("rate", v.Rate)
	row("reason", v.Reason)
	row("warning", v.Warning)
}
