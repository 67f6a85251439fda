package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
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
	fs.StringVar(&rawURL, "url", "", "`URL` to ask: the admin listener's base (http://127.0.0.1:9090) or its /readyz (default: from admin.listen)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, "till health [-c FILE] [--url URL]"); err != nil {
		return err
	}
	var target *url.URL
	if rawURL != "" {
		if target, err = healthURL(rawURL); err != nil {
			return usageError{err.Error()}
		}
	} else if target, err = adminURL(cfgPath, e); err != nil {
		return err
	}
	shown := target.Redacted()

	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		return fmt.Errorf("%s: %w", shown, err)
	}
	resp, err := healthClient().Do(req)
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

// adminURL is the /readyz URL of the admin listener the config names. An
// unspecified listen address (0.0.0.0, ::, or none) is asked on loopback,
// where a listener bound to all addresses also answers.
func adminURL(flagPath string, e *env) (*url.URL, error) {
	path, err := configPath(flagPath, e)
	if err != nil {
		return nil, err
	}
	cfg, err := loadConfig(path, e, nil)
	if err != nil {
		return nil, err
	}
	if cfg.Admin.Listen == "" {
		return nil, withHint(fmt.Errorf("%s has no admin listener to ask", displayPath(configName(cfg))),
			"set admin: {listen: 127.0.0.1:9090} in the config (till serves /readyz there), or pass --url")
	}
	host, port, err := net.SplitHostPort(cfg.Admin.Listen)
	if err != nil {
		return nil, fmt.Errorf("admin.listen %q: %w", cfg.Admin.Listen, err)
	}
	if ip, err := netip.ParseAddr(host); host == "" || err == nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if err == nil && ip.Is6() && !ip.Is4In6() {
			host = "::1"
		}
	}
	return &url.URL{Scheme: "http", Host: net.JoinHostPort(host, port), Path: "/readyz"}, nil
}

// healthURL reads --url: a full URL, or an admin listener's base, to which
// /readyz is added. A bare HOST:PORT is taken as http; any other bare
// value is refused unshown and unresolved: it may be a key pasted in the
// wrong place, which a DNS lookup would carry off the machine.
func healthURL(raw string) (*url.URL, error) {
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

// probeFailure says in a few words why no answer came.
func probeFailure(ctx context.Context, err error) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Sprintf("no answer within %s", healthTimeout)
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
