package main

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/internal/atomicfile"
	"github.com/tillgw/till/proxy"
)

func runClient(args []string, e *env) error {
	if len(args) == 0 {
		return usageError{"usage: till client add|list|rotate|rm ..."}
	}
	switch args[0] {
	case "add":
		return runClientAdd(args[1:], e)
	case "list", "ls":
		return runClientList(args[1:], e)
	case "rotate":
		return runClientRotate(args[1:], e)
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
	flags.BoolVar(&cert, "cert", false, "make the client prove itself with a client certificate from till's CA (written as NAME.crt and NAME.key), not its token alone")
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
	named := err == nil && slices.ContainsFunc(cfg.Clients, func(c config.Client) bool { return c.Name == name })
	if err != nil && write {
		// Routes that name the client already are what this very edit
		// makes valid.
		cfg, err = configWithClient(path, config.Client{Name: name, TokenSHA256: strings.Repeat("0", 64), CIDRs: prefixes, Cert: cert}, err)
	}
	if err != nil {
		return err
	}
	if named {
		return withHint(fmt.Errorf("client %q is already in %s", name, path), "to replace its token: till client rotate "+name)
	}
	token, err := proxy.NewToken()
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(token))
	entry := config.Client{Name: name, TokenSHA256: hex.EncodeToString(sum[:]), CIDRs: prefixes, Cert: cert}
	var files *clientCert
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
		if files, err = signClientCert(cfgPath, name, entry.TokenSHA256, e); err != nil {
			return err
		}
		if err := files.create(); err != nil {
			return err
		}
	}
	if write {
		// The config is edited before the token is printed: a token
		// printed for an edit that failed would be a token for nothing.
		err := config.EditFile(path, func(data []byte) ([]byte, error) { return config.AddClient(path, data, entry) })
		if err != nil {
			if files != nil {
				files.remove(len(files.names))
			}
			return err
		}
	}
	fmt.Fprintf(e.stdout, "token for client %q (shown once; till keeps only its SHA-256):\n\n  %s\n\n", name, token)
	if write {
		fmt.Fprintf(e.stdout, "added it to the clients: list of %s; a running till accepts its token at its next reload (it watches the file)\n", path)
	} else {
		lines, err := config.ClientLines(entry)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s\n\n%s", pasteWhere(path), lines)
	}
	if cert {
		fmt.Fprintf(e.stdout, "\nits client certificate and key: %s (signed by till's CA; the key is shown to no one else)\n", files)
	}
	if cfg.Forward.Enabled {
		fmt.Fprintf(e.stdout, "\nthe app sends it as X-Till-Token, as its SDK's API key, or as the proxy password:\n")
	} else {
		fmt.Fprintf(e.stdout, "\nthe app sends it as X-Till-Token or as its SDK's API key; as a proxy password once forward.enabled is true:\n")
	}
	fmt.Fprintf(e.stdout, "  HTTPS_PROXY=%s\n", proxyURL(cfg, name, "$TILL_TOKEN"))
	return nil
}

// configWithClient is the config file at path as it would be with the
// client c added, when that parses; otherwise err, the error of the file
// as it is.
func configWithClient(path string, c config.Client, err error) (*config.Config, error) {
	data, rerr := os.ReadFile(path)
	if rerr != nil {
		return nil, err
	}
	out, aerr := config.AddClient(path, data, c)
	if aerr != nil {
		return nil, err
	}
	return config.Parse(path, out, filepath.Dir(path))
}

// clientCert is a client certificate signed by till's CA, bound to its
// token's digest (a new token revokes it), and its key, held in memory
// until they are written as NAME.crt (0644) and NAME.key (0600) in the
// working folder.
type clientCert struct {
	names [2]string // the certificate's file, then the key's
	data  [2][]byte
}

// clientCertModes are the files' modes, in the order of clientCert.names.
var clientCertModes = [2]os.FileMode{0o644, 0o600}

// signClientCert signs a certificate for the client name and its token's
// digest.
func signClientCert(cfgPath, name, tokenSHA256 string, e *env) (*clientCert, error) {
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
	return &clientCert{names: [2]string{name + ".crt", name + ".key"}, data: [2][]byte{certPEM, keyPEM}}, nil
}

// create writes the files where neither exists yet; it leaves neither
// when it fails.
func (c *clientCert) create() error {
	for i, n := range c.names {
		made := i // the files this call made so far
		fh, err := os.OpenFile(n, os.O_WRONLY|os.O_CREATE|os.O_EXCL, clientCertModes[i])
		if err == nil {
			made++
			_, err = fh.Write(c.data[i])
			if cerr := fh.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			c.remove(made)
			if errors.Is(err, fs.ErrExist) {
				return withHint(fmt.Errorf("%s already exists", n), "move it away, or run this in another folder")
			}
			return fmt.Errorf("write the client certificate: %w", err)
		}
	}
	return nil
}

