package proxy

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy/ca"
	"github.com/tillgw/till/vault"
)

// TestReloadEndsTunnelsItRefuses: a tunnel open when a reload swaps in a
// config that would refuse its CONNECT is ended, and its record says why
// (outcome error, since till ended a connection it had made, with the
// code a new CONNECT would get); a reload that still allows it leaves it
// carrying bytes.
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
		auth string // the header the CONNECT names its client in
	}{
		{"same rules", conf(tunnelling, "127.0.0.0/8", " []"), "", ""},
		{"forward mode off", conf("{enabled: false}", "127.0.0.0/8", " []"), CodeBadRequest, ""},
		{"unknown hosts denied", conf("{enabled: true, unknown_hosts: deny}", "127.0.0.0/8", " []"), CodeHostNotAllowed, ""},
		{"range no longer allowed", conf("{enabled: true, unknown_hosts: tunnel}", "127.0.0.0/8", " []"), CodeHostNotAllowed, ""},
		{"client moved to other addresses", conf(tunnelling, "10.0.0.0/8", " []"), CodeClientForbidden, ""},
		{"client named in Authorization moved", conf(tunnelling, "10.0.0.0/8", " []"), CodeClientForbidden, "Authorization: Bearer "},
		{"host got a route", conf(tunnelling, "127.0.0.0/8", "\n  - {name: echo, upstream: 'https://"+host+"', secret: echo, inject: {header: X-Key}, clients: [web]}"), CodeHostNotAllowed, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			authority, _ := ca.New("tunnel-test", time.Now())
			leaves, _ := ca.NewLeaves(authority, 4)
			buf := &lockedBuffer{}
			gw := New(conf(tunnelling, "127.0.0.0/8", " []"), Options{Audit: testAudit(buf), Log: zerolog.Nop(), Leaves: leaves})
			auth := cmp.Or(tt.auth, "X-Till-Token: ")
			c, br := openHeld(t, gw, fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s%s\r\n\r\n", host, host, auth, connectToken), http.StatusOK)
			rec := reloadWhileHeld(t, gw, buf, c, br, tt.snap, tt.code)
			if rec == nil {
				return
			}
			if rec["mode"] != modeTunnel || rec["client"] != "web" {
				t.Errorf("record %v; want a tunnel record of client web", rec)
			}
			if n, _ := rec["bytes_in"].(float64); n != float64(len("before\n")) {
				t.Errorf("record %v: bytes_in should count what went through before the reload", rec)
			}
		})
	}
}

