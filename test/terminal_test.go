package test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// TestAuditTrailHoldsNoTerminalControls: an app, anonymous, puts C1
// controls (U+009B is a CSI, U+009D an OSC and U+009C its end to
// terminals such as VTE's and screen), a bidi override and a line
// separator in a request's path and model. till serve writes the trail
// to stdout by default, on the operator's terminal: every line there is
// printable, and each record still holds the path and model the app sent.
func TestAuditTrailHoldsNoTerminalControls(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	tl := startTill(t, providerConfig(u, ""), providerSecrets, u.caFile)
	const runs = "\u009b2J\u009d0;pwned\u009c\u202eabc\u2028"
	// The model as JSON escapes: \u009b there, not the rune.
	const body = `{"model":"gpt-4o\u009b2J\u009d0;pwned\u009c\u202eabc\u2028","messages":[]}`
	for _, tt := range []struct{ name, raw, path, model string }{
		{"encoded path", "GET /openai/v1/%C2%9B2J%C2%9D0;pwned%C2%9C%E2%80%AEabc%E2%80%A8 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
			"/openai/v1/" + runs, ""},
		{"raw path", "GET /openai/v1/" + runs + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
			"/openai/v1/" + runs, ""},
		{"no route", "GET /" + runs + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
			"/" + runs, ""},
		{"model", "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n" +
			"Content-Length: " + strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body,
			"/openai/v1/chat/completions", "gpt-4o" + runs},
	} {
		resp, _, err := rawSend(t, tl.addr, tt.raw)
		if err != nil {
			t.Errorf("%s: no response: %v", tt.name, err)
			continue
		}
		r := tl.auditByID(resp.Header.Get("X-Till-Request-Id"))
		if r["path"] != tt.path || r["model"] != tt.model {
			t.Errorf("%s: recorded path %q, model %q; want %q, %q", tt.name, r["path"], r["model"], tt.path, tt.model)
		}
	}
	tl.stop()
	for i, line := range strings.Split(tl.stdout.String(), "\n") {
		for _, r := range line {
			if r == utf8.RuneError || !unicode.IsPrint(r) {
				t.Errorf("stdout line %d holds %U: %q", i+1, r, line)
				break
			}
		}
	}
}

// TestLogHoldsNoTerminalControls: in forward mode, an app asks for a host
// holding C1 controls and a bidi override (percent-encoded). A host that
// is not ASCII is refused (400 bad_request: net/http would dial it as
// IDNA maps it) before any lookup, and what till writes of the request,
// its log on stderr and its audit trail on stdout, is printable.
func TestLogHoldsNoTerminalControls(t *testing.T) {
	tl := startTill(t, "version: 1\nforward: {enabled: true, intercept: false, unknown_hosts: tunnel}\n", nil, "")
	const encoded = "%C2%9B2J%C2%9D0;pwned%C2%9C%E2%80%AEabc.invalid"
	for _, raw := range []string{
		"CONNECT " + encoded + ":443 HTTP/1.1\r\n\r\n",
		"GET http://" + encoded + "/v1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
	} {
		resp, _, err := rawSend(t, tl.addr, raw)
		if err != nil {
			t.Errorf("%q: no response: %v", raw, err)
			continue
		}
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("X-Till-Error") != "bad_request" {
			t.Errorf("%q: got %d %q, want 400 bad_request", raw, resp.StatusCode, resp.Header.Get("X-Till-Error"))
		}
	}
	tl.stop()
	for name, out := range map[string]string{"stderr": tl.stderr.String(), "stdout": tl.stdout.String()} {
		for i, line := range strings.Split(out, "\n") {
			for _, r := range line {
				if r == utf8.RuneError || !unicode.IsPrint(r) {
					t.Errorf("%s line %d holds %U: %q", name, i+1, r, line)
					break
				}
			}
		}
	}
}
