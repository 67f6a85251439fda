package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/rs/zerolog"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// keyRecorder is an upstream that notes the bearer key of each request
// it gets, and answers 200; at /token it mints a token, noted as "token".
type keyRecorder struct {
	mu   sync.Mutex
	keys []string
}

func (k *keyRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	k.mu.Lock()
	defer k.mu.Unlock()
	if r.URL.Path == "/token" {
		k.keys = append(k.keys, "token")
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"access_token":"tok-0123456789abcdef","token_type":"Bearer","expires_in":3600}`))
		return
	}
	k.keys = append(k.keys, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	w.Write([]byte(`{"ok":true}`))
}

func (k *keyRecorder) seen() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.keys...)
}

// onFirstRead is a request body that calls hook when it is first read:
// the moment decide (or a pool's holdBody) takes the body, after the
// request's checks.
type onFirstRead struct {
	io.Reader
	once sync.Once
	hook func()
}

func (b *onFirstRead) Read(p []byte) (int, error) {
	b.once.Do(b.hook)
	return b.Reader.Read(p)
}

func (b *onFirstRead) Close() error { return nil }

// TestUpgradeOnModelRouteRefused: a route with model rules refuses a
// protocol switch, whose messages it cannot check (a ?model= in its URL
// is no proof of what they ask); a GET without a body still passes.
func TestUpgradeOnModelRouteRefused(t *testing.T) {
	up := &keyRecorder{}
	srv := httptest.NewServer(up)
	defer srv.Close()
	gw, buf := newTestGateway(t, "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: {{UP}}, allow: {models: [gpt-4o-mini]}}\n", srv.URL, secrets(time.Now()))
	r := httptest.NewRequest("GET", "/openai/v1/realtime?model=gpt-4o-mini", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, r)
	if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), CodeModelNotAllowed) {
		t.Errorf("WebSocket on a route with model rules: %d %s; want 403 %s", w.Code, w.Body, CodeModelNotAllowed)
	}
	if n := len(buf.uses(t)); n != 0 || len(up.seen()) != 0 {
		t.Errorf("the refused switch made %d use records and reached the upstream %d times", n, len(up.seen()))
	}
	w = httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest("GET", "/openai/v1/models", nil))
	if w.Code != http.StatusOK {
		t.Errorf("GET of the model list: %d %s; want 200", w.Code, w.Body)
	}
}

// TestReloadWhileBodyComesIn: a reload that lands while a request's body
// is read (by decide, for its model; or held, for a pool's next key) is
// checked before the key goes, or a token is minted with it: what the new
// config refuses gets its refusal, and the key never leaves; what it
// still allows goes, with the key the new config holds (a rotated one:
// its new value).
func TestReloadWhileBodyComesIn(t *testing.T) {
	up := &keyRecorder{}
	srv := httptest.NewServer(up)
	defer srv.Close()
	sum := sha256.Sum256([]byte(connectToken))
	other := sha256.Sum256([]byte(connectToken + "x"))
	web := "clients:\n  - {name: web, token_sha256: " + hex.EncodeToString(sum[:]) + "}\n"
	revoked := "clients:\n  - {name: web, token_sha256: " + hex.EncodeToString(other[:]) + "}\n"
	keys := map[string]vault.Secret{
		"a": vault.NewSecret("a", "sk-readmit-a-0123456789", time.Now()),
		"b": vault.NewSecret("b", "sk-readmit-b-0123456789", time.Now()),
		"c": vault.NewSecret("c", "sk-readmit-c-0123456789", time.Now()),
		"m": vault.NewFieldSecret("m", map[string]string{"client_id": "app", "client_secret": "secret-app-0123456789"}, time.Now()),
	}
	rotated := maps.Clone(keys)
	rotated["a"] = vault.NewSecret("a", "sk-readmit-a2-0123456789", time.Now())
	rotated["m"] = vault.NewFieldSecret("m", map[string]string{"client_id": "app", "client_secret": "secret-app2-0123456789"}, time.Now())
	snapWith := func(keys map[string]vault.Secret, clients, route string) *Snapshot {
		cfg, err := config.Parse("till.yaml", []byte("version: 1\n"+clients+"routes:\n  - {name: openai, preset: openai, upstream: "+srv.URL+", clients: [web], "+route+"}\n"), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return NewSnapshot(cfg, keys)
	}
	snap := func(clients, route string) *Snapshot { return snapWith(keys, clients, route) }
	mint := "secret: m, inject: {oauth2: {token_url: " + srv.URL + "/token}}"
	for _, kind := range []struct{ name, route, narrowed, contentType string }{
		{"model rules", "secret: a, allow: {models: [gpt-4o-mini]}", "secret: a, allow: {models: [gpt-4o-mini], paths: [/v1/embeddings]}", "application/json"},
		// An upload is not read by decide: the pool holds it.
		{"pool", "secret: [a, b], pool: {cooldown: 1h}", "secret: [a, b], pool: {cooldown: 1h}, allow: {paths: [/v1/embeddings]}", "application/octet-stream"},
		{"token minted", mint, mint + ", allow: {paths: [/v1/embeddings]}", "application/json"},
	} {
		for _, tt := range []struct {
			name   string
			reload *Snapshot
			code   string // "": the request goes
		}{
			{"same config", snap(web, kind.route), ""},
			{"client revoked", snap(revoked, kind.route), CodeClientUnauthenticated},
			{"path no longer allowed", snap(web, kind.narrowed), CodePathNotAllowed},
			{"key no longer the route's", snap(web, "secret: c"), CodeSecretMissing},
			{"key rotated", snapWith(rotated, web, kind.route), ""},
		} {
			t.Run(kind.name+"/"+tt.name, func(t *testing.T) {
				buf := &lockedBuffer{}
				gw := New(snap(web, kind.route), Options{Audit: testAudit(buf), Log: zerolog.Nop()})
				before := len(up.seen())
				body := `{"model":"gpt-4o-mini","messages":[]}`
				r := httptest.NewRequest("POST", "/openai/v1/chat/completions", nil)
				r.Body = &onFirstRead{Reader: strings.NewReader(body), hook: func() { gw.Swap(tt.reload) }}
				r.ContentLength = int64(len(body))
				r.Header.Set("Content-Type", kind.contentType)
				r.Header.Set("X-Till-Token", connectToken)
				w := httptest.NewRecorder()
				gw.ServeHTTP(w, r)
				sent := up.seen()[before:]
				if tt.code == "" {
					if w.Code != http.StatusOK || len(sent) == 0 {
						t.Errorf("%d %s, upstream got %v; want 200", w.Code, w.Body, sent)
					}
					// A rotation meanwhile: the request goes with the new
					// value (a token minted from it), never the old one.
					recs := buf.records(t)
					served := keys
					if tt.name == "key rotated" {
						served = rotated
						if slices.Contains(sent, "sk-readmit-a-0123456789") {
							t.Errorf("the old value went after the rotation: %v", sent)
						}
					}
					if len(recs) != 1 {
						t.Fatalf("records %v; want one", recs)
					}
					if name, _ := recs[0]["secret"].(string); recs[0]["key_fp"] != served[name].Fingerprint() {
						t.Errorf("the record names key_fp %v, want %v: the key served now", recs[0]["key_fp"], served[name].Fingerprint())
					}
					return
				}
				if !strings.Contains(w.Body.String(), tt.code) || len(sent) != 0 {
					t.Errorf("%d %s, upstream got %v; want %s, and no key sent or token asked for", w.Code, w.Body, sent, tt.code)
				}
				if n := len(buf.uses(t)); n != 0 {
					t.Errorf("%d use records for a request whose key never went", n)
				}
				if recs := buf.records(t); len(recs) != 1 || recs[0]["reason"] != tt.code {
					t.Errorf("records %v; want one, denied with %s", recs, tt.code)
				}
			})
		}
	}
}

// TestPoolRetryAfterReload: when a pool's key is refused after a reload,
// the request goes again only with a key the new config's route holds,
// for a client it still admits; otherwise the app gets the answer it has.
func TestPoolRetryAfterReload(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		mu.Lock()
		seen = append(seen, key)
		mu.Unlock()
		if key == "sk-pool-a-0123456789" {
			arrived <- struct{}{}
			<-release
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Write([]byte(`{"ok":true}`))
	}))
	defer up.Close()
	keys := map[string]vault.Secret{}
	for _, k := range []string{"a", "b", "c"} {
		keys[k] = vault.NewSecret(k, "sk-pool-"+k+"-0123456789", time.Now())
	}
	sum := sha256.Sum256([]byte(connectToken))
	other := sha256.Sum256([]byte(connectToken + "x"))
	snap := func(token []byte, pool string) *Snapshot {
		y := "version: 1\nclients:\n  - {name: web, token_sha256: " + hex.EncodeToString(token) + "}\nroutes:\n" +
			"  - {name: openai, preset: openai, upstream: " + up.URL + ", clients: [web], secret: " + pool + ", pool: {cooldown: 1h}}\n"
		cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return NewSnapshot(cfg, keys)
	}
	for _, tt := range []struct {
		name   string
		reload *Snapshot
		want   int    // the app's status
		next   string // the key the retry takes, "" for none
	}{
		{"same config", snap(sum[:], "[a, b]"), http.StatusOK, "sk-pool-b-0123456789"},
		{"next key removed", snap(sum[:], "[a, c]"), http.StatusTooManyRequests, ""},
		{"client revoked", snap(other[:], "[a, b]"), http.StatusTooManyRequests, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			gw := New(snap(sum[:], "[a, b]"), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
			w := httptest.NewRecorder()
			done := make(chan struct{})
			go func() {
				defer close(done)
				r := httptest.NewRequest("GET", "/openai/v1/models", nil)
				r.Header.Set("X-Till-Token", connectToken)
				gw.ServeHTTP(w, r) // key a first: round robin starts there
			}()
			<-arrived
			gw.Swap(tt.reload)
			release <- struct{}{}
			<-done
			mu.Lock()
			defer mu.Unlock()
			want := []string{"sk-pool-a-0123456789"}
			if tt.next != "" {
				want = append(want, tt.next)
			}
			if w.Code != tt.want || strings.Join(seen, " ") != strings.Join(want, " ") {
				t.Errorf("app got %d, upstream saw keys %v; want %d, keys %v", w.Code, seen, tt.want, want)
			}
		})
	}
}

// TestSigV4SignsProtocolSwitch: a protocol switch on a SigV4 route goes
// signed with the route's credentials, as every other request does: the
// upstream's own check of the signature passes, and the app's dummy
// signature is gone.
func TestSigV4SignsProtocolSwitch(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "AKIATILLSWITCH000001", SecretAccessKey: "switch-secret-0123456789"}
	got := make(chan *http.Request, 1)
	up := switchingEcho(t, func(r *http.Request) { got <- r.Clone(context.Background()) })
	gw, _ := newTestGateway(t, "version: 1\nroutes:\n  - {name: aws, upstream: {{UP}}, secret: aws, inject: {aws_sigv4: {service: bedrock, region: eu-west-1}}}\n", up.URL,
		map[string]vault.Secret{"aws": vault.NewFieldSecret("aws", map[string]string{"access_key_id": creds.AccessKeyID, "secret_access_key": creds.SecretAccessKey}, time.Now())})
	openHeld(t, gw, "GET /aws/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIADUMMY/x, Signature=0\r\n\r\n", http.StatusSwitchingProtocols)
	r := <-got
	date, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		t.Fatalf("the switch went unsigned (X-Amz-Date %q; Authorization %q)", r.Header.Get("X-Amz-Date"), r.Header.Get("Authorization"))
	}
	// The upstream's check: sign what arrived again, and compare.
	check, _ := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), nil)
	check.Header = r.Header.Clone()
	check.Header.Del("Authorization")
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, check, r.Header.Get("X-Amz-Content-Sha256"), "bedrock", "eu-west-1", date); err != nil {
		t.Fatal(err)
	}
	if r.Header.Get("Authorization") != check.Header.Get("Authorization") {
		t.Errorf("signature %q; the upstream computes %q", r.Header.Get("Authorization"), check.Header.Get("Authorization"))
	}
}

// TestReloadDuringUpstreamDialStopsKey: a request decided (and readmitted)
// under the config before a reload is still waiting for its connection to
// the upstream (a slow DNS answer, TCP or TLS handshake: up to the
// transport's 10 s dial and 10 s handshake timeouts) when a reload revokes
// its client's token and is acknowledged. Once the connection comes, the
// key must not go: the config served now refuses the request. readmit
// ran before the transport was asked for a connection, and nothing checks
// again when the connection is got (GotConn) and the headers, key
// included, are written. Nor may the request go without its key: the
// config served now refuses it.
func TestReloadDuringUpstreamDialStopsKey(t *testing.T) {
	var sawKey, reached atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		if strings.Contains(r.Header.Get("Authorization"), testKey) {
			sawKey.Add(1)
		}
	}))
	defer up.Close()
	sum := sha256.Sum256([]byte(connectToken))
	other := sha256.Sum256([]byte(connectToken + "x"))
	conf := func(digest [32]byte) *Snapshot { return webOnly(t, up.URL, digest) }
	tr, dialing, release := heldDialTransport()
	buf := &lockedBuffer{}
	gw := New(conf(sum), Options{Audit: testAudit(buf), Log: zerolog.Nop(), Transport: tr})
	front := httptest.NewServer(gw)
	defer front.Close()

	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("GET", front.URL+"/openai/v1/models", nil)
		req.Header.Set("X-Till-Token", connectToken)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0
			return
		}
		res.Body.Close()
		done <- res.StatusCode
	}()
	select {
	case <-dialing:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the upstream dial")
	}
	// The operator revokes the client's token (till client rotate web)
	// and the reload is acknowledged.
	gw.Swap(conf(other))
	close(release)
	status := <-done

	// A request arriving now is refused...
	req, _ := http.NewRequest("GET", front.URL+"/openai/v1/models", nil)
	req.Header.Set("X-Till-Token", connectToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a request after the reload: %d, want 401", res.StatusCode)
	}
	// ...and so must the one whose key had not gone yet.
	if n := sawKey.Load(); n != 0 {
		t.Errorf("the upstream got the key %d time(s) after a reload that revoked the client was acknowledged (status to the app %d)", n, status)
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("the upstream got %d request(s) after the reload refused them, without the key or with it", n)
	}
	if status != http.StatusUnauthorized {
		t.Errorf("the request whose key was withheld got %d, want the 401 the reload's config gives", status)
	}
	front.Close()
	recs := buf.records(t)
	if len(recs) != 2 || recs[0]["outcome"] != outcomeDenied || recs[0]["status"] != 401.0 {
		t.Errorf("request records %v; want the first denied with 401", recs)
	}
}

// TestReloadAtSendWritesNothing: a reload that refuses a request lands
// after its use record and before the Transport has its connection (here
// an idle kept-alive one, got at once). The key is withheld, and the
// request with it: net/http's HTTP/1 Transport writes a request it holds
// whatever its context, so a withheld request went out without its
// headers unless its connection was closed first. Over HTTP/2 the shared
// connection must stay up for the requests on it that still go.
func TestReloadAtSendWritesNothing(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			var refusedReached atomic.Int32
			up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasSuffix(r.URL.Path, "/refused") {
					refusedReached.Add(1)
				}
				if (r.ProtoMajor == 2) != h2 {
					t.Errorf("the upstream got HTTP/%d", r.ProtoMajor)
				}
			}))
			if h2 {
				up.EnableHTTP2 = true
				up.StartTLS()
			} else {
				up.Start()
			}
			defer up.Close()
			tr := NewTransport()
			if h2 {
				roots := x509.NewCertPool()
				roots.AddCert(up.Certificate())
				tr.TLSClientConfig.RootCAs = roots
			}
			sum := sha256.Sum256([]byte(connectToken))
			other := sha256.Sum256([]byte(connectToken + "x"))
			allowed, revoked := webOnly(t, up.URL, sum), webOnly(t, up.URL, other)
			const rounds = 1000 // the HTTP/1 write races the cancel: few lose
			var gw *Gateway
			rec := &hookWriter{onUse: func(line []byte) {
				if bytes.Contains(line, []byte("/refused")) {
					gw.Swap(revoked) // acknowledged before the connection is got
				}
			}}
			gw = New(allowed, Options{Audit: testAudit(rec), Log: zerolog.Nop(), Transport: tr})
			send := func(path string) int {
				req := httptest.NewRequest("GET", "/openai/v1/"+path, nil)
				req.Header.Set("X-Till-Token", connectToken)
				w := httptest.NewRecorder()
				gw.ServeHTTP(w, req)
				return w.Code
			}
			for i := range rounds {
				gw.Swap(allowed)
				if code := send("ok"); code != http.StatusOK { // keeps a connection idle
					t.Fatalf("round %d: an allowed request got %d", i, code)
				}
				if code := send("refused"); code != http.StatusUnauthorized {
					t.Fatalf("round %d: the request a reload refused got %d, want 401", i, code)
				}
			}
			if n := refusedReached.Load(); n != 0 {
				t.Errorf("%d of %d requests a reload refused before their key went reached the upstream all the same", n, rounds)
			}
		})
	}
}

// webOnly is a config whose route openai to upstream, with the key
// testKey, lets only the client web in, whose token has this digest.
func webOnly(t *testing.T, upstream string, digest [32]byte) *Snapshot {
	y := "version: 1\nclients:\n  - {name: web, token_sha256: " + hex.EncodeToString(digest[:]) + "}\n" +
		"routes:\n  - {name: openai, preset: openai, upstream: " + upstream + ", secret: k, clients: [web]}\n"
	cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return NewSnapshot(cfg, map[string]vault.Secret{"k": vault.NewSecret("k", testKey, time.Now())})
}

// hookWriter is an audit sink's writer that calls onUse with each use
// record before it is kept.
type hookWriter struct {
	lockedBuffer
	onUse func(line []byte)
}

func (h *hookWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(`"event":"use"`)) {
		h.onUse(p)
	}
	return h.lockedBuffer.Write(p)
}

// heldDialTransport is a transport whose dials wait until release is
// closed (the network is slow); dialing is closed when the first starts.
func heldDialTransport() (tr *http.Transport, dialing, release chan struct{}) {
	dialing, release = make(chan struct{}), make(chan struct{})
	tr = NewTransport()
	var d net.Dialer
	var first sync.Once
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		first.Do(func() { close(dialing) })
		<-release
		return d.DialContext(ctx, network, addr)
	}
	return tr, dialing, release
}

// TestReloadDuringUpgradeDialStopsKey: the same for a protocol switch
// (WebSocket): a reload that revokes its client while the upstream is
// dialled ends it before its key is written.
func TestReloadDuringUpgradeDialStopsKey(t *testing.T) {
	var sawKey atomic.Int32
	up := switchingEcho(t, func(r *http.Request) {
		if strings.Contains(r.Header.Get("Authorization"), testKey) {
			sawKey.Add(1)
		}
	})
	sum := sha256.Sum256([]byte(connectToken))
	other := sha256.Sum256([]byte(connectToken + "x"))
	conf := func(digest [32]byte) *Snapshot { return clientOnlyRoute(t, up.URL, digest) }
	dialing, release := make(chan struct{}), make(chan struct{})
	tr := NewTransport()
	var d net.Dialer
	var first sync.Once
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		first.Do(func() { close(dialing) })
		<-release
		return d.DialContext(context.WithoutCancel(ctx), network, addr) // dials even once the request ended
	}
	buf := &lockedBuffer{}
	gw := New(conf(sum), Options{Audit: testAudit(buf), Log: zerolog.Nop(), Transport: tr})
	front := httptest.NewServer(gw)
	defer front.Close()
	done := make(chan struct{})
	var answer *http.Response
	go func() {
		defer close(done)
		c, err := net.Dial("tcp", front.Listener.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "GET /ws/v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Till-Token: "+connectToken+"\r\n\r\n")
		answer, _ = http.ReadResponse(bufio.NewReader(c), nil)
	}()
	select {
	case <-dialing:
	case <-time.After(10 * time.Second):
		t.Fatal("the upgrade never reached the upstream dial")
	}
	gw.Swap(conf(other))
	close(release)
	<-done
	front.Close()
	up.Close() // waits for the handler that records what it saw
	if n := sawKey.Load(); n != 0 {
		t.Errorf("the upstream got the key %d time(s) on a protocol switch whose client a reload revoked while it was dialled", n)
	}
	// Never made, the switch was refused: denied, not a connection till
	// ended.
	if recs := buf.records(t); len(recs) != 1 || recs[0]["outcome"] != outcomeDenied || recs[0]["reason"] != CodeClientUnauthenticated || recs[0]["status"] != 401.0 {
		t.Errorf("records %v; want one, denied (401) with %s", recs, CodeClientUnauthenticated)
	}
	// The app is told so, not given net/http's empty 200.
	if answer == nil || answer.StatusCode != http.StatusUnauthorized || answer.Header.Get("X-Till-Error") != CodeClientUnauthenticated {
		t.Errorf("the app got %v; want 401 %s", answer, CodeClientUnauthenticated)
	}
}

// TestReloadMintsAsTheConfigServedNow: a reload that changes how a route
// mints (its token_url, scopes or audience) but not its secret lands
// while a request's body is read. Caught: the request minted with the
// snapshot it arrived under, which sent the client secret to an endpoint
// the config no longer names, or got a token for scopes it took away. No
// token was minted for it yet: it goes, minted as the config served now
// says.
func TestReloadMintsAsTheConfigServedNow(t *testing.T) {
	var mu sync.Mutex
	var asks []string   // token endpoint path, scope and audience asked
	var bearer []string // what the upstream received
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/token") {
			_ = r.ParseForm()
			f := r.PostForm
			asks = append(asks, r.URL.Path+" scope="+f.Get("scope")+" audience="+f.Get("audience"))
			w.Header().Set("Content-Type", "application/json")
			tok := "tok" + strings.TrimPrefix(r.URL.Path, "/token") + "-" + strings.ReplaceAll(f.Get("scope"), " ", "_") + "-" + f.Get("audience") + "-0123456789"
			io.WriteString(w, `{"access_token":"`+tok+`","token_type":"Bearer","expires_in":3600}`)
			return
		}
		io.Copy(io.Discard, r.Body)
		bearer = append(bearer, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		w.Write([]byte(`{"ok":true}`))
	}))
	defer srv.Close()
	keys := map[string]vault.Secret{
		"m": vault.NewFieldSecret("m", map[string]string{"client_id": "app", "client_secret": "secret-app-0123456789"}, time.Now()),
	}
	snap := func(inject string) *Snapshot {
		// preset openai: decide reads the JSON body (usage), where the
		// reload lands.
		y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: " + srv.URL + ", secret: m, inject: " + inject + "}\n"
		cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return NewSnapshot(cfg, keys)
	}
	for _, tt := range []struct{ name, before, after, ask, token string }{
		{"token_url moved",
			"{oauth2: {token_url: " + srv.URL + "/token-old, scopes: [admin]}}",
			"{oauth2: {token_url: " + srv.URL + "/token-new, scopes: [admin]}}",
			"/token-new scope=admin audience=", "tok-new-admin--0123456789"},
		{"scopes narrowed",
			"{oauth2: {token_url: " + srv.URL + "/token, scopes: [admin, read]}}",
			"{oauth2: {token_url: " + srv.URL + "/token, scopes: [read]}}",
			"/token scope=read audience=", "tok-read--0123456789"},
		{"audience changed",
			"{oauth2: {token_url: " + srv.URL + "/token, audience: billing}}",
			"{oauth2: {token_url: " + srv.URL + "/token, audience: reports}}",
			"/token scope= audience=reports", "tok--reports-0123456789"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			asks, bearer = nil, nil
			mu.Unlock()
			gw := New(snap(tt.before), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
			w := chatReloadedMidBody(gw, snap(tt.after))
			mu.Lock()
			defer mu.Unlock()
			if w.Code != http.StatusOK || strings.Join(asks, ",") != tt.ask || strings.Join(bearer, ",") != tt.token {
				t.Errorf("got %d, token asks %q, upstream got %q; want 200, one ask %q, token %q: minted as the config served now says",
					w.Code, asks, bearer, tt.ask, tt.token)
			}
		})
	}
}

// TestReloadMintsForTheInstallationServedNow: a reload moves a GitHub App
// route from installation 111 to 222 (same app key) while a request's
// body is read. Caught: the request went with a token of installation
// 111, which the config no longer names.
func TestReloadMintsForTheInstallationServedNow(t *testing.T) {
	var mu sync.Mutex
	var asks, bearer []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		defer mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/app/installations/") {
			id := strings.Split(r.URL.Path, "/")[3]
			asks = append(asks, id)
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, `{"token":"ghs_inst`+id+`_0123456789abcdef","expires_at":"`+time.Now().Add(time.Hour).UTC().Format(time.RFC3339)+`"}`)
			return
		}
		bearer = append(bearer, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		w.Write([]byte(`{"ok":true}`))
	}))
	defer srv.Close()
	keys := map[string]vault.Secret{"gh": vault.NewSecret("gh", rsaPEM(t), time.Now())}
	snap := func(inst string) *Snapshot {
		y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: " + srv.URL + ", secret: gh, inject: {github_app: {app_id: 1, installation_id: " + inst + "}}}\n"
		cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return NewSnapshot(cfg, keys)
	}
	gw := New(snap("111"), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
	w := chatReloadedMidBody(gw, snap("222"))
	mu.Lock()
	defer mu.Unlock()
	if w.Code != http.StatusOK || strings.Join(asks, ",") != "222" || strings.Join(bearer, ",") != "ghs_inst222_0123456789abcdef" {
		t.Errorf("got %d, installations asked %v, upstream got %v; want 200 with installation 222's token only", w.Code, asks, bearer)
	}
}

// TestPoolRetryAfterMintReload: a pool of minting keys; key a's token is
// at the upstream when a reload moves the route's token_url, and the
// answer (429) sets key a aside. Caught: the retry minted key b's token
// at the old endpoint, with the snapshot the request arrived under. Key
// b's settings in that snapshot are no longer the config's, as a rotated
// key's value is not: the app gets the answer it has, and nothing is
// asked of either endpoint for key b.
func TestPoolRetryAfterMintReload(t *testing.T) {
	var mu sync.Mutex
	var asks []string
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/token") {
			id, _, _ := r.BasicAuth()
			mu.Lock()
			asks = append(asks, id+" at "+r.URL.Path)
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"access_token":"tok-`+id+`-0123456789abcdef","token_type":"Bearer","expires_in":3600}`)
			return
		}
		if r.Header.Get("Authorization") == "Bearer tok-a-0123456789abcdef" {
			arrived <- struct{}{}
			<-release
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Write([]byte(`{"ok":true}`))
	}))
	defer srv.Close()
	keys := map[string]vault.Secret{"a": oauthSecret("a", time.Now()), "b": oauthSecret("b", time.Now())}
	snap := func(path string) *Snapshot {
		y := "version: 1\nroutes:\n  - {name: api, upstream: " + srv.URL + ", secret: [a, b], pool: {cooldown: 1m}, inject: {oauth2: {token_url: " + srv.URL + path + ", auth_style: header}}}\n"
		cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return NewSnapshot(cfg, keys)
	}
	gw := New(snap("/token-old"), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
	w := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		gw.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil)) // key a first
	}()
	<-arrived
	gw.Swap(snap("/token-new"))
	release <- struct{}{}
	<-done
	mu.Lock()
	defer mu.Unlock()
	if w.Code != http.StatusTooManyRequests || strings.Join(asks, ",") != "a at /token-old" {
		t.Errorf("app got %d, token asks %v; want the 429 it has, and key a's ask only", w.Code, asks)
	}
}

