package main

import (
	"flag"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
)

// commandHelp is what till help CMD (and till CMD --help) prints above a
// command's flags. Every command run dispatches has an entry
// (TestHelpCoversEveryCommand); a command group (secret, client, ca,
// audit) is listed in commandGroups and each of its subcommands has one.
var commandHelp = map[string]helpEntry{
	"init": {
		synopsis: "till init [-c FILE] [--dir DIR]",
		short:    "write a starter till.yaml; create the vault and its key if absent",
		about:    "Write a starter till.yaml (its example routes commented out) that till check accepts, and create the vault and its key when absent.",
		examples: []string{"till init", "till init --dir /etc/till"},
	},
	"serve": {
		synopsis: "till serve [-c FILE] [--listen ADDR]",
		short:    "run the gateway",
		about: "Run the gateway. The log (stderr) names the address it bound and each route's base URL; audit records go to audit.file (stdout by default). " +
			"SIGHUP reloads the config and vault; SIGTERM lets requests in flight finish (shutdown_grace) and stops.",
		examples: []string{"till serve", "till serve -c /etc/till/till.yaml --listen 127.0.0.1:0   # any free port"},
	},
	"check": {
		synopsis: "till check [-c FILE]",
		short:    "validate the config, vault, secrets and their expiry",
		about:    "Validate the config, the vault, each route's secret and its expiry, fetching once every key that comes from a source (Vault, AWS Secrets Manager, files, exec); exit 1 on any error, with the source, ref and cause, and warn 14 days before a secret expires.",
		examples: []string{"till check", "till check -c till.yaml && till serve -c till.yaml"},
	},
	"test": {
		synopsis: "till test [-c FILE] [--client NAME] [--from ADDR] [--model NAME] [--mint] [--json] METHOD URL",
		short:    "dry-run a request: route, verdict, secret; exit 0 allowed, 1 refused",
		about: "Dry-run a request through the config, sending nothing upstream: the route, the verdict and the secret (name or source ref, and fingerprint; a source's key is fetched), or why it would be refused; exit 0 allowed, 1 refused. " +
			"URL is a path (/openai/v1/models) or a URL on till's own listener (the base URLs the serve log prints) for a base-URL request, " +
			"or another http:// or https:// URL for a proxied one. --from is the source address, for clients' cidrs; --model the model a request body would name, for allow.models; --mint obtains a token from the route's token endpoint for a request it allows, to check it (the token is not shown; the ask, a use of the key, is recorded in the audit trail first; while a running till holds the audit file, that till is asked to mint, through its admin listener, with TILL_ADMIN_TOKEN when it wants one).",
		examples: []string{
			"till test GET /openai/v1/models",
			"till test --client web --from 10.1.2.3 POST http://127.0.0.1:8080/openai/v1/chat/completions",
			"till test --model gpt-4o-mini POST /openai/v1/chat/completions",
		},
	},
	"secret set": {
		synopsis: "till secret set NAME [-c FILE] [--expires WHEN] [--json | --pem] [--file FILE | < VALUE]",
		short:    "store a key read from stdin or a file",
		about: "Store a key in the vault, read from stdin or --file (one trailing newline trimmed) or typed at a prompt without echo; never from the command line. " +
			"Setting an existing name rotates it. WHEN is a date (2027-01-31), an RFC 3339 time or a duration (90d, 12h). " +
			"--json reads an object of fields (a field may span lines, as a service account's private_key does); --pem a PEM key. " +
			"At the prompt, Ctrl-C or Ctrl-D stores nothing.",
		examples: []string{
			`printf %s "$OPENAI_API_KEY" | till secret set openai --expires 90d`,
			`till secret set twilio --json --file twilio.json   # {"sid": "...", "token": "..."}`,
		},
	},
	"secret list": {
		synopsis: "till secret list [-c FILE] [--json]",
		short:    "list the secrets (never their values)",
		about:    "List the vault's secrets and the source refs routes use (fetched once): name, source, fingerprint, created, updated (the version time), expires and status (ok, expiring within 14 days, expired, unavailable); never their values.",
		examples: []string{"till secret list", "till secret list --json"},
	},
	"secret rm": {
		synopsis: "till secret rm NAME [-c FILE] [--force]",
		short:    "delete a secret",
		about:    "Delete a secret from the vault. While a route attaches it, it is kept unless --force: that route's requests then get 503 secret_missing.",
		examples: []string{"till secret rm openai"},
	},
	"client add": {
		synopsis: "till client add NAME [-c FILE] [--cidr CIDR]... [--cert] [--write]",
		short:    "print a new client token and its config lines (--write: add them)",
		about: "Create a client: print its token once (till keeps only its SHA-256) and its entry for the config's clients: list, " +
			"or add the entry there with --write. The app sends the token as X-Till-Token, as its SDK's API key, or as the proxy password.",
		examples: []string{"till client add web --cidr 10.0.0.0/8", "till client add web --write"},
	},
	"client list": {
		synopsis: "till client list [-c FILE]",
		short:    "list the clients",
		about:    "List the config's clients: name, the start of the token's SHA-256, source ranges, and the routes that name the client.",
		examples: []string{"till client list"},
	},
	"client rotate": {
		synopsis: "till client rotate NAME [-c FILE]",
		short:    "give a client a new token; the old one dies at the reload",
		about: "Give a client a new token, printed once: its digest replaces the old one in the config file (cidrs, cert and the routes and budgets naming it stay), " +
			"and the old token stops working when till reloads. A client with cert: true also gets a new NAME.crt and NAME.key in the working folder; the old certificate is revoked with the old token.",
		examples: []string{"till client rotate web"},
	},
	"client rm": {
		synopsis: "till client rm NAME [-c FILE]",
		short:    "remove a client that nothing names",
		about: "Remove a client from the config file (refused while a route or budget names it); its token stops working when till reloads, " +
			"which a running till does on its own within a second of the file changing.",
		examples: []string{"till client rm web"},
	},
	"ca init": {
		synopsis: "till ca init [-c FILE]",
		short:    "create the interception CA",
		about:    "Create this installation's interception CA: its certificate goes to forward.ca_cert (till-ca.pem), its private key into the vault as till-ca. It never replaces one.",
		examples: []string{"till ca init", "till ca init -c examples/http-proxy/till.yaml"},
	},
	"ca export": {
		synopsis: "till ca export [-c FILE]",
		short:    "print the interception CA's certificate",
		about:    "Print the interception CA's certificate (PEM), for the apps and trust stores that must trust it.",
		examples: []string{"till ca export > till-ca.pem", "till ca export | keytool -importcert -noprompt -alias till -keystore till.jks -storepass changeit"},
	},
	"env": {
		synopsis: "till env [-c FILE] [--client NAME] [--format shell|dotenv]",
		short:    "print the environment an app needs to use till as its proxy",
		about: "Print the environment an app needs to use till as its HTTP(S) proxy: HTTP(S)_PROXY, NO_PROXY, a CA bundle for curl, Python and Go " +
			"(the system roots plus till's CA, written beside the CA), and NODE_USE_ENV_PROXY and NODE_EXTRA_CA_CERTS for Node. " +
			"With --client, the proxy URL holds ${TILL_TOKEN}: set it before eval.",
		examples: []string{`eval "$(till env)"`, `export TILL_TOKEN=till_...; eval "$(till env --client web)"`, "till env --format dotenv > .env"},
	},
	"audit summary": {
		synopsis: auditSummarySynopsis,
		short:    "uses of each key per client and route, with refusals and errors",
		about:    "Count the request records per key fingerprint, secret, client and route (forwarded, denied, error, first and last), and the key uses whose request has no record in the files (unfinished: a crash, a request still running), from rotated and gzip files too: who used this key, when, for what.",
		examples: []string{"till audit summary --since 24h --secret openai audit.log*", "till audit summary --json audit.log"},
	},
	"audit verify": {
		synopsis: auditVerifySynopsis,
		short:    "check the hash chain (files oldest first); exit 1 at the first break",
		about:    "Check the hash chain of audit files given oldest first and, with --pubkey, the signed checkpoints; exit 1 at the first break, as FILE:LINE: reason.",
		examples: []string{"till audit verify audit.log.2 audit.log.1 audit.log", "till audit verify --pubkey audit.pub audit.log"},
	},
	"audit pubkey": {
		synopsis: "till audit pubkey [-c FILE]",
		short:    "the audit signing key's public key (ssh-ed25519 ...)",
		about:    "Print the public key of the audit signing key (ssh-ed25519 ...), for verifiers to keep; till serve creates the key when audit.sign is true.",
		examples: []string{"till audit pubkey > audit.pub"},
	},
	"health": {
		synopsis: "till health [-c FILE] [--url URL]",
		short:    "exit 0 if the running till is ready (admin /readyz), else 1",
		about: "Ask a running till whether it is ready: exit 0 when the admin listener's /readyz answers 200, 1 otherwise, with the reason on stderr. " +
			"The URL defaults to the config's admin.listen; a base URL gets /readyz; unix:PATH asks the admin socket. For Docker HEALTHCHECK and compose healthcheck (no shell needed).",
		examples: []string{"till health", "till health --url http://127.0.0.1:9090"},
	},
	"usage": {
		synopsis: "till usage [-c FILE] [--json] [--client NAME] [--budget NAME] [--url URL]",
		short:    "each budget counter: limit, used, remaining, reset time",
		about: "Print each budget counter: its limit, what was used (reservations in flight included), what remains and when a calendar window resets. " +
			"With --url it asks that admin listener (GET /admin/usage); otherwise, with limits.redis, it reads Redis, which every till shares, and without, it asks the running till's admin listener of admin.listen. It sends $TILL_ADMIN_TOKEN to an admin listener when set (to the config's listener only when admin.token_sha256 is its hash; through a socket, unix:PATH, only when its folder is writable by its owner alone).",
		examples: []string{"till usage", "till usage --client web --json"},
	},
	"version": {
		synopsis: "till version [-c FILE]",
		short:    "print the version, commit, build date and Go version",
		about:    "Print till's version, commit, build date and the Go version it was built with.",
		examples: []string{"till version"},
	},
	"help": {
		synopsis: "till help [COMMAND [SUBCOMMAND]]",
		short:    "a command's usage, with examples (also: till COMMAND --help)",
		about:    "Print the usage of till, or of a command with examples; till COMMAND --help prints the same.",
		examples: []string{"till help secret set", "till client add --help"},
	},
}

