package vault

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofrs/flock"
)

func TestRoundTrip(t *testing.T) {
	fileKey, _ := newKeyFile(t)
	passKey, err := PassphraseKey("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct {
		name string
		key  *Key
	}{{"key file", fileKey}, {"passphrase", passKey}} {
		t.Run(k.name, func(t *testing.T) {
			f := Open(filepath.Join(t.TempDir(), "till.vault"), k.key)
			if ok, err := f.Exists(); ok || err != nil {
				t.Fatalf("Exists before Set: got %v, %v; want false, nil", ok, err)
			}
			if got, err := f.Load(); err != nil || len(got) != 0 {
				t.Fatalf("Load of a missing vault: got %v, %v; want empty, nil", got, err)
			}
			single := NewSecret("openai", "sk-test <&> é", t0)
			single.Expires = t0.Add(90 * 24 * time.Hour)
			multi := NewFieldSecret("twilio", map[string]string{"sid": "AC1", "token": "tok"}, t0)
			for _, s := range []Secret{single, multi} {
				if err := f.Set(s); err != nil {
					t.Fatalf("Set(%s): %v", s.Name, err)
				}
			}
			if ok, err := f.Exists(); !ok || err != nil {
				t.Fatalf("Exists after Set: got %v, %v; want true, nil", ok, err)
			}
			data, _ := os.ReadFile(f.Path())
			if !bytes.HasPrefix(data, []byte("-----BEGIN AGE ENCRYPTED FILE-----")) {
				t.Errorf("vault file: got %q..., want an armored age file", data[:min(len(data), 40)])
			}
			if bytes.Contains(data, []byte("sk-test")) || bytes.Contains(data, []byte("openai")) {
				t.Errorf("vault file holds plaintext")
			}
			got, err := f.Load()
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if len(got) != 2 {
				t.Fatalf("got %d secrets, want 2", len(got))
			}
			if v, ok := got["openai"].Value(); !ok || v != "sk-test <&> é" {
				t.Errorf("openai value: got %q, want %q", v, "sk-test <&> é")
			}
			if v, _ := got["twilio"].Field("token"); v != "tok" {
				t.Errorf("twilio token: got %q, want %q", v, "tok")
			}
			for _, want := range []Secret{single, multi} {
				g := got[want.Name]
				if g.Name != want.Name || g.Fingerprint() != want.Fingerprint() {
					t.Errorf("got %v, want %v", g, want)
				}
				if !g.Created.Equal(want.Created) || !g.Updated.Equal(want.Updated) || !g.Expires.Equal(want.Expires) {
					t.Errorf("%s times: got %v %v %v, want %v %v %v", want.Name, g.Created, g.Updated, g.Expires, want.Created, want.Updated, want.Expires)
				}
			}
		})
	}
}

func TestSetRotation(t *testing.T) {
	k, _ := newKeyFile(t)
	f := Open(filepath.Join(t.TempDir(), "till.vault"), k)
	first := NewSecret("openai", "sk-old", t0)
	first.Expires = t0.Add(24 * time.Hour)
	if err := f.Set(first); err != nil {
		t.Fatal(err)
	}
	t1 := t0.Add(48 * time.Hour)
	second := NewSecret("openai", "sk-new", t1)
	second.Expires = t1.Add(30 * 24 * time.Hour)
	if err := f.Set(second); err != nil {
		t.Fatal(err)
	}
	secrets, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	got := secrets["openai"]
	if v, _ := got.Value(); v != "sk-new" {
		t.Errorf("value: got %q, want %q", v, "sk-new")
	}
	if !got.Created.Equal(t0) {
		t.Errorf("created: got %q, want %q", got.Created, t0)
	}
	if !got.Updated.Equal(t1) {
		t.Errorf("updated: got %q, want %q", got.Updated, t1)
	}
	if !got.Expires.Equal(second.Expires) {
		t.Errorf("expires: got %q, want %q", got.Expires, second.Expires)
	}
}

