package test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// imageHealthchecks returns the health checks the repository ships for
// the image, by where they are: the Dockerfile's HEALTHCHECK and the
// compose sidecar's healthcheck, each as the argv it runs.
func imageHealthchecks(t *testing.T) map[string][]string {
	t.Helper()
	checks := map[string][]string{}
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	for line := range strings.Lines(text) {
		if !strings.HasPrefix(line, "HEALTHCHECK ") {
			continue
		}
		_, cmd, ok := strings.Cut(line, " CMD ")
		var argv []string
		if !ok || json.Unmarshal([]byte(cmd), &argv) != nil {
			t.Fatalf("Dockerfile: HEALTHCHECK without CMD [...]: %q", line)
		}
		checks["Dockerfile"] = argv
	}
	b, err = os.ReadFile("../examples/sidecar-compose/docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Healthcheck struct {
				Test []string `yaml:"test"`
			} `yaml:"healthcheck"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatal(err)
	}
	if test := compose.Services["till"].Healthcheck.Test; len(test) > 1 && test[0] == "CMD" {
		checks["docker-compose.yml"] = test[1:]
	}
	if len(checks) != 2 {
		t.Fatalf("found the health checks %v, want the Dockerfile's and docker-compose.yml's (CMD form)", checks)
	}
	return checks
}

// TestImageHealthchecksAskTheRunningTill: the image's health checks say
// whether the till that runs is ready, not whether the config on disk
// loads. An edit that till refuses (it keeps serving the config before,
// as a reload does) must not turn a serving till unhealthy: an
// orchestrator that replaces unhealthy containers (Swarm, ECS, Nomad)
// would stop it, and its restart would fail on that very config.
func TestImageHealthchecksAskTheRunningTill(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	dir := t.TempDir()
	setSecret(t, dir, "openai", openaiKey)
	config := filepath.Join(dir, "till.yaml")
	var tl *till
	for try := 1; ; try++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		admin := ln.Addr().String()
		ln.Close()
		cfg := fmt.Sprintf("version: 1\nadmin: {listen: %s}\naudit: {file: audit.log}\nroutes:\n  - {name: openai, preset: openai, upstream: %q}\n", admin, u.URL)
		if err := os.WriteFile(config, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		tl, err = tryStartTillCmd(t, dir, u.caFile, nil, nil, "serve", "--listen", "127.0.0.1:0")
		if err == nil {
			break
		}
		if try == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
	}
	checks := imageHealthchecks(t)
	// Each check as the container runs it: TILL_CONFIG from the image,
	// the admin address the image expects (127.0.0.1:9090) moved to this
	// till's.
	healthy := func(when string) {
		t.Helper()
		for where, argv := range checks {
			args := make([]string, len(argv)-1)
			for i, a := range argv[1:] {
				args[i] = strings.ReplaceAll(a, "127.0.0.1:9090", tl.adminAddr())
			}
			if out, errOut, code := runTill(t, t.TempDir(), "", []string{"TILL_CONFIG=" + config}, args...); code != 0 {
				t.Errorf("%s: %s's health check %q: exit %d, want 0: till serves and /readyz is 200\n%s%s", when, where, argv, code, out, errOut)
			}
		}
	}
	healthy("serving")

	f, err := os.OpenFile(config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("unknown_setting: 1\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if !tl.waitLog("reload failed: still serving the previous config") {
		t.Fatalf("no failed reload logged\n%s", tl.stderr.String())
	}
	if resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil)); resp.StatusCode != 200 {
		t.Fatalf("after the refused edit: got %d %s, want 200", resp.StatusCode, body)
	}
	healthy("after an edit till refused")
}