// TestReloadDuringTokenEndpointDialStopsKey: the same for the ask of a
// minting route's token endpoint, which sends the long-lived secret: a
// reload that revokes the client while the endpoint is dialled keeps
// the secret from going there, and the request gets the new config's
// refusal.
func TestReloadDuringTokenEndpointDialStopsKey(t *testing.T) {
	te := newTokenEndpoint(t, func(http.ResponseWriter, *http.Request) {})
	sum := sha256.Sum256([]byte(connectToken))
	other := sha256.Sum256([]byte(connectToken + "x"))
	conf := func(digest [32]byte) *Snapshot {
		y := "version: 1\nclients:\n  - {name: web, token_sha256: " + hex.EncodeToString(digest[:]) + "}\n" +
			"routes:\n  - {name: api, upstream: " + te.URL + ", secret: app, clients: [web], inject: {oauth2: {token_url: " + te.URL + "/token}}}\n"
		cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return NewSnapshot(cfg, map[string]vault.Secret{"app": oauthSecret("app", time.Now())})
	}
	tr, dialing, release := heldDialTransport()
	oldTransport := tokenClient.Transport
	tokenClient.Transport = tr
	t.Cleanup(func() { tokenClient.Transport = oldTransport })
	gw := New(conf(sum), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})

	done := make(chan int, 1)
	go func() {
		req := httptest.NewRequest("GET", "/api/x", nil)
		req.Header.Set("X-Till-Token", connectToken)
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, req)
		done <- w.Code
	}()
	select {
	case <-dialing:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the token endpoint's dial")
	}
	gw.Swap(conf(other)) // till client rotate web, acknowledged
	close(release)
	status := <-done
	if n := te.count(); n != 0 || status != http.StatusUnauthorized {
		t.Errorf("after a reload that revoked the client while the token endpoint was dialled: %d, and the endpoint was asked %d time(s); want 401 and no ask", status, n)
	}
}

