package config

import (
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// A literal credential in till.yaml defeats the point of till: the file is
// read by people, copied into tickets and committed, and the value never
// reaches the vault's encryption, rotation, expiry or audit. Header values
// and the literal text of inject templates are therefore checked for
// anything that looks like a key, and refused without being shown.
//
// The check is deliberately conservative: a value is refused only when it
// carries a known provider prefix followed by enough key characters, or
// when a long run of key characters looks random. Version strings, media
// types, beta flags, dates, UUIDs and hex digests stay accepted, since a
// config that till refuses for a harmless value can only be fixed by
// giving up the header.

// literalKeys refuses, without showing it, every value in the document
// root that looks like a key and that no other check refused on its line:
// one pasted as a prefix, an upstream, a strip entry or an allow rule
// would be logged at each start and shown by till check and
// /admin/routes. A path or URL (a value with a "/") holds ids that look
// random (a Google Sheet's, a Twilio account's): there only a provider's
// key prefix counts. limits.redis alone may hold a password.
func (d *decoder) literalKeys(root *yaml.Node) {
	reported := make(map[int]bool, len(d.errs))
	for _, e := range d.errs {
		reported[e.Line] = true
	}
	walkTree(root, "", func(n *yaml.Node, path string) bool {
		if path == "limits.redis" {
			return false
		}
		if n.Kind != yaml.ScalarNode {
			return true
		}
		if !reported[n.Line] && HoldsKey(n.Value) {
			reported[n.Line] = true
			d.errorf(n, path, "looks like a literal key (not shown) (hint: keys belong in the vault: store it with till secret set NAME, and name NAME in the route's secret)")
		}
		return true
	})
}

// HoldsKey reports whether s holds a token that looks like a credential,
// as literalKeys judges a value of till.yaml: a known provider's key
// prefix followed by key material, or, in a value without a "/" (a path
// holds ids that look random), a run of key characters that looks
// random. The request path judges so what an app sends where no
// credential belongs (a model name) before it is recorded.
func HoldsKey(s string) bool {
	if strings.Contains(s, "/") {
		return hasProviderKey(s)
	}
	return looksLikeKey(s)
}

// TextHoldsKey reports whether free text (a credential helper's trace)
// holds a token that looks like a credential, a random run included
// wherever it stands: unlike HoldsKey, a "/" (a URL the trace shows
// beside the key it read) does not end the guess at random runs, as a
// message withheld costs less there than a key in a log.
func TextHoldsKey(s string) bool { return looksLikeKey(s) }

// keyPrefixes match the start of a token in a provider's key format. Each
// demands enough characters after the prefix that a word or an identifier
// that merely starts the same way is not taken for a key.
var keyPrefixes = regexp.MustCompile(`^(?:` +
	`sk-ant-[A-Za-z0-9_-]{20,}` + // Anthropic
	`|sk-[A-Za-z0-9_-]{20,}` + // OpenAI (sk-proj-, sk-svcacct-, sk-admin-, legacy)
	`|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}` + // Stripe secret and restricted keys
	`|xox[abeoprs]-[A-Za-z0-9-]{10,}` + // Slack tokens
	`|xapp-[A-Za-z0-9-]{10,}` + // Slack app-level tokens
	`|gh[pousr]_[A-Za-z0-9]{30,}` + // GitHub tokens
	`|github_pat_[A-Za-z0-9_]{30,}` + // GitHub fine-grained tokens
	`|glpat-[A-Za-z0-9_-]{20,}` + // GitLab
	`|(?:AKIA|ASIA)[A-Z0-9]{16}` + // AWS access key ids
	`|AIza[A-Za-z0-9_-]{30,}` + // Google API keys
	`|SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}` + // SendGrid
	`|hf_[A-Za-z0-9]{30,}` + // Hugging Face
	`|gsk_[A-Za-z0-9]{30,}` + // Groq
	`|npm_[A-Za-z0-9]{30,}` + // npm
	`|till_[A-Za-z0-9]{30,}` + // till's own client tokens
	`|eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}` + // a JWT (header.payload…)
	`)`)

// minRandomRun is the shortest run of key characters that may be taken for
// a key without a known prefix: 32 characters of base62 hold about 190
// bits, where identifiers and version strings rarely get that long without
// separators.
const minRandomRun = 32

// looksLikeKey reports whether s holds a token that looks like a
// credential: a known provider prefix followed by enough key characters
// (with a digit or a capital letter among them), or a run of at least
// minRandomRun characters of [A-Za-z0-9_-] that looks random.
func looksLikeKey(s string) bool { return anyToken(s, tokenLooksLikeKey) }

// hasProviderKey reports whether s holds a token that starts with a known
// provider prefix followed by enough key characters: looksLikeKey without
// the guess at random runs.
func hasProviderKey(s string) bool { return anyToken(s, hasKeyPrefix) }

// anyToken reports whether is holds for a token of s.
func anyToken(s string, is func(tok string) bool) bool {
	found := false
	eachToken(s, func(i, j int) bool {
		found = is(s[i:j])
		return !found
	})
	return found
}

// eachToken calls fn with the bounds of each token of s, a maximal run of
// key characters and dots (SendGrid keys and JWTs hold dots), until fn
// returns false.
func eachToken(s string, fn func(i, j int) bool) {
	for i := 0; i < len(s); {
		if !isKeyChar(s[i]) && s[i] != '.' {
			i++
			continue
		}
		j := i
		for j < len(s) && (isKeyChar(s[j]) || s[j] == '.') {
			j++
		}
		if !fn(i, j) {
			return
		}
		i = j
	}
}

// hideKeys replaces each token of a message that looks like a key with
// "(not shown)". A message that quotes a value (a duplicate name, a
// path's segment, a source's name) is refused for that reason, on a line
// whose key literalKeys then no longer reports: a key pasted there must
// not reach the terminal, the CI log or a reload's log line.
func hideKeys(msg string) string {
	var b strings.Builder
	last := 0
	eachToken(msg, func(i, j int) bool {
		if tokenLooksLikeKey(msg[i:j]) {
			b.WriteString(msg[last:i])
			b.WriteString("(not shown)")
			last = j
		}
		return true
	})
	if last == 0 {
		return msg
	}
	b.WriteString(msg[last:])
	return b.String()
}

// hasKeyPrefix reports whether tok starts with a provider's key prefix
// followed by key material: past the first three characters (the
// prefix's own, without a capital or digit except in AWS ids, whose
// pattern is strict anyway), a capital or a digit.
func hasKeyPrefix(tok string) bool {
	m := keyPrefixes.FindString(tok)
	return m != "" && hasCapitalOrDigit(m[3:])
}

// tokenLooksLikeKey checks one token: a provider's key prefix, or a run
// that looks random.
func tokenLooksLikeKey(tok string) bool {
	if hasKeyPrefix(tok) {
		return true
	}
	// Without a prefix, dots separate: "v1.2.3" is three short runs.
	for i := 0; i < len(tok); {
		j := i
		for j < len(tok) && tok[j] != '.' {
			j++
		}
		if looksRandom(tok[i:j]) {
			return true
		}
		i = j + 1
	}
	return false
}

// hasCapitalOrDigit reports whether s holds an upper-case letter or a
// digit: random key material nearly always does, while a lower-case word
// that happens to follow a prefix ("sk-learn-preprocessing") does not.
func hasCapitalOrDigit(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			return true
		}
	}
	return false
}

