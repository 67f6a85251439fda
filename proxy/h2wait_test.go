package proxy

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// oneStreamUpstream is an HTTP/2 upstream that takes one stream at a
// time (SETTINGS_MAX_CONCURRENT_STREAMS 1). A request to /hold holds
// that stream until release is closed; every other request is counted
// by path, and answered as a token endpoint at /token.
type oneStreamUpstream struct {
	*httptest.Server
	holding chan struct{}
	release chan struct{}
	tokens  atomic.Int32 // asks of /token
	others  atomic.Int32 // requests to other paths
}

func newOneStreamUpstream(t *testing.T) *oneStreamUpstream {
	t.Helper()
	u := &oneStreamUpstream{holding: make(chan struct{}, 1), release: make(chan struct{})}
	u.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		switch r.URL.Path {
		case "/hold":
			u.holding <- struct{}{}
			<-u.release
		case "/token":
			u.tokens.Add(1)
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"access_token":"tok-0123456789abcdef","token_type":"Bearer","expires_in":3600}`)
		default:
			u.others.Add(1)
		}
	}))
	u.EnableHTTP2 = true
	u.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 1}
	u.StartTLS()
	t.Cleanup(func() {
		select {
		case <-u.release:
		default:
			close(u.release)
		}
		u.Close()
	})
	return u
}

// transport reaches u over HTTP/2 and, as net/http does when the
// upstream's stream limit is lowered under requests that took its
// connection already, has them wait for a free stream on it.
func (u *oneStreamUpstream) transport() *http.Transport {
	tr := NewTransport()
	tr.TLSClientConfig.RootCAs = x509.NewCertPool()
	tr.TLSClientConfig.RootCAs.AddCert(u.Certificate())
	tr.HTTP2 = &http.HTTP2Config{StrictMaxConcurrentRequests: true}
	return tr
}

// hold takes u's one stream with a request sent through send, and
// returns once u holds it.
func (u *oneStreamUpstream) hold(t *testing.T, send func()) {
	t.Helper()
	go send()
	select {
	case <-u.holding:
	case <-time.After(10 * time.Second):
		t.Fatal("the request that takes the upstream's one stream never reached it")
	}
}

// waitForFreeStream waits until a request waits for a free HTTP/2
// stream: its connection got, it is about to be written.
func waitForFreeStream(t *testing.T) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if strings.Contains(string(buf[:runtime.Stack(buf, true)]), "awaitOpenSlotForStream") {
			return
		}
	}
	t.Fatal("no request waits for a free HTTP/2 stream")
}

// TestReloadWhileWaitingForHTTP2Stream: a request let by has its HTTP/2
// connection to the upstream (or its token endpoint), where the
// upstream's streams are all taken, and waits for one to free; a reload
// that revokes its client lands meanwhile. Checked when the connection
// was got, the key (the client secret, for a token ask) went all the
// same once a stream freed: it must not go.
func TestReloadWhileWaitingForHTTP2Stream(t *testing.T) {
	sum := sha256.Sum256([]byte(connectToken))
	other := sha256.Sum256([]byte(connectToken + "x"))
	for _, mint := range []bool{false, true} {
		name := "static key"
		if mint {
			name = "token ask"
		}
		t.Run(name, func(t *testing.T) {
			u := newOneStreamUpstream(t)
			inject := "preset: openai"
			secret := vault.NewSecret("k", testKey, time.Now())
			if mint {
				inject = "inject: {oauth2: {token_url: " + u.URL + "/token}}"
				secret = oauthSecret("k", time.Now())
				old := tokenClient.Transport
				tokenClient.Transport = u.transport()
				t.Cleanup(func() { tokenClient.Transport = old })
			}
			conf := func(digest [32]byte) *Snapshot {
				y := "version: 1\nclients:\n  - {name: web, token_sha256: " + hex.EncodeToString(digest[:]) + "}\n" +
					"routes:\n  - {name: api, upstream: " + u.URL + ", secret: k, clients: [web], " + inject + "}\n"
				cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				return NewSnapshot(cfg, map[string]vault.Secret{"k": secret})
			}
			gw := New(conf(sum), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop(), Transport: u.transport()})
			send := func(path string) int {
				req := httptest.NewRequest("GET", "/api"+path, nil)
				req.Header.Set("X-Till-Token", connectToken)
				w := httptest.NewRecorder()
				gw.ServeHTTP(w, req)
				return w.Code
			}
			if mint {
				u.hold(t, func() {
					res, err := tokenClient.Get(u.URL + "/hold")
					if err == nil {
						res.Body.Close()
					}
				})
			} else {
				u.hold(t, func() { send("/hold") })
			}
			done := make(chan int, 1)
			go func() { done <- send("/x") }()
			waitForFreeStream(t)
			gw.Swap(conf(other)) // till client rotate web, acknowledged
			close(u.release)
			status := <-done
			if n := u.tokens.Load() + u.others.Load(); n != 0 {
				t.Errorf("the upstream got %d request(s) sent after a reload that revoked the client was acknowledged (the app got %d)", n, status)
			}
			if status != http.StatusUnauthorized {
				t.Errorf("got %d, want the 401 the reload's config gives", status)
			}
		})
	}
}

// TestKeyExpiringWhileWaitingForHTTP2Stream: a request let by has its
// HTTP/2 connection to the upstream (or its token endpoint), where the
// upstream's streams are all taken, and waits for one to free; its key
// expires meanwhile, with no reload. Judged when the connection was got,
// and again only at a reload, the key went once a stream freed, expired:
// under on_expired: block it must not go, and the app gets the 503
// secret_expired an expired key gets at decide; under warn it goes, and
// its record says secret_expired. A token ask under warn goes, then the
// request with its token, and the request's record says secret_expired
// too: the ask's judge drops the flag, but the token keeps the key's
// expiry and the request is judged again after the ask.
func TestKeyExpiringWhileWaitingForHTTP2Stream(t *testing.T) {
	for _, tt := range []struct {
		name, onExpired string
		mint            bool
		sent, code      int
	}{
		{"static key", "block", false, 0, http.StatusServiceUnavailable},
		{"token ask", "block", true, 0, http.StatusServiceUnavailable},
		{"static key under warn", "warn", false, 1, http.StatusOK},
		{"token ask under warn", "warn", true, 2, http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u := newOneStreamUpstream(t)
			inject := "preset: openai"
			secret := vault.NewSecret("k", testKey, time.Now())
			if tt.mint {
				inject = "inject: {oauth2: {token_url: " + u.URL + "/token}}"
				secret = oauthSecret("k", time.Now())
				old := tokenClient.Transport
				tokenClient.Transport = u.transport()
				t.Cleanup(func() { tokenClient.Transport = old })
				u.hold(t, func() {
					res, err := tokenClient.Get(u.URL + "/hold")
					if err == nil {
						res.Body.Close()
					}
				})
			}
			cfg, err := config.Parse("till.yaml", []byte("version: 1\nvault: {on_expired: "+tt.onExpired+"}\n"+
				"routes:\n  - {name: api, upstream: "+u.URL+", secret: k, "+inject+"}\n"), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			records := &lockedBuffer{}
			gw := New(NewSnapshot(cfg, map[string]vault.Secret{"k": secret}), Options{Audit: testAudit(records), Log: zerolog.Nop(), Transport: u.transport()})
			send := func(path string) int {
				w := httptest.NewRecorder()
				gw.ServeHTTP(w, httptest.NewRequest("GET", "/api"+path, nil))
				return w.Code
			}
			if !tt.mint {
				u.hold(t, func() { send("/hold") })
			}
			// The key expires while the next request waits: set once the
			// stream is held, the snapshot takes it as the vault has it.
			expires := time.Now().Add(3 * time.Second)
			secret.Expires = expires
			gw.Swap(NewSnapshot(cfg, map[string]vault.Secret{"k": secret}))
			done := make(chan int, 1)
			go func() { done <- send("/x") }()
			waitForFreeStream(t)
			if time.Now().After(expires) {
				t.Fatal("the request waited for a stream only once its key had expired: too slow a machine for this test")
			}
			time.Sleep(time.Until(expires) + time.Second)
			close(u.release)
			status := <-done
			if n := int(u.tokens.Load() + u.others.Load()); n != tt.sent || status != tt.code {
				t.Errorf("key expired at %s while its request waited for a stream: the app got %d, the upstream %d request(s); want %d and %d",
					expires.Format(time.StampMilli), status, n, tt.code, tt.sent)
			}
			var reasons []any
			for _, rec := range records.records(t) {
				if rec["path"] != "/api/hold" {
					reasons = append(reasons, rec["reason"])
				}
			}
			if len(reasons) != 1 || reasons[0] != CodeSecretExpired {
				t.Errorf("the request's record says %v, want %s", reasons, CodeSecretExpired)
			}
		})
	}
}

// TestWaitForHTTP2StreamWithinRouteTimeout: a request that has its
// HTTP/2 connection to the upstream waits there for a free stream
// (net/http's Transport makes it wait when the upstream lowered its
// stream limit under requests that took the connection already) for as
// long as the upstream's streams are held, here by a long answer: the
// route's timeout bounded only the wait for the answer once the request
// was written, so the request, and its budget's reservation, were held
// for as long as the app waited. It now ends at the route's timeout, 504
// upstream_timeout, unsent, and its record says so.
func TestWaitForHTTP2StreamWithinRouteTimeout(t *testing.T) {
	u := newOneStreamUpstream(t)
	streaming := make(chan struct{})
	u.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			close(streaming)
			<-u.release
			return
		}
		u.others.Add(1)
	})
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: api, upstream: "+u.URL+", secret: k, preset: openai, timeout: 1s}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	records := &lockedBuffer{}
	gw := New(NewSnapshot(cfg, map[string]vault.Secret{"k": vault.NewSecret("k", testKey, time.Now())}), Options{Audit: testAudit(records), Log: zerolog.Nop(), Transport: u.transport()})
	send := func(path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, httptest.NewRequest("GET", "/api"+path, nil))
		return w
	}
	streamed := make(chan struct{}) // the test ends after it: it reads globals
	go func() { defer close(streamed); send("/stream") }()
	<-streaming
	done := make(chan *httptest.ResponseRecorder, 1)
	start := time.Now()
	go func() { done <- send("/x") }()
	waitForFreeStream(t)
	var w *httptest.ResponseRecorder
	select {
	case w = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a request waiting for a free HTTP/2 stream is still waiting, 10 s past its route's timeout of 1 s")
	}
	if took := time.Since(start); w.Code != http.StatusGatewayTimeout || w.Header().Get("X-Till-Error") != CodeUpstreamTimeout || took < time.Second {
		t.Errorf("got %d %q after %v, want 504 %s after the route's 1 s", w.Code, w.Header().Get("X-Till-Error"), took, CodeUpstreamTimeout)
	}
	close(u.release)
	<-streamed
	if n := u.others.Load(); n != 0 {
		t.Errorf("the upstream got %d request(s) that gave up waiting for a stream", n)
	}
	var reasons []any
	for _, rec := range records.records(t) {
		if rec["path"] == "/api/x" {
			reasons = append(reasons, rec["reason"])
		}
	}
	if len(reasons) != 1 || reasons[0] != CodeUpstreamTimeout {
		t.Errorf("the request's record says %v, want %s", reasons, CodeUpstreamTimeout)
	}
}
