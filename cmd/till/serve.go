package main

import (
	"github.com/tillgw/till/budget"

	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/tillgw/till/audit"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/internal/regfile"
	"github.com/tillgw/till/internal/unixsock"
	"github.com/tillgw/till/proxy"
	"github.com/tillgw/till/proxy/ca"
	"github.com/tillgw/till/reload"
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
	// Not shown, and never looked up: a value that is no address may be
	// a key pasted in the wrong place, as --url's may.
	if listen != "" {
		if err := config.CheckListen(listen); err != nil {
			return usageError{fmt.Sprintf("--listen (%d characters, not shown): %v", len(listen), err)}
		}
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
	logs := newLogOutput(e)
	logger := logs.logger()
	// What it warns about its files, at start and at each reload, is a
	// line of its log like the rest.
	se := *e
	se.warn = func(msg string) { logger.Warn().Msg(msg) }
	e = &se

	cfg, secrets, seen, err := loadServed(cfgPath, e, logs, logger)
	if err != nil {
		return err
	}
	if e.coreDumps != nil {
		logger.Warn().Err(e.coreDumps).Msg("cannot disable core dumps: a crash could write keys to disk")
	}
	addr := cfg.Listen
	if listen != "" {
		addr = listen
	}
	// Checked on the address served, --listen included: a config written
	// for loopback may be served on every interface from the command line.
	if err := cfg.CheckOpenRoutes(addr); err != nil {
		return err
	}

	sink, err := openAudit(cfg, secrets, e, logger)
	if err != nil {
		return err
	}
	defer sink.Close()
	leaves, err := interceptionLeaves(cfg, secrets)
	if err != nil {
		return err
	}
	lns, err := openListeners(cfg, secrets, addr, logger, logs)
	if err != nil {
		return err
	}
	ln, aln := lns.main, lns.admin
	var limits proxy.RateLimiter
	var budgets budget.Store
	if cfg.Limits.Redis != "" {
		rl, err := proxy.NewRedisLimits(cfg.Limits.Redis)
		if err != nil {
			return err
		}
		defer rl.Close()
		limits, budgets = rl, rl.Budgets()
	}
	records := proxy.NewAudit(sink)
	metrics := proxy.NewMetrics(records)
	bi := readBuildInfo()
	metrics.SetBuild(bi.version, bi.commit, bi.goVersion)
	keys, err := newSourceKeys(cfg, logger, metrics)
	if err != nil {
		return err
	}
	gw := proxy.New(proxy.NewSnapshotWithKeys(cfg, secrets, keys.cache), proxy.Options{
		Audit:          records,
		Log:            logger,
		Leaves:         leaves,
		Listeners:      lns.own,
		Metrics:        metrics,
		Limits:         limits,
		LimitsFailOpen: cfg.Limits.OnRedisError != "deny",
		Budgets:        budgets,
	})
	// A value replaced or gone at its source ends the WebSockets that
	// went with it, as a reload does for the vault's, and may expire at
	// another time.
	expiry := reload.NewExpiryWatch(logger, gw.Snapshot, reload.ExpiryInterval, time.Now)
	keys.cache.OnChange(func() { gw.Recheck(); expiry.Fetched() })
	srv := &http.Server{
		Handler:           gw,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		IdleTimeout:       120 * time.Second,
		HTTP2:             proxy.ServerHTTP2(),
		ErrorLog:          proxy.NewErrorLog(logger, "http"),
		BaseContext:       gw.BaseContext,
	}
	srv.RegisterOnShutdown(gw.Closing)
	base := lns.base
	// A reload reads the file served, however it was found: ./till.yaml
	// moved away must fail the reload, not bring in the built-in defaults.
	running := &servedConfig{path: cfg.File, addr: ln.Addr().String(), listenFlag: listen != "", adminToken: servedAdminToken(cfg), env: e}
	running.hadVault.Store(!missing(cfg.Vault.Path))
	rl := reload.New(cfg, secrets, reload.Options{
		Load:    running.load,
		Gateway: gw,
		Metrics: metrics,
		Log:     logger,
		Base:    base,
		Apply:   func(c *config.Config) { logs.apply(c.Log); keys.commit(); expiry.Changed() },
		Keys:    keys.forConfig,
		Vault:   running.vault,
		Seen:    seen,
	})

	served := make(chan error, 2)
	go func() { served <- srv.Serve(ln) }()
	if lns.obtain != nil {
		// The listener already serves the TLS config, so an ACME CA's
		// TLS-ALPN-01 challenge on this port can be answered.
		octx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := lns.obtain(octx)
		cancel()
		if err != nil {
			_ = srv.Close()
			return withHint(fmt.Errorf("obtain the listener's certificates for %v: %w", cfg.TLS.Names, err), "check tls.names and tls.acme in the config")
		}
	}
	logger.Info().Str("addr", ln.Addr().String()).Str("scheme", lns.scheme).Str("config", configName(cfg)).Int("routes", len(cfg.Routes)).Msg("till listening")
	reload.LogRoutes(logger, cfg, gw.Snapshot(), base)
	expiry.Start()
	defer expiry.Stop()
	var admin *http.Server
	if aln != nil {
		admin = &http.Server{
			Handler:           proxy.NewAdmin(proxy.AdminOptions{Gateway: gw, Metrics: metrics, Reload: rl.Reload, RestartNeeded: rl.RestartNeeded, TokenSHA256: cfg.Admin.TokenSHA256}),
			ReadHeaderTimeout: 10 * time.Second,
			MaxHeaderBytes:    64 << 10,
			IdleTimeout:       120 * time.Second,
			ErrorLog:          proxy.NewErrorLog(logger, "admin"),
		}
		logger.Info().Str("admin_addr", aln.Addr().String()).Msg("admin listening")
		go func() { served <- admin.Serve(aln) }()
	}
	stopWatch := rl.Watch()
	defer stopWatch()

	for {
		select {
		case err := <-served:
			return fmt.Errorf("serve: %w", err)
		case <-hup:
			_ = rl.Reload()
		case <-reopen:
			if err := sink.Reopen(); err != nil {
				logger.Error().Err(err).Msg("cannot reopen the audit file: still writing to the one open")
			} else {
				logger.Info().Msg("reopened the audit file")
			}
		case <-ctx.Done():
			return shutdown(cfg.ShutdownGrace, srv, admin, gw, sink, logger)
		}
	}
}

// shutdown lets the requests in flight finish within grace, or until a
// second SIGINT or SIGTERM, cuts those left after it, and closes the
// audit sink last.
func shutdown(grace time.Duration, srv, admin *http.Server, gw *proxy.Gateway, sink *audit.Sink, logger zerolog.Logger) error {
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	defer cutOnSignal(cancel, logger)()
	logger.Info().Str("grace", grace.String()).Msg("shutting down: letting requests in flight finish")
	if admin != nil {
		_ = admin.Close()
	}
	err := srv.Shutdown(sctx)
	if err != nil {
		// Past the grace period: the gateway cuts what remains first, so
		// that its records say shutdown, not client_closed as the closed
		// connections would.
		gw.Abort()
		_ = srv.Close()
	}
	// Upgraded connections, tunnels and intercepted requests are the
	// gateway's to wait for, or end, before the audit closes.
	if err = errors.Join(err, gw.Shutdown(sctx)); err != nil {
		logger.Warn().Err(err).Int64("cut", gw.Cut()).Msg("cut the requests still in flight (reason shutdown in their records)")
	}
	if err := sink.Close(); err != nil {
		return err
	}
	logger.Info().Msg("stopped")
	return nil
}

// cutOnSignal ends the grace period (cut) at the next SIGINT or SIGTERM:
// an operator's second Ctrl-C, or a supervisor that will not wait, gets
// the requests in flight cut at once and recorded (reason shutdown),
// where the SIGKILL it would send next loses their records. It must
// start before shutdown is logged, so that a signal sent once that line
// is out is not lost; stop ends the watch.
func cutOnSignal(cut context.CancelFunc, logger zerolog.Logger) (stop func()) {
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-again:
			logger.Warn().Msg("signalled again: cutting the requests still in flight now")
			cut()
		case <-done:
		}
	}()
	return func() {
		signal.Stop(again)
		close(done)
	}
}

