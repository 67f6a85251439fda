package test

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gofrs/flock"
)

// Files till reads and writes on a host shared with other local users.

// TestConfigWritableByOthersRefused: whoever can write till.yaml decides
// where each key is sent (a route's upstream) and what till runs (an exec
// source's command), and a running till takes an edit at its next reload
// (it watches the file). A config file writable by group or others, or in
// a folder they can write (where they can replace it by a rename), must be
// refused, or at the least warned about, as ssh refuses such a config.
func TestConfigWritableByOthersRefused(t *testing.T) {
	cfg := "version: 1\nroutes: []\n"
	for _, tt := range []struct {
		name           string
		fileMode, dirM os.FileMode
	}{
		{"world-writable file", 0o666, 0o700},
		{"group-writable file", 0o664, 0o700},
		{"world-writable folder", 0o644, 0o777},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "conf")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "till.yaml")
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			// Explicit chmods: the umask must not soften the modes.
			if err := os.Chmod(path, tt.fileMode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tt.dirM); err != nil {
				t.Fatal(err)
			}
			_, errOut, code := runTill(t, dir, "", nil, "check", "-c", path)
			if code == 0 && !strings.Contains(strings.ToLower(errOut), "writable") {
				t.Errorf("till check accepted %s (file %v, folder %v) without a word: exit %d, stderr %q",
					path, tt.fileMode, tt.dirM, code, errOut)
			}
		})
	}
}

// TestConfigWithRedisPasswordReadableByOthers: the config is the one
// place a credential may be written (limits.redis's password), and till
// init makes the config 0644. Whoever reads it can zero or inflate the
// budgets and rate counters every till shares. A config that holds a
// password and that others can read must be refused or warned about.
func TestConfigWithRedisPasswordReadableByOthers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "till.yaml")
	cfg := "version: 1\nlimits: {redis: \"redis://:Sup3rS3cretRedisPassw0rd@127.0.0.1:1/0\"}\nroutes: []\n"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := runTill(t, dir, "", nil, "check")
	if code == 0 && !strings.Contains(strings.ToLower(errOut), "readable") {
		t.Errorf("a world-readable config holding limits.redis's password passed till check without a word: exit %d, %q", code, errOut)
	}
}

// TestPlantedReadableKeyRefused: a vault key file that others can read
// (here, one another local user left at ./till.key, as in a shared
// project folder) gives them every key the vault will hold. till warns,
// then stores the secret in a vault encrypted to that key anyway; ssh
// refuses to use a private key file others can read.
func TestPlantedReadableKeyRefused(t *testing.T) {
	dir := t.TempDir()
	// A key made by someone else: any age identity will do.
	other := t.TempDir()
	if _, errOut, code := runTill(t, other, "", nil, "init", "--dir", "."); code != 0 {
		t.Fatalf("init: %s", errOut)
	}
	planted, err := os.ReadFile(filepath.Join(other, "till.key"))
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, "till.key")
	if err := os.WriteFile(keyPath, planted, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	const value = "sk-planted-key-test-0123456789abcdef"
	suiteLeaks.key(value)
	out, errOut, code := runTill(t, dir, value, nil, "secret", "set", "openai")
	if _, err := os.Stat(filepath.Join(dir, "till.vault")); code == 0 || err == nil {
		t.Errorf("secret set stored the key in a vault sealed to a key file others can read: exit %d\n%s%s", code, out, errOut)
	}
}

