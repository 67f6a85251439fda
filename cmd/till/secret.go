package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/internal/termtext"
	"github.com/tillgw/till/proxy"
	"github.com/tillgw/till/reload"
	"github.com/tillgw/till/vault"
	"github.com/tillgw/till/vault/source"
)

// maxSecretInput caps what secret set reads from stdin.
const maxSecretInput = 1 << 20

func runSecret(ctx context.Context, args []string, e *env) error {
	if len(args) == 0 {
		return usageError{"usage: till secret set|list|rm ..."}
	}
	switch args[0] {
	case "set":
		return runSecretSet(ctx, args[1:], e)
	case "list", "ls":
		return runSecretList(args[1:], e)
	case "rm", "remove":
		return runSecretRm(args[1:], e)
	}
	// The command is not echoed: it could be a key pasted in the wrong place.
	return unknownSubcommand("secret", args[0])
}

func runSecretSet(ctx context.Context, args []string, e *env) error {
	var cfgPath, expires, file string
	var asJSON, asPEM bool
	fs := newFlags("secret set", e.stderr, &cfgPath)
	fs.StringVar(&file, "file", "", "read the value from this `file`, not stdin")
	fs.BoolVar(&asPEM, "pem", false, "read a PEM key that spans lines (a GitHub App's private key)")
	fs.StringVar(&expires, "expires", "", "expiry: a date (2027-01-31), a time (RFC 3339) or a duration from now (90d, 12h)")
	fs.BoolVar(&asJSON, "json", false, `read a JSON object of fields ({"sid": "...", "token": "..."})`)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, "till secret set NAME [--expires WHEN] [--json | --pem] [--file FILE | < value]"); err != nil {
		return withHint(err, "the value is read from stdin or --file, never from the command line: printf %s \"$KEY\" | till secret set NAME")
	}
	name := pos[0]
	if err := vault.ValidName(name); err != nil {
		return usageError{err.Error()}
	}
	if name == config.CASecret {
		return withHint(fmt.Errorf("%q holds till's CA key", name), "it is managed by till ca init")
	}
	if name == config.AuditKeySecret {
		return withHint(fmt.Errorf("%q holds till's audit signing key", name), "till serve creates it when audit.sign is true")
	}
	now := time.Now()
	var exp time.Time
	if expires != "" {
		if exp, err = parseExpires(expires, now); err != nil {
			return usageError{err.Error()}
		}
	}
	if asJSON && asPEM {
		return usageError{"--json and --pem do not go together"}
	}
	var end inputEnd
	switch {
	case asPEM:
		end = pemEnd
	case asJSON:
		end = jsonEnd
	}
	raw, from, err := readSecretFrom(ctx, e, file, end)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		err := fmt.Errorf("no value from %s: nothing stored", from)
		if from == "stdin" {
			// NAME is not echoed: with no value after it, it may be the
			// key itself, typed where the name goes.
			err = withHint(err, `is the variable set? printf %s "$KEY" prints nothing when KEY is unset; or run the command at a terminal and paste the value`)
		}
		return err
	}
	s, err := parseSecret(name, raw, asJSON, asPEM, now, e)
	if err != nil {
		return err
	}
	s.Expires = exp

	cfg, err := configFor(cfgPath, e)
	if err != nil {
		return err
	}
	made := missing(cfg.Vault.Path)
	v, err := openVault(cfg, e, true)
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return errInterrupted
	}
	verb := "stored"
	if err := v.Update(func(m map[string]vault.Secret) error {
		if old, ok := m[name]; ok {
			verb = "rotated"
			s.Created = old.Created
			if old.Fingerprint() == s.Fingerprint() {
				// The same value again (a script run twice) is no
				// rotation: vault.max_age still counts from the last.
				verb, s.Updated = "kept", old.Updated
				if exp.IsZero() {
					s.Expires = old.Expires
				}
			}
		}
		m[name] = s
		return nil
	}); err != nil {
		return err
	}
	if made {
		reportNewVault(e, cfg)
	}
	fmt.Fprintf(e.stdout, "%s secret %q (%s) in %s", verb, name, s.Fingerprint(), displayPath(v.Path()))
	// The date the secret expires, which vault.max_age may make earlier
	// than --expires said, or set without it.
	if at := s.ExpiresAt(cfg.Vault.MaxAge); !at.IsZero() {
		fmt.Fprintf(e.stdout, ", expires %s", at.UTC().Format(time.RFC3339))
		if !at.Equal(s.Expires) {
			fmt.Fprint(e.stdout, " (vault.max_age)")
		}
	}
	if verb == "kept" {
		fmt.Fprint(e.stdout, ": the value it holds already, so not a rotation")
	}
	fmt.Fprintln(e.stdout)
	return nil
}

