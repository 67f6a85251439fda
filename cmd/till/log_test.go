package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/internal/termtext"
	"github.com/tillgw/till/proxy"
)

func TestGlobalFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		rest    []string
		flags   logFlags
		wantErr string
	}{
		{"none", []string{"serve", "-c", "x.yaml"}, []string{"serve", "-c", "x.yaml"}, logFlags{}, ""},
		{"before the command", []string{"--log-level", "debug", "serve"}, []string{"serve"}, logFlags{level: "debug"}, ""},
		{"after the command", []string{"serve", "--log-level", "warn", "--listen", "127.0.0.1:0"}, []string{"serve", "--listen", "127.0.0.1:0"}, logFlags{level: "warn"}, ""},
		{"with =, one dash", []string{"-log-format=console", "check", "--log-level=error"}, []string{"check"}, logFlags{level: "error", format: "console"}, ""},
		{"last wins", []string{"--log-level", "debug", "serve", "--log-level", "info"}, []string{"serve"}, logFlags{level: "info"}, ""},
		{"after --, an argument", []string{"secret", "rm", "--", "--log-level"}, []string{"secret", "rm", "--", "--log-level"}, logFlags{}, ""},
		{"only flags", []string{"--log-format", "json"}, []string{}, logFlags{format: "json"}, ""},
		{"bad level", []string{"serve", "--log-level", "verbose"}, nil, logFlags{}, "--log-level must be debug, info, warn or error"},
		{"bad format", []string{"--log-format=text", "serve"}, nil, logFlags{}, "--log-format must be json or console"},
		{"missing value", []string{"serve", "--log-level"}, nil, logFlags{}, "--log-level needs a value: debug, info, warn or error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rest, flags, err := globalFlags(tt.args)
			if tt.wantErr != "" {
				var u usageError
				if err == nil || err.Error() != tt.wantErr || !errors.As(err, &u) {
					t.Fatalf("got error %v, want usage error %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(rest, tt.rest) || flags != tt.flags {
				t.Errorf("got %q %+v, want %q %+v", rest, flags, tt.rest, tt.flags)
			}
		})
	}
}

// TestGlobalFlagsExitCodes runs till with bad and good global flags.
func TestGlobalFlagsExitCodes(t *testing.T) {
	c := newCLI(t)
	_, errOut, code := c.run("", "--log-level", "sk-looks-like-a-key", "version")
	if code != exitUsage || !strings.Contains(errOut, "till: error: --log-level must be debug, info, warn or error") {
		t.Errorf("bad level: exit %d, %q", code, errOut)
	}
	if strings.Contains(errOut, "sk-looks-like-a-key") {
		t.Error("the bad value is echoed")
	}
	for _, args := range [][]string{
		{"--log-level", "warn", "version"},
		{"version", "--log-format", "console"},
	} {
		if out, errOut, code := c.run("", args...); code != exitOK || !strings.HasPrefix(out, "till ") {
			t.Errorf("till %q: exit %d, %q %q", args, code, out, errOut)
		}
	}
}

// logLines writes one line at each level through a logOutput set from the
// flags and then the config, and returns what reached stderr.
func logLines(t *testing.T, flags logFlags, cfg config.Log, vars map[string]string) string {
	t.Helper()
	var stderr bytes.Buffer
	o := newLogOutput(&env{stderr: &stderr, getenv: func(k string) string { return vars[k] }, log: flags})
	o.apply(cfg)
	log := o.logger()
	log.Debug().Msg("debug line")
	log.Info().Str("route", "openai").Msg("info line")
	log.Warn().Msg("warn line")
	log.Error().Msg("error line")
	return stderr.String()
}

