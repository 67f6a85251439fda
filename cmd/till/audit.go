package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tillgw/till/audit"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/internal/termtext"
)

// untilInterrupted runs fn, and returns early when ctx ends (SIGINT,
// SIGTERM), leaving fn to the process's exit. main takes those signals
// for every command, so a command that does not watch ctx cannot be
// stopped: the audit commands read files anyone may have put among the
// trail's, a FIFO that blocks its open or a gzip bomb that takes hours,
// and no deadline of a read reaches a blocked open.
func untilInterrupted(ctx context.Context, fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return interruptedError("interrupted")
	}
}

// interruptedError is an interruption (errInterrupted to errors.Is) that
// stored nothing because it was not storing anything.
type interruptedError string

func (e interruptedError) Error() string        { return string(e) }
func (e interruptedError) Is(target error) bool { return target == errInterrupted }

func runAudit(args []string, e *env) error {
	if len(args) == 0 {
		return usageError{"usage: till audit summary|verify|pubkey ..."}
	}
	switch args[0] {
	case "summary":
		return runAuditSummary(args[1:], e)
	case "verify":
		return runAuditVerify(args[1:], e)
	case "pubkey":
		return runAuditPubkey(args[1:], e)
	}
	// The command is not echoed: it could be a key pasted in the wrong place.
	return unknownSubcommand("audit", args[0])
}

const auditSummarySynopsis = "till audit summary [-c FILE] [--since D] [--until T] [--secret NAME | --key-fp FP] [--client NAME] [--route NAME] [--json] FILE..."

// keyFPRE is a key fingerprint as audit records and till secret list
// print it.
var keyFPRE = regexp.MustCompile(`^sha256:[0-9a-f]{16}$`)