// TestSymlinkedVault: a vault reached through a symbolic link (kept on a
// volume, say) is rotated where it lives, with its lock and temp files
// beside it, and the link stays a link.
func TestSymlinkedVault(t *testing.T) {
	k, _ := newKeyFile(t)
	store, dir := t.TempDir(), t.TempDir()
	real, link := filepath.Join(store, "till.vault"), filepath.Join(dir, "till.vault")
	if err := Open(real, k).Set(NewSecret("openai", "sk-old", t0)); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	f := Open(link, k)
	if err := f.Set(NewSecret("openai", "sk-new", t0)); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(link); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was replaced by a file (%v)", err)
	}
	secrets, err := Open(real, k).Load()
	if v, _ := secrets["openai"].Value(); err != nil || v != "sk-new" {
		t.Errorf("the link's target holds %q (%v), want the rotated value", v, err)
	}
	if extra, _ := filepath.Glob(filepath.Join(dir, "*till.vault*")); len(extra) != 1 {
		t.Errorf("files beside the link: %v, want the link only", extra)
	}
}

// TestDanglingVaultLink: a vault path that is a symbolic link to a file
// not made yet (a volume's vault, linked before the first secret) is
// refused with an error that names the link: writing would replace the
// link with a vault that lives beside it, off the volume, and creating
// the file the link names would let whoever planted the link choose it.
func TestDanglingVaultLink(t *testing.T) {
	k, _ := newKeyFile(t)
	store, dir := t.TempDir(), t.TempDir()
	target, link := filepath.Join(store, "till.vault"), filepath.Join(dir, "till.vault")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	err := Open(link, k).Set(NewSecret("openai", "sk-new", t0))
	if err == nil || !strings.Contains(err.Error(), "symbolic link") || !strings.Contains(err.Error(), target) {
		t.Errorf("set through a link to nothing: got %v, want an error naming the link and its target", err)
	}
	if st, err := os.Lstat(link); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link was replaced by a file (%v)", err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the link's target was created (%v)", err)
	}
}

func TestSetAndRemoveErrors(t *testing.T) {
	k, _ := newKeyFile(t)
	f := Open(filepath.Join(t.TempDir(), "till.vault"), k)
	if err := f.Set(NewSecret("openai", "sk-test", t0)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		do      func() error
		wantErr string
	}{
		{"bad name", func() error { return f.Set(NewSecret("Bad Name", "v", t0)) }, "invalid secret name"},
		{"control char", func() error { return f.Set(NewSecret("x", "sk-\tSECRETTAB", t0)) }, "control character at byte 3"},
		{"no fields", func() error { return f.Set(NewFieldSecret("x", nil, t0)) }, `secret "x" has no fields`},
		{"bad field name", func() error { return f.Set(NewFieldSecret("x", map[string]string{"A": "v"}, t0)) }, "invalid field name"},
		{"zero secret", func() error { return f.Set(Secret{Name: "x"}) }, `secret "x" has no value`},
		{"remove missing", func() error { return f.Remove("nope") }, `secret "nope" not found`},
		{"fn error", func() error {
			return f.Update(func(m map[string]Secret) error { delete(m, "openai"); return errors.New("changed my mind") })
		}, "changed my mind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := os.ReadFile(f.Path())
			err := tt.do()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "SECRETTAB") {
				t.Errorf("got %q, want no value in it", err)
			}
			after, _ := os.ReadFile(f.Path())
			if !bytes.Equal(before, after) {
				t.Errorf("vault file changed after a failed update")
			}
		})
	}
	if err := f.Remove("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Remove: got %v, want ErrNotFound", err)
	}
	if err := f.Remove("openai"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if got, _ := f.Load(); len(got) != 0 {
		t.Errorf("after Remove: got %v, want empty", got)
	}
}

func TestFileModes(t *testing.T) {
	k, _ := newKeyFile(t)
	dir := filepath.Join(t.TempDir(), "sub")
	f := Open(filepath.Join(dir, "till.vault"), k)
	if err := f.Set(NewSecret("openai", "sk-test", t0)); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]fs.FileMode{
		f.Path():           0o600,
		f.Path() + ".lock": 0o600,
		dir:                0o700,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: got %q, want %q", path, got, want)
		}
	}
}

