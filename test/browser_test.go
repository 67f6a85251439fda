package test

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// TestBrowserCannotUseKeys: a web page the developer opens can make the
// browser send a cross-site, preflight-free text/plain POST to till on
// 127.0.0.1, or rebind its own name to 127.0.0.1 to read the answer. Neither
// gets the key; a listed origin and apps that are not browsers do.
func TestBrowserCannotUseKeys(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	cfg := providerConfig(u, "") + "browser_origins: [\"http://localhost:5173\"]\n"
	tl := startTill(t, cfg, providerSecrets, u.caFile)
	const body = `{"model":"gpt-4o-mini","messages":[]}`
	_, tlPort, _ := net.SplitHostPort(tl.addr)
	post := func(headers string) string {
		return "POST /openai/v1/chat/completions HTTP/1.1\r\n" + headers +
			"Content-Type: text/plain;charset=UTF-8\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body
	}
	for _, tt := range []struct {
		name, headers string
		status        int
		code          string
	}{
		// What Chromium sends for fetch(url, {method: "POST", mode: "no-cors", body}) from https://evil.example.
		{"cross-site no-cors POST", "Host: 127.0.0.1:" + tlPort + "\r\nOrigin: https://evil.example\r\nSec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Dest: empty\r\n", 403, "origin_forbidden"},
		// A form post from a sandboxed iframe.
		{"Origin null", "Host: 127.0.0.1:" + tlPort + "\r\nOrigin: null\r\nSec-Fetch-Site: cross-site\r\n", 403, "origin_forbidden"},
		// The page's own name, rebound to 127.0.0.1: same-origin to the browser.
		{"DNS rebinding", "Host: rebind.evil.example:" + tlPort + "\r\nOrigin: http://rebind.evil.example:" + tlPort + "\r\nSec-Fetch-Site: same-origin\r\n", 403, "host_not_allowed"},
		{"listed origin", "Host: 127.0.0.1:" + tlPort + "\r\nOrigin: http://localhost:5173\r\nSec-Fetch-Site: cross-site\r\n", 200, ""},
		{"an app", "Host: 127.0.0.1:" + tlPort + "\r\n", 200, ""},
		{"an app naming localhost", "Host: localhost:" + tlPort + "\r\n", 200, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(u.requests())
			status, header, respBody := rawRequest(t, tl.addr, post(tt.headers))
			if status != tt.status || !strings.Contains(header, "X-Till-Error: "+tt.code) && tt.code != "" {
				t.Errorf("got %d %s %s, want %d %s", status, header, respBody, tt.status, tt.code)
			}
			reached := len(u.requests()) > before
			if reached != (tt.status == 200) {
				t.Errorf("reached the upstream: %v", reached)
			}
		})
	}
	recs := tl.waitAudit(6)
	denied := 0
	for _, r := range recs {
		if r["reason"] == "origin_forbidden" || r["reason"] == "host_not_allowed" {
			denied++
			if r["outcome"] != "denied" || r["key_fp"] != "" {
				t.Errorf("refusal record: %v", r)
			}
		}
	}
	if denied != 3 {
		t.Errorf("got %d refusal records, want 3", denied)
	}
}

// TestBrowserCannotDriveAdmin: browser_origins lists the web apps that may
// use the routes, not the admin listener. A page of a listed origin (a dev
// server on localhost:5173, and every script it loads) cannot make the
// browser POST /admin/reload.
func TestBrowserCannotDriveAdmin(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(okHandler))
	cfg := fmt.Sprintf(`version: 1
admin: {listen: 127.0.0.1:0}
browser_origins: ["http://localhost:5173"]
routes:
  - {name: openai, preset: openai, upstream: %s}
`, u.URL)
	tl := startTill(t, cfg, map[string]string{"openai": openaiKey}, u.caFile)
	admin := tl.adminAddr()
	req := newRequest(t, "POST", "http://"+admin+"/admin/reload", strings.NewReader("a=b"))
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Set("Origin", "http://localhost:5173")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.Header.Set("Sec-Fetch-Mode", "no-cors")
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site form POST /admin/reload from a browser_origins page: %d %s, want 403", resp.StatusCode, strings.TrimSpace(string(body)))
	}
}