// TestReloadEndsUpgradesItRefuses: a protocol switch (WebSocket) relayed
// when a reload swaps in a config that would refuse its request (the
// client's token revoked, the route gone, its path no longer allowed, a
// token budget that cannot meter it) is ended, and its record says why:
// an error (not denied: it was allowed, its key went, and it ran until
// till ended it), naming the key; a reload that still allows it leaves it
// relaying.
func TestReloadEndsUpgradesItRefuses(t *testing.T) {
	up := switchingEcho(t, nil)
	sum := sha256.Sum256([]byte(connectToken))
	web := "clients:\n  - {name: web, token_sha256: " + hex.EncodeToString(sum[:]) + "}\n"
	route := "  - {name: ws, preset: openai, upstream: " + up.URL + ", secret: k, clients: [web]%s}\n"
	conf := func(clients, routes string) *Snapshot {
		cfg, err := config.Parse("till.yaml", []byte("version: 1\n"+clients+"routes:\n"+routes), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return NewSnapshot(cfg, map[string]vault.Secret{"k": vault.NewSecret("k", testKey, time.Now())})
	}
	other := sha256.Sum256([]byte(connectToken + "x"))
	for _, tt := range []struct {
		name string
		snap *Snapshot
		code string // "": the connection stays open
	}{
		{"same rules", conf(web, fmt.Sprintf(route, "")), ""},
		{"token revoked", conf("clients:\n  - {name: web, token_sha256: "+hex.EncodeToString(other[:])+"}\n", fmt.Sprintf(route, "")), CodeClientUnauthenticated},
		{"route gone", conf(web, "  - {name: other, preset: openai, prefix: /other, upstream: "+up.URL+", secret: k, clients: [web]}\n"), CodeRouteNotFound},
		{"path no longer allowed", conf(web, fmt.Sprintf(route, ", allow: {paths: [/v1/chat/completions]}")), CodePathNotAllowed},
		{"model rules", conf(web, fmt.Sprintf(route, ", allow: {models: [gpt-4o]}")), CodeModelNotAllowed},
		{"token budget", conf(web+"budgets:\n  - {name: b, window: 1d, tokens: 1000}\n", fmt.Sprintf(route, ", prefix: /ws")), CodeBadRequest},
	} {
		t.Run(tt.name, func(t *testing.T) {
			buf := &lockedBuffer{}
			gw := New(conf(web, fmt.Sprintf(route, "")), Options{Audit: testAudit(buf), Log: zerolog.Nop()})
			c, br := openHeld(t, gw, "GET /ws/v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Till-Token: "+connectToken+"\r\n\r\n", http.StatusSwitchingProtocols)
			rec := reloadWhileHeld(t, gw, buf, c, br, tt.snap, tt.code)
			if rec != nil && (rec["status"] != 101.0 || rec["client"] != "web" || rec["secret"] != "k" || rec["key_fp"] == "") {
				t.Errorf("record %v; want one of client web's switch (101) on key k", rec)
			}
		})
	}
}

// TestReloadAfterKeyWentIsAnError: a reload that refuses a protocol
// switch (WebSocket) after its request went upstream, the key with it,
// ends it, and its record is an error with the reload's code, naming the
// key: not denied, which is for a switch whose key never went (see
// TestReloadDuringUpgradeDialStopsKey). Caught: a reload while the
// upstream answered, or after its 101 but before the app had the switch,
// recorded a key use as denied, and the app got an empty 200 when it
// had no answer yet. The first reload comes while the
// upstream holds the request; the second in the app side's hijack, which
// ReverseProxy asks for once it has the upstream's 101 and before it
// hands the switch over.
func TestReloadAfterKeyWentIsAnError(t *testing.T) {
	for _, tt := range []struct {
		name     string
		status   float64 // the record's
		answered bool    // the app gets the refusal (else its connection is closed)
	}{
		{"while the upstream answers", 401, true},
		{"after the upstream's 101", 101, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			arrived, answer := make(chan struct{}), make(chan struct{})
			var sawKey atomic.Int32
			up := switchingEcho(t, func(r *http.Request) {
				if strings.Contains(r.Header.Get("Authorization"), testKey) {
					sawKey.Add(1)
				}
				if tt.answered {
					close(arrived)
					<-answer
				}
			})
			sum := sha256.Sum256([]byte(connectToken))
			other := sha256.Sum256([]byte(connectToken + "x"))
			conf := func(digest [32]byte) *Snapshot { return clientOnlyRoute(t, up.URL, digest) }
			buf := &lockedBuffer{}
			gw := New(conf(sum), Options{Audit: testAudit(buf), Log: zerolog.Nop()})
			var reloads atomic.Int32
			reload := func() { reloads.Add(1); gw.Swap(conf(other)) }
			front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !tt.answered {
					w = hijackHook{w, reload}
				}
				gw.ServeHTTP(w, r)
			}))
			defer front.Close()
			if tt.answered {
				go func() {
					<-arrived
					reload()
					close(answer)
				}()
			}
			c, err := net.Dial("tcp", front.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "GET /ws/v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Till-Token: "+connectToken+"\r\n\r\n")
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			switch {
			case tt.answered && (err != nil || res.StatusCode != http.StatusUnauthorized || res.Header.Get("X-Till-Error") != CodeClientUnauthenticated):
				t.Errorf("the app got %v, %v; want the reload's refusal, 401 %s", res, err, CodeClientUnauthenticated)
			case !tt.answered && err == nil:
				t.Errorf("the app got %d for a switch a reload ended as it was handed over", res.StatusCode)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := gw.Shutdown(ctx); err != nil { // waits for the record
				t.Fatal(err)
			}
			if reloads.Load() != 1 || sawKey.Load() != 1 {
				t.Fatalf("%d reload(s), upstream saw the key %d time(s); want a reload after the key went once", reloads.Load(), sawKey.Load())
			}
			recs := buf.records(t)
			if len(recs) != 1 || recs[0]["outcome"] != outcomeError || recs[0]["reason"] != CodeClientUnauthenticated || recs[0]["key_fp"] == "" || recs[0]["status"] != tt.status {
				t.Errorf("records %v; want one of the key's switch (status %v), an error with %s", recs, tt.status, CodeClientUnauthenticated)
			}
		})
	}
}

// hijackHook is a ResponseWriter that runs before when its connection is
// hijacked, before it is.
type hijackHook struct {
	http.ResponseWriter
	before func()
}