// sealRaw encrypts arbitrary plaintext as a vault file, bypassing encode.
func sealRaw(t *testing.T, f *File, plain string) []byte {
	t.Helper()
	data, err := f.encrypt([]byte(plain))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestLoadErrors(t *testing.T) {
	fileKey, keyPath := newKeyFile(t)
	otherKey, _ := newKeyFile(t)
	passKey, _ := PassphraseKey("right passphrase")
	wrongPass, _ := PassphraseKey("wrong passphrase")

	// A vault big enough that most of the file is payload.
	good := func(t *testing.T, k *Key) []byte {
		f := Open(filepath.Join(t.TempDir(), "till.vault"), k)
		if err := f.Set(NewSecret("openai", strings.Repeat("sk-SECRETPAYLOAD", 256), t0)); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(f.Path())
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	flip := func(data []byte) []byte {
		data = bytes.Clone(data)
		for i := len(data) * 3 / 4; i > 0; i-- {
			if c := data[i]; 'a' <= c && c <= 'y' {
				data[i] = c + 1
				return data
			}
		}
		panic("nothing to flip")
	}
	raw := Open("raw.vault", fileKey)

	tests := []struct {
		name    string
		data    []byte
		key     *Key
		wantErr []string
		is      error
		// passVault is what a WrongKeyError says of how the vault is
		// encrypted.
		passVault bool
	}{
		{name: "wrong key file", data: good(t, fileKey), key: otherKey,
			wantErr: []string{`cannot decrypt with key file "`, "wrong key or not a till vault"}, is: ErrWrongKey},
		{name: "passphrase vault with key file", data: good(t, passKey), key: fileKey,
			wantErr: []string{"encrypted with a passphrase", keyPath}, is: ErrWrongKey, passVault: true},
		{name: "key file vault with passphrase", data: good(t, fileKey), key: passKey,
			wantErr: []string{"cannot decrypt with a passphrase", "encrypted with a key file"}, is: ErrWrongKey},
		{name: "wrong passphrase", data: good(t, passKey), key: wrongPass,
			wantErr: []string{"cannot decrypt with the passphrase", "wrong key"}, is: ErrWrongKey, passVault: true},
		{name: "flipped byte", data: flip(good(t, fileKey)), key: fileKey,
			wantErr: []string{"vault is corrupted", "restore it from a backup"}, is: ErrCorrupted},
		{name: "truncated", data: good(t, fileKey)[:2000], key: fileKey,
			wantErr: []string{"vault is corrupted"}, is: ErrCorrupted},
		{name: "truncated inside armor", data: append(good(t, fileKey)[:2000:2000], []byte("\n-----END AGE ENCRYPTED FILE-----\n")...), key: fileKey,
			wantErr: []string{"vault is corrupted"}, is: ErrCorrupted},
		{name: "empty file", data: []byte{}, key: fileKey,
			wantErr: []string{"vault is corrupted"}, is: ErrCorrupted},
		{name: "not age", data: []byte("openai: sk-SECRETPAYLOAD\n"), key: fileKey,
			wantErr: []string{"vault is corrupted"}, is: ErrCorrupted},
		{name: "a key file named as the vault", data: []byte("sk-SECRETPAYLOAD-12345678987\n"), key: fileKey,
			wantErr: []string{"vault is corrupted", "not an age-encrypted file"}, is: ErrCorrupted},
		{name: "non-JSON inside", data: sealRaw(t, raw, "sk-SECRETPAYLOAD"), key: fileKey,
			wantErr: []string{"vault is corrupted", "invalid JSON at byte"}, is: ErrCorrupted},
		{name: "unknown version", data: sealRaw(t, raw, `{"version":2,"secrets":{}}`), key: fileKey,
			wantErr: []string{"unsupported vault version 2", "upgrade till"}, is: errVersion},
		{name: "newer version with a new field", data: sealRaw(t, raw, `{"version":2,"kdf":"x","secrets":{"a":{"value":"sk-SECRETPAYLOAD","note":"n"}}}`), key: fileKey,
			wantErr: []string{"unsupported vault version 2", "upgrade till"}, is: errVersion},
		{name: "unknown field", data: sealRaw(t, raw, `{"version":1,"secrets":{},"extra":1}`), key: fileKey,
			wantErr: []string{"vault is corrupted", `unknown field "extra"`}, is: ErrCorrupted},
		{name: "bad value inside", data: sealRaw(t, raw, `{"version":1,"secrets":{"openai":{"value":"sk-SECRETPAYLOAD\t","created":"2026-01-01T00:00:00Z","updated":"2026-01-01T00:00:00Z"}}}`), key: fileKey,
			wantErr: []string{"vault is corrupted", `secret "openai": secret value contains a control character at byte 16`}, is: ErrCorrupted},
		{name: "number value inside", data: sealRaw(t, raw, `{"version":1,"secrets":{"openai":{"value":12345678987,"created":"2026-01-01T00:00:00Z","updated":"2026-01-01T00:00:00Z"}}}`), key: fileKey,
			wantErr: []string{"vault is corrupted", "wrong JSON type"}, is: ErrCorrupted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "till.vault")
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			f := Open(path, tt.key)
			_, err := f.Load()
			if err == nil {
				t.Fatalf("Load: got no error, want one")
			}
			for _, want := range append(tt.wantErr, path+": ") {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("got %q, want it to contain %q", err, want)
				}
			}
			if !errors.Is(err, tt.is) {
				t.Errorf("got %q, want errors.Is %q", err, tt.is)
			}
			if wk := (*WrongKeyError)(nil); errors.As(err, &wk) && wk.VaultPassphrase != tt.passVault {
				t.Errorf("got VaultPassphrase %v, want %v", wk.VaultPassphrase, tt.passVault)
			}
			for _, leak := range []string{"SECRETPAYLOAD", "12345678987"} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("got %q, want no %q in it", err, leak)
				}
			}
			// Update must refuse too, rather than overwrite what it cannot read.
			if err := f.Set(NewSecret("new", "v", t0)); err == nil {
				t.Errorf("Set on an unreadable vault: got no error, want one")
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(after, tt.data) {
				t.Errorf("vault file changed after a failed Load and Set")
			}
		})
	}
}

