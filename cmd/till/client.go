package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/proxy"
)

func runClient(args []string, e *env) error {
	if len(args) == 0 {
		return usageError{"usage: till client add|list|rm ..."}
	}
	switch args[0] {
	case "add":
		return runClientAdd(args[1:], e)
	case "list", "ls":
		return runClientList(args[1:], e)
	case "rm", "remove":
		return runClientRm(args[1:], e)
	}
	// The command is not echoed: it could be a key pasted in the wrong place.
	return unknownSubcommand("client", args[0])
}

// stringList collects a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// runClientAdd prints a new token once, with the config lines to paste.
// The token is stored nowhere: the config keeps only its SHA-256.
func runClientAdd(args []string, e *env) error {
	var cfgPath string
	var cidrs stringList
	var cert, write bool
	flags := newFlags("client add", e.stderr, &cfgPath)
	flags.Var(&cidrs, "cidr", "source `range` the client may use (repeatable)")
	flags.BoolVar(&cert, "cert", false, "also require a client certificate from till's CA")
	flags.BoolVar(&write, "write", false, "add the client to the config file's clients: list instead of printing its lines")
	pos, err := parseInterleaved(flags, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, synopsis("client add")); err != nil {
		return err
	}
	name := pos[0]
	if err := clientNameArg(name, "NAME"); err != nil {
		return err
	}
	if err := config.ValidClientName(name); err != nil {
		return usageError{"NAME " + err.Error()}
	}
	var prefixes []netip.Prefix
	for i, c := range cidrs {
		p, err := config.ParsePrefix(c)
		if err != nil {
			// Not echoed: a value pasted into the wrong flag may be a key.
			return usageError{fmt.Sprintf("--cidr value %d (%d characters) %v", i+1, len(c), err)}
		}
		prefixes = append(prefixes, p)
	}
	path, err := configPath(cfgPath, e)
	if err != nil {
		return err
	}
	if path == "" && write {
		return withHint(errors.New("no config file for --write to add the client to"), "till init writes one")
	}
	cfg, err := loadConfig(path, e, nil)
	if err != nil {
		return err
	}
	if slices.ContainsFunc(cfg.Clients, func(c config.Client) bool { return c.Name == name }) {
		return withHint(fmt.Errorf("client %q is already in %s", name, path), "to replace its token, till client rm "+name+" first")
	}
	token, err := proxy.NewToken()
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(token))
	entry := config.Client{Name: name, TokenSHA256: hex.EncodeToString(sum[:]), CIDRs: prefixes, Cert: cert}
	var certFiles []string
	if cert {
		// The config must take the client before its private key is
		// written: a key for a client that cannot exist is a key for
		// nothing, left on disk.
		if path == "" {
			return withHint(errors.New("--cert: a client certificate needs a TLS listener, and there is no config file"), "till init writes one; set tls.names in it")
		}
		data, err := os.ReadFile(path)
		if err == nil {
			_, err = config.AddClient(path, data, entry)
		}
		if err != nil {
			return err
		}
		if certFiles, err = writeClientCert(cfgPath, name, entry.TokenSHA256, e); err != nil {
			return err
		}
	}
	if write {
		// The config is edited before the token is printed: a token
		// printed for an edit that failed would be a token for nothing.
		err := config.EditFile(path, func(data []byte) ([]byte, error) { return config.AddClient(path, data, entry) })
		if err != nil {
			for _, f := range certFiles {
				os.Remove(f)
			}
			return err
		}
	}
	fmt.Fprintf(e.stdout, "token for client %q (shown once; till keeps only its SHA-256):\n\n  %s\n\n", name, token)
	if write {
		fmt.Fprintf(e.stdout, "added it to the clients: list of %s; reload till (SIGHUP) to accept its token\n", path)
	} else {
		fmt.Fprintf(e.stdout, "add to the clients: list of %s:\n\n", configDisplay(path))
		fmt.Fprintf(e.stdout, "  - name: %s\n    token_sha256: %s\n", name, hex.EncodeToString(sum[:]))
		if len(prefixes) > 0 {
			shown := make([]string, len(prefixes))
			for i, p := range prefixes {
				shown[i] = p.String()
			}
			fmt.Fprintf(e.stdout, "    cidrs: [%s]\n", strings.Join(shown, ", "))
		}
		if cert {
			fmt.Fprintf(e.stdout, "    cert: true\n")
		}
	}
	if cert {
		fmt.Fprintf(e.stdout, "\nits client certificate and key: %s (signed by till's CA; the key is shown to no one else)\n", strings.Join(certFiles, " and "))
	}
	fmt.Fprintf(e.stdout, "\nthe app sends it as X-Till-Token, as its SDK's API key, or as the proxy password:\n")
	fmt.Fprintf(e.stdout, "  HTTPS_PROXY=%s\n", proxyURL(cfg, name, "$TILL_TOKEN"))
	return nil
}

