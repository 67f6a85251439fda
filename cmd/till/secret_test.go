package main

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tillgw/till/vault"
)

// TestSecretSetFile: --file reads the value from a file (one trailing
// newline trimmed), never echoing it nor the path, and says why it failed.
func TestSecretSetFile(t *testing.T) {
	c := newCLI(t)
	os.WriteFile("openai.key", []byte(key+"\n"), 0o600)
	out := c.must("", "secret", "set", "openai", "--file", "openai.key")
	if !strings.Contains(out, `stored secret "openai"`) || strings.Contains(out, key) {
		t.Fatalf("secret set --file: %q", out)
	}
	fp := vault.NewSecret("openai", key, time.Now()).Fingerprint()
	listed := c.must("", "secret", "list")
	if !strings.Contains(listed, "CREATED") || !strings.Contains(listed, fp) {
		t.Errorf("secret list: want a CREATED column and the fingerprint of the file's value:\n%s", listed)
	}
	// The path is not shown: it may be the key, given where its path goes.
	if _, errOut, code := c.run("", "secret", "set", "openai", "--file", key); code != 1 || strings.Contains(errOut, key) ||
		!strings.Contains(errOut, "--file: cannot read the file (28 characters, not shown): no such file or directory") {
		t.Errorf("secret set --file of a missing file: exit %d: %s", code, errOut)
	}
	os.WriteFile("empty.key", nil, 0o600)
	if _, errOut, code := c.run("", "secret", "set", "openai", "--file", "empty.key"); code != 1 || !strings.Contains(errOut, "no value from the --file file") {
		t.Errorf("secret set --file of an empty file: exit %d: %s", code, errOut)
	}
}

// TestSecretSetSpaceWarns: a value with a space at either end is stored
// as it is, with a warning on stderr that does not echo it.
func TestSecretSetSpaceWarns(t *testing.T) {
	c := newCLI(t)
	for _, v := range []string{" " + key, key + " "} {
		out, errOut, code := c.run(v, "secret", "set", "openai")
		if code != 0 || !strings.Contains(errOut, "begins or ends with a space") || strings.Contains(out+errOut, key) {
			t.Errorf("secret set %q: exit %d: %s%s", v, code, out, errOut)
		}
	}
	if _, errOut, _ := c.run(key, "secret", "set", "openai"); errOut != "" {
		t.Errorf("secret set of a clean value warned: %s", errOut)
	}
}

// TestSecretSetRefusesADocument: a value that is a JSON object or array,
// stored without --json, would go to the provider whole, every key in it
// (a service account's document, a list of keys): it is refused, with
// the way to store it, and nothing of it is echoed or stored. A value
// that merely begins with a brace is a key like any other.
func TestSecretSetRefusesADocument(t *testing.T) {
	c := newCLI(t)
	for _, v := range []string{`{"api_key": "` + key + `", "db_password": "hunter22"}`, `["` + key + `", "sk-other-0123456789abcdef"]`} {
		out, errOut, code := c.run(v, "secret", "set", "openai")
		if code != 1 || !strings.Contains(errOut, "JSON object or array") || !strings.Contains(errOut, "--json") ||
			strings.Contains(out+errOut, key) || strings.Contains(out+errOut, "hunter22") {
			t.Errorf("secret set of %.12s…: exit %d: %s%s", v, code, out, errOut)
		}
	}
	if out, _, _ := c.run("", "secret", "list"); strings.Contains(out, "openai") {
		t.Errorf("a refused document was stored: %s", out)
	}
	if _, errOut, code := c.run("{"+key, "secret", "set", "openai"); code != 0 {
		t.Errorf("a key beginning with a brace: exit %d: %s", code, errOut)
	}
	if _, errOut, code := c.run(`{"api_key": "`+key+`"}`, "secret", "set", "sa", "--json"); code != 0 {
		t.Errorf("the same document with --json: exit %d: %s", code, errOut)
	}
}