func TestLoadBinaryAgeFile(t *testing.T) {
	// A vault re-encrypted by the age CLI without -a is still readable.
	k, _ := newKeyFile(t)
	f := Open(filepath.Join(t.TempDir(), "till.vault"), k)
	plain := `{"version":1,"secrets":{"openai":{"value":"sk-test","created":"2026-01-01T00:00:00Z","updated":"2026-01-01T00:00:00Z"}}}`
	r, _ := k.recipient()
	var buf bytes.Buffer
	w, err := ageEncrypt(&buf, r)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(plain))
	w.Close()
	if err := os.WriteFile(f.Path(), buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := f.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if v, _ := got["openai"].Value(); v != "sk-test" {
		t.Errorf("got %q, want %q", v, "sk-test")
	}
}

func TestCrashBeforeRename(t *testing.T) {
	tests := []struct {
		name     string
		leaveTmp bool // simulate a crash that leaves the temp file behind
	}{
		{"temp removed", false},
		{"temp left behind", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, _ := newKeyFile(t)
			dir := t.TempDir()
			f := Open(filepath.Join(dir, "till.vault"), k)
			if err := f.Set(NewSecret("openai", "sk-old", t0)); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(f.Path())

			old := beforeRename
			t.Cleanup(func() { beforeRename = old })
			beforeRename = func(tmp string) error {
				fi, err := os.Stat(tmp)
				if err != nil {
					t.Errorf("temp file: %v", err)
				} else if got := fi.Mode().Perm(); got != 0o600 {
					t.Errorf("temp file mode: got %q, want %q", got, fs.FileMode(0o600))
				}
				if filepath.Dir(tmp) != dir {
					t.Errorf("temp file folder: got %q, want %q", filepath.Dir(tmp), dir)
				}
				if tt.leaveTmp {
					data, _ := os.ReadFile(tmp)
					os.WriteFile(tmp+"-orphan", data, 0o600)
				}
				return errors.New("simulated crash")
			}
			err := f.Set(NewSecret("openai", "sk-new", t0.Add(time.Hour)))
			if err == nil || !strings.Contains(err.Error(), "simulated crash") {
				t.Fatalf("Set: got %v, want the simulated crash", err)
			}
			beforeRename = old

			after, _ := os.ReadFile(f.Path())
			if !bytes.Equal(before, after) {
				t.Errorf("vault file changed by a crashed update")
			}
			entries, _ := os.ReadDir(dir)
			var tmps []string
			for _, e := range entries {
				if strings.Contains(e.Name(), ".tmp-") {
					tmps = append(tmps, e.Name())
				}
			}
			if want := map[bool]int{false: 0, true: 1}[tt.leaveTmp]; len(tmps) != want {
				t.Errorf("temp files: got %q, want %d", tmps, want)
			}
			secrets, err := f.Load()
			if err != nil {
				t.Fatalf("Load after crash: %v", err)
			}
			if v, _ := secrets["openai"].Value(); v != "sk-old" {
				t.Errorf("got %q, want %q", v, "sk-old")
			}
			// A later update works (Load removed any leftover).
			if err := f.Set(NewSecret("openai", "sk-new", t0.Add(time.Hour))); err != nil {
				t.Fatalf("Set after crash: %v", err)
			}
			secrets, err = f.Load()
			if err != nil {
				t.Fatal(err)
			}
			if v, _ := secrets["openai"].Value(); v != "sk-new" {
				t.Errorf("got %q, want %q", v, "sk-new")
			}
		})
	}
}

