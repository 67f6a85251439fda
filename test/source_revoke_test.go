package test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestWebSocketEndsWhenItsSourceKeyGoes: a WebSocket that went with a
// key from a source ends once till learns that the key was replaced or
// removed at the source (here a files source's file rewritten, or
// deleted, and seen by the next request to the route; or a reload
// pointing the source at another folder, whose value differs), as one on
// a vault key ends when the key is replaced or removed: the session
// opened with a revoked key does not run on.
func TestWebSocketEndsWhenItsSourceKeyGoes(t *testing.T) {
	for _, change := range []string{"replaced", "removed", "moved"} {
		t.Run(change, func(t *testing.T) {
			u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Upgrade") == "" {
					return
				}
				c, err := websocket.Accept(w, r, nil)
				if err != nil {
					return
				}
				defer c.CloseNow()
				for {
					typ, msg, err := c.Read(context.Background())
					if err != nil {
						return
					}
					c.Write(context.Background(), typ, msg)
				}
			}))
			keys := filepath.Join(t.TempDir(), "keys")
			if err := os.Mkdir(keys, 0o700); err != nil {
				t.Fatal(err)
			}
			v1, v2 := "src-ws-"+strings.Repeat("a1", 10), "src-ws-"+strings.Repeat("b2", 10)
			suiteLeaks.key(v1)
			suiteLeaks.key(v2)
			file := filepath.Join(keys, "openai")
			if err := os.WriteFile(file, []byte(v1+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := "version: 1\nsources:\n  - {name: mounted, type: files, dir: " + keys + ", ttl: 1h}\n" +
				"routes:\n  - {name: openai, preset: openai, upstream: " + u.URL + ", secret: \"mounted:openai\"}\n"
			tl := startTill(t, cfg, nil, u.caFile)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, "ws://"+tl.addr+"/openai/v1/realtime", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			echo := func() error {
				if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
					return err
				}
				_, _, err := c.Read(ctx)
				return err
			}
			if err := echo(); err != nil {
				t.Fatalf("before the key changed: %v", err)
			}
			switch change {
			case "replaced":
				err = os.WriteFile(file, []byte(v2+"\n"), 0o600)
			case "removed":
				err = os.Remove(file)
			case "moved":
				// A reload points the source at another folder, whose
				// value differs: the cache forgets the old one.
				moved := filepath.Join(filepath.Dir(keys), "moved")
				if err := os.Mkdir(moved, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(moved, "openai"), []byte(v2+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				err = os.WriteFile(filepath.Join(tl.dir, "till.yaml"), []byte(strings.Replace(cfg, keys, moved, 1)), 0o644)
			}
			if err != nil {
				t.Fatal(err)
			}
			// The next request to the route sees the change (a files
			// source checks its file within a second).
			waitFor(t, 10*time.Second, "the route to see the key "+change, func() bool {
				resp, _ := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
				last := u.last(t).Header.Get("Authorization")
				return change != "removed" && last == "Bearer "+v2 || change == "removed" && resp.StatusCode == http.StatusServiceUnavailable
			})
			ended := false
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				if echo() != nil {
					ended = true
					break
				}
			}
			if !ended {
				t.Fatalf("the WebSocket opened with the key still relays after the key was %s at its source", change)
			}
			var ws auditRecord
			for _, r := range tl.waitAudit(1) {
				if r["status"] == 101.0 {
					ws = r
				}
			}
			for deadline := time.Now().Add(5 * time.Second); ws == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				for _, r := range tl.audit() {
					if r["status"] == 101.0 {
						ws = r
					}
				}
			}
			if ws == nil || ws["outcome"] != "error" || ws["reason"] != "secret_unavailable" {
				t.Errorf("the WebSocket's record %v; want an error with reason secret_unavailable", ws)
			}
		})
	}
}