// listeners are what serve listens on.
type listeners struct {
	main   net.Listener // the gateway's, TLS when tls.names is set
	admin  net.Listener // nil without admin.listen
	own    []netip.AddrPort
	scheme string // http or https
	base   string // the URL apps reach the gateway at
	// obtain gets the listener's certificates (ACME), when it needs any.
	obtain func(context.Context) error
}

// reachableAddr is the host:port an app on this host reaches the
// listener bound at a by: a listener on every interface (0.0.0.0, which
// Go binds and reports as [::]) by 127.0.0.1, which till test also takes
// for its own listener.
func reachableAddr(a *net.TCPAddr) string {
	if a.IP.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(a.Port))
	}
	return a.String()
}

// openListeners binds the gateway's listener on addr (with its TLS) and
// the admin one: both before the gateway exists, since tunnels may reach
// neither and the gateway must know their addresses.
func openListeners(cfg *config.Config, secrets map[string]vault.Secret, addr string, logger zerolog.Logger, logs *logOutput) (*listeners, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, withHint(fmt.Errorf("listen on %q: %w", addr, err), "pick another address with --listen or listen: in the config")
	}
	tcpAddr := ln.Addr().(*net.TCPAddr)
	// A name such as localhost passes for loopback in the config and in
	// --listen; Go resolves it like any other name (golang/go#22826),
	// through /etc/hosts and then DNS. What was bound decides.
	if err := cfg.CheckOpenRoutes(tcpAddr.String()); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen on %q bound %s: %w", addr, tcpAddr, err)
	}
	lns := &listeners{own: []netip.AddrPort{tcpAddr.AddrPort()}, scheme: "http", base: "http://" + reachableAddr(tcpAddr)}
	ltls, err := listenerTLS(cfg, secrets, tcpAddr.Port)
	if err != nil {
		ln.Close()
		return nil, err
	}
	if ltls != nil {
		ltls.Log = proxy.NewZapLogger(logger.With().Str("component", "certmagic").Logger(), logs.Level)
		var tc *tls.Config
		tc, lns.obtain = ltls.Config()
		ln = tls.NewListener(ln, tc)
		lns.scheme = "https"
		lns.base = "https://" + net.JoinHostPort(cfg.TLS.Names[0], strconv.Itoa(tcpAddr.Port))
	}
	lns.main = ln
	if cfg.Admin.Listen != "" {
		if lns.admin, err = listenAdmin(cfg.Admin); err != nil {
			ln.Close()
			return nil, err
		}
		if a, ok := lns.admin.Addr().(*net.TCPAddr); ok {
			lns.own = append(lns.own, a.AddrPort())
		}
	}
	return lns, nil
}

