package config

import (
	"errors"
	"strconv"
	"strings"
)

// CheckOpenRoutes applies the rule that keeps keys off the network by
// default: on a listener that is not loopback (127.0.0.0/8, ::1,
// localhost), every route must name its clients (clients: [web]) or say
// clients: any. Otherwise any host or container that reaches the listener
// could spend the key, and the image's default command listens on every
// interface.
//
// listen is the address till listens on: the config's Listen, or the one
// given on the command line, which overrides it. The error holds one *Error
// per open route, joined, in config order; nil when listen is loopback or
// no route is open. The built-in defaults (File "") have no way to name
// clients, so they refuse any listener off loopback, whatever their
// routes: the vault gains routes when it gains keys.
func (c *Config) CheckOpenRoutes(listen string) error {
	if isLoopbackAddr(listen) {
		return nil
	}
	shown := "the listen address"
	if validListen(listen) == nil {
		shown = strconv.Quote(listen)
	}
	if c.File == "" {
		return errors.New("the built-in defaults (no config file) serve only on loopback, and " + shown +
			" is not: their routes, one per preset whose key is in the vault, would be open to anyone who can reach it" +
			` (hint: write a config with "till init", then give each route clients: [NAME] from "till client add NAME", or clients: any)`)
	}
	var errs []error
	for i, r := range c.Routes {
		if r.Clients != nil || r.AnyClient {
			continue
		}
		errs = append(errs, newError(c.File, r.Line, "routes["+strconv.Itoa(i)+"].clients",
			"required when till listens off loopback (%s): without it anyone who can reach the listener can spend the key"+
				` (hint: "till client add NAME", then clients: [NAME]; or clients: any to accept anyone who can reach the listener)`, shown))
	}
	return errors.Join(errs...)
}

// CheckServedAdminToken refuses a config, for a reload, where a client's
// token_sha256 is served, the admin.token_sha256 the running admin
// listener takes: that setting waits for a restart, so a reload that
// changes it and gives a client the old one would hand that client's app
// /metrics, /admin/* and reloads, which the config's own check (against
// its new admin token) does not see. served "" checks nothing.
func (c *Config) CheckServedAdminToken(served string) error {
	if served == "" {
		return nil
	}
	for i, cl := range c.Clients {
		if strings.EqualFold(cl.TokenSHA256, served) {
			return newError(c.File, cl.Line, "clients["+strconv.Itoa(i)+"].token_sha256",
				"is the admin.token_sha256 the running till's admin listener takes (a change to admin.token_sha256 waits for a restart): client %q's app could use the admin endpoints"+
					" (hint: give the client a token of its own with \"till client rotate %s\", or restart till first)", cl.Name, cl.Name)
		}
	}
	return nil
}