func (h hijackHook) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h.before()
	return http.NewResponseController(h.ResponseWriter).Hijack()
}

func (h hijackHook) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// openHeld serves gw and sends it head, a request's head, on a new
// connection, which its answer (status want) holds open.
func openHeld(t *testing.T, gw *Gateway, head string, want int) (net.Conn, *bufio.Reader) {
	t.Helper()
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, head)
	br := bufio.NewReader(c)
	line, _, _ := strings.Cut(head, "\r\n")
	if res, err := http.ReadResponse(br, &http.Request{Method: strings.Fields(line)[0]}); err != nil || res.StatusCode != want {
		t.Fatalf("%s: %v %v, want %d", line, res, err, want)
	}
	return c, br
}

// reloadWhileHeld swaps snap into gw while c is held open (its far end
// echoes the lines written), and checks what becomes of it: when code is
// "", it still relays; otherwise it is ended, and its one record is an
// error with code (till ended a connection it had made), which it
// returns.
func reloadWhileHeld(t *testing.T, gw *Gateway, buf *lockedBuffer, c net.Conn, br *bufio.Reader, snap *Snapshot, code string) map[string]any {
	t.Helper()
	if err := echoLine(c, br, "before"); err != nil {
		t.Fatalf("before the reload: %v", err)
	}
	gw.Swap(snap)
	err := echoLine(c, br, "after")
	if code == "" {
		if err != nil {
			t.Errorf("a reload that still allows the connection broke it: %v", err)
		}
		return nil
	}
	if err == nil {
		t.Fatalf("the connection still relays after a reload that refuses it (%s)", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := gw.Shutdown(ctx); err != nil { // waits for the record
		t.Fatal(err)
	}
	recs := buf.records(t)
	if len(recs) != 1 || recs[0]["outcome"] != outcomeError || recs[0]["reason"] != code {
		t.Fatalf("records %v; want one, an error with reason %s", recs, code)
	}
	return recs[0]
}

// echoLine writes word and a newline to c and reads them back from br.
func echoLine(c net.Conn, br *bufio.Reader, word string) error {
	if _, err := io.WriteString(c, word+"\n"); err != nil {
		return err
	}
	got, err := br.ReadString('\n')
	if err == nil && got != word+"\n" {
		err = fmt.Errorf("echoed %q", got)
	}
	return err
}

// endedExpired checks the end of a connection held open on a key that
// expired: err, what its read returned, must not be openHeld's deadline
// (it outlived the key: the test fails with outlived), and its one
// record, once gw shut down, is an error with secret_expired.
func endedExpired(t *testing.T, gw *Gateway, buf *lockedBuffer, err error, outlived string) {
	t.Helper()
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal(outlived)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gw.Shutdown(ctx)
	if recs := buf.records(t); len(recs) != 1 || recs[0]["outcome"] != outcomeError || recs[0]["reason"] != CodeSecretExpired || recs[0]["key_fp"] == "" {
		t.Errorf("records %v; want one of the key, an error with reason %s", recs, CodeSecretExpired)
	}
}

// TestReloadEndsRelayedUpgradesItRefuses: a protocol switch relayed to a
// host without a route (an absolute-form http:// request in forward mode)
// ends at a reload that would refuse its request (forward mode off,
// unknown hosts denied, its address no longer allowed), and lives on
// through one that changes nothing.
func TestReloadEndsRelayedUpgradesItRefuses(t *testing.T) {
	up := switchingEcho(t, nil)
	conf := func(forward string) *Snapshot {
		cfg, err := config.Parse("till.yaml", []byte("version: 1\nforward: "+forward+"\nroutes: []\n"), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return NewSnapshot(cfg, nil)
	}
	const relaying = "{enabled: true, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}"
	for _, tt := range []struct{ name, forward, code string }{
		{"same rules", relaying, ""},
		{"forward mode off", "{enabled: false}", CodeBadRequest},
		{"unknown hosts denied", "{enabled: true, unknown_hosts: deny}", CodeHostNotAllowed},
		{"range no longer allowed", "{enabled: true, unknown_hosts: tunnel}", CodeHostNotAllowed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			buf := &lockedBuffer{}
			gw := New(conf(relaying), Options{Audit: testAudit(buf), Log: zerolog.Nop()})
			host := up.Listener.Addr().String()
			c, br := openHeld(t, gw, "GET http://"+host+"/ws HTTP/1.1\r\nHost: "+host+"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", http.StatusSwitchingProtocols)
			if rec := reloadWhileHeld(t, gw, buf, c, br, conf(tt.forward), tt.code); rec != nil && rec["mode"] != modeTunnel {
				t.Errorf("record %v; want mode tunnel", rec)
			}
		})
	}
}

// clientOnlyRoute is a snapshot whose route ws, to upstream, lets only
// the client web, whose token hashes to digest, use the key testKey.
func clientOnlyRoute(t *testing.T, upstream string, digest [32]byte) *Snapshot {
	t.Helper()
	y := "version: 1\nclients:\n  - {name: web, token_sha256: " + hex.EncodeToString(digest[:]) + "}\n" +
		"routes:\n  - {name: ws, preset: openai, upstream: " + upstream + ", secret: k, clients: [web]}\n"
	cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return NewSnapshot(cfg, map[string]vault.Secret{"k": vault.NewSecret("k", testKey, time.Now())})
}

// switchingEcho is an upstream that agrees to every protocol switch, then
// echoes what it reads; seen, when set, gets each request first.
func switchingEcho(t *testing.T, seen func(*http.Request)) *httptest.Server {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if seen != nil {
			seen(r)
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw)
	}))
	t.Cleanup(up.Close)
	return up
}