func TestConcurrentUpdates(t *testing.T) {
	k, _ := newKeyFile(t)
	f := Open(filepath.Join(t.TempDir(), "till.vault"), k)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			// Each goroutine has its own File, as separate commands would.
			g := Open(f.Path(), k)
			errs <- g.Set(NewSecret(fmt.Sprintf("s%02d", i), "v"+strconv.Itoa(i), t0))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Set: %v", err)
		}
	}
	secrets, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(secrets) != n {
		t.Errorf("got %d secrets, want %d", len(secrets), n)
	}
	for i := range n {
		name := fmt.Sprintf("s%02d", i)
		if v, _ := secrets[name].Value(); v != "v"+strconv.Itoa(i) {
			t.Errorf("%s: got %q, want %q", name, v, "v"+strconv.Itoa(i))
		}
	}
}

func TestLockTimeout(t *testing.T) {
	k, _ := newKeyFile(t)
	f := Open(filepath.Join(t.TempDir(), "till.vault"), k)
	held := flock.New(f.Path() + ".lock")
	if err := held.Lock(); err != nil {
		t.Fatal(err)
	}
	defer held.Unlock()
	old := lockTimeout
	lockTimeout = 100 * time.Millisecond
	defer func() { lockTimeout = old }()
	err := f.Set(NewSecret("openai", "sk-test", t0))
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("got %v, want a lock timeout error", err)
	}
	if ok, _ := f.Exists(); ok {
		t.Errorf("vault written without the lock")
	}
}

const helperEnv = "TILL_VAULT_TEST_HELPER"

// TestHelperProcess is not a real test: TestCrossProcessLock runs the test
// binary as a subprocess that executes it.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process only")
	}
	k, err := LoadKeyFile(os.Getenv("TILL_VAULT_TEST_KEY"), false)
	if err != nil {
		t.Fatal(err)
	}
	f := Open(os.Getenv("TILL_VAULT_TEST_VAULT"), k)
	prefix := os.Getenv("TILL_VAULT_TEST_PREFIX")
	for i := range 10 {
		name := fmt.Sprintf("%s%02d", prefix, i)
		err := f.Update(func(m map[string]Secret) error {
			time.Sleep(2 * time.Millisecond) // widen the read-modify-write window
			m[name] = NewSecret(name, "v", t0)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestCrossProcessLock(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns subprocesses")
	}
	_, keyPath := newKeyFile(t)
	vaultPath := filepath.Join(t.TempDir(), "till.vault")
	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	for _, prefix := range []string{"a", "b"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), helperEnv+"=1",
			"TILL_VAULT_TEST_KEY="+keyPath, "TILL_VAULT_TEST_VAULT="+vaultPath, "TILL_VAULT_TEST_PREFIX="+prefix)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, outs = append(cmds, cmd), append(outs, &out)
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper %d: %v\n%s", i, err, outs[i])
		}
		if !strings.Contains(outs[i].String(), "--- PASS: TestHelperProcess") {
			t.Fatalf("helper %d did not run:\n%s", i, outs[i])
		}
	}
	k, _ := LoadKeyFile(keyPath, false)
	secrets, err := Open(vaultPath, k).Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(secrets) != 20 {
		t.Errorf("got %d secrets, want 20 (an update was lost)", len(secrets))
	}
}

