package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tillgw/till/config"
)

// healthTimeout bounds a health check: a probe that hangs is a failed one,
// and a container runtime kills a HEALTHCHECK that outlives its own timeout
// without a reason.
const healthTimeout = 2 * time.Second

// runHealth asks a running till whether it is ready: GET /readyz on its
// admin listener (admin.listen in the config, or --url), exit 0 on 200 and
// 1 otherwise, with one line saying why. It needs no shell, so a distroless
// image's HEALTHCHECK can run it, and reads no vault.
func runHealth(ctx context.Context, args []string, e *env) error {
	var cfgPath, rawURL string
	fs := newFlags("health", e.stderr, &cfgPath)
	fs.StringVar(&rawURL, "url", "", "`URL` to ask: the admin listener's base (http://127.0.0.1:9090), its /readyz, or unix:PATH, its socket (default: from admin.listen)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, "till health [-c FILE] [--url URL]"); err != nil {
		return err
	}
	ctx, cancel := answerWithin(ctx, healthTimeout)
	defer cancel()
	var target adminTarget
	if rawURL != "" {
		if target, err = healthURL(rawURL); err != nil {
			return usageError{err.Error()}
		}
	} else if target, err = adminURL(ctx, cfgPath, e, withURLFlag); err != nil {
		return err
	}
	shown := target.String()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.url.String(), nil)
	if err != nil {
		return fmt.Errorf("%s: %w", shown, err)
	}
	resp, err := target.client().Do(req)
	if err != nil {
		return fmt.Errorf("%s: %s", shown, probeFailure(ctx, err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	status := readyStatus(body)
	if resp.StatusCode != http.StatusOK {
		msg := fmt.Sprintf("%s: %s", shown, printable(resp.Status, 80))
		if status != "" {
			msg += ": " + status
		}
		return errors.New(msg)
	}
	if status == "" {
		status = "ok"
	}
	fmt.Fprintf(e.stdout, "%s: %s\n", shown, status)
	return nil
}

// healthClient asks once, follows no redirect (a 3xx is not ready) and
// ignores HTTP_PROXY and the like: set for the apps beside till, they must
// not send till's own probe elsewhere (a nil Transport.Proxy).
func healthClient() *http.Client {
	return &http.Client{
		Transport:     &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// adminTarget is a running till's admin listener as the CLI asks it: url
// over TCP or, when socket is set, over that Unix socket (url's host is
// then localhost, which the listener takes as its own name).
type adminTarget struct {
	url    *url.URL
	socket string
	// tokenSHA256 is admin.token_sha256 of the config the target was
	// read from; fromConfig says it was (not from --url).
	tokenSHA256 string
	fromConfig  bool
	// asker says whether the command asking has --url, for its hints.
	asker urlFlag
}

// urlFlag says whether a command that asks a running till's admin
// listener has --url (till health, till usage; till test has not): the
// hints of its errors offer --url only then.
type urlFlag bool

const (
	withURLFlag    urlFlag = true
	withoutURLFlag urlFlag = false
)

// orURL is a hint's offer of --url, followed by then; "" for a command
// without --url.
func (f urlFlag) orURL(then string) string {
	if !f {
		return ""
	}
	return ", or pass --url" + then
}

// sends says whether TILL_ADMIN_TOKEN token goes to the target: to one
// from the config, only when the config names its hash, so a token meant
// for another till (a production one, exported in the shell) never
// reaches a listener that does not take it, or whatever answers at its
// address while till is down. A wrong one is an error.
func (t adminTarget) sends(token string) (bool, error) {
	if token == "" || !t.fromConfig {
		return token != "", nil
	}
	if t.tokenSHA256 == "" {
		return false, nil
	}
	sum := sha256.Sum256([]byte(token))
	if hex.EncodeToString(sum[:]) != t.tokenSHA256 {
		return false, withHint(fmt.Errorf("%s: TILL_ADMIN_TOKEN not sent: it is not the token admin.token_sha256 names", t), "set TILL_ADMIN_TOKEN to the admin token of this config"+t.asker.orURL(" to send it anyway"))
	}
	return true, nil
}

// at is the same listener asked for path.
func (t adminTarget) at(path string) adminTarget {
	u := *t.url
	u.Path = path
	t.url = &u
	return t
}

// String is the target as messages show it: its URL without a password,
// and the socket asked through.
func (t adminTarget) String() string {
	if t.socket != "" {
		return t.url.String() + " (" + config.SocketPrefix + t.socket + ")"
	}
	return t.url.Redacted()
}

// client is healthClient, dialling the target's socket when it has one.
func (t adminTarget) client() *http.Client {
	c := healthClient()
	if t.socket != "" {
		c.Transport.(*http.Transport).DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", t.socket)
		}
	}
	return c
}

// socketTarget is the /readyz of the admin listener on the socket at path.
func socketTarget(path string) adminTarget {
	return adminTarget{url: &url.URL{Scheme: "http", Host: "localhost", Path: "/readyz"}, socket: path}
}

// adminURL is the /readyz of the admin listener the config names, at the
// address till serve binds for it: a name (localhost) is resolved here as
// net.Listen resolves it (listenIP), and that address is asked, never the
// name, which a dialler may take to another address (::1 before
// 127.0.0.1), where another user's listener would be sent
// TILL_ADMIN_TOKEN. An unspecified listen address (0.0.0.0, ::, or none)
// is asked on loopback, where a listener bound to all addresses also
// answers. Its hints, and those of the target's (sends), offer --url as
// asker has it.
func adminURL(ctx context.Context, flagPath string, e *env, asker urlFlag) (adminTarget, error) {
	path, err := configPath(flagPath, e)
	if err != nil {
		return adminTarget{}, err
	}
	cfg, err := loadConfig(path, e, nil)
	if err != nil {
		return adminTarget{}, err
	}
	if cfg.Admin.Listen == "" {
		return adminTarget{}, withHint(fmt.Errorf("%s has no admin listener to ask", displayPath(configName(cfg))),
			setIn(cfg, "admin: {listen: 127.0.0.1:9090}", " and restart till serve (a reload does not open it)"+asker.orURL("")))
	}
	t := adminTarget{tokenSHA256: cfg.Admin.TokenSHA256, fromConfig: true, asker: asker}
	if t.socket = cfg.Admin.Socket(); t.socket != "" {
		t.url = socketTarget(t.socket).url
		return t, nil
	}
	host, port, err := net.SplitHostPort(cfg.Admin.Listen)
	if err != nil {
		return adminTarget{}, fmt.Errorf("admin.listen %q: %w", cfg.Admin.Listen, err)
	}
	if _, err := netip.ParseAddr(host); host != "" && err != nil {
		ips, err := lookupIPAddr(ctx, host)
		if err == nil && len(ips) == 0 {
			err = fmt.Errorf("%s resolves to no address", host)
		}
		if err != nil {
			return adminTarget{}, withHint(fmt.Errorf("admin.listen %q: %w", cfg.Admin.Listen, err),
				"name the address till serve binds (127.0.0.1:9090 or [::1]:9090) in admin.listen")
		}
		ip := listenIP(ips)
		host = ip.String()
	}
	if ip, err := netip.ParseAddr(host); host == "" || err == nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if err == nil && ip.Is6() && !ip.Is4In6() {
			host = "::1"
		}
	}
	t.url = &url.URL{Scheme: "http", Host: net.JoinHostPort(host, port), Path: "/readyz"}
	return t, nil
}

// lookupIPAddr resolves a name as net.Listen does, through the default
// resolver (/etc/hosts, then DNS); tests replace it.
var lookupIPAddr = net.DefaultResolver.LookupIPAddr

// listenIP is the address net.Listen("tcp", "NAME:PORT") binds when NAME
// resolves to ips (not empty): the first IPv4
// one, else the first (the standard library's addrList.first(isIPv4)).
func listenIP(ips []net.IPAddr) net.IPAddr {
	for _, ip := range ips {
		if ip.IP.To4() != nil {
			return ip
		}
	}
	return ips[0]
}

// healthURL reads --url: unix:PATH (the admin listener's socket), a full
// URL, or an admin listener's base, to which /readyz is added. A bare
// HOST:PORT is taken as http; any other bare value is refused unshown and
// unresolved: it may be a key pasted in the wrong place, which a DNS
// lookup would carry off the machine.
func healthURL(raw string) (adminTarget, error) {
	if sock, ok := strings.CutPrefix(raw, config.SocketPrefix); ok && !strings.HasPrefix(sock, "//") {
		abs, err := filepath.Abs(sock)
		if sock == "" || err != nil {
			return adminTarget{}, errors.New("--url: want unix:PATH, the admin listener's socket")
		}
		return socketTarget(abs), nil
	}
	u, err := healthHTTPURL(raw)
	return adminTarget{url: u}, err
}

// healthHTTPURL is healthURL of an http or https URL.
func healthHTTPURL(raw string) (*url.URL, error) {
	if !strings.Contains(raw, "://") {
		_, port, err := net.SplitHostPort(raw)
		if n, perr := strconv.ParseUint(port, 10, 16); err != nil || perr != nil || n == 0 {
			return nil, fmt.Errorf("--url (%d characters, not shown): want HOST:PORT or http://HOST:PORT/readyz", len(raw))
		}
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, errors.New("--url: want http://HOST:PORT or http://HOST:PORT/readyz")
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/readyz"
	}
	return u, nil
}

// answerWithin bounds ctx, a call to the admin listener, by d; when it
// runs out, probeFailure says how long it waited.
func answerWithin(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, d, fmt.Errorf("no answer within %s", d))
}

// probeFailure says in a few words why no answer came.
func probeFailure(ctx context.Context, err error) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return context.Cause(ctx).Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Op + ": " + op.Err.Error() + " (is till serve running, with this admin listener?)"
	}
	return err.Error()
}

// readyStatus is the status field of an admin answer ({"status": "ready"}),
// cut to a short line of printable ASCII; "" when the body is not one.
// What the URL answers is not trusted to be till's.
func readyStatus(body []byte) string {
	var v struct {
		Status string `json:"status"`
	}
	if json.Unmarshal(body, &v) != nil {
		return ""
	}
	return printable(v.Status, 80)
}
