package config

import (
	"errors"
	"strconv"
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
