package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// fakeSource is a Source whose fetch is a function.
type fakeSource struct {
	fetch func(ctx context.Context, path string) ([]byte, Meta, error)
}

func (f fakeSource) Fetch(ctx context.Context, path string) ([]byte, Meta, error) {
	return f.fetch(ctx, path)
}

// clock is a settable time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func TestCacheSingleFetchUnderLoad(t *testing.T) {
	var n atomic.Int32
	release := make(chan struct{})
	src := fakeSource{func(context.Context, string) ([]byte, Meta, error) {
		n.Add(1)
		<-release
		return []byte("v1\n"), Meta{}, nil
	}}
	c := NewCache(map[string]Spec{"s": {Source: src, TTL: time.Minute}}, Options{})
	var wg, started sync.WaitGroup
	errs := make(chan error, 1000)
	for range 1000 {
		wg.Add(1)
		started.Add(1)
		go func() {
			defer wg.Done()
			started.Done()
			r, err := c.Get(context.Background(), "s:k")
			if err != nil {
				errs <- err
				return
			}
			if v, _ := r.Secret.Value(); v != "v1" {
				errs <- errors.New("wrong value")
			}
		}()
	}
	// Every caller is on its way into Get while the one fetch is held:
	// each joins it, or (arriving after it) finds its value cached.
	started.Wait()
	for n.Load() == 0 {
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := n.Load(); got != 1 {
		t.Errorf("got %d fetches, want 1", got)
	}
}

// getter gets ref from c: the value, whether it is stale, the error.
func getter(c *Cache, ref string) func() (string, bool, error) {
	return func() (string, bool, error) {
		r, err := c.Get(context.Background(), ref)
		v, _ := r.Secret.Value()
		return v, r.Stale, err
	}
}

func TestCacheTTLRefreshAndFailure(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	var value atomic.Value
	value.Store("v1")
	var fail atomic.Bool
	var n atomic.Int32
	src := fakeSource{func(context.Context, string) ([]byte, Meta, error) {
		n.Add(1)
		if fail.Load() {
			return nil, Meta{}, errors.New("down")
		}
		return []byte(value.Load().(string)), Meta{}, nil
	}}
	var fetches sync.Map
	c := NewCache(map[string]Spec{"s": {Source: src, TTL: 10 * time.Second, FailureTTL: 30 * time.Second}},
		Options{Now: clk.now, Log: zerolog.Nop(), OnFetch: func(s, r string) { fetches.Store(s+"/"+r, true) }})
	get := getter(c, "s:k")
	if v, _, err := get(); err != nil || v != "v1" {
		t.Fatalf("got %q, %v, want v1", v, err)
	}
	value.Store("v2")
	clk.add(5 * time.Second)
	if v, _, _ := get(); v != "v1" {
		t.Errorf("within ttl: got %q, want v1 (cached)", v)
	}
	clk.add(3 * time.Second) // past RefreshAt: a background refresh
	if v, _, _ := get(); v != "v1" {
		t.Errorf("refresh window: got %q, want v1 while the refresh runs", v)
	}
	// The clock stands still: the refresh is the only fetch, and its
	// value is served once it has stored it.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if v, _, _ := get(); v == "v2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the background refresh's value was not served within 10s")
		}
	}
	if got := n.Load(); got != 2 {
		t.Errorf("%d fetches, want 2 (the first, one refresh)", got)
	}
	fail.Store(true)
	clk.add(11 * time.Second) // past ttl, source down, within failure_ttl
	v, stale, err := get()
	if err != nil || v != "v2" || !stale {
		t.Errorf("failing source: got %q stale=%v err=%v, want v2 stale", v, stale, err)
	}
	clk.add(30 * time.Second) // past failure_ttl
	if _, _, err := get(); !errors.Is(err, ErrUnavailable) {
		t.Errorf("past failure_ttl: got %v, want ErrUnavailable", err)
	}
	if _, ok := fetches.Load("s/error"); !ok {
		t.Error("OnFetch was not told of the failure")
	}
}

// TestHangingSourceStandsInTheLastValue: a source that does not answer
// (Vault behind a network that drops packets) is failing as far as
// requests can tell. Within failure_ttl they get the last good value,
// stale, after staleWait at most, not once the fetch gives up a minute
// later; those that come while the fetch still hangs get it at once.
func TestHangingSourceStandsInTheLastValue(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	var hang atomic.Bool
	release := make(chan struct{})
	src := fakeSource{func(ctx context.Context, _ string) ([]byte, Meta, error) {
		if hang.Load() {
			select {
			case <-release:
				return []byte("v2"), Meta{}, nil
			case <-ctx.Done():
				return nil, Meta{}, ctx.Err()
			}
		}
		return []byte("v1"), Meta{}, nil
	}}
	c := NewCache(map[string]Spec{"s": {Source: src, TTL: 10 * time.Second, FailureTTL: time.Hour}},
		Options{Now: clk.now, Log: zerolog.Nop()})
	get := func(wait time.Duration) (string, bool, time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		start := time.Now()
		r, err := c.Get(ctx, "s:k")
		v, _ := r.Secret.Value()
		return v, r.Stale, time.Since(start), err
	}
	if v, _, _, err := get(time.Second); err != nil || v != "v1" {
		t.Fatalf("got %q, %v, want v1", v, err)
	}
	hang.Store(true)
	clk.add(11 * time.Second) // past ttl, within failure_ttl
	v, stale, took, err := get(staleWait + 5*time.Second)
	if err != nil || v != "v1" || !stale || took > staleWait+time.Second {
		t.Errorf("source hanging: got %q stale=%v err=%v after %v, want v1 stale within %v", v, stale, err, took, staleWait)
	}
	v, stale, took, err = get(staleWait + 5*time.Second)
	if err != nil || v != "v1" || !stale || took > staleWait/2 {
		t.Errorf("while the fetch still hangs: got %q stale=%v err=%v after %v, want v1 stale at once", v, stale, err, took)
	}
	close(release)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if v, stale, _, err := get(time.Second); err == nil && v == "v2" && !stale {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the value the fetch got once it answered was not served within 10s")
		}
	}
}