// looksRandom reports whether a run of [A-Za-z0-9_-] looks like random key
// material: at least minRandomRun long, with upper-case letters,
// lower-case letters and digits, few separators, and characters that
// change class (upper, lower, digit, separator) at least 40% of the time.
// Random base62 changes class about 62% of the time; words and CamelCase
// identifiers ("AcmeBillingServiceClient2024") about 25%; UUIDs and hex
// digests lack one case, and dated flags ("max-tokens-2024-07-15") have
// many separators.
func looksRandom(run string) bool {
	if len(run) < minRandomRun {
		return false
	}
	var upper, lower, digit, sep, changes int
	prev := -1
	for i := 0; i < len(run); i++ {
		var class int
		switch c := run[i]; {
		case c >= 'A' && c <= 'Z':
			upper++
			class = 0
		case c >= 'a' && c <= 'z':
			lower++
			class = 1
		case c >= '0' && c <= '9':
			digit++
			class = 2
		case c == '-' || c == '_':
			sep++
			class = 3
		default:
			return false // only runs of key characters are passed in
		}
		if prev >= 0 && class != prev {
			changes++
		}
		prev = class
	}
	if upper == 0 || lower == 0 || digit == 0 || sep*8 > len(run) {
		return false
	}
	return changes*10 >= (len(run)-1)*4
}

// isKeyChar reports the characters of key material: [A-Za-z0-9_-].
func isKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}
