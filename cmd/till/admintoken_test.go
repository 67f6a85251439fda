package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tillgw/till/config"
)

// sha256Hex is the token_sha256 of token.
func sha256Hex(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// TestAdminTokenOnlyWhereTheConfigNamesIt: TILL_ADMIN_TOKEN goes to the
// config's admin listener only when admin.token_sha256 is its hash. A
// token for another till (a production one left in the shell) never
// reaches a listener that takes none, or whatever answers at its port
// while till is down; --url sends it as asked.
func TestAdminTokenOnlyWhereTheConfigNamesIt(t *testing.T) {
	const token = "admin-token-0123456789abcdef"
	var sent atomic.Value
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent.Store(r.Header.Get("Authorization"))
		w.Write([]byte(`[]`))
	}))
	defer admin.Close()
	c := newCLI(t)
	c.env["TILL_ADMIN_TOKEN"] = token
	for _, tt := range []struct {
		name, admin string
		args        []string
		code        int
		sent        string
	}{
		{"no token_sha256", "", nil, 0, ""},
		{"another token's", ", token_sha256: " + sha256Hex("another-admin-token"), nil, 1, ""},
		{"its own", ", token_sha256: " + sha256Hex(token), nil, 0, "Bearer " + token},
		{"--url", "", []string{"--url", admin.URL}, 0, "Bearer " + token},
	} {
		sent.Store("")
		os.WriteFile("till.yaml", []byte("version: 1\nadmin: {listen: \""+admin.Listener.Addr().String()+"\""+tt.admin+"}\nroutes: []\nbudgets: [{name: daily, window: day, requests: 5}]\n"), 0o644)
		_, errOut, code := c.run("", append([]string{"usage"}, tt.args...)...)
		if code != tt.code || sent.Load() != tt.sent {
			t.Errorf("%s: exit %d, Authorization %q; want exit %d, %q: %s", tt.name, code, sent.Load(), tt.code, tt.sent, errOut)
		}
		if strings.Contains(errOut, token) {
			t.Errorf("%s: the error shows the token: %s", tt.name, errOut)
		}
		if tt.code == 1 && !strings.Contains(errOut, "not the token admin.token_sha256 names") {
			t.Errorf("%s: %s", tt.name, errOut)
		}
	}
}

// TestAdminOffLoopbackNeedsToken: the config asks no admin token for a
// loopback name (localhost), which Go resolves like any name, through
// /etc/hosts and DNS; an admin listener that bound anything but loopback
// without a token is closed and refused, whatever the name said.
func TestAdminOffLoopbackNeedsToken(t *testing.T) {
	if ln, err := listenAdmin(config.Admin{Listen: "0.0.0.0:0"}); err == nil {
		ln.Close()
		t.Fatal("an admin listener on every address without a token was opened")
	} else if !strings.Contains(err.Error(), "which is not loopback, and admin.token_sha256 is not set") {
		t.Errorf("got %v", err)
	}
	for _, a := range []config.Admin{{Listen: "127.0.0.1:0"}, {Listen: "localhost:0"}, {Listen: "0.0.0.0:0", TokenSHA256: sha256Hex("t")}} {
		ln, err := listenAdmin(a)
		if err != nil {
			t.Errorf("%+v: %v", a, err)
			continue
		}
		ln.Close()
	}
}

// TestAdminErrorNeverQuotesTheToken: the CLI prints what a listener that
// refused the ask answered (till usage, and till test --mint through the
// same call), and that listener may not be till (a --url pointed at
// another service, a debugging proxy): an answer that quotes the
// Authorization it was sent, whole or past the 200 characters shown, with
// control characters inside it, encoded, or 8 characters of it or more,
// must not print TILL_ADMIN_TOKEN to the terminal or to a CI log.
func TestAdminErrorNeverQuotesTheToken(t *testing.T) {
	const token = "admin-token-0123456789abcdef"
	const withheld = "(an answer that quotes TILL_ADMIN_TOKEN, not shown)"
	for _, tt := range []struct {
		name  string
		quote func(auth string) string
		shown bool
	}{
		{"quoted", func(auth string) string { return "bad request: Authorization: " + auth }, false},
		{"past the cut", func(auth string) string { return strings.Repeat("x", 170) + " " + auth }, false},
		{"split by a control", func(auth string) string { return "header " + auth[:20] + "\x00" + auth[20:] }, false},
		{"base64", func(auth string) string { return "header " + base64.StdEncoding.EncodeToString([]byte(auth)) }, false},
		{"hex", func(auth string) string { return "header " + hex.EncodeToString([]byte(auth)) }, false},
		{"in part", func(auth string) string { return "bad token " + auth[7:19] + "…" }, false},
		{"folded", func(auth string) string { return "bad token " + auth[:21] + "\n  " + auth[21:] }, false},
		{"quotes nothing, control sample", func(string) string { return "bad request: no such route" }, true},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, tt.quote(r.Header.Get("Authorization")))
		}))
		c := newCLI(t)
		c.env["TILL_ADMIN_TOKEN"] = token
		os.WriteFile("till.yaml", []byte("version: 1\nroutes: []\nbudgets: [{name: daily, window: day, requests: 5}]\n"), 0o644)
		_, errOut, code := c.run("", "usage", "--url", srv.URL)
		srv.Close()
		if code != 1 || !strings.Contains(errOut, ": 400") {
			t.Errorf("%s: exit %d: %s", tt.name, code, errOut)
		}
		if tt.shown {
			if !strings.Contains(errOut, tt.quote("")) {
				t.Errorf("%s: the answer is not shown: %s", tt.name, errOut)
			}
			continue
		}
		if !strings.Contains(errOut, withheld) || strings.Contains(errOut, token[:8]) || strings.Contains(errOut, "0123456789abcdef") {
			t.Errorf("%s: the error shows the token: %s", tt.name, errOut)
		}
	}
}

// TestAdminAnswerNeverQuotesTheToken: a 200 answer at the admin address
// that quotes TILL_ADMIN_TOKEN (something else listening there, echoing
// what it got into the fields till usage prints) is refused, not printed.
func TestAdminAnswerNeverQuotesTheToken(t *testing.T) {
	const token = "admin-token-0123456789abcdef"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `[{"budget":"daily","window":"day","counter":"`+r.Header.Get("Authorization")+`","requests":1}]`)
	}))
	defer srv.Close()
	c := newCLI(t)
	c.env["TILL_ADMIN_TOKEN"] = token
	os.WriteFile("till.yaml", []byte("version: 1\nroutes: []\nbudgets: [{name: daily, window: day, requests: 5}]\n"), 0o644)
	out, errOut, code := c.run("", "usage", "--url", srv.URL)
	if code != 1 || strings.Contains(out+errOut, token[:8]) || strings.Contains(out+errOut, "0123456789abcdef") || !strings.Contains(errOut, "TILL_ADMIN_TOKEN") {
		t.Errorf("exit %d, out %q, err %q: want exit 1, the answer refused for quoting the token, not shown", code, out, errOut)
	}
}