// A value its source says is gone (deleted, removed) is revoked: it is
// not served as stale within failure_ttl, nor kept fresh for the rest of
// its ttl once a background refresh has found it gone. An outage still
// is (TestCacheTTLRefreshAndFailure).
func TestGoneValueIsNotStale(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	var state atomic.Value // "ok", "gone"
	state.Store("ok")
	src := fakeSource{func(context.Context, string) ([]byte, Meta, error) {
		if state.Load() == "gone" {
			return nil, Meta{}, gone("secret/openai: no such secret")
		}
		return []byte("v1"), Meta{}, nil
	}}
	c := NewCache(map[string]Spec{"s": {Source: src, TTL: 10 * time.Second, FailureTTL: time.Hour}},
		Options{Now: clk.now, Log: zerolog.Nop()})
	get := getter(c, "s:k")
	if v, _, err := get(); err != nil || v != "v1" {
		t.Fatalf("got %q, %v, want v1", v, err)
	}
	state.Store("gone")
	clk.add(11 * time.Second) // past ttl, within failure_ttl
	if v, stale, err := get(); !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrGone) {
		t.Errorf("gone past ttl: got %q stale=%v err=%v, want ErrUnavailable and ErrGone", v, stale, err)
	}

	state.Store("ok")
	clk.add(retryAfterFailure)
	if v, _, err := get(); err != nil || v != "v1" {
		t.Fatalf("back at its source: got %q, %v, want v1", v, err)
	}
	state.Store("gone")
	clk.add(8 * time.Second) // within ttl, past RefreshAt: a background refresh
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		v, _, err := get()
		if errors.Is(err, ErrGone) {
			break
		}
		if err != nil || v != "v1" {
			t.Fatalf("while the refresh runs: got %q, %v, want v1 or ErrGone", v, err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the value the refresh found gone was still served 10s later")
		}
	}
}

func TestCacheFields(t *testing.T) {
	src := fakeSource{func(_ context.Context, p string) ([]byte, Meta, error) {
		return []byte(`{"api_key": "k1", "n": 3, "half": "sk-abc\ud800def", "pair": "k\ud83d\ude00"}`), Meta{}, nil
	}}
	c := NewCache(map[string]Spec{"s": {Source: src, TTL: time.Minute}}, Options{})
	tests := []struct{ ref, want, err string }{
		{"s:x#api_key", "k1", ""},
		{"s:x#missing", "", `has no field "missing"`},
		{"s:x#n", "", `field "n" is not a string`},
		{"s:x#half", "", `field "half" holds a \ud800 to \udfff escape without the other half`}, // read as U+FFFD, not as held
		{"s:x#pair", "k\U0001F600", ""},
		{"t:x", "", `no source named "t"`},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			r, err := c.Get(context.Background(), tt.ref)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrUnavailable) {
					t.Fatalf("got %v, want an error with %q", err, tt.err)
				}
				return
			}
			if v, _ := r.Secret.Value(); err != nil || v != tt.want {
				t.Errorf("got %q, %v, want %q", v, err, tt.want)
			}
		})
	}
}

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	// A Kubernetes Secret volume: key -> ..data/key, ..data -> ..v1.
	for _, v := range []string{"..v1", "..v2"} {
		if err := os.Mkdir(filepath.Join(dir, v), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, v, "key"), []byte("value-"+v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink("..v1", filepath.Join(dir, "..data")))
	must(os.Symlink("..data/key", filepath.Join(dir, "key")))
	must(os.Symlink("/etc/passwd", filepath.Join(dir, "escape")))
	f := Files{Dir: dir}
	got, meta, err := f.Fetch(context.Background(), "key")
	if err != nil || string(got) != "value-..v1\n" || meta.Version.IsZero() {
		t.Fatalf("got %q, %v, %v", got, meta, err)
	}
	must(os.Symlink("..v2", filepath.Join(dir, "..data.tmp")))
	must(os.Rename(filepath.Join(dir, "..data.tmp"), filepath.Join(dir, "..data")))
	if got, _, _ := f.Fetch(context.Background(), "key"); string(got) != "value-..v2\n" {
		t.Errorf("after the ..data swap: got %q", got)
	}
	for _, p := range []string{"../x", "/etc/passwd", "escape", "missing", "..v1"} {
		_, _, err := f.Fetch(context.Background(), p)
		if err == nil {
			t.Errorf("%s: got no error", p)
		}
		// Only a file that is not there is gone, and its error names
		// the folder looked in; the others are refused.
		if errors.Is(err, ErrGone) != (p == "missing") {
			t.Errorf("%s: %v: ErrGone is %v", p, err, errors.Is(err, ErrGone))
		}
		if p == "missing" && !strings.Contains(err.Error(), dir) {
			t.Errorf("%s: %v, want it to name %s", p, err, dir)
		}
	}
	// A folder that is not there (a volume not mounted) is an outage,
	// named so that the operator can look for it.
	absent := filepath.Join(dir, "absent")
	if _, _, err := (Files{Dir: absent}).Fetch(context.Background(), "key"); err == nil || errors.Is(err, ErrGone) || !strings.Contains(err.Error(), absent) {
		t.Errorf("missing folder: %v, want an error that is not ErrGone and names %s", err, absent)
	}
}

// A files source's value is fetched again within changeCheck of a change
// on disk (a Kubernetes ..data swap, a file replaced), whatever its ttl;
// a file removed is a failure, not a value served as fresh.
func TestFilesChangeIsSeenBeforeTTL(t *testing.T) {
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range []string{"..v1", "..v2"} {
		must(os.Mkdir(filepath.Join(dir, v), 0o700))
		must(os.WriteFile(filepath.Join(dir, v, "key"), []byte("value-"+v+"\n"), 0o600))
	}
	// The two versions must differ in what the stamp sees.
	must(os.Chtimes(filepath.Join(dir, "..v2", "key"), time.Now(), time.Now().Add(time.Minute)))
	must(os.Symlink("..v1", filepath.Join(dir, "..data")))
	must(os.Symlink("..data/key", filepath.Join(dir, "key")))
	must(os.WriteFile(filepath.Join(dir, "other"), []byte("other-1\n"), 0o600))
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	c := NewCache(map[string]Spec{"m": {Source: Files{Dir: dir}, TTL: time.Hour}}, Options{Now: clk.now, Log: zerolog.Nop()})
	get := func(ref string) (string, error) {
		t.Helper()
		r, err := c.Get(context.Background(), ref)
		if err != nil {
			return "", err
		}
		v, _ := r.Secret.Value()
		return v, nil
	}
	for _, ref := range []string{"m:key", "m:other"} {
		if _, err := get(ref); err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink("..v2", filepath.Join(dir, "..data.tmp")))
	must(os.Rename(filepath.Join(dir, "..data.tmp"), filepath.Join(dir, "..data")))
	if v, _ := get("m:key"); v != "value-..v1" {
		t.Errorf("within changeCheck of the fetch: %q, want the cached value", v)
	}
	clk.add(changeCheck)
	if v, _ := get("m:key"); v != "value-..v2" {
		t.Errorf("after the ..data swap: %q, want value-..v2", v)
	}
	must(os.Remove(filepath.Join(dir, "other")))
	clk.add(changeCheck)
	if v, err := get("m:other"); err == nil {
		t.Errorf("a removed file still gives %q", v)
	}
}

