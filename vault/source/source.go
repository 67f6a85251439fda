// Package source fetches provider keys from where an organization keeps
// them (HashiCorp Vault or OpenBao, AWS Secrets Manager, a folder of files
// such as a Kubernetes Secret volume, a credential helper) and caches them
// in memory for the request path.
//
// A [Source] knows how to fetch one path; a [Cache] holds what was fetched,
// keyed by ref (SOURCE:PATH#FIELD), fetches each ref at most once at a time
// however many requests wait, refreshes it before its ttl runs out, and
// falls back to the last good value for failure_ttl while its source fails.
// Values live in memory only, as [vault.Secret]s, which redact themselves.
package source

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Source fetches the raw value at path. Errors must not hold the value:
// they are logged.
type Source interface {
	// Fetch returns the value at path, as stored (one trailing newline
	// is the cache's to trim), and what the source knows of its version.
	Fetch(ctx context.Context, path string) ([]byte, Meta, error)
}

// Watched is a Source that can tell, more cheaply than a fetch, that the
// value at path changed: Stamp differs from one version to the next, and
// is "" when it cannot tell.
type Watched interface {
	Source
	// Stamp names the version of the value at path there now.
	Stamp(path string) string
}

// Meta is what a source says about a value besides the value.
type Meta struct {
	// Version is when the value's version was created (a file's mtime);
	// zero when the source cannot say, and then the fetch time is used.
	// vault.max_age counts from it.
	Version time.Time
	// Expires is when the value stops working, as the source records it
	// (Vault KV custom_metadata.expires); zero when it does not.
	Expires time.Time
	// Fields reports a value that is a JSON object of string fields (a
	// Vault KV entry): a ref without #FIELD takes its only field.
	Fields bool
}

// ErrUnavailable is the error of a ref that cannot be fetched and has no
// good value young enough to stand in (503 secret_unavailable).
var ErrUnavailable = errors.New("secret source unavailable")

// ErrGone marks a fetch whose source answered that the value is not
// there: a Vault entry deleted or destroyed, a Secrets Manager secret
// deleted or scheduled for deletion, a file removed, a field taken out.
// That is a revocation, not an outage: the last good value is dropped at
// once, and failure_ttl does not stand it in.
var ErrGone = errors.New("the value is gone from its source")

// goneError is a fetch's own words for an ErrGone.
type goneError struct{ msg string }

func (e goneError) Error() string        { return e.msg }
func (e goneError) Is(target error) bool { return target == ErrGone }

// gone formats a fetch's error that is an ErrGone.
func gone(format string, a ...any) error { return goneError{fmt.Sprintf(format, a...)} }

// maxRaw caps what a source reads for one value: a JSON document of
// fields may be larger than one value, but never a file of any size.
const maxRaw = 1 << 20

// bounded is a Source that bounds each fetch itself (an exec helper's
// timeout): the cache gives a fetch of it that long, when it is longer
// than the cache's own bound.
type bounded interface {
	bound() time.Duration
}

// knowing is a Source that logs what a fetch tells it (an exec helper's
// stderr), and takes out of it known, the values the ref had before: a
// fetch that fails tells none of its own, and may quote the value all
// the same (a helper's trace of the key it read, then failed to check).
type knowing interface {
	fetchKnowing(ctx context.Context, path string, known []string) ([]byte, Meta, error)
}

// minQuoted is the shortest run of a credential's characters that a
// server's words are taken to quote it by.
const minQuoted = 8

// QuotesCredential reports whether s, a server's words, quotes one of
// sent (what till sent it as a credential: a source's token, the CLI's
// TILL_ADMIN_TOKEN to an admin listener): whole, in any form
// valueForms knows (hex, base64 inside a Basic header, escaped), or a run
// of minQuoted of its characters; with its white space dropped too (a
// value folded across lines). s is what is shown of the words, cut short:
// the runs cost one search each.
func QuotesCredential(s string, sent []string) bool {
	folded := strings.Join(strings.Fields(s), "")
	holds := func(f string) bool { return strings.Contains(s, f) || strings.Contains(folded, f) }
	for _, c := range sent {
		for _, f := range valueForms(c) {
			if holds(f) {
				return true
			}
		}
		for i := 0; i+minQuoted <= len(c); i++ {
			if holds(c[i : i+minQuoted]) {
				return true
			}
		}
	}
	return false
}