// readSecretFrom reads the value to store from file, or else from stdin
// (a prompt at a terminal), and says where it came from.
func readSecretFrom(ctx context.Context, e *env, file string, end inputEnd) (raw []byte, from string, err error) {
	if file != "" {
		// A named pipe (<(pass show openai)) is read too: its open waits
		// for the writer, and a signal must end that wait.
		raw, err = untilRead(ctx, func() ([]byte, error) { return readFlagFile(file) })
		if errors.Is(err, errInterrupted) {
			return nil, "", err
		}
		if err != nil {
			return nil, "", unreadableFlagFile("--file", file, err)
		}
		from = "the --file file" // its path may be a key pasted into the wrong flag
	} else {
		raw, err = readSecretInput(ctx, e, end)
		if errors.Is(err, errInterrupted) || errors.Is(err, errNoValue) {
			return nil, "", err
		}
		if err != nil {
			return nil, "", fmt.Errorf("read the secret from stdin: %w", err)
		}
		from = "stdin"
		if f, ok := e.stdin.(*os.File); ok && isTerminal(f) {
			from = "the prompt"
		}
	}
	if len(raw) > maxSecretInput {
		return nil, "", fmt.Errorf("the secret in %s is larger than %d bytes", from, maxSecretInput)
	}
	return raw, from, nil
}

// readFlagFile reads the file secret set --file names, up to one byte
// past maxSecretInput.
func readFlagFile(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxSecretInput+1))
}

// parseSecret makes the secret name of raw: a PEM key, JSON fields or
// one line. It warns on stderr of a value that begins or ends with a
// space, which is most often a paste gone wrong.
func parseSecret(name string, raw []byte, asJSON, asPEM bool, now time.Time, e *env) (vault.Secret, error) {
	switch {
	case asPEM:
		value, err := vault.CleanPEM(raw)
		if err != nil {
			return vault.Secret{}, err
		}
		return vault.NewSecret(name, value, now), nil
	case asJSON:
		fields, err := vault.ParseFields(raw)
		if err != nil {
			return vault.Secret{}, err
		}
		return vault.NewFieldSecret(name, fields, now), nil
	}
	value, err := vault.CleanValue(raw)
	if errors.Is(err, vault.ErrLineBreak) {
		return vault.Secret{}, withHint(err, "a PEM key takes --pem, a JSON document (a service account key) --json; an API key is one line")
	}
	if err != nil {
		return vault.Secret{}, err
	}
	if source.NotADocument(value) {
		// Not echoed: its fields may be keys.
		return vault.Secret{}, withHint(errors.New("the value is a JSON object or array, not one key: sent as one, every key in it would reach the provider"),
			"store a document of fields with --json (a route names one with {secret.FIELD}), or pipe the key alone")
	}
	if strings.TrimSpace(value) != value {
		fmt.Fprintln(e.stderr, "till: warning: the value begins or ends with a space; it is stored as it is (set it again if the space is not part of the key)")
	}
	if len(value) < proxy.MinEchoLength {
		fmt.Fprintln(e.stderr, "till: warning: the value is "+reload.ShortKeyWarning)
	}
	return vault.NewSecret(name, value, now), nil
}

// parseExpires reads a date (2027-01-31, midnight UTC), an RFC 3339 time or
// a duration from now (90d, 12h, 30m), and refuses a time that is not
// after now: a key stored already expired would be refused at its first
// use, or, under on_expired: warn, used with a warning nobody asked for;
// and a time after 9999 in UTC, which the vault cannot hold.
// What does not parse is never echoed (a key pasted after --expires must
// not reach a terminal's scrollback); a date that parsed is, reformatted.
func parseExpires(s string, now time.Time) (time.Time, error) {
	var t time.Time
	var shown string
	if d, err := time.Parse(time.DateOnly, s); err == nil {
		t, shown = d, d.Format(time.DateOnly)
	} else if d, err := time.Parse(time.RFC3339, s); err == nil {
		t, shown = d, d.Format(time.RFC3339)
	} else {
		d, err := config.ParseDuration(s)
		if err != nil || d <= 0 {
			return time.Time{}, errors.New("--expires: want a date (2027-01-31), a time (2027-01-31T12:00:00Z) or a duration (90d, 12h)")
		}
		return now.Add(d), nil
	}
	if !t.After(now) {
		return time.Time{}, fmt.Errorf("--expires %s is in the past: want a later date or a duration from now (90d, 12h)", shown)
	}
	if t.UTC().Year() > 9999 {
		// The vault keeps it in UTC, in four digits.
		return time.Time{}, fmt.Errorf("--expires %s is after the year 9999 in UTC: want an earlier time", shown)
	}
	return t, nil
}

// secretRow is one line of secret list; it never holds a value.
type secretRow struct {
	Name        string     `json:"name"`
	Source      string     `json:"source"` // "vault" for the vault file, else the source's name
	Fingerprint string     `json:"fingerprint"`
	Created     time.Time  `json:"created"`
	Updated     time.Time  `json:"updated"`
	VersionTime *time.Time `json:"version_time"`
	Expires     *time.Time `json:"expires"`
	Status      string     `json:"status"`
	Error       string     `json:"error,omitempty"` // why a ref cannot be fetched
}