func TestExec(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs sh")
	}
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o700); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok := script("ok", `printf 'val-%s\n' "$1"; echo "warning for val-$1" >&2`)
	fail := script("fail", "echo oops >&2; exit 3\n")
	hang := script("hang", "sleep 30 & sleep 30\n")
	var logs strings.Builder
	log := zerolog.New(&logs)
	got, _, err := Exec{Name: "op", Command: []string{ok}, Timeout: 5 * time.Second, Log: log}.Fetch(context.Background(), "a b")
	if err != nil || string(got) != "val-a b\n" {
		t.Fatalf("got %q, %v", got, err)
	}
	if strings.Contains(logs.String(), "val-a b") || !strings.Contains(logs.String(), "REDACTED") {
		t.Errorf("stderr logged with the value: %s", logs.String())
	}
	// A JSON document: each of its values is kept out of the log, as is
	// one too short to replace (the whole stderr is withheld).
	const key = "sk-live-field-value-0123456789abcdef"
	doc := script("doc", `printf '{"api_key": "%s", "org": "acme"}\n' `+key+`; echo "warning: session for token `+key+` expires soon" >&2`)
	short := script("short", `echo '{"pin": "4711", "api_key": "`+key+`"}'; echo "pin 4711 used" >&2`)
	for _, helper := range []string{doc, short} {
		logs.Reset()
		if _, _, err := (Exec{Name: "op", Command: []string{helper}, Log: log}).Fetch(context.Background(), "item"); err != nil {
			t.Fatal(err)
		}
		if got := logs.String(); strings.Contains(got, key) || strings.Contains(got, "4711") || !strings.Contains(got, "stderr") {
			t.Errorf("%s: the log holds a value of the document, or no stderr: %s", filepath.Base(helper), got)
		}
	}
	if _, _, err := (Exec{Command: []string{fail}, Log: log}).Fetch(context.Background(), "x"); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("fail: got %v", err)
	}
	// A helper that fails says why on stderr: its error carries that, on
	// one line, for till check, secret list and test, which log nothing;
	// never a value the ref had, which a trace may quote.
	const before = "sk-live-before-0123456789abcdef"
	signedOut := script("signed-out", "echo 'read "+before+"' >&2\necho '[ERROR] You are not currently signed in.' >&2\necho 'Please run: op signin' >&2\nexit 1\n")
	_, _, err = Exec{Command: []string{signedOut}, Log: log}.fetchKnowing(context.Background(), "x", []string{before})
	if err == nil || !strings.Contains(err.Error(), "[ERROR] You are not currently signed in. Please run: op signin") || strings.Contains(err.Error(), before) {
		t.Errorf("signed out: got %v, want the helper's stderr on one line, without the value", err)
	}
	// A failing helper's trace may show the key it read, which a fetch
	// that never had the value cannot take out by value: where Hides
	// finds what looks like a key, the log does not quote it.
	const read = "sk-live-read-0123456789abcdef"
	traced := script("traced", "echo 'read "+read+"' >&2\necho '[ERROR] You are not currently signed in.' >&2\nexit 1\n")
	logs.Reset()
	hides := func(s string) bool { return strings.Contains(s, "sk-live") }
	if _, _, err := (Exec{Command: []string{traced}, Log: log, Hides: hides}).Fetch(context.Background(), "x"); err == nil || strings.Contains(err.Error(), read) {
		t.Errorf("traced: got %v, want an error without the key", err)
	}
	if got := logs.String(); strings.Contains(got, read) || !strings.Contains(got, withheld) {
		t.Errorf("a key-like trace: log %s, want it withheld", got)
	}
	start := time.Now()
	if _, _, err := (Exec{Command: []string{hang}, Timeout: 200 * time.Millisecond, Log: log}).Fetch(context.Background(), "x"); err == nil || !strings.Contains(err.Error(), "did not finish") {
		t.Errorf("hang: got %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("hang took %s", d)
	}
}

