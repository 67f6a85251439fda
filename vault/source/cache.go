package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/rs/zerolog"
	"golang.org/x/sync/singleflight"

	"github.com/tillgw/till/internal/termtext"
	"github.com/tillgw/till/vault"
)

// Spec is one configured source as the cache uses it.
type Spec struct {
	// Source fetches the values.
	Source Source
	// TTL is how long a fetched value is used; it is refreshed in the
	// background once RefreshAt of it has passed.
	TTL time.Duration
	// FailureTTL is how long after the last good fetch its value stands in
	// while the source fails; 0 refuses at once.
	FailureTTL time.Duration
	// ID identifies the source's settings: a change of ID drops the values
	// fetched under the old ones.
	ID string
}

// Result is a ref's value as a request uses it.
type Result struct {
	// Secret holds the value, named by the ref; Updated is the version
	// time (or the fetch time when the source gives none).
	Secret vault.Secret
	// Stale reports a value past its ttl, used because its source fails
	// and it is younger than failure_ttl (audit reason secret_stale).
	Stale bool
}

// Options configure a Cache.
type Options struct {
	// Size bounds the number of refs held; default DefaultSize.
	Size int
	// Log is the operational log: fetch failures, rotations.
	Log zerolog.Logger
	// OnFetch, when set, is told of each fetch: the source's name and
	// "ok" or "error" (till_secret_fetches_total).
	OnFetch func(source, result string)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Problem, when set, says what is wrong with a value fetched ("" for
	// nothing): a new value with a problem is logged at warn, with it.
	Problem func(vault.Secret) string
}

// DefaultSize is how many refs a cache holds by default.
const DefaultSize = 4096

// RefreshAt is the share of a ttl after which a value is refreshed in the
// background, so that a request seldom waits for a fetch.
const RefreshAt = 0.75

// changeCheck is how often a Watched source is asked whether a value
// cached from it changed.
const changeCheck = time.Second

// retryAfterFailure is how long a failed fetch is remembered: requests in
// that time get the failure at once rather than each starting a fetch of
// their own (a helper that hangs would hold every one of them).
const retryAfterFailure = time.Second

// staleWait is the longest a request waits for a fetch, counted from the
// fetch's start, when failure_ttl lets its ref's last good value stand
// in: a source that takes longer (Vault behind a network that drops
// packets, a helper that hangs) is failing as far as requests can tell,
// and they get that value, stale, rather than each waiting out the
// fetch's own bound of a minute or more.
const staleWait = 2 * time.Second

// Cache holds fetched values in memory, keyed by ref. It is safe for
// concurrent use.
type Cache struct {
	specs   atomic.Pointer[map[string]Spec]
	entries *lru.Cache[string, *entry]
	flight  singleflight.Group
	// started holds when each fetch in flight started, by flight key.
	started sync.Map
	// reads numbers the fetches in the order they start, and mu makes
	// store's compare and replace one step: a fetch that started earlier
	// never replaces a value read by one that started later.
	reads   atomic.Uint64
	mu      sync.Mutex
	log     zerolog.Logger
	onFetch func(source, result string)
	now     func() time.Time
	problem func(vault.Secret) string
	// onChange, when set, is told of each value a fetch finds replaced
	// or gone at its source (OnChange).
	onChange atomic.Pointer[func()]
}

// entry is what the cache knows of one ref. It is replaced, never changed,
// but for its atomic fields.
type entry struct {
	id       string       // the Spec.ID of the source it was fetched from
	secret   vault.Secret // zero when no fetch has succeeded
	good     time.Time    // the last successful fetch
	failedAt time.Time    // the last failed fetch after good, if any
	err      error
	// read is the number (Cache.reads) of the fetch that read secret, 0
	// when none; tried that of the fetch this entry is the outcome of.
	read, tried uint64
	// refreshing is set while a background refresh of this entry runs.
	refreshing atomic.Bool
	// stamp is a Watched source's stamp taken before the fetch; checked
	// is when it was last compared (unix ns), changed when it differed.
	stamp   string
	checked atomic.Int64
	changed atomic.Bool
}

// NewCache returns a cache of the given sources, by name.
func NewCache(specs map[string]Spec, opts Options) *Cache {
	if opts.Size <= 0 {
		opts.Size = DefaultSize
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	entries, _ := lru.New[string, *entry](opts.Size) // errs only for a size <= 0
	c := &Cache{entries: entries, log: opts.Log, onFetch: opts.OnFetch, now: opts.Now, problem: opts.Problem}
	c.specs.Store(&specs)
	return c
}

// SetSources replaces the sources (a reload). Values fetched from a source
// that is gone or whose settings changed are dropped.
func (c *Cache) SetSources(specs map[string]Spec) {
	old := *c.specs.Swap(&specs)
	for _, ref := range c.entries.Keys() {
		name, _, _ := strings.Cut(ref, ":")
		if n, ok := specs[name]; !ok || n.ID != old[name].ID {
			c.entries.Remove(ref)
		}
	}
}

// OnChange has f called each time a fetch finds the value held for a
// ref replaced at its source, or gone from it, or its expiry moved, once
// the cache holds the news: what went with the old value (a WebSocket)
// can then be checked against it, and the expiry watched anew. A value
// the cache did not hold before (a value back after it was gone
// included) counts as replaced: it may have forgotten the old one
// (evicted, or dropped by a reload that changed the source's settings)
// while something still goes with it. f runs in the fetch, before its
// waiters get the value.
func (c *Cache) OnChange(f func()) { c.onChange.Store(&f) }

// Form is the shape in which a ref's value is read, as its route uses it.
type Form uint8

const (
	// FormValue is one line: an API key, the whole value or its #FIELD.
	FormValue Form = iota
	// FormFields is a JSON object of string fields, as `till secret set
	// --json` takes: a Vault entry's fields, a JSON document, or a #FIELD
	// that holds one. SigV4 and OAuth2 credentials, service-account keys
	// and {secret.FIELD} templates read it. A field may span lines.
	FormFields
	// FormPEM is a PEM-encoded key, which spans lines (a GitHub App's
	// private key): the whole value or its #FIELD.
	FormPEM
)

// key is the cache's key of ref read in form f: a ref used in two forms
// is fetched and held once for each.
func key(ref string, f Form) string {
	if f == FormValue {
		return ref
	}
	return ref + "\x00" + strconv.Itoa(int(f))
}

// parseKey undoes key.
func parseKey(k string) (string, Form) {
	ref, f, found := strings.Cut(k, "\x00")
	if !found {
		return ref, FormValue
	}
	n, _ := strconv.Atoi(f)
	return ref, Form(n)
}

// Get returns ref's value in FormValue; see GetAs.
func (c *Cache) Get(ctx context.Context, ref string) (Result, error) {
	return c.GetAs(ctx, ref, FormValue)
}

// GetAs returns ref's value, read in form f: the cached one while it is younger than its
// source's ttl (refreshed in the background near the end), else a fresh
// fetch, shared with every other request for ref. When the fetch fails,
// a value younger than failure_ttl is returned as Stale; otherwise the
// error wraps ErrUnavailable.
func (c *Cache) GetAs(ctx context.Context, ref string, f Form) (Result, error) {
	name, _, _ := strings.Cut(ref, ":")
	ref = key(ref, f)
	spec, ok := (*c.specs.Load())[name]
	if !ok {
		return Result{}, fmt.Errorf("%w: no source named %q", ErrUnavailable, name)
	}
	now := c.now()
	e, found := c.entries.Get(ref)
	if found && e.id != spec.ID {
		found = false // fetched from the source's settings before a reload
	}
	if found && !e.good.IsZero() {
		age := now.Sub(e.good)
		if age < spec.TTL && !c.changed(e, spec, ref, now) {
			// A refresh that failed is tried again no sooner than a
			// fetch would be: a source in trouble is not asked at every
			// request.
			retry := e.failedAt.IsZero() || now.Sub(e.failedAt) >= retryAfterFailure
			if age >= time.Duration(float64(spec.TTL)*RefreshAt) && retry && e.refreshing.CompareAndSwap(false, true) {
				// In the flight too: a request that finds the value
				// past its ttl meanwhile waits for this fetch rather
				// than racing it with one of its own.
				go func() {
					defer e.refreshing.Store(false)
					_, _, _ = c.flight.Do(flightKey(ref, spec), func() (any, error) { return c.fetch(ref, spec) })
				}()
			}
			return Result{Secret: e.secret}, nil
		}
	}
	if !found || e.failedAt.IsZero() || now.Sub(e.failedAt) >= retryAfterFailure {
		fk := flightKey(ref, spec)
		ch := c.flight.DoChan(fk, func() (any, error) { return c.fetch(ref, spec) })
		var standIn <-chan time.Time
		if found && c.mayStandIn(e, spec) {
			left := staleWait
			if at, ok := c.started.Load(fk); ok {
				left -= time.Since(at.(time.Time))
			}
			timer := time.NewTimer(left)
			defer timer.Stop()
			standIn = timer.C
		}
		select {
		case <-ctx.Done():
			return Result{}, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
		case <-standIn:
			return Result{Secret: e.secret, Stale: true}, nil
		case r := <-ch:
			e = r.Val.(*entry)
		}
	}
	if e.err == nil {
		return Result{Secret: e.secret}, nil
	}
	if c.mayStandIn(e, spec) {
		return Result{Secret: e.secret, Stale: true}, nil
	}
	return Result{}, fmt.Errorf("%w: %w", ErrUnavailable, e.err)
}

// mayStandIn reports whether e holds a good value that failure_ttl lets
// stand in while its source fails.
func (c *Cache) mayStandIn(e *entry, spec Spec) bool {
	return !e.good.IsZero() && spec.FailureTTL > 0 && c.now().Sub(e.good) < spec.FailureTTL
}

// flightKey names the fetches of cache key k from the source as spec sets
// it, which every request and refresh of k shares. The settings are part
// of it: a fetch from before a reload is not one a request after it may
// join.
func flightKey(k string, spec Spec) string { return k + "\x00" + spec.ID }

// fetch fetches the ref of cache key k unless a fetch that finished
// meanwhile made it fresh, stores the outcome and returns the entry kept
// (see store). Its error is always nil: a failure is the entry's.
func (c *Cache) fetch(k string, spec Spec) (*entry, error) {
	fk := flightKey(k, spec)
	c.started.Store(fk, time.Now())
	defer c.started.Delete(fk)
	old, found := c.entries.Peek(k)
	found = found && old.id == spec.ID
	now := c.now()
	if found && old.err == nil && !old.good.IsZero() && !old.changed.Load() && now.Sub(old.good) < time.Duration(float64(spec.TTL)*RefreshAt) {
		return old, nil // fetched while this call waited for its turn
	}
	seq := c.reads.Add(1)
	ref, form := parseKey(k)
	name, rest, _ := strings.Cut(ref, ":")
	path, field, _ := strings.Cut(rest, "#")
	var stamp string
	if w, ok := spec.Source.(Watched); ok {
		stamp = w.Stamp(path) // before: a change during the fetch is seen next time
	}
	var known []string // what a failed fetch's log must not tell either
	if found && !old.good.IsZero() {
		known = old.secret.Values()
	}
	sec, err := c.fetchOne(spec, ref, path, field, form, known)
	now = c.now()
	if err != nil {
		c.count(name, "error")
		c.log.Warn().Str("source", name).Str("secret", ref).Str("error", err.Error()).Msg("cannot fetch a secret from its source")
		e := &entry{failedAt: now, err: err, tried: seq}
		// A value gone from its source is not kept as the last good one.
		if found && !errors.Is(err, ErrGone) {
			e.secret, e.good, e.stamp, e.read = old.secret, old.good, old.stamp, old.read
			// A value that changed at its source is not served as fresh,
			// and a change after the failure is still seen.
			e.changed.Store(old.changed.Load())
			e.checked.Store(old.checked.Load())
		}
		kept := c.store(k, spec, e)
		if kept == e && errors.Is(err, ErrGone) && !(found && errors.Is(old.err, ErrGone)) {
			c.tellChange()
		}
		return kept, nil
	}
	c.count(name, "ok")
	if found && !old.good.IsZero() && old.secret.Fingerprint() == sec.Fingerprint() && old.secret.Updated.Before(sec.Updated) {
		// The same value again (a Vault version written with it, a
		// file rewritten or touched, a fetch with no version time) is
		// no rotation: vault.max_age counts on from the version that
		// brought it, as it does for the vault's secrets.
		sec.Created, sec.Updated = old.secret.Created, old.secret.Updated
	}
	if !found || old.secret.Fingerprint() != sec.Fingerprint() {
		ev := c.log.Info()
		if c.problem != nil {
			if p := c.problem(sec); p != "" {
				ev = c.log.Warn().Str("problem", p)
			}
		}
		if found && !old.good.IsZero() {
			ev = ev.Str("previous_fp", old.secret.Fingerprint())
		}
		ev.Str("source", name).Str("secret", ref).Str("key_fp", sec.Fingerprint()).Msg("fetched a new value of a secret")
	}
	e := &entry{secret: sec, good: now, stamp: stamp, read: seq, tried: seq}
	e.checked.Store(now.UnixNano())
	kept := c.store(k, spec, e)
	// Told unless the cache held this value with this expiry: a value
	// back after it was gone, or one whose expiry the source moved, is
	// one whose expiry a running till must watch anew.
	held := found && !old.good.IsZero() && old.secret.Fingerprint() == sec.Fingerprint()
	if kept == e && !(held && old.secret.Expires.Equal(sec.Expires)) {
		c.tellChange()
	}
	return kept, nil
}

// tellChange calls the OnChange function, if one is set.
func (c *Cache) tellChange() {
	if f := c.onChange.Load(); f != nil {
		(*f)()
	}
}

// store keeps e, fetched from the source as spec set it, as the entry of
// the cache key k, and returns the entry kept, which e's waiters get.
// Fetches of one key share a flight, but should two ever overlap, the one
// that finishes last must not undo the other: a value read earlier does
// not replace one read later (an old key would come back after a
// rotation was served, for a whole ttl), and a failure of a fetch that
// started before the value held was read is news older than that value.
// A failure after it keeps the value as the last good one, unless the
// value is gone from the source (ErrGone). Nothing is kept once a reload
// has changed the source's settings: a value from the old settings is
// not one to keep.
func (c *Cache) store(k string, spec Spec, e *entry) *entry {
	e.id = spec.ID
	name, _, _ := strings.Cut(k, ":")
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := (*c.specs.Load())[name]; !ok || s.ID != spec.ID {
		return e
	}
	if cur, ok := c.entries.Peek(k); ok && cur.id == spec.ID && cur.read > e.read {
		if e.err == nil || cur.read > e.tried {
			return cur
		}
		if !errors.Is(e.err, ErrGone) {
			e.secret, e.good, e.stamp, e.read = cur.secret, cur.good, cur.stamp, cur.read
			e.changed.Store(cur.changed.Load())
			e.checked.Store(cur.checked.Load())
		}
	}
	c.entries.Add(k, e)
	return e
}

// changed reports whether e's value changed at its Watched source since
// it was fetched, asking the source at most once per changeCheck.
func (c *Cache) changed(e *entry, spec Spec, k string, now time.Time) bool {
	if e.changed.Load() {
		return true
	}
	w, ok := spec.Source.(Watched)
	last := e.checked.Load()
	// An entry stamped "" is compared too: the file may have been
	// missing for the stamp and back for the read (replaced by remove
	// and write); a stamp that can be taken now tells it changed.
	if !ok || now.UnixNano()-last < int64(changeCheck) || !e.checked.CompareAndSwap(last, now.UnixNano()) {
		return false
	}
	ref, _ := parseKey(k)
	_, rest, _ := strings.Cut(ref, ":")
	path, _, _ := strings.Cut(rest, "#")
	if w.Stamp(path) == e.stamp {
		return false
	}
	e.changed.Store(true)
	return true
}

// fetchTimeout bounds a fetch whose source sets no longer bound of its
// own (bounded).
const fetchTimeout = time.Minute

// fetchOne fetches path from the source and makes the value of ref in
// form f: the field of a JSON object when field is set, else the whole
// value (with one trailing newline trimmed, for FormValue). known are
// the values the ref had, for a source that logs (knowing).
func (c *Cache) fetchOne(spec Spec, ref, path, field string, f Form, known []string) (vault.Secret, error) {
	// Not the request's context: the fetch serves every request waiting
	// for it, and the value is kept for the next ones.
	limit := fetchTimeout
	if b, ok := spec.Source.(bounded); ok {
		limit = max(limit, b.bound())
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var raw []byte
	var meta Meta
	var err error
	if k, ok := spec.Source.(knowing); ok {
		raw, meta, err = k.fetchKnowing(ctx, path, known)
	} else {
		raw, meta, err = spec.Source.Fetch(ctx, path)
	}
	if err != nil {
		return vault.Secret{}, err
	}
	// The value is copied out of raw below; the bytes as fetched (a whole
	// document of fields, perhaps) are wiped. Go strings cannot be: the
	// value held stays until the collector reuses its memory.
	defer clear(raw)
	version := meta.Version
	if version.IsZero() {
		version = c.now()
	}
	var sec vault.Secret
	switch f {
	case FormFields:
		sec, err = fieldsValue(ref, raw, field, version)
	case FormPEM:
		sec, err = pemValue(ref, raw, field, meta, version)
	default:
		sec, err = oneValue(ref, raw, field, meta, version)
	}
	if err != nil {
		return vault.Secret{}, err
	}
	sec.Expires = meta.Expires
	return sec, nil
}

// oneValue makes a FormValue secret of raw.
func oneValue(ref string, raw []byte, field string, meta Meta, version time.Time) (vault.Secret, error) {
	var value string
	var err error
	switch {
	case field != "" || meta.Fields:
		if field == "" {
			field, err = onlyFieldName(raw)
		}
		if err == nil {
			value, err = pickField(raw, field)
		}
		if err == nil {
			err = fieldNotADocument(field, value)
		}
	default:
		if value, err = vault.CleanValue(raw); err == nil {
			err = notADocument(value)
		}
	}
	if err != nil {
		return vault.Secret{}, err
	}
	return vault.NewSecret(ref, value, version), nil
}

// NotADocument reports whether value, a whole key, is a JSON object or a
// JSON array: no provider's key is, and sent as one key, every field or
// item in it would go to a route's upstream. `till secret set` refuses
// such a value without --json, as a source refuses it without #FIELD.
func NotADocument(value string) bool { return notADocument(value) != nil }

// notADocument refuses a whole value that is a JSON object of fields (an
// AWS key/value secret, a JSON file, a helper's JSON) or a JSON array (a
// list of keys): sent as one key, every field or item in it, other
// credentials included, would go to the route's upstream. No provider's
// key is JSON. A ref names the field to send with #FIELD; each key of a
// list needs a ref of its own (a key pool lists them).
func notADocument(value string) error {
	if names, err := fieldNames([]byte(value)); err == nil && names != nil {
		return fmt.Errorf("value is a JSON object of %d fields (%s): name the one to send with #FIELD", len(names), shownNames(names))
	}
	if n, ok := arrayLen(value); ok {
		return fmt.Errorf("value is a JSON array of %d items, not one key: give each key a ref of its own (a pool: secret: [a, b]), or keep the key in a field and name it with #FIELD", n)
	}
	return nil // neither: a value as it is
}

// arrayLen reports whether value is a JSON array, and its length.
func arrayLen(value string) (int, bool) {
	var items []json.RawMessage
	if err := json.Unmarshal([]byte(value), &items); err != nil || items == nil {
		return 0, false
	}
	return len(items), true
}

// fieldNotADocument refuses a field's string that is itself a JSON object
// or array (credentials kept together in one field): sent as one key,
// every one in it would go to the route's upstream, and #FIELD names no
// field within a field. A route that reads fields (SigV4, OAuth2, Google,
// {secret.FIELD}) still reads such a field; a header or query key needs
// a field of its own.
func fieldNotADocument(field, value string) error {
	const fix = "a header or query key needs a field of its own, holding the key alone"
	if names, err := fieldNames([]byte(value)); err == nil && names != nil {
		return fmt.Errorf("field %q holds a JSON object of %d fields (%s), not one key: %s", field, len(names), shownNames(names), fix)
	}
	if n, ok := arrayLen(value); ok {
		return fmt.Errorf("field %q holds a JSON array of %d items, not one key: %s", field, n, fix)
	}
	return nil
}

// fieldsValue makes a FormFields secret of raw, a JSON object of string
// fields, or of its field holding one. Fields a route cannot read (a
// number, another kind of name) are left out, not refused: see
// vault.ParseSourceFields.
func fieldsValue(ref string, raw []byte, field string, version time.Time) (vault.Secret, error) {
	doc, err := document(raw, field)
	if err != nil {
		return vault.Secret{}, err
	}
	fields, err := vault.ParseSourceFields(doc)
	if err != nil {
		return vault.Secret{}, fmt.Errorf("this route reads the secret as fields: %w", err)
	}
	return vault.NewFieldSecret(ref, fields, version), nil
}

// pemValue makes a FormPEM secret of raw, or of its field (of a Vault
// entry: of its only field when none is named).
func pemValue(ref string, raw []byte, field string, meta Meta, version time.Time) (vault.Secret, error) {
	if field == "" && meta.Fields {
		var err error
		if field, err = onlyFieldName(raw); err != nil {
			return vault.Secret{}, err
		}
	}
	doc, err := document(raw, field)
	if err != nil {
		return vault.Secret{}, err
	}
	value, err := vault.CleanPEM(doc)
	if err != nil {
		return vault.Secret{}, fmt.Errorf("this route reads the secret as a PEM key: %w", err)
	}
	return vault.NewSecret(ref, value, version), nil
}

// document is what a ref names: raw, or its field when one is named.
func document(raw []byte, field string) ([]byte, error) {
	if field == "" {
		return raw, nil
	}
	s, err := stringField(raw, field)
	return []byte(s), err
}

// onlyFieldName returns the name of the only field of a JSON object.
func onlyFieldName(raw []byte) (string, error) {
	names, err := fieldNames(raw)
	if err != nil || names == nil {
		return "", errors.New("value is not a JSON object of fields")
	}
	if len(names) != 1 {
		return "", fmt.Errorf("secret has %d fields (%s): name one with #FIELD", len(names), shownNames(names))
	}
	return names[0], nil
}

// fieldNames returns the sorted names of the fields of raw, a JSON
// object; nil (and no error) for JSON null.
func fieldNames(raw []byte) ([]string, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return nil, err
	}
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	slices.Sort(names)
	return names, nil
}

// shownNames lists a source's field names for an error. Whoever writes
// the entry chose them, and the error reaches a terminal: escaped, cut,
// at most 8 of them.
func shownNames(names []string) string {
	shown := make([]string, min(len(names), 8))
	for i := range shown {
		shown[i] = termtext.Escape(names[i], 64)
	}
	if len(names) > len(shown) {
		shown = append(shown, "…")
	}
	return strings.Join(shown, ", ")
}

// pickField returns one string field of a JSON object as a one-line
// value; errors name the field, never a value.
func pickField(raw []byte, field string) (string, error) {
	s, err := stringField(raw, field)
	if err != nil {
		return "", err
	}
	if _, err := vault.CleanValue([]byte(s)); err != nil || strings.HasSuffix(s, "\n") {
		return "", fmt.Errorf("field %q: not a usable value (empty, too long, or with control characters)", field)
	}
	return s, nil
}

// stringField returns one string field of a JSON object, as it is.
func stringField(raw []byte, field string) (string, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return "", fmt.Errorf("value is not a JSON object, so it has no field %q", field)
	}
	v, ok := fields[field]
	if !ok {
		return "", gone("value has no field %q", field)
	}
	var s string
	if len(v) == 0 || v[0] != '"' || json.Unmarshal(v, &s) != nil {
		return "", fmt.Errorf("field %q is not a string", field)
	}
	if vault.LoneSurrogate(v) {
		return "", fmt.Errorf(`field %q holds a \ud800 to \udfff escape without the other half of its pair, which JSON reads as U+FFFD, not as the source holds it`, field)
	}
	return s, nil
}

func (c *Cache) count(source, result string) {
	if c.onFetch != nil {
		c.onFetch(source, result)
	}
}

// Status is what the cache knows of one ref, never its value.
type Status struct {
	// Ref is the ref, Source the name of its source.
	Ref, Source string
	// Secret is the value held, if a fetch succeeded: its fingerprint,
	// version time (Updated) and the expiry its source records.
	Secret vault.Secret
	// Fetched is when the value held was fetched; zero when none is.
	Fetched time.Time
	// Err is why the last fetch failed; nil when it succeeded.
	Err error
}

// errNotFetched is the Status.Err of a ref no fetch has finished for.
var errNotFetched = errors.New("not fetched yet")

// Status reports what the cache holds for ref read in FormValue; see
// StatusOf.
func (c *Cache) Status(ref string) Status { return c.StatusOf(ref, FormValue) }

// StatusOf reports what the cache holds for ref read in form f.
func (c *Cache) StatusOf(ref string, f Form) Status {
	name, _, _ := strings.Cut(ref, ":")
	st := Status{Ref: ref, Source: name, Err: errNotFetched}
	if e, ok := c.entries.Peek(key(ref, f)); ok {
		st.Secret, st.Fetched, st.Err = e.secret, e.good, e.err
	}
	return st
}

// Statuses reports every ref the cache holds, sorted by ref.
func (c *Cache) Statuses() []Status {
	keys := c.entries.Keys()
	slices.Sort(keys)
	out := make([]Status, 0, len(keys))
	for _, k := range keys {
		out = append(out, c.StatusOf(parseKey(k)))
	}
	return out
}
