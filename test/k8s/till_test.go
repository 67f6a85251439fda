package k8s

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
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

// TestTillCheck runs till check on each ConfigMap's till.yaml, with a
// vault made on the host as README.md says.
//
// The config names the vault where the pod mounts the Secret
// (/var/lib/till), and till has no flag or variable that moves the vault
// of a config file ($TILL_KEY_FILE only applies without one). So the test
// checks that those two values are the Secret mount the manifest makes,
// and rewrites exactly those two, in place: every other byte, and so every
// line number in till's messages, is the ConfigMap's own.
func TestTillCheck(t *testing.T) {
	for name, st := range tillSetups(t) {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			hostVault(t, dir, st.cfg.vaultSecrets(), "sk-test")
			text, err := setScalars(st.cfgText, map[string]string{
				"vault.path":     filepath.Join(dir, "till.vault"),
				"vault.key_file": filepath.Join(dir, "till.key"),
			})
			if err != nil {
				t.Fatalf("ConfigMap %s: %v", st.configMap.Name, err)
			}
			etc := filepath.Join(dir, "etc")
			if err := os.Mkdir(etc, 0o755); err != nil {
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
	if _, err := setScalars([]byte(in), map[string]string{"vault.nope": "x"}); err == nil {
		t.Error("a path not in the config: no error")
	}
}