// TestCacheForms reads refs as fields and as PEM keys: from a JSON
// document, a Vault-style entry of fields, and a field holding either;
// a ref read in two forms is held once for each, and errors never carry
// the value.
func TestCacheForms(t *testing.T) {
	const pemKey = "-----BEGIN PRIVATE KEY-----\nTUlJQ2Vn\nc2VjcmV0\n-----END PRIVATE KEY-----"
	docs := map[string]struct {
		raw    string
		fields bool // a Vault entry: Meta.Fields
	}{
		"aws":      {`{"access_key_id":"AKIDEXAMPLE","secret_access_key":"s3cr3t/with+chars"}` + "\n", false},
		"entry":    {`{"client_id":"c","client_secret":"shh"}`, true},
		"wrapped":  {`{"key_json":"{\"private_key\":\"line1\\nline2\",\"client_email\":\"a@b\"}"}`, true},
		"pem":      {pemKey + "\r\n\r\n", false},
		"pementry": {`{"private_key":` + strconv.Quote(pemKey) + `}`, true},
		"notjson":  {"sk-not-json-0123456789", false},
		"badfield": {`{"a":1,"b c":"x"}`, false},
	}
	src := fakeSource{func(_ context.Context, path string) ([]byte, Meta, error) {
		d := docs[path]
		return []byte(d.raw), Meta{Fields: d.fields}, nil
	}}
	c := NewCache(map[string]Spec{"s": {Source: src, TTL: time.Minute}}, Options{Log: zerolog.Nop()})
	ctx := context.Background()
	fields := func(ref string) map[string]string {
		t.Helper()
		r, err := c.GetAs(ctx, ref, FormFields)
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		out := map[string]string{}
		for _, n := range r.Secret.FieldNames() {
			out[n], _ = r.Secret.Field(n)
		}
		return out
	}
	if got := fields("s:aws"); got["access_key_id"] != "AKIDEXAMPLE" || got["secret_access_key"] != "s3cr3t/with+chars" || len(got) != 2 {
		t.Errorf("s:aws as fields: %v", got)
	}
	if got := fields("s:entry"); got["client_secret"] != "shh" {
		t.Errorf("s:entry as fields: %v", got)
	}
	if got := fields("s:wrapped#key_json"); got["private_key"] != "line1\nline2" || got["client_email"] != "a@b" {
		t.Errorf("s:wrapped#key_json as fields: %v", got)
	}
	for ref, want := range map[string]string{"s:pem": pemKey, "s:pementry": pemKey, "s:pementry#private_key": pemKey} {
		r, err := c.GetAs(ctx, ref, FormPEM)
		if v, _ := r.Secret.Value(); err != nil || v != want {
			t.Errorf("%s as PEM: %v, value as expected: %v", ref, err, v == want)
		}
	}
	// One ref, two forms: each is its own entry, with its own status.
	if _, err := c.Get(ctx, "s:entry#client_secret"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetAs(ctx, "s:entry#client_secret", FormFields); err == nil {
		t.Error("a one-line field read as fields: no error")
	}
	if st := c.StatusOf("s:entry#client_secret", FormValue); st.Err != nil {
		t.Errorf("value form status: %v", st.Err)
	}
	if st := c.StatusOf("s:entry#client_secret", FormFields); st.Err == nil || st.Ref != "s:entry#client_secret" {
		t.Errorf("fields form status: %+v", st)
	}
	for _, tt := range []struct {
		ref  string
		form Form
		want string
	}{
		{"s:notjson", FormFields, "reads the secret as fields"},
		{"s:badfield", FormFields, "no field a route can read"},
		{"s:notjson", FormPEM, "not PEM"},
		{"s:aws", FormPEM, "not PEM"},
		{"s:pementry#nope", FormPEM, `no field "nope"`},
	} {
		_, err := c.GetAs(ctx, tt.ref, tt.form)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s (form %d): got %v, want %q", tt.ref, tt.form, err, tt.want)
		}
		if err != nil && (strings.Contains(err.Error(), "sk-not-json") || strings.Contains(err.Error(), "s3cr3t")) {
			t.Errorf("%s: the error carries the value: %v", tt.ref, err)
		}
	}
	var refs []string
	for _, st := range c.Statuses() {
		refs = append(refs, st.Ref)
		if strings.ContainsRune(st.Ref, 0) {
			t.Errorf("status ref %q carries the form", st.Ref)
		}
	}
	if !slices.Contains(refs, "s:aws") {
		t.Errorf("statuses: %v", refs)
	}
}

// TestCacheFieldsBesideMetadata: a Vault or AWS entry read as fields may
// hold more than the credential (an "Owner", a "rotated_at" number): those
// fields are left out, not a reason to refuse the entry; a field named as
// a ref's #FIELD may name (capitals, '.', '-') is read, as fields and as
// #FIELD alike.
func TestCacheFieldsBesideMetadata(t *testing.T) {
	docs := map[string]string{
		"oauth": `{"client_id":"app","client_secret":"s3cret-0123456789","Owner":"team-a"}`,
		"aws":   `{"access_key_id":"AKIAEXAMPLE","secret_access_key":"abc0123456789","rotated_at":1700000000,"tags":{"env":"prod"}}`,
		"named": `{"Api-Key.v2":"sk-named-0123456789","note":""}`,
	}
	src := fakeSource{func(_ context.Context, path string) ([]byte, Meta, error) {
		return []byte(docs[path]), Meta{Fields: true}, nil
	}}
	c := NewCache(map[string]Spec{"s": {Source: src, TTL: time.Minute}}, Options{Log: zerolog.Nop()})
	for ref, want := range map[string]map[string]string{
		"s:oauth": {"client_id": "app", "client_secret": "s3cret-0123456789", "Owner": "team-a"},
		"s:aws":   {"access_key_id": "AKIAEXAMPLE", "secret_access_key": "abc0123456789"},
		"s:named": {"Api-Key.v2": "sk-named-0123456789"},
	} {
		r, err := c.GetAs(context.Background(), ref, FormFields)
		if err != nil {
			t.Errorf("%s as fields: %v", ref, err)
			continue
		}
		if got := r.Secret.FieldNames(); len(got) != len(want) {
			t.Errorf("%s as fields: got fields %q, want %d", ref, got, len(want))
		}
		for k, v := range want {
			if got, _ := r.Secret.Field(k); got != v {
				t.Errorf("%s: field %q not as stored", ref, k)
			}
		}
	}
	r, err := c.Get(context.Background(), "s:named#Api-Key.v2")
	if v, _ := r.Secret.Value(); err != nil || v != "sk-named-0123456789" {
		t.Errorf("s:named#Api-Key.v2: %v, value as stored: %v", err, v == "sk-named-0123456789")
	}
}

// settled waits until no background refresh of the cache key k runs.
func settled(t *testing.T, c *Cache, k string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if e, ok := c.entries.Peek(k); !ok || !e.refreshing.Load() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a background refresh did not end")
		}
	}
}

// TestFailedRefreshThrottled: once a background refresh failed, requests
// inside the refresh window do not each ask the failing source again
// (a throttled Vault or AWS, a helper process per request).
func TestFailedRefreshThrottled(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	var n atomic.Int32
	var fail atomic.Bool
	src := fakeSource{func(context.Context, string) ([]byte, Meta, error) {
		n.Add(1)
		if fail.Load() {
			return nil, Meta{}, errors.New("429 throttled")
		}
		return []byte("v1"), Meta{}, nil
	}}
	c := NewCache(map[string]Spec{"s": {Source: src, TTL: 10 * time.Second}}, Options{Now: clk.now, Log: zerolog.Nop()})
	if _, err := c.Get(context.Background(), "s:k"); err != nil {
		t.Fatal(err)
	}
	fail.Store(true)
	clk.add(8 * time.Second) // in the refresh window; the clock then stands still
	for range 50 {
		if _, err := c.Get(context.Background(), "s:k"); err != nil {
			t.Fatal(err)
		}
		settled(t, c, "s:k")
	}
	if got := n.Load(); got != 2 {
		t.Errorf("a failing source was asked %d times within one second, want 2 (the fetch, one refresh)", got)
	}
	clk.add(retryAfterFailure)
	c.Get(context.Background(), "s:k")
	settled(t, c, "s:k")
	if got := n.Load(); got != 3 {
		t.Errorf("after retryAfterFailure: %d fetches, want 3", got)
	}
}

