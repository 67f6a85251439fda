package test

import (
	"fmt"
	"strings"
	"testing"
)

// TestModelFieldCredentialNotRecorded: an app that pastes a credential in
// its body's model field (its till token, the provider key it used
// before till, or the very key the route holds) must not put it in the
// audit trail, the log or the metrics: the use and request records say
// that a credential was there, and a model name stays as sent.
func TestModelFieldCredentialNotRecorded(t *testing.T) {
	const (
		routeKey = "plainroutekey0123456789abcdef" // no provider's shape: known as the route's
		heldKey  = "sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56"
	)
	up := newUpstream(t, &fakeLLM{})
	dir := t.TempDir()
	tok, lines := addClient(t, dir, "web")
	writeConfig(t, dir, "version: 1\nadmin: {listen: 127.0.0.1:0}\nclients:\n"+lines+"routes:\n"+
		"  - {name: openai, preset: openai, upstream: \""+up.URL+"\", clients: [web]}\n"+
		"  - {name: checked, preset: openai, upstream: \""+up.URL+"\", secret: openai, clients: [web], allow: {models: [\"gpt-*\"]}}\n")
	setSecret(t, dir, "openai", routeKey)
	tl := startTillIn(t, dir, up.caFile)
	const marker = "(credential not shown)"
	tests := []struct{ route, model, want string }{
		{"openai", tok, marker},
		{"openai", "ft:" + tok + ":x", marker},
		{"openai", heldKey, marker},
		{"openai", routeKey, marker},
		{"checked", tok, marker},
		{"openai", "gpt-4o-mini", "gpt-4o-mini"},
	}
	var texts []string
	for _, tt := range tests {
		req := newRequest(t, "POST", tl.url("/"+tt.route+"/v1/chat/completions"),
			strings.NewReader(fmt.Sprintf(`{"model":%q,"messages":[]}`, tt.model)))
		req.Header.Set("X-Till-Token", tok)
		resp, body := do(t, req)
		texts = append(texts, dump(resp, body))
	}
	recs := tl.waitAudit(len(tests))
	uses := tl.uses()
	for i, tt := range tests {
		if got := recs[i]["model"]; got != tt.want {
			t.Errorf("request %d (%s): request record's model %q, want %q", i+1, tt.route, got, tt.want)
		}
	}
	for _, u := range uses {
		if m := u["model"]; m != marker && m != "gpt-4o-mini" {
			t.Errorf("use record's model %q, want %q", m, marker)
		}
	}
	if len(uses) != len(tests)-1 {
		t.Errorf("got %d use records, want %d (one refusal)", len(uses), len(tests)-1)
	}
	resp, body := do(t, newRequest(t, "GET", "http://"+tl.adminAddr()+"/metrics", nil))
	texts = append(texts, dump(resp, body))
	tl.assertNoLeak([]string{tok, heldKey, routeKey}, texts...)
}

// TestPathTokenRefusedNotRecorded: an app that puts its till token in
// the request path (a URL built with the key in it) is refused before
// anything is sent: the token reaches neither the upstream nor the audit
// trail, whose path says a credential was there.
func TestPathTokenRefusedNotRecorded(t *testing.T) {
	up := newUpstream(t, &fakeLLM{})
	dir := t.TempDir()
	tok, lines := addClient(t, dir, "web")
	writeConfig(t, dir, "version: 1\nclients:\n"+lines+"routes:\n"+
		"  - {name: openai, preset: openai, upstream: \""+up.URL+"\", clients: [web]}\n")
	setSecret(t, dir, "openai", openaiKey)
	tl := startTillIn(t, dir, up.caFile)
	paths := []string{
		"/openai/v1/models/" + tok,
		"/openai/v1/files/till%5F" + strings.TrimPrefix(tok, "till_") + "/content",
		"/openai/" + tok + "/v1/models",
	}
	var texts []string
	for _, p := range paths {
		req := newRequest(t, "GET", tl.url(p), nil)
		req.Header.Set("X-Till-Token", tok)
		resp, body := do(t, req)
		texts = append(texts, dump(resp, body))
		if resp.StatusCode != 400 || tillError(t, resp, body) != "bad_request" {
			t.Errorf("GET %s: got %d, want 400 bad_request", p, resp.StatusCode)
		}
	}
	for _, r := range tl.waitAudit(len(paths)) {
		if r["path"] != "(credential not shown)" || r["reason"] != "bad_request" {
			t.Errorf("record's path %q, reason %q: want the marker and bad_request", r["path"], r["reason"])
		}
	}
	if n := len(up.requests()); n != 0 {
		t.Errorf("the upstream got %d requests, want none", n)
	}
	tl.assertNoLeak([]string{tok, strings.TrimPrefix(tok, "till_")}, texts...)
}
