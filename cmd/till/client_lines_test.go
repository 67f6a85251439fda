package main

import (
	"strings"
	"testing"

	"github.com/tillgw/till/config"
)

// TestClientAddPrintsLinesThatParse: without --write, client add prints
// the config lines to paste, quoted where YAML needs it: "null" is a valid
// client name, and "- name: null" unquoted would be YAML null.
func TestClientAddPrintsLinesThatParse(t *testing.T) {
	c := newCLI(t)
	for _, name := range []string{"web", "null", "true", "1e3"} {
		out, _, code := c.run("", "client", "add", name)
		if code != 0 {
			continue // refusing the name is a fix too
		}
		_, lines, _ := strings.Cut(out, "clients: list:\n\n") // no config file: till init's
		lines, _, _ = strings.Cut(lines, "\n\n")
		doc := "version: 1\nclients:\n" + lines + "\n"
		cfg, err := config.Parse("till.yaml", []byte(doc), c.dir)
		if err != nil {
			t.Errorf("client add %s printed lines that do not parse: %v\n%s", name, err, doc)
			continue
		}
		if len(cfg.Clients) != 1 || cfg.Clients[0].Name != name {
			t.Errorf("client add %s: the pasted lines name %+v", name, cfg.Clients)
		}
	}
}