// watchedFake is a Watched source of settable value, stamp and failure.
type watchedFake struct {
	value, stamp atomic.Value
	fail         atomic.Bool
}

func (w *watchedFake) Fetch(context.Context, string) ([]byte, Meta, error) {
	if w.fail.Load() {
		return nil, Meta{}, errors.New("transient read error")
	}
	return []byte(w.value.Load().(string)), Meta{}, nil
}

func (w *watchedFake) Stamp(string) string { return w.stamp.Load().(string) }

// TestChangeSeenAfterFailedRefresh: a files secret that changes after a
// background refresh failed is still noticed within a second, not served
// old until its ttl ends.
func TestChangeSeenAfterFailedRefresh(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	w := &watchedFake{}
	w.value.Store("old-key")
	w.stamp.Store("1")
	c := NewCache(map[string]Spec{"m": {Source: w, TTL: 10 * time.Minute}}, Options{Now: clk.now, Log: zerolog.Nop()})
	get := func() string {
		r, err := c.Get(context.Background(), "m:k")
		if err != nil {
			t.Fatal(err)
		}
		v, _ := r.Secret.Value()
		return v
	}
	get()
	w.fail.Store(true)
	clk.add(8 * time.Minute) // the refresh window: a background refresh fails
	get()
	settled(t, c, "m:k")
	if e, _ := c.entries.Peek("m:k"); e == nil || e.err == nil {
		t.Fatal("the background refresh did not fail")
	}
	w.fail.Store(false)
	w.value.Store("rotated-key")
	w.stamp.Store("2")
	clk.add(5 * time.Second)
	if v := get(); v != "rotated-key" {
		t.Errorf("after the file changed: got %q, want rotated-key", v)
	}
}

// TestChangeSeenAfterStamplessFetch: a file fetched while its stamp could
// not be taken (it was being replaced by remove-then-write, so absent for
// the stat and present for the read) is still watched: once it can be
// stamped it is read again within a second. It used to be taken as a
// source that cannot tell, so a key removed from the folder was served
// for the rest of its ttl, not the second the docs promise.
func TestChangeSeenAfterStamplessFetch(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	w := &watchedFake{}
	w.value.Store("old-key")
	w.stamp.Store("")
	c := NewCache(map[string]Spec{"m": {Source: w, TTL: time.Hour}}, Options{Now: clk.now, Log: zerolog.Nop()})
	get := func() string {
		r, err := c.Get(context.Background(), "m:k")
		if err != nil {
			t.Fatal(err)
		}
		v, _ := r.Secret.Value()
		return v
	}
	get()
	w.value.Store("rotated-key")
	w.stamp.Store("2")
	clk.add(changeCheck)
	if v := get(); v != "rotated-key" {
		t.Errorf("after the file changed: got %q, want rotated-key", v)
	}
}