// socketFolderHint says where admin.listen's socket belongs.
const socketFolderHint = "give admin.listen a socket in a folder only till's user can write to, such as /run/till (chmod go-w FOLDER)"

// listenAdmin binds admin.listen: a TCP address, or a Unix socket that
// only till's user can use (unixsock.Listen).
func listenAdmin(a config.Admin) (net.Listener, error) {
	if sock := a.Socket(); sock != "" {
		ln, err := unixsock.Listen(sock)
		if errors.Is(err, unixsock.ErrInUse) {
			return nil, withHint(fmt.Errorf("admin listen on %q: %w", a.Listen, err), "stop that till first, or give each till its own admin.listen")
		}
		if err != nil {
			return nil, withHint(fmt.Errorf("admin listen on %q: %w", a.Listen, err), socketFolderHint)
		}
		return ln, nil
	}
	ln, err := net.Listen("tcp", a.Listen)
	if err != nil {
		return nil, withHint(fmt.Errorf("admin listen on %q: %w", a.Listen, err), "change admin.listen in the config")
	}
	// The config takes a name such as localhost for loopback, and so
	// asks no token; Go resolves it like any other name (golang/go#22826),
	// through /etc/hosts and then DNS. What was bound decides.
	if bound := ln.Addr().(*net.TCPAddr); a.TokenSHA256 == "" && !bound.IP.IsLoopback() {
		ln.Close()
		return nil, withHint(fmt.Errorf("admin listen on %q bound %s, which is not loopback, and admin.token_sha256 is not set", a.Listen, bound),
			"name a loopback address (127.0.0.1:9090), or set admin.token_sha256")
	}
	return ln, nil
}

// servedConfig is the config a running till serves: its file, the
// gateway's address (from --listen when listenFlag) and whether the vault
// was there at the last load.
type servedConfig struct {
	path       string
	addr       string // the address bound, whatever name the config gave
	listenFlag bool
	// adminToken is the admin.token_sha256 the admin listener takes: the
	// one till started with.
	adminToken string
	hadVault   atomic.Bool
	env        *env
}