// TestReloadMintsSourcedAsTheConfigServedNow: as
// TestReloadMintsAsTheConfigServedNow, for credentials kept in a source:
// a reload that moves the token_url, narrows the scopes or changes the
// audience while a request's body is read keeps the request from minting
// as the config before said (503 secret_unavailable: send it again).
// Caught: the client secret went to the old endpoint, and the token for
// the old scopes to the upstream.
func TestReloadMintsSourcedAsTheConfigServedNow(t *testing.T) {
	var mu sync.Mutex
	var asks, bearer []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/token") {
			_ = r.ParseForm()
			f := r.PostForm
			asks = append(asks, r.URL.Path+" scope="+f.Get("scope")+" audience="+f.Get("audience"))
			w.Header().Set("Content-Type", "application/json")
			tok := "tok" + strings.TrimPrefix(r.URL.Path, "/token") + "-" + strings.ReplaceAll(f.Get("scope"), " ", "_") + "-" + f.Get("audience") + "-0123456789"
			io.WriteString(w, `{"access_token":"`+tok+`","token_type":"Bearer","expires_in":3600}`)
			return
		}
		io.Copy(io.Discard, r.Body)
		bearer = append(bearer, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		w.Write([]byte(`{"ok":true}`))
	}))
	defer srv.Close()
	keys := &fakeKeys{values: map[string]string{"corp:m": `{"client_id": "app", "client_secret": "secret-app-0123456789"}`}}
	snap := func(inject string) *Snapshot {
		y := "version: 1\nsources:\n  - {name: corp, type: files, dir: keys}\nroutes:\n  - {name: openai, preset: openai, upstream: " + srv.URL + ", secret: \"corp:m\", inject: " + inject + "}\n"
		cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return NewSnapshotWithKeys(cfg, nil, keys)
	}
	for _, tt := range []struct{ name, before, after, ask, token string }{
		{"same way", // what the reload leaves alone goes
			"{oauth2: {token_url: " + srv.URL + "/token, scopes: [read]}}",
			"{oauth2: {token_url: " + srv.URL + "/token, scopes: [read]}}",
			"/token scope=read audience=", "tok-read--0123456789"},
		{"token_url moved",
			"{oauth2: {token_url: " + srv.URL + "/token-old, scopes: [admin]}}",
			"{oauth2: {token_url: " + srv.URL + "/token-new, scopes: [admin]}}",
			"", ""},
		{"scopes narrowed",
			"{oauth2: {token_url: " + srv.URL + "/token, scopes: [admin, read]}}",
			"{oauth2: {token_url: " + srv.URL + "/token, scopes: [read]}}",
			"", ""},
		{"audience changed",
			"{oauth2: {token_url: " + srv.URL + "/token, audience: billing}}",
			"{oauth2: {token_url: " + srv.URL + "/token, audience: reports}}",
			"", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			asks, bearer = nil, nil
			mu.Unlock()
			gw := New(snap(tt.before), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
			w := chatReloadedMidBody(gw, snap(tt.after))
			mu.Lock()
			defer mu.Unlock()
			want := http.StatusOK
			if tt.ask == "" {
				want = http.StatusServiceUnavailable
			}
			if w.Code != want || strings.Join(asks, ",") != tt.ask || strings.Join(bearer, ",") != tt.token {
				t.Errorf("got %d %s, token asks %q, upstream got %q; want %d, asks %q, token %q: never minted as the config before said",
					w.Code, strings.TrimSpace(w.Body.String()), asks, bearer, want, tt.ask, tt.token)
			}
		})
	}
}