// TestReloadDropsFetchInFlight: a request after a reload that changed a
// source's settings neither joins a fetch from the old settings still in
// flight nor is served its value later from the cache.
func TestReloadDropsFetchInFlight(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	oldSrc := fakeSource{func(context.Context, string) ([]byte, Meta, error) {
		close(started)
		<-release
		return []byte("old-source-key\n"), Meta{}, nil
	}}
	newSrc := fakeSource{func(context.Context, string) ([]byte, Meta, error) {
		return []byte("new-source-key\n"), Meta{}, nil
	}}
	c := NewCache(map[string]Spec{"s": {Source: oldSrc, TTL: time.Hour, ID: "old"}}, Options{Log: zerolog.Nop()})
	before := make(chan string, 1)
	value := func(r Result, _ error) string { v, _ := r.Secret.Value(); return v }
	go func() { before <- value(c.Get(context.Background(), "s:k")) }()
	<-started
	c.SetSources(map[string]Spec{"s": {Source: newSrc, TTL: time.Hour, ID: "new"}})
	after := make(chan string, 1)
	go func() { after <- value(c.Get(context.Background(), "s:k")) }()
	select {
	case v := <-after:
		if v != "new-source-key" {
			t.Errorf("a request after the reload got %q", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a request after the reload waits for the old source's fetch")
	}
	close(release)
	if v := <-before; v != "old-source-key" {
		t.Errorf("the request before the reload got %q", v)
	}
	if v := value(c.Get(context.Background(), "s:k")); v != "new-source-key" {
		t.Errorf("later, from the cache: %q, want new-source-key", v)
	}
}

// TestRefreshSharesTheFlight: a request that finds a value past its ttl
// while a background refresh of it is in flight waits for that refresh,
// rather than racing it with a fetch of its own (of which the one that
// ends last would be kept, however old the value it read).
func TestRefreshSharesTheFlight(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	var calls atomic.Int32
	inHold, hold := make(chan struct{}), make(chan struct{})
	src := fakeSource{func(context.Context, string) ([]byte, Meta, error) {
		if calls.Add(1) == 2 { // the background refresh: held, then failing
			close(inHold)
			<-hold
			return nil, Meta{}, errors.New("down")
		}
		return []byte("value-0123456789"), Meta{}, nil
	}}
	spec := Spec{Source: src, TTL: time.Minute}
	c := NewCache(map[string]Spec{"s": spec}, Options{Now: clk.now, Log: zerolog.Nop()})
	if _, err := c.Get(context.Background(), "s:k"); err != nil {
		t.Fatal(err)
	}
	clk.add(50 * time.Second) // past RefreshAt
	if _, err := c.Get(context.Background(), "s:k"); err != nil {
		t.Fatal(err)
	}
	<-inHold
	clk.add(15 * time.Second) // past ttl
	// A request that gives up at once: it joins the refresh's flight and
	// leaves it, or starts a fetch of its own, which its flight holds.
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	_, _ = c.Get(gone, "s:k")
	close(hold)
	// Whatever fetch the key's flight holds has ended once this returns;
	// the refresh's failure leaves nothing fresh that would spare it.
	_, _, _ = c.flight.Do(flightKey("s:k", spec), func() (any, error) { e, _ := c.entries.Peek("s:k"); return e, nil })
	if n := calls.Load(); n != 2 {
		t.Errorf("the source was asked %d times, want 2: a request fetched while the refresh was in flight", n)
	}
}

// TestStoreKeepsTheNewerValue: should two fetches of a ref ever overlap,
// the one that ends last does not undo the other: a value read earlier
// never replaces one read later (an old key would be back after a
// rotation was served, for a whole ttl), a failure of a fetch that
// started before the newer value was read is older news than it, and a
// later failure keeps the newer value as the last good one.
func TestStoreKeepsTheNewerValue(t *testing.T) {
	const older, newer = "old-value-0123456789", "new-value-0123456789"
	value := func(v string) func() ([]byte, Meta, error) {
		return func() ([]byte, Meta, error) { return []byte(v), Meta{}, nil }
	}
	down := func() ([]byte, Meta, error) { return nil, Meta{}, errors.New("down") }
	deleted := func() ([]byte, Meta, error) { return nil, Meta{}, gone("deleted") }
	for _, tt := range []struct {
		name string
		// The answers of the second and third fetches, which start in
		// that order and overlap; last is the one that ends last.
		second, third func() ([]byte, Meta, error)
		last          int32
		wantErr       bool
		wantGone      bool // nothing is served: the value is gone
	}{
		{"older value read first, stored last", value(older), value(newer), 2, false, false},
		{"failure started first, stored last", down, value(newer), 2, false, false},
		{"failure started after the newer value's fetch", value(newer), down, 3, true, false},
		{"gone after the newer value's fetch", value(newer), deleted, 3, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{t: time.Unix(1_800_000_000, 0)}
			var calls atomic.Int32
			started := map[int32]chan struct{}{2: make(chan struct{}), 3: make(chan struct{})}
			release := map[int32]chan struct{}{2: make(chan struct{}), 3: make(chan struct{})}
			src := fakeSource{func(context.Context, string) ([]byte, Meta, error) {
				n := calls.Add(1)
				if n == 1 {
					return []byte(older), Meta{}, nil
				}
				close(started[n])
				<-release[n]
				if n == 2 {
					return tt.second()
				}
				return tt.third()
			}}
			spec := Spec{Source: src, TTL: time.Minute}
			c := NewCache(map[string]Spec{"s": spec}, Options{Now: clk.now, Log: zerolog.Nop()})
			if _, err := c.Get(context.Background(), "s:k"); err != nil {
				t.Fatal(err)
			}
			clk.add(50 * time.Second) // past RefreshAt: both fetch
			done := map[int32]chan *entry{2: make(chan *entry), 3: make(chan *entry)}
			for _, n := range []int32{2, 3} {
				go func() { e, _ := c.fetch("s:k", spec); done[n] <- e }()
				<-started[n]
			}
			first := 5 - tt.last
			close(release[first])
			<-done[first]
			close(release[tt.last])
			want := newer
			if tt.wantGone {
				want = ""
			}
			if v, _ := (<-done[tt.last]).secret.Value(); v != want {
				t.Errorf("the waiters of the fetch that ended last got %q, want %q", v, want)
			}
			r, err := c.Get(context.Background(), "s:k")
			if v, _ := r.Secret.Value(); (err != nil) != tt.wantGone || errors.Is(err, ErrGone) != tt.wantGone || v != want {
				t.Errorf("then the cache serves %q (err %v), want %q", v, err, want)
			}
			if st := c.Status("s:k"); (st.Err != nil) != tt.wantErr {
				t.Errorf("the failure is recorded: %v, want %v", st.Err != nil, tt.wantErr)
			}
			if n := calls.Load(); n != 3 {
				t.Errorf("the source was asked %d times, want 3", n)
			}
		})
	}
}

// TestWholeValueIsNotADocument: a ref without #FIELD whose value is a
// JSON object of fields (an AWS key/value secret, a JSON file, a helper's
// JSON) is refused, naming the fields, not sent whole as one key: every
// field in it, other credentials included, would go to the route's
// upstream in a header. It fails as an outage does, so the value before
// it stands in for failure_ttl; the ref with #FIELD reads it. A JSON
// array (a list of keys) is refused too: no provider's key is one, and
// sent whole every key in it would reach the upstream.
func TestWholeValueIsNotADocument(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	const doc = `{"api_key": "sk-live-0123456789abcdef", "db_password": "hunter2-0123456789"}`
	var value atomic.Value
	value.Store("sk-before-0123456789")
	src := fakeSource{func(context.Context, string) ([]byte, Meta, error) {
		return []byte(value.Load().(string) + "\n"), Meta{}, nil
	}}
	c := NewCache(map[string]Spec{"s": {Source: src, TTL: 10 * time.Second, FailureTTL: time.Minute}}, Options{Now: clk.now, Log: zerolog.Nop()})
	get := getter(c, "s:k")
	if v, _, err := get(); err != nil || v != "sk-before-0123456789" {
		t.Fatalf("got %q, %v", v, err)
	}
	value.Store(doc)
	clk.add(11 * time.Second)
	if v, stale, err := get(); err != nil || v != "sk-before-0123456789" || !stale {
		t.Errorf("a document in place of the value: got %q stale=%v err=%v, want the value before it, stale", v, stale, err)
	}
	_, err := c.Get(context.Background(), "s:other")
	if err == nil || !strings.Contains(err.Error(), "#FIELD") || !strings.Contains(err.Error(), "api_key, db_password") {
		t.Errorf("a document as a whole value: got %v, want an error naming its fields and #FIELD", err)
	}
	if err != nil && (strings.Contains(err.Error(), "sk-live") || strings.Contains(err.Error(), "hunter2")) {
		t.Errorf("the error carries a value: %v", err)
	}
	if r, err := c.Get(context.Background(), "s:other#api_key"); err != nil {
		t.Errorf("the document's #FIELD: %v", err)
	} else if v, _ := r.Secret.Value(); v != "sk-live-0123456789abcdef" {
		t.Errorf("the document's #FIELD: got %q", v)
	}
	for _, v := range []string{"{not-json-0123456789", "null", `"quoted-0123456789"`, "[not-json-0123456789"} {
		value.Store(v)
		if r, err := c.Get(context.Background(), "s:"+v); err != nil {
			t.Errorf("%s: %v, want it read as it is", v, err)
		} else if got, _ := r.Secret.Value(); got != v {
			t.Errorf("%s: got %q", v, got)
		}
	}
	// A list of keys is no key either: sent whole, every key in it would
	// reach the upstream.
	for _, v := range []string{`["sk-a-0123456789", "sk-b-0123456789"]`, "[1, 2]", " [] "} {
		value.Store(v)
		_, err := c.Get(context.Background(), "s:"+v)
		if err == nil || !strings.Contains(err.Error(), "JSON array") || !strings.Contains(err.Error(), "a ref of its own") {
			t.Errorf("%s as a whole value: got %v, want it refused as a JSON array", v, err)
		} else if strings.Contains(err.Error(), "sk-") {
			t.Errorf("the error carries a value: %v", err)
		}
	}
}

// TestFieldValueIsNotADocument: a #FIELD (or a Vault entry's only field)
// whose string is itself a JSON object or array is refused for a header
// or query key, naming the field and what it holds, as a whole value
// that is a JSON object is: sent as one key, every credential in it
// would go to the route's upstream. The value before it stands in for
// failure_ttl, as in an outage; a route that reads fields still reads it.
func TestFieldValueIsNotADocument(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	const inner = `{"k": "sk-live-0123456789abcdef", "other_secret": "hunter2-0123456789"}`
	outer, _ := json.Marshal(map[string]string{"creds": inner, "plain": "sk-plain-0123456789"})
	var value atomic.Value
	value.Store(`{"creds": "sk-before-0123456789"}`)
	var fields atomic.Bool
	src := fakeSource{func(context.Context, string) ([]byte, Meta, error) {
		return []byte(value.Load().(string)), Meta{Fields: fields.Load()}, nil
	}}
	c := NewCache(map[string]Spec{"s": {Source: src, TTL: 10 * time.Second, FailureTTL: time.Minute}}, Options{Now: clk.now, Log: zerolog.Nop()})
	get := getter(c, "s:k#creds")
	if v, _, err := get(); err != nil || v != "sk-before-0123456789" {
		t.Fatalf("got %q, %v", v, err)
	}
	value.Store(string(outer))
	clk.add(11 * time.Second)
	if v, stale, err := get(); err != nil || v != "sk-before-0123456789" || !stale {
		t.Errorf("a document in the field: got %q stale=%v err=%v, want the value before it, stale", v, stale, err)
	}
	noValue := func(err error) {
		t.Helper()
		if err != nil && (strings.Contains(err.Error(), "sk-live") || strings.Contains(err.Error(), "hunter2")) {
			t.Errorf("the error carries a value: %v", err)
		}
	}
	_, err := c.Get(context.Background(), "s:other#creds")
	if err == nil || !strings.Contains(err.Error(), `"creds"`) || !strings.Contains(err.Error(), "k, other_secret") || !strings.Contains(err.Error(), "field of its own") {
		t.Errorf("a document in #FIELD: got %v, want an error naming the field, its fields and the fix", err)
	}
	noValue(err)
	if r, err := c.Get(context.Background(), "s:other#plain"); err != nil {
		t.Errorf("a plain field beside it: %v", err)
	} else if v, _ := r.Secret.Value(); v != "sk-plain-0123456789" {
		t.Errorf("a plain field beside it: got %q", v)
	}
	if r, err := c.GetAs(context.Background(), "s:other#creds", FormFields); err != nil {
		t.Errorf("the document's fields: %v", err)
	} else if v, _ := r.Secret.Field("k"); v != "sk-live-0123456789abcdef" {
		t.Errorf("the document's fields: got %q", v)
	}
	for i, doc := range []string{`["sk-live-0123456789abcdef", "hunter2-0123456789"]`, ` {"k": "sk-live-0123456789abcdef"}`} {
		b, _ := json.Marshal(map[string]string{"creds": doc})
		value.Store(string(b))
		_, err := c.Get(context.Background(), fmt.Sprintf("s:array%d#creds", i))
		if err == nil || !strings.Contains(err.Error(), `"creds"`) || !strings.Contains(err.Error(), "JSON") {
			t.Errorf("%s in #FIELD: got %v, want it refused", doc, err)
		}
		noValue(err)
	}
	// A Vault entry's only field, read without #FIELD.
	fields.Store(true)
	b, _ := json.Marshal(map[string]string{"creds": inner})
	value.Store(string(b))
	_, err = c.Get(context.Background(), "s:vault")
	if err == nil || !strings.Contains(err.Error(), `"creds"`) || !strings.Contains(err.Error(), "k, other_secret") {
		t.Errorf("a document in an entry's only field: got %v, want it refused", err)
	}
	noValue(err)
	fields.Store(false)
	for _, v := range []string{"{not-json-0123456789", "null", `"quoted-0123456789"`, "12345678", "[not-json"} {
		b, _ := json.Marshal(map[string]string{"creds": v})
		value.Store(string(b))
		if r, err := c.Get(context.Background(), "s:"+v+"#creds"); err != nil {
			t.Errorf("%s: %v, want it read as it is", v, err)
		} else if got, _ := r.Secret.Value(); got != v {
			t.Errorf("%s: got %q", v, got)
		}
	}
}

// boundedSource is a fakeSource that bounds its fetches itself, as an
// exec helper's timeout does.
type boundedSource struct {
	fakeSource
	limit time.Duration
}

func (b boundedSource) bound() time.Duration { return b.limit }

// TestFetchGetsItsSourcesBound: a source that bounds its fetches itself
// (an exec helper with timeout: 2m) gets that long, not the cache's own
// bound for sources that set none: the helper was killed at a minute,
// and its error said it "did not finish within 2m0s".
func TestFetchGetsItsSourcesBound(t *testing.T) {
	var left atomic.Int64
	src := boundedSource{fakeSource{func(ctx context.Context, _ string) ([]byte, Meta, error) {
		if d, ok := ctx.Deadline(); ok {
			left.Store(int64(time.Until(d)))
		}
		return []byte("v"), Meta{}, nil
	}}, 5 * time.Minute}
	c := NewCache(map[string]Spec{"s": {Source: src, TTL: time.Minute}}, Options{Log: zerolog.Nop()})
	if _, err := c.Get(context.Background(), "s:k"); err != nil {
		t.Fatal(err)
	}
	if got := time.Duration(left.Load()); got < 4*time.Minute {
		t.Errorf("the fetch had %s, want the source's 5m", got)
	}
	if b := (Exec{Timeout: 2 * time.Minute}).bound(); b < 2*time.Minute {
		t.Errorf("an exec source with timeout 2m bounds its fetch at %s", b)
	}
}

// FuzzOneValue reads any value as a ref's whole value, as the string of
// its #FIELD and as a Vault entry's only field: one that is taken is one
// line and no JSON object of fields nor JSON array, and
// an error never quotes the value (a JSON object's field names aside,
// which it lists).
func FuzzOneValue(f *testing.F) {
	for _, s := range []string{"sk-0123456789\n", `{"api_key": "sk-0123456789"}`, "{}", "null", " {\"a\":1} ", "a\x00b", "\xff", `["sk-0123456789"]`, " [1, 2]"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		field, _ := json.Marshal(map[string]string{"f": string(raw)})
		for _, c := range []struct {
			raw   []byte
			field string
			meta  Meta
		}{{raw, "", Meta{}}, {field, "f", Meta{}}, {field, "", Meta{Fields: true}}} {
			sec, err := oneValue("s:k", c.raw, c.field, c.meta, time.Unix(0, 0))
			if err != nil {
				var doc map[string]any
				if len(raw) >= 8 && json.Unmarshal(raw, &doc) != nil && strings.Contains(err.Error(), string(raw)) {
					t.Errorf("the error quotes the value: %v", err)
				}
				continue
			}
			v, _ := sec.Value()
			var doc map[string]json.RawMessage
			if strings.ContainsAny(v, "\r\n") || json.Unmarshal([]byte(v), &doc) == nil && doc != nil {
				t.Errorf("took %q as a value", v)
			}
			var items []json.RawMessage
			if json.Unmarshal([]byte(v), &items) == nil && items != nil {
				t.Errorf("took the array %q as a value", v)
			}
		}
	})
}