// TestSecretSetShortWarns: a value shorter than proxy.MinEchoLength is
// stored, with a warning on stderr (that does not echo it) that till
// cannot remove its echo from an upstream's headers; one that long is
// not warned of.
func TestSecretSetShortWarns(t *testing.T) {
	c := newCLI(t)
	out, errOut, code := c.run("x", "secret", "set", "k")
	if code != 0 || !strings.Contains(errOut, "shorter than 8 characters") || strings.Contains(errOut, `"x"`) {
		t.Errorf("secret set of a one-character value: exit %d: %s%s", code, out, errOut)
	}
	if _, errOut, _ := c.run("abcdefgh", "secret", "set", "k"); errOut != "" {
		t.Errorf("secret set of an 8-character value warned: %s", errOut)
	}
}

// TestSecretSetSaysWhenItExpires: secret set prints the date the secret
// expires: --expires's, or vault.max_age's when that comes first (or
// alone), saying so.
func TestSecretSetSaysWhenItExpires(t *testing.T) {
	c := newCLI(t)
	os.WriteFile("till.yaml", []byte("version: 1\nvault: {max_age: 720h}\nroutes: []\n"), 0o644)
	now := time.Now()
	aged := now.Add(720 * time.Hour).UTC()
	for _, tt := range []struct {
		expires string
		want    time.Time
		byAge   bool
	}{
		{"", aged, true},
		{"7d", now.Add(7 * 24 * time.Hour).UTC(), false},
		{"90d", aged, true},
	} {
		args := []string{"secret", "set", "openai"}
		if tt.expires != "" {
			args = append(args, "--expires", tt.expires)
		}
		out := c.must(key, args...)
		m := expiresAt.FindStringSubmatch(out)
		var got time.Time
		err := errors.New("no date")
		if m != nil {
			got, err = time.Parse(time.RFC3339, m[1])
		}
		if err != nil || got.Sub(tt.want).Abs() > time.Minute {
			t.Errorf("secret set --expires %q: %q, want it to expire at %s", tt.expires, out, tt.want.Format(time.RFC3339))
		}
		if strings.Contains(out, "(vault.max_age)") != tt.byAge {
			t.Errorf("secret set --expires %q: %q: want vault.max_age named %v", tt.expires, out, tt.byAge)
		}
	}
}

// expiresAt finds the date in secret set's ", expires DATE".
var expiresAt = regexp.MustCompile(`, expires (\S+Z)`)

// TestSecretRmInUse: a secret a route attaches, alone or in a pool, is
// kept unless --force; one no route uses goes at once.
func TestSecretRmInUse(t *testing.T) {
	c := newCLI(t)
	os.WriteFile("till.yaml", []byte("version: 1\nroutes:\n  - {name: openai, preset: openai}\n  - {name: pooled, preset: openai, prefix: /p, secret: [spare, openai]}\n"), 0o644)
	for _, n := range []string{"openai", "spare", "unused"} {
		c.must(key, "secret", "set", n)
	}
	_, errOut, code := c.run("", "secret", "rm", "openai")
	if code != 1 || !strings.Contains(errOut, `secret "openai" is used by routes openai, pooled`) || !strings.Contains(errOut, "--force") {
		t.Errorf("secret rm of a secret in use: exit %d: %s", code, errOut)
	}
	if _, errOut, code := c.run("", "secret", "rm", "spare"); code != 1 || !strings.Contains(errOut, "routes pooled") {
		t.Errorf("secret rm of a pool member: exit %d: %s", code, errOut)
	}
	if out := c.must("", "secret", "list"); !strings.Contains(out, "openai") || !strings.Contains(out, "spare") {
		t.Fatalf("a refused rm removed the secret:\n%s", out)
	}
	c.must("", "secret", "rm", "unused")
	c.must("", "secret", "rm", "openai", "--force")
	if out := c.must("", "secret", "list"); strings.Contains(out, "openai ") || strings.Contains(out, "unused") {
		t.Errorf("secret rm left the secret:\n%s", out)
	}
}