// load is loadAll for a reload. A new config must pass the checks a
// restart with it would: no open routes off loopback, on the address
// served and on the listen address it names (which the restart serves
// unless --listen overrides it); no client whose token is the admin
// listener's (its admin.token_sha256 waits for a restart); the CA when it intercepts, or serves
// TLS under internal names or to client certificates; an audit file
// that can be opened. A vault that
// was there and is gone fails it: read as empty, it would take every key
// away at once (a volume unmounted, a file moved), where the keys loaded
// before keep serving.
func (s *servedConfig) load() (*config.Config, map[string]vault.Secret, error) {
	cfg, secrets, err := loadAll(s.path, s.env)
	if err == nil {
		err = cfg.CheckOpenRoutes(s.addr)
	}
	if err == nil && !s.listenFlag && cfg.Listen != s.addr {
		err = cfg.CheckOpenRoutes(cfg.Listen)
	}
	if err == nil {
		err = cfg.CheckServedAdminToken(s.adminToken)
	}
	if err == nil {
		// Interception and the listener's TLS take effect at a
		// restart, which would fail without the CA: a config that
		// cannot start is no reload.
		_, err = interceptionLeaves(cfg, secrets)
	}
	if err == nil {
		_, err = listenerTLS(cfg, secrets, 0)
	}
	if err == nil {
		// The audit file is opened at a restart too.
		err = checkAudit(cfg)
	}
	present := err == nil && !missing(cfg.Vault.Path)
	if err == nil && s.hadVault.Load() && !present {
		err = withHint(fmt.Errorf("the vault file %s is gone; the keys loaded before it went stay in use", displayPath(cfg.Vault.Path)),
			"put it back (a volume not mounted?); or restart till to run without it")
	}
	if err != nil {
		return nil, nil, err
	}
	s.hadVault.Store(present)
	return cfg, secrets, nil
}

// servedAdminToken is the admin.token_sha256 the admin listener of cfg
// takes, "" when it has none.
func servedAdminToken(cfg *config.Config) string {
	if cfg.Admin.Listen == "" {
		return ""
	}
	return cfg.Admin.TokenSHA256
}

// vault reads the vault cfg names, for a reload whose config was refused;
// a vault gone since start, or in a folder every user can write, is an
// error, as for load.
func (s *servedConfig) vault(cfg *config.Config) (map[string]vault.Secret, error) {
	if s.hadVault.Load() && missing(cfg.Vault.Path) {
		return nil, errors.New("the vault file is gone")
	}
	if err := config.CheckVaultModes(cfg); err != nil {
		return nil, err
	}
	return readSecrets(cfg, s.env)
}

// loadServed loads the config and vault serve starts with, and the
// files' state before they were read: an edit that lands while till
// starts is one the reload watch sees. The audit signing key that
// audit.sign needs is made first, and the files read again: the vault
// till wrote itself is no edit to reload. The config's log settings are
// applied once it is read.
func loadServed(cfgPath string, e *env, logs *logOutput, logger zerolog.Logger) (*config.Config, map[string]vault.Secret, *reload.Seen, error) {
	seen := &reload.Seen{}
	cfg, secrets, err := loadAllSeen(cfgPath, e, seen)
	if err != nil {
		return nil, nil, nil, err
	}
	logs.apply(cfg.Log)
	if _, ok := secrets[config.AuditKeySecret]; !cfg.Audit.Sign || ok {
		return cfg, secrets, seen, nil
	}
	if _, err := auditKey(cfg, secrets, e, logger); err != nil {
		return nil, nil, nil, err
	}
	seen = &reload.Seen{}
	cfg, secrets, err = loadAllSeen(cfgPath, e, seen)
	if err != nil {
		return nil, nil, nil, err
	}
	logs.apply(cfg.Log)
	return cfg, secrets, seen, nil
}