// commandGroups are the commands that take a subcommand, with their
// subcommands in the order help lists them.
var commandGroups = map[string][]string{
	"secret": {"set", "list", "rm"},
	"client": {"add", "list", "rotate", "rm"},
	"ca":     {"init", "export"},
	"audit":  {"summary", "verify", "pubkey"},
}

// helpEntry is one command's help: its synopsis, with every flag, and
// what it does in a line (for till help) and in full (for till help CMD).
type helpEntry struct {
	synopsis string
	short    string
	about    string
	examples []string
}

// commandOrder is the order till help lists the commands in.
var commandOrder = []string{
	"init", "serve", "check", "test", "secret set", "secret list", "secret rm",
	"client add", "client list", "client rotate", "client rm", "ca init", "ca export",
	"env", "audit summary", "audit verify", "audit pubkey", "health", "usage", "version", "help",
}

// printUsage writes till's usage: each command's synopsis (without -c,
// which every command takes) and what it does.
func printUsage(w io.Writer) {
	fmt.Fprint(w, "till is an outbound API gateway that holds your provider keys.\n\nUsage:\n")
	for _, name := range commandOrder {
		h := commandHelp[name]
		fmt.Fprintf(w, "  %s\n      %s\n", strings.Replace(h.synopsis, " [-c FILE]", "", 1), h.short)
	}
	fmt.Fprint(w, `
Every command takes -c FILE (default $TILL_CONFIG, then ./till.yaml; init
writes its config at -c or in --dir, never at $TILL_CONFIG).
Global flags, before or after the command: --log-level debug|info|warn|error,
--log-format json|console (they win over the config's log:).
Environment: TILL_CONFIG, TILL_KEY_FILE, TILL_PASSPHRASE, TILL_ADMIN_TOKEN.
`)
}