// TestConfigBeforeCommand: -c FILE before the command is read as if it
// followed it, for commands and for a group's subcommands.
func TestConfigBeforeCommand(t *testing.T) {
	c := newCLI(t)
	os.Mkdir("conf", 0o755)
	os.WriteFile("conf/till.yaml", []byte("version: 1\nroutes: [{name: openai, preset: openai}]\n"), 0o644)
	for _, args := range [][]string{{"-c", "conf/till.yaml"}, {"-c=conf/till.yaml"}, {"--c", "conf/till.yaml"}} {
		c.must(key, append(args, "secret", "set", "openai")...)
		if out := c.must("", append(args, "check")...); !strings.Contains(out, "conf/till.yaml: 1 route(s), 1 secret(s)") {
			t.Errorf("till %s check: %s", strings.Join(args, " "), out)
		}
	}
	if _, err := os.Stat("conf/till.vault"); err != nil {
		t.Errorf("the vault is not the config's: %v", err)
	}
	for _, args := range [][]string{{"-c"}, {"-c", "conf/till.yaml"}, {"-c=conf/till.yaml"}} {
		if _, errOut, code := c.run("", args...); code != 2 || !strings.Contains(errOut, "-c FILE goes with a command") {
			t.Errorf("till %s: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
	}
	// Help reads no config: a -c before it changes nothing.
	for _, words := range [][]string{{"help"}, {"help", "serve"}, {"help", "secret", "set"}} {
		want := c.must("", words...)
		if out, errOut, code := c.run("", append([]string{"-c", "conf/till.yaml"}, words...)...); code != 0 || out != want {
			t.Errorf("till -c FILE %s: exit %d: %s%s", strings.Join(words, " "), code, out, errOut)
		}
	}
}

// TestNothingToServeWarns: check says so when there is nothing to serve,
// and why; a config with a route gets no such warning.
func TestNothingToServeWarns(t *testing.T) {
	c := newCLI(t)
	if out, errOut, code := c.run("", "check"); code != 0 || !strings.Contains(out, "ok: the built-in config (no till.yaml):") || !strings.Contains(errOut, "no till.yaml") {
		t.Errorf("check without a config: exit %d: %s%s", code, out, errOut)
	}
	os.WriteFile("till.yaml", []byte("version: 1\nroutes: []\n"), 0o644)
	if _, errOut, code := c.run("", "check"); code != 0 || !strings.Contains(errOut, "till.yaml has no routes") {
		t.Errorf("check of a config without routes: exit %d: %s", code, errOut)
	}
	// Named as given: the README's Install section checks till-data/till.yaml.
	os.Mkdir("till-data", 0o700)
	os.WriteFile("till-data/till.yaml", []byte("version: 1\nroutes: []\n"), 0o644)
	if _, errOut, code := c.run("", "check", "-c", "till-data/till.yaml"); code != 0 || !strings.Contains(errOut, "nothing to serve yet: till-data/till.yaml has no routes") {
		t.Errorf("check -c till-data/till.yaml without routes: exit %d: %s", code, errOut)
	}
	os.WriteFile("till.yaml", []byte("version: 1\nroutes: [{name: openai, preset: openai}]\n"), 0o644)
	c.must(key, "secret", "set", "openai")
	if _, errOut, code := c.run("", "check"); code != 0 || errOut != "" {
		t.Errorf("check of a config with a route: exit %d: %s", code, errOut)
	}
}

// TestUsageWithoutBudgets: usage of a config without budgets is an empty
// answer (exit 0; [] with --json) that says how to add one.
func TestUsageWithoutBudgets(t *testing.T) {
	c := newCLI(t)
	os.WriteFile("till.yaml", []byte("version: 1\nroutes: []\n"), 0o644)
	if out, errOut, code := c.run("", "usage", "--json"); code != 0 || strings.TrimSpace(out) != "[]" || !strings.Contains(errOut, "till: warning: till.yaml sets no budgets\n") {
		t.Errorf("usage --json without budgets: exit %d: %q %s", code, out, errOut)
	}
	if out, errOut, code := c.run("", "usage"); code != 0 || out != "" || !strings.Contains(errOut, "till: hint: add one: budgets: [{name: daily") {
		t.Errorf("usage without budgets: exit %d: %q %s", code, out, errOut)
	}
	if _, errOut, code := c.run("", "usage", "--budget", "daily"); code != 2 || !strings.Contains(errOut, "it sets no budgets") {
		t.Errorf("usage --budget without budgets: exit %d: %s", code, errOut)
	}
}

// TestNoKeyHintKnowsTheVault: with the vault's key missing, the hint
// says what opens that vault: its passphrase, or the key file it was
// made with (till init would make none for a vault that exists).
func TestNoKeyHintKnowsTheVault(t *testing.T) {
	c := newCLI(t)
	c.env["TILL_PASSPHRASE"] = "correct horse battery staple"
	c.must(key, "secret", "set", "openai")
	delete(c.env, "TILL_PASSPHRASE")
	if _, errOut, code := c.run("", "secret", "list"); code != 1 || !strings.Contains(errOut, "hint: this vault is sealed with a passphrase: set TILL_PASSPHRASE") {
		t.Errorf("passphrase vault, no passphrase: exit %d: %s", code, errOut)
	}
	os.Remove("till.vault")
	c.must(key, "secret", "set", "openai")
	os.Remove("till.key")
	if _, errOut, code := c.run("", "secret", "list"); code != 1 || !strings.Contains(errOut, "hint: set TILL_KEY_FILE to the key file this vault was created with") {
		t.Errorf("key file vault, no key file: exit %d: %s", code, errOut)
	}
}

// TestInitKeepsTheKeyFileOfTheEnvironment: with TILL_KEY_FILE set, the
// config till init writes names that key file. Naming till.key instead,
// it would win over the variable from then on: a vault made before with
// the variable's key would no longer open, and a new vault would get a
// new key beside it, not where the operator keeps it.
func TestInitKeepsTheKeyFileOfTheEnvironment(t *testing.T) {
	c := newCLI(t)
	keyFile := filepath.Join(t.TempDir(), "keys", "till.key")
	if err := os.Mkdir(filepath.Dir(keyFile), 0o700); err != nil {
		t.Fatal(err)
	}
	c.env["TILL_KEY_FILE"] = keyFile
	c.must(key, "secret", "set", "openai") // no config yet: the variable's key
	c.must("", "init")
	out, errOut, code := c.run("", "secret", "list")
	if code != 0 || !strings.Contains(out, "openai") {
		t.Errorf("secret list after till init: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(c.dir, "till.key")); err == nil {
		t.Error("till init made a key beside the vault though TILL_KEY_FILE names one")
	}
}

// TestInitWritesNoConfigWithoutItsVault: till init that cannot make the
// vault (its key's folder is missing) writes no till.yaml either, so
// that, the folder made, init runs again and makes all three, rather
// than refuse to overwrite a config whose vault it never made.
func TestInitWritesNoConfigWithoutItsVault(t *testing.T) {
	c := newCLI(t)
	keyFile := filepath.Join(t.TempDir(), "keys", "till.key")
	c.env["TILL_KEY_FILE"] = keyFile
	if _, errOut, code := c.run("", "init"); code != 1 || !strings.Contains(errOut, "does not exist") {
		t.Fatalf("init with the key's folder missing: exit %d: %s", code, errOut)
	}
	if _, err := os.Stat("till.yaml"); err == nil {
		t.Fatal("a failed init left till.yaml")
	}
	if err := os.Mkdir(filepath.Dir(keyFile), 0o700); err != nil {
		t.Fatal(err)
	}
	c.must("", "init")
	for _, f := range []string{"till.yaml", "till.vault", keyFile} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("init once the folder was made: %v", err)
		}
	}
	c.must("", "check")
}

// TestInitHelpSaysWhereItWrites: till init writes the config at -c or in
// --dir, never at $TILL_CONFIG (the image sets it to the read-only config
// it serves), and its help and till help say so rather than give -c the
// default every other command's -c has.
func TestInitHelpSaysWhereItWrites(t *testing.T) {
	c := newCLI(t)
	c.env["TILL_CONFIG"] = filepath.Join(t.TempDir(), "served.yaml")
	c.must("", "init")
	if _, err := os.Stat("till.yaml"); err != nil {
		t.Errorf("init with TILL_CONFIG set: %v", err)
	}
	if _, err := os.Stat(c.env["TILL_CONFIG"]); err == nil {
		t.Error("init wrote the config $TILL_CONFIG names")
	}
	help := c.must("", "init", "--help")
	_, flag, _ := strings.Cut(help, "\n  -c file\n")
	flag, _, _ = strings.Cut(flag, "\n  -")
	if strings.Contains(flag, "default $TILL_CONFIG") || !strings.Contains(flag, "DIR/till.yaml") {
		t.Errorf("till init --help, -c:%s", flag)
	}
	// till help says what -c defaults to for every command: init too.
	if usage := c.must("", "help"); !strings.Contains(strings.Join(strings.Fields(usage), " "), "init writes its config at -c or in --dir, never at $TILL_CONFIG") {
		t.Errorf("till help gives init's -c the default of the others:\n%s", usage)
	}
}

// TestSecretSetSaysItMadeTheVault: secret set that creates the vault and
// its key says so, as init does. The README's forward, policy and audit
// sessions start with secret set in an empty folder: it made till.key,
// without which the vault cannot be read, and said only "stored secret",
// so a user never learnt that the key file exists or wants a backup kept
// apart from the vault. A vault already there is not announced again.
func TestSecretSetSaysItMadeTheVault(t *testing.T) {
	c := newCLI(t)
	const made = "created till.vault (encrypted)\nits key is till.key (mode 0600): leave it there, and back it up apart from the vault\n"
	out := c.must(key, "secret", "set", "openai")
	if !strings.Contains(out, made) {
		t.Errorf("secret set in an empty folder: got %q, want it to hold %q", out, made)
	}
	out = c.must(key+"x", "secret", "set", "anthropic")
	if strings.Contains(out, "created") || strings.Contains(out, "its key") {
		t.Errorf("secret set with a vault there: got %q, want no news of a vault", out)
	}
	c2 := newCLI(t)
	c2.env["TILL_PASSPHRASE"] = "correct horse battery staple"
	out = c2.must(key, "secret", "set", "openai")
	if !strings.Contains(out, "created till.vault (encrypted)") || strings.Contains(out, "till.key") {
		t.Errorf("secret set under TILL_PASSPHRASE: got %q, want the vault made and no key file named", out)
	}
}

// TestCAInitSaysItMadeTheVault: ca init that creates the vault and its
// key, to hold the CA's key, says so as secret set does. The http-proxy
// example runs it first, in a folder without a vault: it made till.key
// and said only where the CA's key went, and the secret set after it
// found a vault there, so the user never heard of the key file.
func TestCAInitSaysItMadeTheVault(t *testing.T) {
	c := newCLI(t)
	const made = "created till.vault (encrypted)\nits key is till.key (mode 0600): leave it there, and back it up apart from the vault\n"
	if out := c.must("", "ca", "init"); !strings.Contains(out, made) {
		t.Errorf("ca init in an empty folder: got %q, want it to hold %q", out, made)
	}
	c2 := newCLI(t)
	c2.must(key, "secret", "set", "openai")
	if out := c2.must("", "ca", "init"); strings.Contains(out, "created till.vault") || strings.Contains(out, "its key") {
		t.Errorf("ca init with a vault there: got %q, want no news of a vault", out)
	}
}

// TestCheckRefusesADocumentStoredAsOneKey: a vault written before secret
// set refused a JSON document without --json may hold one as a plain
// value. A route that sends it whole (a header, a query parameter) is an
// error for check, which names the secret, never its value, and says how
// to store it; routes that read fields of a --json secret still pass.
func TestCheckRefusesADocumentStoredAsOneKey(t *testing.T) {
	c := newCLI(t)
	cfg := `version: 1
routes:
  - {name: openai, preset: openai}
  - {name: byquery, upstream: "https://api.example.com", secret: listed, inject: {query: key}}
  - {name: byfield, upstream: "https://fields.example.com", secret: doc, inject: {header: X-Api-Key, format: "{secret.api_key}"}}
  - {name: signed, preset: bedrock, region: us-east-1, secret: aws}
`
	if err := os.WriteFile("till.yaml", []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c.must(key, "secret", "set", "openai")
	c.must(key, "secret", "set", "listed")
	c.must(`{"api_key": "`+key+`"}`, "secret", "set", "doc", "--json")
	c.must(`{"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}`, "secret", "set", "aws", "--json")
	if out, errOut, code := c.run("", "check"); code != 0 {
		t.Fatalf("check of one-key and --json secrets: exit %d: %s%s", code, out, errOut)
	}
	// As an earlier till stored them.
	k, err := vault.LoadKeyFile(filepath.Join(c.dir, "till.key"), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := vault.Open(filepath.Join(c.dir, "till.vault"), k).Update(func(m map[string]vault.Secret) error {
		m["openai"] = vault.NewSecret("openai", `{"api_key": "`+key+`", "db_password": "hunter22"}`, time.Now())
		m["listed"] = vault.NewSecret("listed", `["`+key+`", "sk-other-0123456789abcdef"]`, time.Now())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := c.run("", "check")
	if code != 1 || strings.Contains(out+errOut, key) || strings.Contains(out+errOut, "hunter22") {
		t.Fatalf("check of documents stored as one key: exit %d, want 1, and no value shown: %s%s", code, out, errOut)
	}
	for _, name := range []string{"openai", "listed"} {
		if !strings.Contains(errOut, `secret "`+name+`" is a JSON object or array stored as one key`) || !strings.Contains(errOut, "till secret set "+name+" --json") {
			t.Errorf("check does not name %q and how to store it: %s", name, errOut)
		}
	}
	for _, route := range []string{`route "byfield"`, `route "signed"`} {
		if strings.Contains(errOut, route) {
			t.Errorf("check refuses %s, which reads fields of a --json secret: %s", route, errOut)
		}
	}
}

// An empty vault's list keeps its header for scripts, and says how to
// store a key.
func TestSecretListEmptyHints(t *testing.T) {
	c := newCLI(t)
	if _, errOut, code := c.run("sk-provider-0123456789abcdef", "secret", "set", "extra"); code != 0 {
		t.Fatalf("secret set: %s", errOut)
	}
	if _, errOut, code := c.run("", "secret", "rm", "extra"); code != 0 {
		t.Fatalf("secret rm: %s", errOut)
	}
	out, errOut, code := c.run("", "secret", "list")
	if code != 0 || !strings.HasPrefix(out, "NAME ") || strings.Count(out, "\n") != 1 || !strings.Contains(errOut, "till: hint: till.vault holds no secrets: till secret set NAME") {
		t.Errorf("secret list of an empty vault: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestExpiresPastYear9999: the vault keeps times in UTC, whose year must
// be at most 9999. --expires 9999-12-31T23:59:59-14:00 is in 9999 where
// it is written, and in 10000 in UTC: it passed every check, and the
// write failed with "cannot encode the vault", which says nothing of
// --expires. It is refused as a usage error naming the flag; the last
// instant of 9999 in UTC is still taken.
func TestExpiresPastYear9999(t *testing.T) {
	c := newCLI(t)
	for _, at := range []string{"9999-12-31T23:59:59-14:00", "9999-12-31T23:00:00-01:00"} {
		_, errOut, code := c.run(key, "secret", "set", "openai", "--expires", at)
		if code != exitUsage || !strings.Contains(errOut, "--expires "+at+" is after the year 9999") {
			t.Errorf("--expires %s: exit %d: %s", at, code, errOut)
		}
	}
	if _, errOut, code := c.run(key, "secret", "set", "openai", "--expires", "9999-12-31T23:59:59+14:00"); code != 0 {
		t.Errorf("--expires 9999-12-31T23:59:59+14:00: exit %d: %s", code, errOut)
	}
}
