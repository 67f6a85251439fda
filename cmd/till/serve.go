package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy"
	"github.com/tillgw/till/proxy/ca"
	"github.com/tillgw/till/vault"
)

func runServe(ctx context.Context, args []string, e *env) error {
	var cfgPath, listen string
	fs := newFlags("serve", e.stderr, &cfgPath)
	fs.StringVar(&listen, "listen", "", "`address` to listen on, overriding the config (127.0.0.1:0 picks a free port)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, "till serve [-c FILE] [--listen ADDR]"); err != nil {
		return err
	}
	// The default action of SIGHUP and SIGUSR1 ends the process: catch
	// them before the listener exists, so that one sent as soon as till
	// says it listens reloads (or reopens the audit file) instead.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reopen := make(chan os.Signal, 1)
	notifyReopen(reopen)
	defer signal.Stop(reopen)
	logger := newLogger(e.stderr)
	if err := noCoreDumps(); err != nil {
		logger.Warn().Err(err).Msg("cannot disable core dumps: a crash could write keys to disk")
	}

	cfg, secrets, err := loadAll(cfgPath, e)
	if err != nil {
		return err
	}
	addr := cfg.Listen
	if listen != "" {
		addr = listen
	}

	audit, err := proxy.OpenAudit(cfg.Audit.File, func(err error, record []byte) {
		logger.Error().Err(err).RawJSON("record", record).
			Msg("cannot write an audit record: refusing requests until the audit sink works again")
	})
	if err != nil {
		return withHint(err, "check audit.file in the config")
	}
	defer audit.Close()
	leaves, err := interceptionLeaves(cfg, secrets)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return withHint(fmt.Errorf("listen on %q: %w", addr, err), "pick another address with --listen or listen: in the config")
	}
	tcpAddr := ln.Addr().(*net.TCPAddr)
	ltls, err := listenerTLS(cfg, secrets, tcpAddr.Port)
	if err != nil {
		ln.Close()
		return err
	}
	scheme := "http"
	var obtain func(context.Context) error
	if ltls != nil {
		var tc *tls.Config
		tc, obtain = ltls.Config()
		ln = tls.NewListener(ln, tc)
		scheme = "https"
	}
	// Tunnels may reach none of till's listeners: bind the admin one now
	// so the gateway knows its address.
	own := []netip.AddrPort{tcpAddr.AddrPort()}
	var aln net.Listener
	if cfg.Admin.Listen != "" {
		if aln, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
			ln.Close()
			return withHint(fmt.Errorf("admin listen on %q: %w", cfg.Admin.Listen, err), "change admin.listen in the config")
		}
		own = append(own, aln.Addr().(*net.TCPAddr).AddrPort())
	}
	var limits proxy.RateLimiter
	if cfg.Limits.Redis != "" {
		rl, err := proxy.NewRedisLimits(cfg.Limits.Redis)
		if err != nil {
			return err
		}
		defer rl.Close()
		limits = rl
	}
	metrics := proxy.NewMetrics(audit)
	gw := proxy.New(proxy.NewSnapshot(cfg, secrets), proxy.Options{
		Audit:          audit,
		Log:            logger,
		Leaves:         leaves,
		Listeners:      own,
		Metrics:        metrics,
		Limits:         limits,
		LimitsFailOpen: cfg.Limits.OnRedisError != "deny",
	})
	srv := &http.Server{
		Handler:           gw,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          log.New(logger.With().Str("component", "http").Logger(), "", 0),
		BaseContext:       gw.BaseContext,
	}
	base := scheme + "://" + ln.Addr().String()
	if ltls != nil {
		base = scheme + "://" + net.JoinHostPort(cfg.TLS.Names[0], strconv.Itoa(tcpAddr.Port))
	}
	rl := &reloader{log: logger, cfgPath: cfgPath, env: e, gw: gw, metrics: metrics, cfg: cfg, base: base}

	served := make(chan error, 2)
	go func() { served <- srv.Serve(ln) }()
	if obtain != nil {
		// The listener already serves the TLS config, so an ACME CA's
		// TLS-ALPN-01 challenge on this port can be answered.
		octx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := obtain(octx)
		cancel()
		if err != nil {
			_ = srv.Close()
			return withHint(fmt.Errorf("obtain the listener's certificates for %v: %w", cfg.TLS.Names, err), "check tls.names and tls.acme in the config")
		}
	}
	logger.Info().Str("addr", ln.Addr().String()).Str("scheme", scheme).Str("config", configName(cfg)).Int("routes", len(cfg.Routes)).Msg("till listening")
	logRoutes(logger, cfg, gw.Snapshot(), rl.base)
	var admin *http.Server
	if aln != nil {
		admin = &http.Server{
			Handler:           proxy.NewAdmin(proxy.AdminOptions{Gateway: gw, Metrics: metrics, Reload: rl.reload, TokenSHA256: cfg.Admin.TokenSHA256}),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          log.New(logger.With().Str("component", "admin").Logger(), "", 0),
		}
		logger.Info().Str("admin_addr", aln.Addr().String()).Msg("admin listening")
		go func() { served <- admin.Serve(aln) }()
	}
	stopWatch := rl.watch()
	defer stopWatch()

	for {
		select {
		case err := <-served:
			return fmt.Errorf("serve: %w", err)
		case <-hup:
			_ = rl.reload()
		case <-reopen:
			if err := audit.Reopen(); err != nil {
				logger.Error().Err(err).Msg("cannot reopen the audit file: still writing to the one open")
			} else {
				logger.Info().Msg("reopened the audit file")
			}
		case <-ctx.Done():
			logger.Info().Str("grace", cfg.ShutdownGrace.String()).Msg("shutting down: letting requests in flight finish")
			sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
			if admin != nil {
				_ = admin.Close()
			}
			err := srv.Shutdown(sctx)
			if err != nil {
				// Past the grace period: the gateway cuts what remains
				// first, so that its records say shutdown, not
				// client_closed as the closed connections would.
				gw.Abort()
				_ = srv.Close()
			}
			// Upgraded connections, tunnels and intercepted requests are
			// the gateway's to wait for, or end, before the audit closes.
			err = errors.Join(err, gw.Shutdown(sctx))
			cancel()
			if err != nil {
				logger.Warn().Err(err).Msg("grace period over: closed the remaining connections")
			}
			if err := audit.Close(); err != nil {
				return err
			}
			logger.Info().Msg("stopped")
			return nil
		}
	}
}

