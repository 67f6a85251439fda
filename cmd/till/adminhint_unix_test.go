//go:build unix

package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/tillgw/till/audit"
	"github.com/tillgw/till/proxy"
)

// TestAdminHintsOfferOnlyTheCommandsFlags: a hint on reaching the admin
// listener offers --url only to a command that has it. till test --mint,
// which a running till holding the audit file must answer, has none: its
// refusal never says to pass --url, whether TILL_ADMIN_TOKEN is not the
// config's or the config names no admin listener; till usage and till
// health, which have --url, still offer it.
func TestAdminHintsOfferOnlyTheCommandsFlags(t *testing.T) {
	c := newCLI(t)
	const rest = "audit: {file: audit.log}\nbudgets: [{name: daily, window: day, requests: 100}]\nroutes: [{name: openai, preset: openai}]\n"
	withAdmin := fmt.Sprintf("version: 1\nadmin: {listen: \"127.0.0.1:9\", token_sha256: %x}\n", sha256.Sum256([]byte("admin-token-hint-0123456789"))) + rest
	os.WriteFile("till.yaml", []byte(withAdmin), 0o644)
	os.WriteFile("none.yaml", []byte("version: 1\n"+rest), 0o644)
	c.must(key, "secret", "set", "openai")
	held, err := audit.Open(audit.Options{Path: "audit.log"}) // as a running till holds it
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	c.env["TILL_ADMIN_TOKEN"] = "admin-token-wrong-0123456789"

	// TILL_ADMIN_TOKEN is not the one admin.token_sha256 names.
	out, errOut, code := c.run("", "test", "--mint", "GET", "/openai/v1/models")
	if code != 1 || !strings.Contains(out, "refused: audit_unavailable") || !strings.Contains(out, "set TILL_ADMIN_TOKEN to the admin token of this config") || strings.Contains(out+errOut, "--url") {
		t.Errorf("till test --mint with a wrong admin token: exit %d, want 1 with the hint, without --url:\n%s%s", code, out, errOut)
	}
	if _, errOut, code := c.run("", "usage"); code != 1 || !strings.Contains(errOut, "--url") || !strings.Contains(errOut, "set TILL_ADMIN_TOKEN to the admin token of this config") {
		t.Errorf("till usage with a wrong admin token: exit %d, want 1 offering --url:\n%s", code, errOut)
	}

	// The config names no admin listener (changed since till test read it).
	var v proxy.Verdict
	mintByServe("none.yaml", &env{getenv: func(k string) string { return c.env[k] }}, proxy.TestRequest{Method: "GET", Target: "/openai/v1/models"}, &v)
	if v.Code != proxy.CodeAuditUnavailable || !strings.Contains(v.Reason, "admin: {listen: 127.0.0.1:9090}") || strings.Contains(v.Reason, "--url") {
		t.Errorf("till test --mint without an admin listener: %s: %s; want the hint to set one, without --url", v.Code, v.Reason)
	}
	for _, cmd := range []string{"usage", "health"} {
		if _, errOut, code := c.run("", cmd, "-c", "none.yaml"); code != 1 || !strings.Contains(errOut, "admin: {listen: 127.0.0.1:9090}") || !strings.Contains(errOut, "--url") {
			t.Errorf("till %s without an admin listener: exit %d, want 1 offering --url:\n%s", cmd, code, errOut)
		}
	}
}