// writeClientCert signs a client certificate for name, bound to its token's
// digest (a new token revokes it), with till's CA, and writes NAME.crt
// (0644) and NAME.key (0600) in the working folder; it returns their
// names, and leaves neither when it fails.
func writeClientCert(cfgPath, name, tokenSHA256 string, e *env) ([]string, error) {
	cfg, secrets, err := loadAll(cfgPath, e)
	if err != nil {
		return nil, err
	}
	authority, err := loadAuthority(cfg, secrets, "--cert", "")
	if err != nil {
		return nil, err
	}
	uri, err := url.Parse(proxy.CertURI(name, tokenSHA256))
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := authority.SignClient(name, uri, time.Now())
	if err != nil {
		return nil, err
	}
	certFile, keyFile := name+".crt", name+".key"
	var written []string
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{keyFile, keyPEM, 0o600}, {certFile, certPEM, 0o644}} {
		fh, err := os.OpenFile(f.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.mode)
		if err != nil {
			for _, w := range written {
				os.Remove(w)
			}
			return nil, fmt.Errorf("write the client certificate: %w", err)
		}
		written = append(written, f.path)
		_, werr := fh.Write(f.data)
		if cerr := fh.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			for _, w := range written {
				os.Remove(w)
			}
			return nil, werr
		}
	}
	return []string{certFile, keyFile}, nil
}

func configDisplay(path string) string {
	if path == "" {
		return "till.yaml"
	}
	return path
}

func runClientList(args []string, e *env) error {
	var cfgPath string
	flags := newFlags("client list", e.stderr, &cfgPath)
	pos, err := parseInterleaved(flags, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, "till client list"); err != nil {
		return err
	}
	cfg, err := configFor(cfgPath, e)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTOKEN_SHA256\tCIDRS\tROUTES")
	for _, c := range cfg.Clients {
		var cidrs []string
		for _, p := range c.CIDRs {
			cidrs = append(cidrs, p.String())
		}
		fmt.Fprintf(tw, "%s\t%s…\t%s\t%s\n", c.Name, c.TokenSHA256[:12], dash(strings.Join(cidrs, ",")), dash(strings.Join(cfg.ClientRoutes(c.Name), ",")))
	}
	return tw.Flush()
}

// runClientRm removes a client from the config file (its token stops
// working at the next reload). A client that routes still name is refused:
// removing it there changes who may use those routes.
func runClientRm(args []string, e *env) error {
	var cfgPath string
	flags := newFlags("client rm", e.stderr, &cfgPath)
	pos, err := parseInterleaved(flags, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, "till client rm NAME"); err != nil {
		return err
	}
	name := pos[0]
	if err := clientNameArg(name, "NAME"); err != nil {
		return err
	}
	path, err := configPath(cfgPath, e)
	if err != nil {
		return err
	}
	if path == "" {
		return errors.New("no config file: clients live in till.yaml")
	}
	cfg, err := loadConfig(path, e, nil)
	if err != nil {
		return err
	}
	var users []string
	if routes := cfg.ClientRoutes(name); len(routes) > 0 {
		users = append(users, "routes "+strings.Join(routes, ", "))
	}
	if budgets := cfg.ClientBudgets(name); len(budgets) > 0 {
		users = append(users, "budgets "+strings.Join(budgets, ", "))
	}
	if len(users) > 0 {
		return withHint(fmt.Errorf("client %q is named by %s", name, strings.Join(users, " and ")), "remove it from their clients: lists first")
	}
	err = config.EditFile(path, func(data []byte) ([]byte, error) { return config.RemoveClient(path, data, name) })
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "removed client %q from %s; reload till (SIGHUP) to revoke its token\n", name, path)
	return nil
}

// proxyURL is the HTTP(S)_PROXY URL of the config's listener, with the
// client's name and token (as given: a variable) when client is not
// empty. A listener with tls.names speaks only TLS: its URL is https, at
// the first name its certificate holds.
func proxyURL(cfg *config.Config, client, token string) string {
	scheme, addr := "http://", clientAddr(cfg.Listen)
	if len(cfg.TLS.Names) > 0 {
		scheme = "https://"
		if _, port, err := net.SplitHostPort(addr); err == nil {
			addr = net.JoinHostPort(cfg.TLS.Names[0], port)
		}
	}
	if client == "" {
		return scheme + addr
	}
	return scheme + client + ":" + token + "@" + addr
}