// TestIdleUpgradesEnd: a switched protocol, on a route or relayed to a
// host without a route, that moves bytes outlives the idle timeout, and
// is closed once it has moved none for that long, as a tunnel is.
func TestIdleUpgradesEnd(t *testing.T) {
	up := switchingEcho(t, nil)
	host := up.Listener.Addr().String()
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nforward: {enabled: true, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\nroutes:\n  - {name: ws, preset: openai, prefix: /ws, upstream: "+up.URL+", secret: k}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	snap := NewSnapshot(cfg, map[string]vault.Secret{"k": vault.NewSecret("k", testKey, time.Now())})
	const idle = 200 * time.Millisecond
	for name, head := range map[string]string{
		"route":   "GET /ws/v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\n",
		"relayed": "GET http://" + host + "/ws HTTP/1.1\r\nHost: " + host + "\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			gw := New(snap, Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
			gw.tunnelIdle = idle
			c, br := openHeld(t, gw, head+"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n", http.StatusSwitchingProtocols)
			started := time.Now()
			for {
				if err := echoLine(c, br, "ping"); err != nil {
					t.Fatalf("a busy connection was closed after %v: %v", time.Since(started), err)
				}
				if time.Since(started) > 3*idle {
					break
				}
				time.Sleep(idle / 4)
			}
			quiet := time.Now() // no later than the last byte moved
			c.SetReadDeadline(time.Now().Add(20 * idle))
			if n, err := br.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("idle connection: read %d bytes, %v; want it closed (EOF)", n, err)
			}
			if waited := time.Since(quiet); waited < idle {
				t.Errorf("closed after %v of quiet, before the idle timeout %v", waited, idle)
			}
		})
	}
}

// TestSwitchedBytesRecorded: the record of a protocol switch (WebSocket),
// on a route or relayed to a host without a route, counts the bytes it
// carried each way after the switch, as a tunnel's does: an incident asks
// what a key's session moved.
func TestSwitchedBytesRecorded(t *testing.T) {
	up := switchingEcho(t, nil)
	host := up.Listener.Addr().String()
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nforward: {enabled: true, unknown_hosts: tunnel, allow_cidrs: [127.0.0.0/8]}\nroutes:\n  - {name: ws, preset: openai, prefix: /ws, upstream: "+up.URL+", secret: k}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	snap := NewSnapshot(cfg, map[string]vault.Secret{"k": vault.NewSecret("k", testKey, time.Now())})
	for name, head := range map[string]string{
		"route":   "GET /ws/v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\n",
		"relayed": "GET http://" + host + "/ws HTTP/1.1\r\nHost: " + host + "\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			buf := &lockedBuffer{}
			gw := New(snap, Options{Audit: testAudit(buf), Log: zerolog.Nop()})
			c, br := openHeld(t, gw, head+"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n", http.StatusSwitchingProtocols)
			words := []string{"one", "two", "three"}
			moved := 0
			for _, w := range words {
				if err := echoLine(c, br, w); err != nil {
					t.Fatal(err)
				}
				moved += len(w) + 1
			}
			c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := gw.Shutdown(ctx); err != nil { // waits for the record
				t.Fatal(err)
			}
			recs := buf.records(t)
			if len(recs) != 1 || recs[0]["status"] != 101.0 {
				t.Fatalf("records %v; want the switch's", recs)
			}
			if recs[0]["bytes_in"] != float64(moved) || recs[0]["bytes_out"] != float64(moved) {
				t.Errorf("bytes_in %v, bytes_out %v; want %d each way", recs[0]["bytes_in"], recs[0]["bytes_out"], moved)
			}
		})
	}
}