// commandNames are the top-level commands, for suggestions.
func commandNames() []string {
	var names []string
	for name := range commandHelp {
		if !strings.Contains(name, " ") {
			names = append(names, name)
		}
	}
	for name := range commandGroups {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// isHelpFlag reports whether arg asks for help, as the flag package reads
// it.
func isHelpFlag(arg string) bool {
	switch arg {
	case "-h", "--h", "-help", "--help":
		return true
	}
	return false
}

// helpRequest handles till help CMD and till CMD ... --help. done is
// false when there is nothing to handle, or when the command itself is
// to run with args, which then hold --help, and print its usage and flags
// (parseFlags does) to stdout: the flags come from the flag set the
// command really parses. Bare till help is left to run's usage.
func helpRequest(args []string, e *env) (next []string, ne *env, code int, done bool) {
	var words []string
	switch {
	case len(args) == 0:
		return args, e, 0, false
	case args[0] == "help" || isHelpFlag(args[0]):
		words = args[1:]
		if len(words) > 0 && configFlagWords(words[0]) > 0 {
			// till -c FILE help [CMD]: the file has no part in help.
			words = words[min(configFlagWords(words[0]), len(words)):]
		}
		if len(words) == 0 {
			return args[:1], e, 0, false
		}
		if isHelpFlag(words[0]) {
			words = []string{"help"} // till help --help
		}
	default:
		i := slices.IndexFunc(args, func(a string) bool { return a == "--" || isHelpFlag(a) })
		if i < 0 || args[i] == "--" {
			return args, e, 0, false
		}
		words = args[:i]
	}
	cmd := words[0]
	if subs, ok := commandGroups[cmd]; ok {
		if len(words) < 2 || !slices.Contains(subs, canonicalSub(words[1])) {
			// A missing or unknown subcommand gets the group's help,
			// which never repeats what was typed.
			printGroupHelp(e.stdout, cmd, subs)
			return nil, e, exitOK, true
		}
		cmd += " " + canonicalSub(words[1])
	}
	if _, ok := commandHelp[cmd]; !ok {
		return nil, e, report(unknownCommand(words[0]), e.stderr), true
	}
	if cmd == "help" {
		printHelp(e.stdout, cmd, nil)
		return nil, e, exitOK, true
	}
	out := *e
	out.stderr = e.stdout
	return append(strings.Fields(cmd), "--help"), &out, 0, false
}

// canonicalSub maps a subcommand's alias to its name.
func canonicalSub(sub string) string {
	switch sub {
	case "ls":
		return "list"
	case "remove":
		return "rm"
	}
	return sub
}

// printHelp writes a command's usage, about, examples and, given its
// flag set, flags.
func printHelp(w io.Writer, name string, fs *flag.FlagSet) {
	h := commandHelp[name]
	fmt.Fprintf(w, "Usage: %s\n", synopsis(name))
	if h.about != "" {
		fmt.Fprintf(w, "\n%s\n", wrap(h.about, 76))
	}
	if len(h.examples) > 0 {
		fmt.Fprintf(w, "\nExamples:\n")
		for _, ex := range h.examples {
			fmt.Fprintf(w, "  %s\n", ex)
		}
	}
	if fs != nil {
		fmt.Fprintf(w, "\nFlags:\n")
		out := fs.Output()
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(out)
	}
}

// printGroupHelp writes the help of a command group: each subcommand's
// synopsis and first example.
func printGroupHelp(w io.Writer, group string, subs []string) {
	fmt.Fprintf(w, "Usage: till %s %s ...\n\nCommands:\n", group, strings.Join(subs, "|"))
	for _, sub := range subs {
		fmt.Fprintf(w, "  %s\n", commandHelp[group+" "+sub].synopsis)
	}
	fmt.Fprintf(w, "\nExamples:\n")
	for _, sub := range subs {
		fmt.Fprintf(w, "  %s\n", commandHelp[group+" "+sub].examples[0])
	}
	fmt.Fprintf(w, "\nRun till %s COMMAND --help for a command's flags.\n", group)
}

// wrap breaks s into lines of at most width characters, at spaces.
func wrap(s string, width int) string {
	var b strings.Builder
	n := 0
	for i, word := range strings.Fields(s) {
		if i > 0 && n+1+len(word) > width {
			b.WriteByte('\n')
			n = 0
		} else if i > 0 {
			b.WriteByte(' ')
			n++
		}
		b.WriteString(word)
		n += len(word)
	}
	return b.String()
}

// nameLike is input that may be a mistyped command, and not a key pasted
// in the wrong place: a short word of lowercase letters and dashes.
var nameLike = regexp.MustCompile(`^[a-z][a-z-]{0,15}$`)

// suggest returns the candidate closest to word by edit distance when it
// is close enough to be a typo of it, or "". Only candidates are ever
// returned, never word: it may be a key pasted by mistake.
func suggest(word string, candidates []string) string {
	if !nameLike.MatchString(word) {
		return ""
	}
	limit := 2
	if len(word) <= 4 {
		limit = 1
	}
	best, bestD := "", limit+1
	for _, c := range candidates {
		if d := editDistance(word, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and transpositions of adjacent
// letters (the usual typos) cost one each.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// unknownCommand is the usage error for a command till does not know. It
// never holds the command, which could be a key pasted in the wrong place.
func unknownCommand(cmd string) error {
	if s := suggest(cmd, commandNames()); s != "" {
		return usageError{fmt.Sprintf("unknown command (did you mean %q?)", s)}
	}
	return usageError{"unknown command (see till help)"}
}

// unknownSubcommand is unknownCommand for a group's subcommands.
func unknownSubcommand(group, sub string) error {
	subs := commandGroups[group]
	if s := suggest(sub, subs); s != "" {
		return usageError{fmt.Sprintf("unknown %s command (did you mean %q?)", group, s)}
	}
	return usageError{fmt.Sprintf("unknown %s command (want %s)", group, orList(subs))}
}

// orList is "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// synopsis is a command's usage line.
func synopsis(name string) string {
	if h, ok := commandHelp[name]; ok {
		return h.synopsis
	}
	return "till " + name
}