// TestOnChangeToldOfReplacedAndGone: OnChange is told when a fetch finds
// a ref's value replaced at its source, or gone from it (so that what
// went with the old value can end), or back after it was gone, or its
// expiry moved (so that the expiry is watched anew), and not for a fetch
// that finds the same value, nor for an outage, which revokes nothing.
func TestOnChangeToldOfReplacedAndGone(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	var state atomic.Value // a value, "down" or "gone"
	state.Store("v1")
	src := fakeSource{func(context.Context, string) ([]byte, Meta, error) {
		switch s := state.Load().(string); s {
		case "down":
			return nil, Meta{}, errors.New("down")
		case "gone":
			return nil, Meta{}, gone("secret/openai: no such secret")
		case "v3 expiring":
			return []byte("v3"), Meta{Expires: time.Unix(1_800_000_000, 0)}, nil
		default:
			return []byte(s), Meta{}, nil
		}
	}}
	c := NewCache(map[string]Spec{"s": {Source: src, TTL: 10 * time.Second, FailureTTL: time.Hour}},
		Options{Now: clk.now, Log: zerolog.Nop()})
	var told atomic.Int32
	c.OnChange(func() { told.Add(1) })
	get := getter(c, "s:k")
	for _, step := range []struct {
		state string
		want  int32 // changes told so far
	}{
		// The first value: the cache cannot tell it from one fetched
		// after it forgot another (TestOnChangeToldAfterTheCacheForgot).
		{"v1", 1},
		{"v1", 1}, // the same again
		{"down", 1},
		{"v2", 2},
		{"gone", 3},
		{"v3", 4}, // back, after it was gone: its expiry is new
		{"v3 expiring", 5},
		{"v3 expiring", 5},
	} {
		state.Store(step.state)
		clk.add(11 * time.Second) // past ttl: a fetch
		get()
		if n := told.Load(); n != step.want {
			t.Fatalf("after a fetch that found %q: told of %d changes, want %d", step.state, n, step.want)
		}
	}
}