// runAuditSummary prints the uses of each key per client and route, with
// refusals and errors, from audit files: who used this key, when, for
// what. It needs no config: the files are all it reads.
func runAuditSummary(args []string, e *env) error {
	var cfgPath, since, until, secret, keyFP, client, route string
	var asJSON bool
	fs := newFlags("audit summary", e.stderr, &cfgPath)
	fs.StringVar(&since, "since", "", "only requests since a `time`: a duration before now (24h, 7d, 90m) or RFC 3339")
	fs.StringVar(&until, "until", "", "only requests until an RFC 3339 `time`")
	fs.StringVar(&secret, "secret", "", "only the uses of this secret `name`")
	fs.StringVar(&keyFP, "key-fp", "", "only the uses of the key with this `fingerprint` (sha256:…)")
	fs.StringVar(&client, "client", "", "only the requests of this client `name`")
	fs.StringVar(&route, "route", "", "only the requests on this route `name`")
	fs.BoolVar(&asJSON, "json", false, "print a JSON array of rows")
	files, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return withHint(usageError{"usage: " + auditSummarySynopsis + " (expected at least one FILE)"},
			"name the audit file and its rotated files, compressed or not: till audit summary audit.log*")
	}
	if err := auditFileNames(files); err != nil {
		return err
	}
	// No flag value is echoed: one could be a key pasted in its place.
	now := time.Now()
	var f audit.SummaryFilter
	if since != "" {
		if f.Since, err = audit.ParseSince(since, now); err != nil {
			return usageError{"--since: " + err.Error()}
		}
	}
	if until != "" {
		if f.Until, err = time.Parse(time.RFC3339, until); err != nil {
			return usageError{"--until: want an RFC 3339 time (2026-12-01T00:00:00Z)"}
		}
		if !strings.ContainsAny(until, ".,") { // RFC 3339 parsing takes either before a fraction
			// A time to the second, as the table prints LAST, covers its
			// whole second.
			f.Until = f.Until.Add(time.Second - 1)
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && f.Since.After(f.Until) {
		return usageError{"--since is after --until"}
	}
	if secret != "" && keyFP != "" {
		return usageError{"--secret and --key-fp exclude each other: give one"}
	}
	if keyFP != "" && !keyFPRE.MatchString(keyFP) {
		return withHint(usageError{fmt.Sprintf("--key-fp is not a key fingerprint (%d characters, not shown)", len(keyFP))},
			"a fingerprint is sha256: and 16 hex digits, as in till secret list and the key_fp of an audit record")
	}
	if client != "" {
		if err := clientNameArg(client, "--client"); err != nil {
			return err
		}
	}
	if route != "" {
		if err := config.ValidName(route); err != nil {
			return withHint(usageError{fmt.Sprintf("--route is not a route name (%d characters, not shown)", len(route))},
				"a route name "+err.Error())
		}
	}
	f.Secret, f.KeyFP, f.Client, f.Route = secret, keyFP, client, route

	// Oldest first, whatever order the shell's glob gave: a request's
	// record is then read after its key's uses.
	if files, err = audit.Chronological(files); err != nil {
		return err
	}
	s := audit.NewSummary(f)
	for _, path := range files {
		if err := s.ReadFile(path); err != nil {
			if errors.Is(err, audit.ErrNoEvent) {
				return withHint(err, ownLogHint)
			}
			return err
		}
	}
	rows := s.Rows()
	if asJSON {
		return writeJSON(e.stdout, rows)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY_FP\tSECRET\tCLIENT\tROUTE\tFORWARDED\tDENIED\tERROR\tUNFINISHED\tFIRST\tLAST")
	for _, r := range rows {
		// The files may not be as till wrote them: their text reaches
		// the terminal as printable text only.
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", dash(printable(r.KeyFP, 80)), dash(printable(r.Secret, 80)),
			dash(printable(r.Client, 80)), dash(printable(r.Route, 80)),
			r.Forwarded, r.Denied, r.Error, r.Unfinished, r.First.Format(time.RFC3339), r.Last.Format(time.RFC3339))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// On stderr, so that the table on stdout stays one a script can cut.
	st := s.Stats()
	fmt.Fprintf(e.stderr, "%s read from %s; %s counted\n",
		plural(st.Records, "record"), plural(st.Files, "file"), plural(st.Requests, "request"))
	if st.Cut > 0 {
		fmt.Fprintf(e.stderr, "left out %s cut short (being written, or by a crash)\n", plural(st.Cut, "last line"))
	}
	if st.Unfinished > 0 {
		fmt.Fprintf(e.stderr, "%s without its request's record (UNFINISHED): till stopped after the key went out, the request is still running, its record is in a file not given, or it ended with another key of its pool\n",
			plural(st.Unfinished, "key use"))
	}
	return nil
}

// ownLogHint is the hint for a file whose lines lack an "event"
// (audit.ErrNoEvent): till's own log, given for its audit trail.
const ownLogHint = "this looks like till's own log (serve's stderr): give the audit trail, audit.file or what serve wrote to stdout"

// dash stands for an empty field in a table, where a blank would shift
// the columns a reader's eye (or awk) follows.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// plural is "1 file", "2 files".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

const auditVerifySynopsis = "till audit verify [-c FILE] [--pubkey FILE] [--checkpoint LINE_OR_FILE] FILE..."

// runAuditVerify checks the hash chain of audit files, given oldest
// first, and the signed checkpoints when given the public key.
func runAuditVerify(args []string, e *env) error {
	var cfgPath, pubkeyFile, checkpoint string
	fs := newFlags("audit verify", e.stderr, &cfgPath)
	fs.StringVar(&pubkeyFile, "pubkey", "", "check the checkpoints' signatures with the public key in this `file` (from till audit pubkey)")
	fs.StringVar(&checkpoint, "checkpoint", "", "a checkpoint record kept elsewhere (the `line`, or a file whose last checkpoint is used) that the trail must hold")
	files, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return withHint(usageError{"usage: " + auditVerifySynopsis + " (expected at least one FILE)"},
			"name the rotated files oldest first, then the current one: till audit verify audit.log.2 audit.log.1 audit.log")
	}
	if err := auditFileNames(files); err != nil {
		return err
	}
	var o audit.VerifyOptions
	if pubkeyFile != "" {
		b, err := os.ReadFile(pubkeyFile)
		if err != nil {
			return withHint(unreadableFlagFile("--pubkey", pubkeyFile, err), "till audit pubkey prints the key to keep in that file")
		}
		if o.PublicKey, err = audit.ParseAuthorizedKey(b); err != nil {
			return fmt.Errorf("--pubkey %s: %w", displayPath(pubkeyFile), err)
		}
	}
	if checkpoint != "" {
		if o.Checkpoint, err = checkpointArg(checkpoint); err != nil {
			return err
		}
	}
	r, err := audit.Verify(files, o)
	if err != nil {
		var br *audit.Break
		if errors.Is(err, audit.ErrNoCheckpoint) {
			return withHint(err, "verify again in a minute, or once till stops (it signs then); a file just rotated: give the one before it first")
		}
		if errors.Is(err, audit.ErrUnsignedRecords) {
			return withHint(err, "no checkpoint signed those records as they were written: they may have been rewritten; if audit.sign was off for them, verify --pubkey the files written after it was turned on")
		}
		if errors.Is(err, audit.ErrNoEvent) {
			return withHint(err, ownLogHint)
		}
		if errors.As(err, &br) {
			return withHint(err, "the trail is not as till wrote it from that line on; files go oldest first")
		}
		return err
	}
	if o.PublicKey == nil {
		// The chain holds no secret: anyone who can write the files can
		// cut its end, edit its last record or chain it anew.
		fmt.Fprintln(e.stderr, "note: only signed checkpoints (audit.sign: true, verify --pubkey) show an edited last record or a re-written chain, and only one kept elsewhere (--checkpoint) records cut from the end")
	}
	fmt.Fprintf(e.stdout, "ok: %s in %s chain", plural(r.Records, "record"), plural(r.Files, "file"))
	switch {
	case o.PublicKey != nil:
		fmt.Fprintf(e.stdout, "; %s signed, %s after the last\n", plural(r.Checkpoints, "checkpoint"), plural(r.Unsigned, "record"))
	case r.Checkpoints > 0:
		fmt.Fprintf(e.stdout, "; %s not checked (no --pubkey)\n", plural(r.Checkpoints, "checkpoint"))
	default:
		fmt.Fprintln(e.stdout)
	}
	if !r.LastSigned.IsZero() {
		// Records cut back to a checkpoint leave a trail that verifies:
		// the time its last signature has shows whether till's last
		// records are missing.
		fmt.Fprintf(e.stdout, "last signed at %s: records till wrote after that can be removed unseen (a checkpoint kept elsewhere shows them: --checkpoint)\n",
			r.LastSigned.UTC().Format(time.RFC3339))
	}
	if o.Checkpoint != nil {
		fmt.Fprintln(e.stdout, "the checkpoint given is in the trail")
	}
	switch {
	case r.StartsAfter != "" && r.StartsAfter == filepath.Base(files[0]):
		// The file at that name before this one was removed (its
		// records with it) or moved away under another name.
		fmt.Fprintf(e.stdout, "the first record follows an earlier %s, since removed or renamed, which was not given: that link is not checked\n", printable(r.StartsAfter, 200))
	case r.StartsAfter != "" && givenName(files, r.StartsAfter):
		// prev_file is the name the file had when the next began: till
		// renames rotated files (FILE.1 to FILE.2, …) until max_files
		// drops them, so a name given now can be another file's.
		fmt.Fprintf(e.stdout, "the first record follows %s as then named (rotation renames files: that one was since renamed or removed, as max_files does), which was not given: that link is not checked\n", printable(r.StartsAfter, 200))
	case r.StartsAfter != "":
		fmt.Fprintf(e.stdout, "the first record follows %s, which was not given: that link is not checked\n", printable(r.StartsAfter, 200))
	}
	return nil
}

// auditFileNames refuses a file whose name holds a newline or another
// rune a terminal acts on. till names no file so, but whoever can write
// the audit folder can, and a glob (audit.log*) gives it: the errors of
// summary and verify quote the file they are about, and such a name
// would forge lines of till's output there.
func auditFileNames(files []string) error {
	for _, f := range files {
		if termtext.Escape(f, 0) != f {
			return withHint(fmt.Errorf("the file name %s holds a control or invisible character (shown escaped): not an audit file till wrote", termtext.Escape(f, 200)),
				"rename it, or leave it out of the files given")
		}
	}
	return nil
}

// givenName reports whether one of files has the base name name.
func givenName(files []string, name string) bool {
	for _, f := range files {
		if filepath.Base(f) == name {
			return true
		}
	}
	return false
}

// checkpointArg reads --checkpoint: a checkpoint record, or a file whose
// last checkpoint record is taken.
func checkpointArg(arg string) ([]byte, error) {
	if strings.HasPrefix(strings.TrimSpace(arg), "{") {
		return []byte(arg), nil
	}
	f, err := audit.OpenFile(arg)
	if err != nil {
		return nil, withHint(unreadableFlagFile("--checkpoint", arg, err), "give a checkpoint record ({...}) or a file of the trail that holds one")
	}
	defer f.Close()
	var last []byte
	err = audit.ReadLines(f, arg, func(_ int, line []byte) error {
		if bytes.Contains(line, []byte(`"event":"checkpoint"`)) {
			last = bytes.Clone(line)
		}
		return nil
	})
	if err == nil && last == nil {
		err = fmt.Errorf("--checkpoint %s: no checkpoint record in it", displayPath(arg))
	}
	return last, err
}

// runAuditPubkey prints the public key of the audit signing key, in the
// OpenSSH format, for verifiers to keep.
func runAuditPubkey(args []string, e *env) error {
	var cfgPath string
	fs := newFlags("audit pubkey", e.stderr, &cfgPath)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, "till audit pubkey [-c FILE]"); err != nil {
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
	stored, ok := secrets[config.AuditKeySecret]
	if !ok {
		return withHint(fmt.Errorf("no audit signing key (%q) in the vault %s", config.AuditKeySecret, displayPath(cfg.Vault.Path)),
			"set audit.sign: true and start till serve once: it creates the key")
	}
	key, err := parseAuditKey(stored)
	if err != nil {
		return err
	}
	_, err = io.WriteString(e.stdout, audit.AuthorizedKey(key))
	return err
}

// unreadableFlagFile says why the file a flag names could not be read,
// without its name: the value may be a key pasted into the wrong flag.
func unreadableFlagFile(flag, path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("%s: cannot read the file (%d characters, not shown): %w", flag, len(path), err)
}