// TestReloadMovingTheUpstreamStopsKey: a reload that points a route at
// another path or scheme of its upstream host while a request's body is
// read keeps the key back: the request would go where the config before
// said (here /v1/..., which the config served now sends nowhere, its
// route now at /v2), not where the config served now does.
func TestReloadMovingTheUpstreamStopsKey(t *testing.T) {
	var mu sync.Mutex
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		w.Write([]byte(`{"ok":true}`))
	}))
	defer srv.Close()
	snap := func(upstream string) *Snapshot {
		y := "version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: " + upstream + ", allow: {models: [gpt-4o-mini]}}\n"
		cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return NewSnapshot(cfg, secrets(time.Now()))
	}
	for _, tt := range []struct{ name, after, want string }{
		{"same upstream", srv.URL, "/v1/chat/completions"},
		{"path moved", srv.URL + "/v2", ""},
		{"scheme moved", strings.Replace(srv.URL, "http://", "https://", 1), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			paths = nil
			mu.Unlock()
			gw := New(snap(srv.URL), Options{Audit: testAudit(&lockedBuffer{}), Log: zerolog.Nop()})
			w := chatReloadedMidBody(gw, snap(tt.after))
			mu.Lock()
			defer mu.Unlock()
			if got := strings.Join(paths, ","); got != tt.want || (tt.want == "") != (w.Code != http.StatusOK) {
				t.Errorf("%d %s, upstream got %q; want %q", w.Code, strings.TrimSpace(w.Body.String()), got, tt.want)
			}
		})
	}
}

// chatReloadedMidBody sends gw a chat completion whose body's first read
// swaps in the snapshot reload: a reload while the request comes in,
// after it was decided.
func chatReloadedMidBody(gw *Gateway, reload *Snapshot) *httptest.ResponseRecorder {
	body := `{"model":"gpt-4o-mini","messages":[]}`
	r := httptest.NewRequest("POST", "/openai/v1/chat/completions", nil)
	r.Body = &onFirstRead{Reader: strings.NewReader(body), hook: func() { gw.Swap(reload) }}
	r.ContentLength = int64(len(body))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, r)
	return w
}