// replace writes the files over those there, each whole or not at all,
// owned by the caller as create makes them: whoever owns a file at
// NAME.key (another user, in a folder they can write) must not get the
// key that proves the client.
func (c *clientCert) replace() error {
	for i, n := range c.names {
		if err := atomicfile.ReplaceOwn(n, c.data[i], clientCertModes[i]); err != nil {
			return fmt.Errorf("write the client certificate: %w", err)
		}
	}
	return nil
}

// remove deletes the first n files create made.
func (c *clientCert) remove(n int) {
	for _, name := range c.names[:n] {
		os.Remove(name)
	}
}

// String names the files.
func (c *clientCert) String() string { return c.names[0] + " and " + c.names[1] }

// pasteWhere says where client add's config lines go: the clients: list
// of the config file, or, without one, of the one till init writes (the
// built-in defaults take no clients).
func pasteWhere(path string) string {
	if path == "" {
		return "there is no config file yet: till init writes one; then add to its clients: list:"
	}
	return "add to the clients: list of " + path + ":"
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
	if len(cfg.Clients) == 0 {
		fmt.Fprintf(e.stderr, "till: hint: %s names no clients: till client add NAME makes one\n", displayPath(configName(cfg)))
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

// clientArgs reads the arguments of till client CMD NAME: the client's
// name, and the config file that holds it, loaded.
func clientArgs(cmd string, args []string, e *env) (name, path string, cfg *config.Config, err error) {
	var cfgPath string
	flags := newFlags("client "+cmd, e.stderr, &cfgPath)
	pos, err := parseInterleaved(flags, args)
	if err != nil {
		return "", "", nil, err
	}
	if err := wantArgs(pos, 1, "till client "+cmd+" NAME"); err != nil {
		return "", "", nil, err
	}
	name = pos[0]
	if err := clientNameArg(name, "NAME"); err != nil {
		return "", "", nil, err
	}
	if path, err = configPath(cfgPath, e); err != nil {
		return "", "", nil, err
	}
	if path == "" {
		return "", "", nil, errors.New("no config file: clients live in till.yaml")
	}
	cfg, err = loadConfig(path, e, nil)
	return name, path, cfg, err
}

// runClientRotate gives a client a new token, printed once: the config's
// digest for it is replaced in place (its cidrs and the routes and budgets
// naming it stay), so a running till takes the new token and refuses the
// old at its next reload. A client with cert: true gets a new certificate
// too: the old one was bound to the old token.
func runClientRotate(args []string, e *env) error {
	name, path, cfg, err := clientArgs("rotate", args, e)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(cfg.Clients, func(c config.Client) bool { return c.Name == name })
	if i < 0 {
		return withHint(fmt.Errorf("no client %q in %s", name, path), "till client list shows them; till client add makes one")
	}
	token, err := proxy.NewToken()
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(token))
	digest := hex.EncodeToString(sum[:])
	var files *clientCert
	if cfg.Clients[i].Cert {
		if files, err = signClientCert(path, name, digest, e); err != nil {
			return err
		}
	}
	// As for client add: the config first, then the files, then the
	// token, which is a token for nothing unless both landed.
	err = config.EditFile(path, func(data []byte) ([]byte, error) { return config.SetClientToken(path, data, name, digest) })
	if err != nil {
		return err
	}
	if files != nil {
		if err := files.replace(); err != nil {
			return withHint(fmt.Errorf("the config has a new token for %q, but its certificate: %w", name, err), "run till client rotate "+name+" again")
		}
	}
	fmt.Fprintf(e.stdout, "new token for client %q (shown once; till keeps only its SHA-256):\n\n  %s\n\n", name, token)
	fmt.Fprintf(e.stdout, "wrote its digest to %s; a running till takes it at its next reload (it watches the file), and the old token stops working then\n", path)
	if files != nil {
		fmt.Fprintf(e.stdout, "\nits new client certificate and key: %s (the old certificate is revoked with the old token)\n", files)
	}
	return nil
}

// runClientRm removes a client from the config file (its token stops
// working at the next reload). A client that routes still name is refused:
// removing it there changes who may use those routes.
func runClientRm(args []string, e *env) error {
	name, path, cfg, err := clientArgs("rm", args, e)
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
	fmt.Fprintf(e.stdout, "removed client %q from %s; a running till revokes its token at its next reload (it watches the file)\n", name, path)
	if i := slices.IndexFunc(cfg.Clients, func(c config.Client) bool { return c.Name == name }); i >= 0 && removeClientCert(cfg.Clients[i]) {
		fmt.Fprintf(e.stdout, "deleted its certificate and key, %s.crt and %s.key\n", name, name)
	}
	return nil
}

// removeClientCert deletes the NAME.crt and NAME.key client add --cert
// wrote in the working folder, when NAME.crt is the certificate of this
// client and token: files of the same name that are anything else stay.
func removeClientCert(c config.Client) bool {
	data, err := os.ReadFile(c.Name + ".crt")
	if err != nil {
		return false
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return false
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil || len(cert.URIs) != 1 || cert.URIs[0].String() != proxy.CertURI(c.Name, c.TokenSHA256) {
		return false
	}
	os.Remove(c.Name + ".key")
	return os.Remove(c.Name+".crt") == nil
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
