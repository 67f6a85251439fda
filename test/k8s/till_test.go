package k8s

import (
	"bytes"
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tillgw/till/test/fake"
)

// tillPkg is the command under test, built from the repository root.
const tillPkg = "github.com/tillgw/till/cmd/till"

var (
	buildOnce sync.Once
	buildDir  string
	tillBin   string
	buildErr  error
)

// TestMain removes the binary the tests built, if any.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// till builds the real till binary once (go build in the repository
// root, ../.., which is till's own module) and returns its path. Only the
// tests that run till build it.
func till(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "till-k8s-bin-"); buildErr != nil {
			return
		}
		// The serve tests may run till as another user, who must reach it.
		if buildErr = os.Chmod(buildDir, 0o755); buildErr != nil {
			return
		}
		tillBin = filepath.Join(buildDir, "till")
		cmd := exec.Command("go", "build", "-o", tillBin, tillPkg)
		cmd.Dir = filepath.Join("..", "..")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			buildErr = fmt.Errorf("go build %s: %v\n%s", tillPkg, err, out.Bytes())
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return tillBin
}

// tillEnv is the environment for till commands: this one without the
// variables that would point till at another config or key.
func tillEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "TILL_")
	})
}

// runTill runs till with args and stdin, and returns its output and exit
// code.
func runTill(t *testing.T, dir, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(till(t), args...)
	cmd.Dir = dir
	cmd.Env = tillEnv()
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("till %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// fingerprintRE finds the fingerprint secret set prints.
var fingerprintRE = regexp.MustCompile(`sha256:[0-9a-f]+`)

// hostVault makes a vault as README.md tells the reader to, on the host:
// till init, then till secret set for each secret (value on stdin). It
// returns the folder holding till.vault and till.key, and the fingerprint
// of each secret.
func hostVault(t *testing.T, dir string, secrets []string, value string) map[string]string {
	t.Helper()
	if _, stderr, code := runTill(t, dir, "", "init", "--dir", "."); code != 0 {
		t.Fatalf("till init: exit %d\n%s", code, stderr)
	}
	return setSecrets(t, dir, secrets, value)
}

// setSecrets stores (or rotates) each secret in the vault of dir/till.yaml.
func setSecrets(t *testing.T, dir string, secrets []string, value string) map[string]string {
	t.Helper()
	fps := map[string]string{}
	for _, name := range secrets {
		stdout, stderr, code := runTill(t, dir, value+"-"+name+"\n", "secret", "set", name, "-c", "till.yaml")
		if code != 0 {
			t.Fatalf("till secret set %s: exit %d\n%s", name, code, stderr)
		}
		fps[name] = fingerprintRE.FindString(stdout)
	}
	return fps
}

// tillSetups returns every till container of the examples with what its
// manifest says about it.
func tillSetups(t *testing.T) map[string]*tillSetup {
	t.Helper()
	out := map[string]*tillSetup{}
	for _, s := range loadSets(t) {
		for _, w := range s.workloads {
			for _, c := range tillContainers(w) {
				out[s.file+":"+w.String()+"/"+c.Name] = s.setupOf(t, w, c)
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("no till container in the examples")
	}
	return out
}

// fakeSource is a strict fake Vault (test/fake) standing in for one vault
// source of a config: it holds a value for every ref the routes make to
// the source, and accepts the Kubernetes login the config asks for with
// one service-account token.
type fakeSource struct {
	vault  *fake.Vault
	src    tillSource
	jwt    string            // the token it accepts
	values map[string]string // the value of each ref, by ref
	data   map[string]map[string]string
}

// put stores value as ref's, in a new version of its entry.
func (f *fakeSource) put(ref tillRef, value string) {
	field := cmp.Or(ref.field, "value") // a ref without #FIELD reads an entry's only field
	if f.data[ref.path] == nil {
		f.data[ref.path] = map[string]string{}
	}
	f.data[ref.path][field] = value
	f.values[ref.ref] = value
	f.vault.Put(ref.path, f.data[ref.path], nil)
}

// fakeSources starts a fake for each of the config's sources and adds to
// rewrites the values that point the config at them: each address, and
// ca_file and jwt_file under root. It returns the fakes, and the files to
// lay out under root at the paths the config names: each fake's CA at
// ca_file, the token it accepts at jwt_file.
//
// The fakes speak Vault's HTTP API only: a source of another type, or a
// vault source that logs in otherwise, or trusts the system's CAs (no
// fake is signed by one), stops the test.
func fakeSources(t *testing.T, cfg *tillConfig, root string, rewrites map[string]string) ([]*fakeSource, map[string][]byte) {
	t.Helper()
	var fakes []*fakeSource
	files := map[string][]byte{}
	for i, src := range cfg.Sources {
		switch {
		case src.Type != "vault":
			t.Fatalf("source %q: type %q: this test fakes vault sources only", src.Name, src.Type)
		case src.Auth.Kubernetes == nil || src.authMount() != "kubernetes":
			t.Fatalf("source %q: this test fakes Kubernetes logins at auth/kubernetes only", src.Name)
		case src.CAFile == "":
			t.Fatalf("source %q: no ca_file, and no CA of the system's signs a fake", src.Name)
		}
		f := &fakeSource{vault: fake.NewVault(t, time.Hour), src: src, jwt: "eyJhbGciOiJSUzI1NiJ9.fake-sa-token-" + src.Name,
			values: map[string]string{}, data: map[string]map[string]string{}}
		f.vault.EnableKubernetes(src.Auth.Kubernetes.Role, f.jwt)
		for _, ref := range cfg.refs() {
			if ref.source == src.Name {
				f.put(ref, "sk-vault-"+strings.NewReplacer("/", "-", "#", "-").Replace(ref.path+"#"+ref.field))
			}
		}
		ca, err := os.ReadFile(f.vault.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		files[src.CAFile], files[src.Auth.Kubernetes.JWTFile] = ca, []byte(f.jwt)
		prefix := fmt.Sprintf("sources.%d.", i)
		rewrites[prefix+"address"] = f.vault.URL
		rewrites[prefix+"ca_file"] = filepath.Join(root, src.CAFile)
		rewrites[prefix+"auth.kubernetes.jwt_file"] = filepath.Join(root, src.Auth.Kubernetes.JWTFile)
		fakes = append(fakes, f)
	}
	return fakes, files
}

// TestTillCheck runs till check on each ConfigMap's till.yaml, with a
// vault made on the host as README.md says, and a fake Vault for each
// vault source.
//
// The config names the vault where the pod mounts the Secret
// (/var/lib/till), and till has no flag or variable that moves the vault
// of a config file ($TILL_KEY_FILE only applies without one). So the test
// checks that those two values are the Secret mount the manifest makes,
// and rewrites exactly those two, in place: every other byte, and so every
// line number in till's messages, is the ConfigMap's own. A source's
// server (vault.vault.svc exists only in the cluster), CA and token file
// are rewritten the same way, to the fake and to files under the test's
// folder; till check then logs in and reads every ref, as it would in the
// pod.
func TestTillCheck(t *testing.T) {
	for name, st := range tillSetups(t) {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			rewrites := map[string]string{}
			if st.secret != "" {
				hostVault(t, dir, st.cfg.vaultSecrets(), "sk-test")
				rewrites["vault.path"] = filepath.Join(dir, "till.vault")
				rewrites["vault.key_file"] = filepath.Join(dir, "till.key")
			}
			fakes, files := fakeSources(t, st.cfg, dir, rewrites)
			for p, data := range files {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, p), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			text, err := setScalars(st.cfgText, rewrites)
			if err != nil {
				t.Fatalf("ConfigMap %s: %v", st.configMap.Name, err)
			}
			etc := filepath.Join(dir, "etc")
			if err := os.MkdirAll(etc, 0o755); err != nil {
				t.Fatal(err)
			}
			cfgFile := filepath.Join(etc, "till.yaml")
			if err := os.WriteFile(cfgFile, text, 0o644); err != nil {
				t.Fatal(err)
			}
			stdout, stderr, code := runTill(t, dir, "", "check", "-c", cfgFile)
			if code != 0 {
				t.Fatalf("till check on ConfigMap %s's %s: exit %d\n%s%s", st.configMap.Name, st.configKey, code, stdout, stderr)
			}
			if !strings.HasPrefix(stdout, "ok: ") {
				t.Errorf("till check: %q, want ok: ...", stdout)
			}
			if len(fakes) == 0 {
				return
			}
			if want := fmt.Sprintf(", %d fetched from sources", len(st.cfg.refs())); !strings.Contains(stdout, want) {
				t.Errorf("till check: %q, want %q", stdout, want)
			}
			for _, f := range fakes {
				for _, ref := range st.cfg.refs() {
					if ref.source == f.src.Name && f.vault.Reads(ref.path) == 0 {
						t.Errorf("till check did not read %s from the fake Vault", ref.ref)
					}
				}
			}
			// And it says so when Vault refuses the pod's token: a check
			// that passed without logging in would prove nothing.
			for _, f := range fakes {
				f.vault.EnableKubernetes(f.src.Auth.Kubernetes.Role, f.jwt+"-another")
			}
			stdout, stderr, code = runTill(t, dir, "", "check", "-c", cfgFile)
			if code != 1 || !strings.Contains(stderr, "cannot be fetched") {
				t.Errorf("till check with the login refused: exit %d, want 1 and \"cannot be fetched\"\n%s%s", code, stdout, stderr)
			}
		})
	}
}

// TestSetScalars checks the in-place rewrite that TestTillCheck relies
// on.
func TestSetScalars(t *testing.T) {
	in := "version: 1\nvault:\n  path: /var/lib/till/till.vault  # the Secret\n  key_file: \"/var/lib/till/till.key\"\nroutes: []\n"
	got, err := setScalars([]byte(in), map[string]string{"vault.path": "/tmp/a b/v", "vault.key_file": "/tmp/k"})
	if err != nil {
		t.Fatal(err)
	}
	want := "version: 1\nvault:\n  path: \"/tmp/a b/v\"  # the Secret\n  key_file: \"/tmp/k\"\nroutes: []\n"
	if string(got) != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// List items by index, flow mappings inside them.
	in = "sources:\n  - name: corp\n    auth: {kubernetes: {role: r, jwt_file: /var/run/t}}\n"
	if got, err = setScalars([]byte(in), map[string]string{"sources.0.auth.kubernetes.jwt_file": "/tmp/t"}); err != nil {
		t.Fatal(err)
	}
	want = "sources:\n  - name: corp\n    auth: {kubernetes: {role: r, jwt_file: \"/tmp/t\"}}\n"
	if string(got) != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if _, err := setScalars([]byte(in), map[string]string{"sources.1.name": "x"}); err == nil {
		t.Error("an index past the list: no error")
	}
	if _, err := setScalars([]byte(in), map[string]string{"vault.nope": "x"}); err == nil {
		t.Error("a path not in the config: no error")
	}
}