// TestReloadEndsUpgradesWhoseKeyIsGone: a WebSocket switched on a route
// is held open only while the config served allows its request. A reload
// that takes the route's key away (removed from the vault: a new request
// gets 503 secret_missing) or that makes it unusable (expired, under
// on_expired: block: 503 secret_expired) would refuse that request, so it
// must end the switched connection too, as it does for a revoked token
// or a path no longer allowed (TestReloadEndsUpgradesItRefuses).
func TestReloadEndsUpgradesWhoseKeyIsGone(t *testing.T) {
	up := switchingEcho(t, nil)
	sum := sha256.Sum256([]byte(connectToken))
	web := "clients:\n  - {name: web, token_sha256: " + hex.EncodeToString(sum[:]) + "}\n"
	route := "routes:\n  - {name: ws, preset: openai, upstream: " + up.URL + ", secret: %s, clients: [web]}\n"
	confWith := func(secret string, secrets map[string]vault.Secret) *Snapshot {
		cfg, err := config.Parse("till.yaml", []byte("version: 1\n"+web+fmt.Sprintf(route, secret)), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return NewSnapshot(cfg, secrets)
	}
	conf := func(secrets map[string]vault.Secret) *Snapshot { return confWith("k", secrets) }
	good := map[string]vault.Secret{"k": vault.NewSecret("k", testKey, time.Now())}
	expired := vault.NewSecret("k", testKey, time.Now())
	expired.Expires = time.Now().Add(-time.Minute)
	for _, tt := range []struct {
		name  string
		after *Snapshot
		code  string
	}{
		// A new request gets 503 secret_missing.
		{"secret removed from the vault", conf(map[string]vault.Secret{}), CodeSecretMissing},
		// A new request gets 503 secret_expired.
		{"secret expired", conf(map[string]vault.Secret{"k": expired}), CodeSecretExpired},
		// The route now takes another key: k is no longer the route's,
		// what readmit answers a request in flight (secret_missing).
		{"route moved to another key", confWith("k2", map[string]vault.Secret{"k": good["k"], "k2": vault.NewSecret("k2", testKey+"2", time.Now())}), CodeSecretMissing},
	} {
		t.Run(tt.name, func(t *testing.T) {
			after := tt.after
			buf := &lockedBuffer{}
			gw := New(conf(good), Options{Audit: testAudit(buf), Log: zerolog.Nop()})
			c, br := openHeld(t, gw, "GET /ws/v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Till-Token: "+connectToken+"\r\n\r\n", http.StatusSwitchingProtocols)
			reloadWhileHeld(t, gw, buf, c, br, after, tt.code)
		})
	}
}

// TestUpgradeEndsWhenItsKeyExpires: under on_expired: block, a WebSocket
// on a route ends when its key expires, with no reload: a new request
// would get 503 secret_expired from then on.
func TestUpgradeEndsWhenItsKeyExpires(t *testing.T) {
	up := switchingEcho(t, nil)
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nvault: {on_expired: block}\nroutes:\n  - {name: ws, preset: openai, upstream: "+up.URL+", secret: k}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	soon := vault.NewSecret("k", testKey, time.Now())
	soon.Expires = time.Now().Add(500 * time.Millisecond)
	buf := &lockedBuffer{}
	gw := New(NewSnapshot(cfg, map[string]vault.Secret{"k": soon}), Options{Audit: testAudit(buf), Log: zerolog.Nop()})
	c, br := openHeld(t, gw, "GET /ws/v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", http.StatusSwitchingProtocols)
	if err := echoLine(c, br, "before"); err != nil {
		t.Fatalf("before the key expired: %v", err)
	}
	// Ended at the expiry: the read returns then, well before the
	// 10 s deadline openHeld set.
	_, err = br.ReadString('\n')
	if err == nil || time.Now().Before(soon.Expires) {
		t.Fatalf("read %v at %v, key expiring at %v: want the connection ended at its key's expiry", err, time.Now(), soon.Expires)
	}
	endedExpired(t, gw, buf, err, "the connection outlived its key's expiry")
}