// TestLockFilesNeverFollowLinks: the lock files beside the vault and the
// config (till.vault.lock, till.yaml.lock) are opened with O_CREATE and
// follow a symbolic link. Whoever can write in the folder makes till (root,
// say, running till secret set there) create a file of the link's choosing
// anywhere: an empty /etc/nologin shuts every other user out.
func TestLockFilesNeverFollowLinks(t *testing.T) {
	dir := t.TempDir()
	elsewhere := t.TempDir()
	vaultTarget := filepath.Join(elsewhere, "nologin")
	if err := os.Symlink(vaultTarget, filepath.Join(dir, "till.vault.lock")); err != nil {
		t.Fatal(err)
	}
	const value = "sk-lock-link-test-0123456789abcdef"
	suiteLeaks.key(value)
	runTill(t, dir, value, nil, "secret", "set", "openai")
	if _, err := os.Lstat(vaultTarget); err == nil {
		t.Errorf("till secret set created %s through a link planted at till.vault.lock", vaultTarget)
	}

	if err := os.WriteFile(filepath.Join(dir, "till.yaml"), []byte("version: 1\nroutes: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgTarget := filepath.Join(elsewhere, "created-by-client-add")
	if err := os.Symlink(cfgTarget, filepath.Join(dir, "till.yaml.lock")); err != nil {
		t.Fatal(err)
	}
	runTill(t, dir, "", nil, "client", "add", "web", "--write")
	if _, err := os.Lstat(cfgTarget); err == nil {
		t.Errorf("till client add --write created %s through a link planted at till.yaml.lock", cfgTarget)
	}
}

// TestCAInitKilledBeforeVaultWrite: till ca init writes the CA
// certificate, then stores the CA key in the vault. Killed in between (here
// while it waits for the vault's lock), it leaves a certificate whose key is
// gone: ca init then refuses ("already exists: this installation has its
// CA") and serve refuses ("no till-ca in the vault"; hint: till ca init),
// each sending the user to the other, until someone deletes the file by
// hand.
func TestCAInitKilledBeforeVaultWrite(t *testing.T) {
	dir := t.TempDir()
	fl := flock.New(filepath.Join(dir, "till.vault.lock"))
	if err := fl.Lock(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tillBin, "ca", "init")
	cmd.Dir = dir
	cmd.Env = tillEnv()
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Killed once it wrote the certificate, or after 3 s waiting for the
	// lock (a till that stores the key first writes nothing before it).
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(dir, "till-ca.pem")); err == nil {
			break
		}
	}
	cmd.Process.Kill() // kill -9, as a crash or an OOM kill would
	cmd.Wait()
	fl.Unlock()
	fl.Close()

	out, stderr, code := runTill(t, dir, "", nil, "ca", "init")
	if code != 0 {
		t.Errorf("till ca init after a killed one: exit %d\n%s%s", code, out, stderr)
	}
}

// TestVaultFolderWritableByOthersRefused: whoever can write the folder of
// the vault or of its key replaces both by a rename: a key of their own
// and a vault sealed with it, holding their own provider key, which a
// running till takes at its next reload and sends with every request (the
// app's prompts and answers then land in their account). As for the
// config's folder, a vault or key folder every user can write is refused,
// at a reload too; without a config file, the working folder is the
// vault's.
func TestVaultFolderWritableByOthersRefused(t *testing.T) {
	const realKey, theirs = "sk-vault-folder-real-0123456789", "sk-vault-folder-theirs-0123456789"
	suiteLeaks.key(realKey)
	suiteLeaks.key(theirs)
	up := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{}`)) }))
	root := t.TempDir()
	conf, data, other := filepath.Join(root, "conf"), filepath.Join(root, "data"), filepath.Join(root, "other")
	for _, d := range []string{conf, data, other} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	cfg := "version: 1\nvault: {path: ../data/till.vault, key_file: ../data/till.key}\nroutes:\n  - {name: openai, preset: openai, upstream: " + up.URL + "}\n"
	if err := os.WriteFile(filepath.Join(conf, "till.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	setSecret(t, conf, "openai", realKey)
	setSecret(t, other, "openai", theirs) // their vault, sealed with their key
	tl := startTillIn(t, conf, up.caFile)

	// The data folder loosened, another user swaps in their key and vault.
	if err := os.Chmod(data, 0o777); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(data, 0o700)
	for _, f := range []string{"till.key", "till.vault"} {
		if err := os.Rename(filepath.Join(other, f), filepath.Join(data, f)); err != nil {
			t.Fatal(err)
		}
	}
	if !tl.waitLog("reload failed") {
		t.Fatalf("the swapped vault was taken without a failed reload:\n%s", tl.stderr.String())
	}
	do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
	if got := up.last(t).Header.Get("Authorization"); got != "Bearer "+realKey {
		t.Errorf("after another user swapped the vault in a folder every user can write, the request went with a key of %d characters, want the operator's", len(got))
	}
	if _, errOut, code := runTill(t, conf, "", nil, "check"); code == 0 || !strings.Contains(errOut, "writable by every user") {
		t.Errorf("till check with the vault in a folder every user can write: exit %d, %q; want it refused", code, errOut)
	}

	// No config file: the vault is the working folder's.
	if err := os.Chmod(other, 0o777); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(other, 0o700)
	if _, errOut, code := runTill(t, other, "", nil, "secret", "list"); code == 0 || !strings.Contains(errOut, "writable by every user") {
		t.Errorf("till secret list with the vault in a working folder every user can write: exit %d, %q; want it refused", code, errOut)
	}
}