func runSecretList(args []string, e *env) error {
	var cfgPath string
	var asJSON bool
	fs := newFlags("secret list", e.stderr, &cfgPath)
	fs.BoolVar(&asJSON, "json", false, "print a JSON array")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, "till secret list [--json]"); err != nil {
		return err
	}
	cfg, err := configFor(cfgPath, e)
	if err != nil {
		return err
	}
	secrets, err := readSecrets(cfg, e)
	if err != nil {
		return err
	}
	now := time.Now()
	rows := make([]secretRow, 0, len(secrets))
	for _, s := range secrets {
		maxAge := cfg.Vault.MaxAge
		if config.OwnKey(s.Name) {
			maxAge = 0 // till's own keys: serve and check age them not
		}
		rows = append(rows, rowOf(s, "vault", maxAge, now))
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	refs, err := fetchRefs(cfg)
	if err != nil {
		return err
	}
	for _, st := range refs {
		if st.Err != nil {
			rows = append(rows, secretRow{Name: st.Ref, Source: st.Source, Status: "unavailable", Error: st.Err.Error()})
			continue
		}
		rows = append(rows, rowOf(st.Secret, st.Source, cfg.Vault.MaxAge, now))
	}
	if asJSON {
		return writeJSON(e.stdout, rows)
	}
	if len(rows) == 0 {
		fmt.Fprintf(e.stderr, "till: hint: %s holds no secrets: till secret set NAME stores one (till check names the ones routes need)\n", displayPath(cfg.Vault.Path))
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSOURCE\tFINGERPRINT\tCREATED\tUPDATED\tEXPIRES\tSTATUS")
	stamp := func(t *time.Time) string {
		if t == nil || t.IsZero() {
			return "-"
		}
		return t.Format(time.RFC3339)
	}
	for _, r := range rows {
		fp, status := r.Fingerprint, r.Status
		if r.Error != "" {
			// A source's words: its own errors escape them; so does
			// the table, whatever a later source forgets.
			fp, status = "-", "unavailable: "+termtext.Escape(r.Error, 0)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Source, fp, stamp(&r.Created), stamp(r.VersionTime), stamp(r.Expires), status)
	}
	return tw.Flush()
}

// rowOf is the list row of a secret from source (its version time is
// Updated).
func rowOf(s vault.Secret, source string, maxAge time.Duration, now time.Time) secretRow {
	row := secretRow{
		Name:        s.Name,
		Source:      source,
		Fingerprint: s.Fingerprint(),
		Created:     s.Created.UTC(),
		Updated:     s.Updated.UTC(),
		Status:      string(s.Status(now, maxAge)),
	}
	version := row.Updated
	row.VersionTime = &version
	if exp := s.ExpiresAt(maxAge); !exp.IsZero() {
		exp = exp.UTC()
		row.Expires = &exp
	}
	return row
}

func runSecretRm(args []string, e *env) error {
	var cfgPath string
	var force bool
	fs := newFlags("secret rm", e.stderr, &cfgPath)
	fs.BoolVar(&force, "force", false, "remove it even if routes use it (their requests then get 503)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, "till secret rm NAME [--force]"); err != nil {
		return err
	}
	// Checked before anything prints the name: ValidName's error does not
	// hold it, in case it is a key pasted in its place.
	name := pos[0]
	if err := vault.ValidName(name); err != nil {
		return withHint(usageError{err.Error()}, "till secret list shows the names")
	}
	cfg, err := configFor(cfgPath, e)
	if err != nil {
		return err
	}
	if name == config.CASecret {
		return withHint(fmt.Errorf("%q holds till's CA key: removing it would break interception", name), "it is managed by till ca init")
	}
	if name == config.AuditKeySecret {
		return withHint(fmt.Errorf("%q holds till's audit signing key: till would sign with a new key, which verifiers holding the old public key reject", name), "till audit pubkey prints its public key")
	}
	if routes := cfg.SecretRoutes(name); len(routes) > 0 && !force {
		return withHint(fmt.Errorf("secret %q is used by routes %s: their requests would get 503 secret_missing", name, strings.Join(routes, ", ")),
			"change or remove those routes first, or pass --force")
	}
	if _, err := os.Stat(cfg.Vault.Path); err != nil {
		return fmt.Errorf("secret %q not found: no vault at %s", name, displayPath(cfg.Vault.Path))
	}
	v, err := openVault(cfg, e, false)
	if err != nil {
		return err
	}
	if err := v.Remove(name); errors.Is(err, vault.ErrNotFound) {
		return withHint(err, "till secret list shows the names")
	} else if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "removed secret %q\n", name)
	return nil
}