// reloader rebuilds the snapshot from the config and vault files, on
// SIGHUP, POST /admin/reload or a change to either file. Reloads run one at
// a time; a failed one keeps the old snapshot serving.
type reloader struct {
	log     zerolog.Logger
	cfgPath string
	env     *env
	gw      *proxy.Gateway
	metrics *proxy.Metrics
	base    string

	mu  sync.Mutex
	cfg *config.Config // the config being served
}

func (rl *reloader) reload() error {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	cfg, secrets, err := loadAll(rl.cfgPath, rl.env)
	if err != nil {
		rl.metrics.Reload(false)
		rl.log.Error().Err(err).Msg("reload failed: still serving the previous config")
		return err
	}
	old := rl.cfg
	if cfg.Listen != old.Listen || cfg.Audit.File != old.Audit.File || cfg.Admin != old.Admin || cfg.Limits != old.Limits ||
		cfg.Forward.CACert != old.Forward.CACert || cfg.Forward.Intercept != old.Forward.Intercept ||
		cfg.Forward.CertCache != old.Forward.CertCache || cfg.ShutdownGrace != old.ShutdownGrace ||
		!slices.Equal(cfg.TLS.Names, old.TLS.Names) || cfg.TLS.ACME != old.TLS.ACME && (cfg.TLS.ACME == nil || old.TLS.ACME == nil || *cfg.TLS.ACME != *old.TLS.ACME) {
		rl.log.Warn().Msg("listen, tls, admin, limits, audit.file, shutdown_grace and forward.intercept/ca_cert/cert_cache changes take effect at the next restart")
	}
	snap := proxy.NewSnapshot(cfg, secrets)
	rl.gw.Swap(snap)
	rl.cfg = cfg
	rl.metrics.Reload(true)
	rl.log.Info().Int("routes", len(cfg.Routes)).Msg("reloaded")
	logRoutes(rl.log, cfg, snap, rl.base)
	return nil
}

// watchInterval is how often the config and vault files are checked for
// changes.
const watchInterval = 250 * time.Millisecond

// watch reloads when the config or vault file changes. Every interval it
// compares each file's identity, size and modification time, and reloads
// once a change has held still for one interval (a save can be several
// writes). Polling two files costs nothing per request, where a watch on
// their folders would wake till at each write of an audit log kept there.
func (rl *reloader) watch() (stop func()) {
	var files []string
	rl.mu.Lock()
	for _, f := range []string{rl.cfg.File, rl.cfg.Vault.Path} {
		if f != "" {
			files = append(files, f)
		}
	}
	rl.mu.Unlock()
	last := statAll(files)
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(watchInterval)
		defer tick.Stop()
		changed := false
		for {
			select {
			case <-tick.C:
				now := statAll(files)
				if !slices.EqualFunc(now, last, sameState) {
					last, changed = now, true
				} else if changed {
					changed = false
					_ = rl.reload()
				}
			case <-done:
				return
			}
		}
	}()
	return func() { close(done) }
}

