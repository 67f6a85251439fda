package proxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy/ca"
)

// TestReloadEndsTunnelsItRefuses: a tunnel open when a reload swaps in a
// config that would refuse its CONNECT is ended, and its record says why
// (outcome denied, the code a new CONNECT would get); a reload that still
// allows it leaves it carrying bytes.
func TestReloadEndsTunnelsItRefuses(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	host := echo.Addr().String()
	sum := sha256.Sum256([]byte(connectToken))
	conf := func(forward, cidrs, routes string) *Snapshot {
		y := "version: 1\nforward: " + forward + "\nclients:\n  - {name: web, token_sha256: " + hex.EncodeToString(sum[:]) +
			", cidrs: [" + cidrs + "]}\nroutes:" + routes + "\n"
		cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return NewSnapshot(cfg, nil)
	}
	const tunnelling = "{enabled: true, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}"
	for _, tt := range []struct {
		name string
		snap *Snapshot
		code string // "": the tunnel stays open
	}{
		{"same rules", conf(tunnelling, "127.0.0.0/8", " []"), ""},
		{"forward mode off", conf("{enabled: false}", "127.0.0.0/8", " []"), CodeBadRequest},
		{"unknown hosts denied", conf("{enabled: true, unknown_hosts: deny}", "127.0.0.0/8", " []"), CodeHostNotAllowed},
		{"range no longer allowed", conf("{enabled: true, unknown_hosts: tunnel}", "127.0.0.0/8", " []"), CodeHostNotAllowed},
		{"client moved to other addresses", conf(tunnelling, "10.0.0.0/8", " []"), CodeClientForbidden},
		{"host got a route", conf(tunnelling, "127.0.0.0/8", "\n  - {name: echo, upstream: 'https://"+host+"', secret: echo, inject: {header: X-Key}, clients: [web]}"), CodeHostNotAllowed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			authority, _ := ca.New("tunnel-test", time.Now())
			leaves, _ := ca.NewLeaves(authority, 4)
			buf := &lockedBuffer{}
			gw := New(conf(tunnelling, "127.0.0.0/8", " []"), Options{Audit: testAudit(buf), Log: zerolog.Nop(), Leaves: leaves})
			srv := httptest.NewServer(gw)
			defer srv.Close()
			c, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nX-Till-Token: %s\r\n\r\n", host, host, connectToken)
			br := bufio.NewReader(c)
			if res, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect}); err != nil || res.StatusCode != 200 {
				t.Fatalf("CONNECT %s: %v %v", host, res, err)
			}
			roundTrip := func(word string) error {
				if _, err := io.WriteString(c, word+"\n"); err != nil {
					return err
				}
				got, err := br.ReadString('\n')
				if err == nil && got != word+"\n" {
					err = fmt.Errorf("echoed %q", got)
				}
				return err
			}
			if err := roundTrip("before"); err != nil {
				t.Fatalf("tunnel before the reload: %v", err)
			}
			gw.Swap(tt.snap)
			err = roundTrip("after")
			if tt.code == "" {
				if err != nil {
					t.Errorf("a reload that still allows the tunnel broke it: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("the tunnel still carries bytes after a reload that refuses it (%s)", tt.code)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := gw.Shutdown(ctx); err != nil { // waits for the record
				t.Fatal(err)
			}
			recs := buf.records(t)
			if len(recs) != 1 || recs[0]["outcome"] != outcomeDenied || recs[0]["reason"] != tt.code || recs[0]["mode"] != modeTunnel || recs[0]["client"] != "web" {
				t.Errorf("records %v; want one tunnel record of client web, denied with reason %s", recs, tt.code)
			}
			if n, _ := recs[0]["bytes_in"].(float64); n < float64(len("before\n")) || strings.Contains(fmt.Sprint(recs), "after") {
				t.Errorf("record %v: bytes_in should count what went through before the reload", recs[0])
			}
		})
	}
}