// TestOnChangeToldAfterTheCacheForgot: a value fetched once the cache
// has forgotten the one it held (a reload that changed the source's
// settings dropped it, or the cache evicted it) may differ from what a
// WebSocket went with: OnChange is told of it, and of a value found gone
// then, as it is of one replaced while the cache held the old.
func TestOnChangeToldAfterTheCacheForgot(t *testing.T) {
	for _, tt := range []struct {
		name   string
		forget func(c *Cache, src Source)
		then   string // what the next fetch finds: a value or "gone"
	}{
		{"settings changed, replaced", func(c *Cache, src Source) {
			c.SetSources(map[string]Spec{"s": {Source: src, TTL: 10 * time.Second, ID: "b"}})
		}, "v2"},
		{"settings changed, gone", func(c *Cache, src Source) {
			c.SetSources(map[string]Spec{"s": {Source: src, TTL: 10 * time.Second, ID: "b"}})
		}, "gone"},
		{"evicted, replaced", func(c *Cache, _ Source) {
			_, _ = c.Get(context.Background(), "s:other") // size 1: pushes s:k out
		}, "v2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var state atomic.Value
			state.Store("v1")
			src := fakeSource{func(_ context.Context, path string) ([]byte, Meta, error) {
				switch s := state.Load().(string); {
				case path == "other":
					return []byte("other"), Meta{}, nil
				case s == "gone":
					return nil, Meta{}, gone("secret/k: no such secret")
				default:
					return []byte(s), Meta{}, nil
				}
			}}
			c := NewCache(map[string]Spec{"s": {Source: src, TTL: 10 * time.Second, ID: "a"}}, Options{Size: 1, Log: zerolog.Nop()})
			var told atomic.Int32
			c.OnChange(func() { told.Add(1) })
			get := getter(c, "s:k")
			if v, _, err := get(); v != "v1" || err != nil {
				t.Fatalf("first fetch: %q, %v", v, err)
			}
			tt.forget(c, src)
			before := told.Load()
			state.Store(tt.then)
			get()
			if told.Load() == before {
				t.Errorf("a fetch that found the value %s once the cache forgot v1 told no change; what went with v1 runs on", tt.then)
			}
		})
	}
}