func TestLogOutput(t *testing.T) {
	tests := []struct {
		name    string
		flags   logFlags
		cfg     config.Log
		shown   []string
		console bool
	}{
		{"defaults off a terminal", logFlags{}, config.Log{}, []string{"info", "warn", "error"}, false},
		{"config level", logFlags{}, config.Log{Level: "warn"}, []string{"warn", "error"}, false},
		{"config debug", logFlags{}, config.Log{Level: "debug"}, []string{"debug", "info", "warn", "error"}, false},
		{"flag wins over config", logFlags{level: "error"}, config.Log{Level: "debug"}, []string{"error"}, false},
		{"config console", logFlags{}, config.Log{Format: "console"}, []string{"info", "warn", "error"}, true},
		{"format flag wins", logFlags{format: "json"}, config.Log{Format: "console"}, []string{"info", "warn", "error"}, false},
		{"console flag", logFlags{format: "console"}, config.Log{Format: "json"}, []string{"info", "warn", "error"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := logLines(t, tt.flags, tt.cfg, nil)
			for _, level := range []string{"debug", "info", "warn", "error"} {
				if got, want := strings.Contains(out, level+" line"), slices.Contains(tt.shown, level); got != want {
					t.Errorf("%s line shown: got %v, want %v\n%s", level, got, want, out)
				}
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			for _, line := range lines {
				isJSON := json.Valid([]byte(line))
				if isJSON == tt.console {
					t.Errorf("console %v, got line %q", tt.console, line)
				}
				if strings.Contains(line, "\x1b[") {
					t.Errorf("colour off a terminal: %q", line)
				}
			}
			if tt.console && !strings.Contains(out, "route=openai") {
				t.Errorf("console lines lack their fields:\n%s", out)
			}
		})
	}
}

// TestLogOutputReapplied checks that a later config (a reload) changes the
// level and format, except where a flag set them.
func TestLogOutputReapplied(t *testing.T) {
	var stderr bytes.Buffer
	o := newLogOutput(&env{stderr: &stderr, getenv: func(string) string { return "" }, log: logFlags{format: "json"}})
	log := o.logger()
	o.apply(config.Log{Level: "info"})
	log.Debug().Msg("first debug")
	o.apply(config.Log{Level: "debug", Format: "console"})
	log.Debug().Msg("second debug")
	out := stderr.String()
	if strings.Contains(out, "first debug") || !strings.Contains(out, `"message":"second debug"`) {
		t.Errorf("the level did not follow the config, or the format did not stay JSON:\n%s", out)
	}
}

// TestLogOutputEscapesJSON: a JSON log line holds no C1 control or bidi
// override that a field quoted (a host a request asked for), and still
// reads back as the value logged; the console writer quotes them itself.
func TestLogOutputEscapesJSON(t *testing.T) {
	const host = "\u009b2J\u202eexample"
	for _, format := range []string{"json", "console"} {
		var stderr bytes.Buffer
		o := newLogOutput(&env{stderr: &stderr, getenv: func(string) string { return "" }, log: logFlags{format: format}})
		log := o.logger()
		log.Warn().Str("host", host).Msg("tunnel dial failed")
		out := stderr.String()
		if what := terminalRuns(out); what != "" || strings.ContainsAny(out, "\u009b\u202e") {
			t.Errorf("%s: the log line holds %s: %q", format, what, out)
		}
		if format == "json" {
			var ev struct{ Host string }
			if err := json.Unmarshal([]byte(out), &ev); err != nil || ev.Host != host {
				t.Errorf("json: host reads back as %q (%v), want %q", ev.Host, err, host)
			}
		}
	}
}

// TestConsoleLogEscapesNestedValues: the console format quotes a string
// field, but decodes a nested one and writes it again as JSON, which
// leaves C1 controls and bidi overrides as they are: the record the audit
// sink could not take (its path as an app sent it, escaped as the sink
// writes it) and a list certmagic logs. Neither puts
// such a rune on the operator's terminal, and the line still shows them
// as escapes.
func TestConsoleLogEscapesNestedValues(t *testing.T) {
	const path = "/openai/v1/\u009b2J\u009d0;pwned\u009c\u202eabc"
	record, err := json.Marshal(map[string]string{"event": "request", "path": path})
	if err != nil {
		t.Fatal(err)
	}
	record = termtext.JSON(record) // as the sink writes it: \u009b, not the rune
	var stderr bytes.Buffer
	o := newLogOutput(&env{stderr: &stderr, getenv: func(string) string { return "" }, log: logFlags{format: "console"}})
	log := o.logger()
	log.Error().Err(errors.New("disk full")).RawJSON("record", record).Msg("cannot write an audit record")
	proxy.NewZapLogger(log, nil).Warn("renewal failed", zap.Strings("names", []string{path}))
	out := stderr.String()
	if what := terminalRuns(out); what != "" || strings.ContainsAny(out, "\u009b\u009d\u009c\u202e") {
		t.Errorf("the console log holds %s: %q", what, out)
	}
	if !strings.Contains(out, `\u009b2J\u009d0;pwned\u009c\u202eabc`) {
		t.Errorf("the console log does not show the path escaped: %q", out)
	}
}
