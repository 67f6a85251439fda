package config

import (
	"reflect"
	"strings"
	"testing"
)

const openRouteHint = `(hint: "till client add NAME", then clients: [NAME]; or clients: any to accept anyone who can reach the listener)`

// TestCheckOpenRoutes checks the rule on each kind of listener: a route
// without clients is refused off loopback, unless it says clients: any.
func TestCheckOpenRoutes(t *testing.T) {
	const client = "clients:\n  - {name: web, token_sha256: " + testHash + "}\n"
	tests := []struct {
		name   string
		yaml   string
		listen string // "" for the config's own
		want   string // "" for no error
	}{
		{"default listen", "version: 1\nroutes:\n  - {name: openai, preset: openai}\n", "", ""},
		{"loopback v4", "version: 1\nlisten: 127.0.0.2:8080\nroutes:\n  - {name: openai, preset: openai}\n", "", ""},
		{"loopback v6", "version: 1\nlisten: \"[::1]:8080\"\nroutes:\n  - {name: openai, preset: openai}\n", "", ""},
		{"localhost", "version: 1\nlisten: localhost:8080\nroutes:\n  - {name: openai, preset: openai}\n", "", ""},
		{"no routes", "version: 1\nlisten: 0.0.0.0:8080\n", "", ""},
		{"every interface", "version: 1\nlisten: 0.0.0.0:8080\nroutes:\n  - {name: openai, preset: openai}\n", "",
			`till.yaml:4: routes[0].clients: required when till listens off loopback ("0.0.0.0:8080"): without it anyone who can reach the listener can spend the key ` + openRouteHint},
		{"empty host", "version: 1\nlisten: \":8080\"\nroutes:\n  - {name: openai, preset: openai}\n", "",
			`till.yaml:4: routes[0].clients: required when till listens off loopback (":8080"): without it anyone who can reach the listener can spend the key ` + openRouteHint},
		{"private address", "version: 1\nlisten: 10.1.2.3:8080\nroutes:\n  - {name: openai, preset: openai}\n", "",
			`till.yaml:4: routes[0].clients: required when till listens off loopback ("10.1.2.3:8080"): without it anyone who can reach the listener can spend the key ` + openRouteHint},
		{"host name", "version: 1\nlisten: till.internal:8080\nroutes:\n  - {name: openai, preset: openai}\n", "",
			`till.yaml:4: routes[0].clients: required when till listens off loopback ("till.internal:8080"): without it anyone who can reach the listener can spend the key ` + openRouteHint},
		{"name that only starts like localhost", "version: 1\nlisten: localhost.evil.example:8080\nroutes:\n  - {name: openai, preset: openai}\n", "",
			`till.yaml:4: routes[0].clients: required when till listens off loopback ("localhost.evil.example:8080"): without it anyone who can reach the listener can spend the key ` + openRouteHint},
		{"clients any", "version: 1\nlisten: 0.0.0.0:8080\nroutes:\n  - {name: openai, preset: openai, clients: any}\n", "", ""},
		{"clients named", "version: 1\nlisten: 0.0.0.0:8080\n" + client + "routes:\n  - {name: openai, preset: openai, clients: [web]}\n", "", ""},
		{"one open route of three", "version: 1\nlisten: 0.0.0.0:8080\n" + client + "routes:\n  - {name: a, preset: openai, clients: [web]}\n  - name: b\n    preset: openai\n  - {name: c, preset: openai, clients: any}\n", "",
			`till.yaml:7: routes[1].clients: required when till listens off loopback ("0.0.0.0:8080"): without it anyone who can reach the listener can spend the key ` + openRouteHint},
		{"every open route named", "version: 1\nlisten: 0.0.0.0:8080\nroutes:\n  - {name: a, preset: openai}\n  - {name: b, preset: openai}\n", "",
			`till.yaml:4: routes[0].clients: required when till listens off loopback ("0.0.0.0:8080"): without it anyone who can reach the listener can spend the key ` + openRouteHint + "\n" +
				`till.yaml:5: routes[1].clients: required when till listens off loopback ("0.0.0.0:8080"): without it anyone who can reach the listener can spend the key ` + openRouteHint},
		{"--listen off loopback wins", "version: 1\nroutes:\n  - {name: openai, preset: openai}\n", "0.0.0.0:0",
			`till.yaml:3: routes[0].clients: required when till listens off loopback ("0.0.0.0:0"): without it anyone who can reach the listener can spend the key ` + openRouteHint},
		{"--listen on loopback wins", "version: 1\nlisten: 0.0.0.0:8080\nroutes:\n  - {name: openai, preset: openai}\n", "127.0.0.1:0", ""},
		{"bad --listen not echoed", "version: 1\nroutes:\n  - {name: openai, preset: openai}\n", "sk-not an address",
			`till.yaml:3: routes[0].clients: required when till listens off loopback (the listen address): without it anyone who can reach the listener can spend the key ` + openRouteHint},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("till.yaml", []byte(tt.yaml), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			listen := c.Listen
			if tt.listen != "" {
				listen = tt.listen
			}
			if got := errString(c.CheckOpenRoutes(listen)); got != tt.want && !(tt.want == "" && got == "<nil>") {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestCheckOpenRoutesDefaults checks that the built-in defaults, which
// cannot name clients, serve only on loopback, with or without routes.
func TestCheckOpenRoutesDefaults(t *testing.T) {
	dir := t.TempDir()
	for _, has := range []func(string) bool{nil, func(s string) bool { return s == "openai" }} {
		c := Default(dir, "", has)
		if err := c.CheckOpenRoutes(c.Listen); err != nil {
			t.Errorf("default listen: %v", err)
		}
		err := c.CheckOpenRoutes("0.0.0.0:8080")
		if err == nil || !strings.HasPrefix(err.Error(), `the built-in defaults (no config file) serve only on loopback, and "0.0.0.0:8080" is not`) ||
			!strings.Contains(err.Error(), `till init`) {
			t.Errorf("got %v, want the built-in defaults refused", err)
		}
	}
}

// TestClientsAny checks that clients: any decodes to AnyClient with no
// client list, so that everything reading Clients sees "any client".
func TestClientsAny(t *testing.T) {
	for _, y := range []string{"clients: any", `clients: "any"`} {
		c, err := Parse("till.yaml", []byte("version: 1\nroutes:\n  - name: x\n    preset: openai\n    "+y+"\n"), "/")
		if err != nil {
			t.Fatal(err)
		}
		if r := c.Routes[0]; !r.AnyClient || r.Clients != nil {
			t.Errorf("%s: got AnyClient %v, Clients %q", y, r.AnyClient, r.Clients)
		}
	}
	c, err := Parse("till.yaml", []byte("version: 1\nclients:\n  - {name: web, token_sha256: "+testHash+"}\nroutes:\n  - {name: x, preset: openai, clients: [web]}\n  - {name: y, preset: openai}\n"), "/")
	if err != nil {
		t.Fatal(err)
	}
	if got := []bool{c.Routes[0].AnyClient, c.Routes[1].AnyClient}; !reflect.DeepEqual(got, []bool{false, false}) {
		t.Errorf("got AnyClient %v, want false without clients: any", got)
	}
}