// statAll returns the state of each file; nil for one that is missing.
func statAll(files []string) []os.FileInfo {
	states := make([]os.FileInfo, len(files))
	for i, f := range files {
		states[i], _ = os.Stat(f)
	}
	return states
}

// sameState reports whether a file is unchanged between two checks.
func sameState(a, b os.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime()) && a.Mode() == b.Mode()
}

// interceptionLeaves loads the CA for TLS interception when forward mode
// intercepts, and returns its leaf cache; nil when it does not.
func interceptionLeaves(cfg *config.Config, secrets map[string]vault.Secret) (*ca.Leaves, error) {
	if !cfg.Forward.Enabled || !cfg.Forward.Intercept {
		return nil, nil
	}
	authority, err := loadAuthority(cfg, secrets, "forward.intercept", "(or set forward.intercept: false)")
	if err != nil {
		return nil, err
	}
	return ca.NewLeaves(authority, cfg.Forward.CertCache)
}

// loadAuthority loads till's CA: its certificate from forward.ca_cert, its
// key from the vault. what names the feature that needs it.
func loadAuthority(cfg *config.Config, secrets map[string]vault.Secret, what, alt string) (*ca.CA, error) {
	hint := "create the CA with: till ca init " + alt
	certPEM, err := os.ReadFile(cfg.Forward.CACert)
	if err != nil {
		return nil, withHint(fmt.Errorf("%s needs the CA certificate: %w", what, err), hint)
	}
	key, ok := secrets[ca.SecretName]
	if !ok {
		return nil, withHint(fmt.Errorf("%s needs the CA key: no %q in the vault", what, ca.SecretName), hint)
	}
	stored, _ := key.Value()
	authority, err := ca.Load(certPEM, stored)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.Forward.CACert, err)
	}
	return authority, nil
}

// listenerTLS returns the TLS settings of till's own listener, or nil for
// plain HTTP. Internal names and client certificates need till's CA.
func listenerTLS(cfg *config.Config, secrets map[string]vault.Secret, port int) (*proxy.ListenerTLS, error) {
	if len(cfg.TLS.Names) == 0 {
		return nil, nil
	}
	certs := slices.ContainsFunc(cfg.Clients, func(c config.Client) bool { return c.Cert })
	var authority *ca.CA
	if cfg.TLS.ACME == nil || certs {
		var err error
		if authority, err = loadAuthority(cfg, secrets, "tls (internal names or client certificates)", "(or use tls.acme)"); err != nil {
			return nil, err
		}
	}
	return &proxy.ListenerTLS{
		Names:         cfg.TLS.Names,
		ACME:          cfg.TLS.ACME,
		Authority:     authority,
		Storage:       filepath.Join(filepath.Dir(cfg.Vault.Path), "till-certs"),
		ChallengePort: port,
	}, nil
}

// logRoutes says which routes are live and at which base URL an app reaches
// each one.
func logRoutes(logger zerolog.Logger, cfg *config.Config, snap *proxy.Snapshot, base string) {
	infos := snap.Routes()
	if len(infos) == 0 {
		logger.Warn().Msg(`no routes: store a key with "printf %s \"$KEY\" | till secret set openai", or write a config with "till init"`)
	}
	for i, r := range infos {
		baseURL := base + r.Prefix
		if p, ok := config.LookupPreset(cfg.Routes[i].Preset); ok {
			baseURL += p.BaseURLPath
		}
		ev := logger.Info()
		if r.Problem != "" {
			ev = logger.Warn().Str("problem", r.Problem)
		}
		ev.Str("route", r.Name).Str("base_url", baseURL).Str("upstream", r.Upstream).
			Str("secret", r.Secret).Str("key_fp", r.Fingerprint).Msg("route")
	}
}

func configName(cfg *config.Config) string {
	if cfg.File == "" {
		return "built-in defaults"
	}
	return cfg.File
}

// newLogger returns the operational log: JSON lines on stderr, or a
// readable console form when stderr is a terminal.
func newLogger(w io.Writer) zerolog.Logger {
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			w = zerolog.ConsoleWriter{Out: f, TimeFormat: time.TimeOnly}
		}
	}
	return zerolog.New(w).With().Timestamp().Logger()
}