// openAudit opens the audit sink of the config, with its signing key
// (created in the vault on first use) when audit.sign is set.
func openAudit(cfg *config.Config, secrets map[string]vault.Secret, e *env, logger zerolog.Logger) (*audit.Sink, error) {
	o := audit.Options{
		Path:     cfg.Audit.File,
		Fsync:    cfg.Audit.Fsync,
		MaxSize:  cfg.Audit.MaxSize,
		MaxFiles: cfg.Audit.MaxFiles,
		OnError: func(err error, record []byte) {
			ev := logger.Error().Err(err)
			if len(record) > 0 {
				ev = ev.RawJSON("record", record)
			}
			ev.Msg("cannot write an audit record: refusing requests until the audit sink works again")
		},
		Log: func(msg string) { logger.Warn().Msg(msg) },
	}
	if cfg.Audit.Sign {
		key, err := auditKey(cfg, secrets, e, logger)
		if err != nil {
			return nil, err
		}
		o.Signer = key
	}
	sink, err := audit.Open(o)
	if err != nil {
		return nil, withHint(err, auditHint(err))
	}
	return sink, nil
}

// auditKey returns the key that signs audit checkpoints, from the vault,
// where it is created when missing.
func auditKey(cfg *config.Config, secrets map[string]vault.Secret, e *env, logger zerolog.Logger) (ed25519.PrivateKey, error) {
	stored, ok := secrets[config.AuditKeySecret]
	if !ok {
		v, err := openVault(cfg, e, true)
		if err == nil {
			err = v.Update(func(m map[string]vault.Secret) error {
				if s, ok := m[config.AuditKeySecret]; ok {
					stored = s // made meanwhile, by another till
					return nil
				}
				pem, err := audit.NewKey()
				if err != nil {
					return err
				}
				stored = vault.NewSecret(config.AuditKeySecret, pem, time.Now())
				m[config.AuditKeySecret] = stored
				return nil
			})
		}
		if err != nil {
			return nil, withHint(fmt.Errorf("create the audit signing key in the vault: %w", err), "audit.sign needs a vault till can write once; or set audit.sign: false")
		}
		logger.Info().Str("secret", config.AuditKeySecret).Msg("created the audit signing key in the vault (till audit pubkey prints its public key)")
	}
	return parseAuditKey(stored)
}

// parseAuditKey reads the audit signing key from its vault entry.
func parseAuditKey(stored vault.Secret) (ed25519.PrivateKey, error) {
	v, _ := stored.Value()
	key, err := audit.ParseKey(v)
	if err != nil {
		return nil, withHint(fmt.Errorf("vault entry %q: %w", config.AuditKeySecret, err), "restore the vault from a backup")
	}
	return key, nil
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

// maxCACert caps the CA certificate file (forward.ca_cert): a PEM
// certificate is a few kilobytes.
const maxCACert = 1 << 20

// readCAFile reads the CA certificate file, a regular file of at most
// maxCACert bytes: a named pipe would hold the command or reload, a
// device never end.
func readCAFile(path string) ([]byte, error) {
	return regfile.Read(path, maxCACert)
}

// loadAuthority loads till's CA: its certificate from forward.ca_cert, its
// key from the vault. what names the feature that needs it.
func loadAuthority(cfg *config.Config, secrets map[string]vault.Secret, what, alt string) (*ca.CA, error) {
	hint := "create the CA with: till ca init " + alt
	// Read at each reload too: a device there (/dev/zero) must not take
	// the running till's memory, nor a named pipe hold the reload.
	certPEM, err := readCAFile(cfg.Forward.CACert)
	if err != nil {
		return nil, withHint(fmt.Errorf("%s needs the CA certificate: %w", what, err), hint)
	}
	key, ok := secrets[config.CASecret]
	if !ok {
		// The certificate is there: its key is lost, and till ca init
		// would refuse to replace the certificate.
		return nil, withHint(fmt.Errorf("%s needs the CA key: no %q in the vault", what, config.CASecret), lostCAKeyHint(cfg.Forward.CACert)+" "+alt)
	}
	stored, _ := key.Value()
	authority, err := ca.Load(certPEM, stored)
	if errors.Is(err, ca.ErrKeyMismatch) {
		return nil, withHint(fmt.Errorf("%s: %w", cfg.Forward.CACert, err), "was till ca init run with another vault?")
	}
	if err != nil {
		return nil, certError(cfg.Forward.CACert, fmt.Errorf("%s: %w", cfg.Forward.CACert, err))
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
		HTTP1First:    cfg.Forward.Enabled,
	}, nil
}

// configName names the config in messages: its file, or the built-in
// one, named so that "NAME has", "in NAME" read alike.
func configName(cfg *config.Config) string {
	if cfg.File == "" {
		return "the built-in config (no till.yaml)"
	}
	return cfg.File
}