func TestUpdateRemovesLeftovers(t *testing.T) {
	dir := t.TempDir()
	key, err := LoadKeyFile(filepath.Join(dir, "till.key"), true)
	if err != nil {
		t.Fatal(err)
	}
	f := Open(filepath.Join(dir, "till.vault"), key)
	if err := f.Set(NewSecret("a", "v1", time.Now())); err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(dir, ".till.vault.tmp-123")
	if err := os.WriteFile(leftover, []byte("an older vault"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.Set(NewSecret("b", "v2", time.Now())); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftover); err == nil {
		t.Error("a temp file left by a killed writer survived the next update")
	}
}

// TestLeftoversWhateverTheFolderName: temp files are found by their name,
// not by a pattern made of the path: in a folder named with "[" ("till
// [prod]") they are removed too, and a folder named "a*" leaves alone
// those of the folder "ab" beside it (another vault's work in progress).
func TestLeftoversWhateverTheFolderName(t *testing.T) {
	root := t.TempDir()
	key, err := LoadKeyFile(filepath.Join(root, "till.key"), true)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"till [prod]", "a*", "ab"} {
		if err := os.Mkdir(filepath.Join(root, name), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	sibling := filepath.Join(root, "ab", ".till.vault.tmp-9")
	if err := os.WriteFile(sibling, []byte("ab's vault, being written"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"till [prod]", "a*"} {
		f := Open(filepath.Join(root, name, "till.vault"), key)
		if err := f.Set(NewSecret("a", "v1", time.Now())); err != nil {
			t.Fatal(err)
		}
		leftover := filepath.Join(root, name, ".till.vault.tmp-123")
		if err := os.WriteFile(leftover, []byte("an older vault"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := f.Set(NewSecret("b", "v2", time.Now())); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(leftover); err == nil {
			t.Errorf("folder %q: a temp file left by a killed writer survived the next update", name)
		}
	}
	if _, err := os.Stat(sibling); err != nil {
		t.Errorf("the vault in folder \"a*\" removed the temp file of the one in \"ab\": %v", err)
	}
}

// TestLoadRemovesLeftovers: a reader removes the temp files a killed
// writer left, unless a writer holds the lock (its temp file is then work
// in progress).
func TestLoadRemovesLeftovers(t *testing.T) {
	dir := t.TempDir()
	key, err := LoadKeyFile(filepath.Join(dir, "till.key"), true)
	if err != nil {
		t.Fatal(err)
	}
	f := Open(filepath.Join(dir, "till.vault"), key)
	if err := f.Set(NewSecret("a", "v1", time.Now())); err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(dir, ".till.vault.tmp-123")
	if err := os.WriteFile(leftover, []byte("an older vault"), 0o600); err != nil {
		t.Fatal(err)
	}

	unlock, err := Open(f.Path(), key).lock() // a writer at work
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Load(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftover); err != nil {
		t.Errorf("Load removed a temp file while a writer held the lock: %v", err)
	}
	unlock()

	if _, err := f.Load(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftover); err == nil {
		t.Error("a temp file left by a killed writer survived Load")
	}
}

// TestUpdateRefusesOversizedVault: a change that would grow the vault past
// what Load reads is refused and leaves the vault as it was, loadable:
// written, it would fail every command after it, rm included.
func TestUpdateRefusesOversizedVault(t *testing.T) {
	path := filepath.Join(t.TempDir(), "till.vault")
	key, _ := newKeyFile(t)
	f := Open(path, key)
	t0 := time.Now()
	if err := f.Set(NewSecret("small", "sk-small-0123456789abcdef", t0)); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 60<<10)
	err := f.Update(func(secrets map[string]Secret) error {
		for i := range 300 { // 18 MB of values, more once armored
			name := fmt.Sprintf("blob%d", i)
			secrets[name] = NewSecret(name, "sk-"+big, t0)
		}
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "nothing was written") {
		t.Fatalf("Update past the size Load reads: %v, want it refused", err)
	}
	got, err := f.Load()
	if err != nil || len(got) != 1 {
		t.Errorf("after the refused Update: %d secrets, %v; want the one before", len(got), err)
	}
}

// TestSealedWithPassphrase: a vault's header tells, with no key, whether
// a passphrase or a key file opens it; a file that is no vault, or none,
// is neither.
func TestSealedWithPassphrase(t *testing.T) {
	dir := t.TempDir()
	pass, err := PassphraseKey("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	keyed, _ := newKeyFile(t)
	for _, tt := range []struct {
		name string
		key  *Key
		want bool
	}{{"passphrase", pass, true}, {"key file", keyed, false}} {
		path := filepath.Join(dir, tt.name+".vault")
		if err := Open(path, tt.key).Set(NewSecret("openai", "sk-test", time.Now())); err != nil {
			t.Fatal(err)
		}
		if got := SealedWithPassphrase(path); got != tt.want {
			t.Errorf("%s vault: got %v, want %v", tt.name, got, tt.want)
		}
	}
	os.WriteFile(filepath.Join(dir, "plain"), []byte("not a vault"), 0o600)
	for _, path := range []string{filepath.Join(dir, "plain"), filepath.Join(dir, "none")} {
		if SealedWithPassphrase(path) {
			t.Errorf("%s: sealed with a passphrase, want not", path)
		}
	}
}
