package config

import (
	"slices"
	"strings"
	"testing"
)

func TestRemoveClient(t *testing.T) {
	const two = "version: 1\n# clients below\nclients:\n  - name: old # leaving\n    token_sha256: " + testHash + "\n  - name: web\n    token_sha256: " + testHash + "\n"
	tests := []struct {
		name    string
		yaml    string
		client  string
		want    string
		wantErr string
	}{
		{name: "one of two", yaml: two, client: "old",
			want: "version: 1\n# clients below\nclients:\n  - name: web\n    token_sha256: " + testHash + "\n"},
		{name: "the last one takes the list", yaml: "version: 1\nclients:\n  - name: web\n    token_sha256: " + testHash + "\nlisten: 127.0.0.1:8080\n", client: "web",
			want: "version: 1\nlisten: 127.0.0.1:8080\n"},
		{name: "flow style", yaml: "version: 1\nclients: [{name: a, token_sha256: " + testHash + "}, {name: b, token_sha256: " + testHash + "}]\n", client: "a",
			want: "version: 1\nclients: [{name: b, token_sha256: " + testHash + "}]\n"},
		{name: "unknown client", yaml: two, client: "nobody", wantErr: `till.yaml: no client "nobody"`},
		{name: "no clients list", yaml: "version: 1\n", client: "web", wantErr: `till.yaml: no client "web"`},
		{name: "not a mapping", yaml: "- a\n", client: "web", wantErr: "till.yaml: not a YAML mapping"},
		{name: "route still names it", yaml: two + "routes:\n  - {name: openai, preset: openai, clients: [old]}\n", client: "old",
			wantErr: "the edited config does not parse (a bug in till): till.yaml:7: routes[0].clients[0]: unknown client \"old\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RemoveClient("till.yaml", []byte(tt.yaml), tt.client)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestClientRoutes(t *testing.T) {
	c := &Config{Routes: []Route{
		{Name: "openai", Clients: []string{"web", "batch"}},
		{Name: "open"},
		{Name: "anthropic", Clients: []string{"web"}},
	}}
	tests := []struct {
		client string
		want   []string
	}{
		{"web", []string{"openai", "anthropic"}},
		{"batch", []string{"openai"}},
		{"nobody", nil},
	}
	for _, tt := range tests {
		t.Run(tt.client, func(t *testing.T) {
			if got := c.ClientRoutes(tt.client); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
