//go:build linux

package k8s

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"
)

// kubeletVolume is a folder laid out as the kubelet's atomic writer lays
// out a ConfigMap or Secret volume: the files live in a timestamped
// folder, ..data links to it, and each file name links into ..data. An
// update writes a new folder and swaps ..data in one rename, so a reader
// sees the old files or the new ones, and a file's path never changes:
// only what it resolves to.
type kubeletVolume struct {
	t    *testing.T
	dir  string
	gen  int
	mode os.FileMode // the folder's, as the kubelet makes it (kubeletMode)
}

// newKubeletVolume lays out files in dir (which it creates), the folder
// of volume vol in a pod whose fsGroup is set.
func newKubeletVolume(t *testing.T, dir string, vol corev1.Volume, files map[string][]byte) *kubeletVolume {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	v := &kubeletVolume{t: t, dir: dir, mode: kubeletMode(vol)}
	v.update(files)
	return v
}

// kubeletMode is the mode the kubelet gives the folder of vol under a pod's
// fsGroup: a ConfigMap's is an emptyDir on disk, 0777, not sticky; a
// Secret's or a projected volume's a tmpfs, 1777. fsGroup adds setgid.
func kubeletMode(vol corev1.Volume) os.FileMode {
	mode := 0o777 | os.ModeSetgid
	if vol.Secret != nil || vol.Projected != nil {
		mode |= os.ModeSticky
	}
	return mode
}

// update writes a new generation of the files and swaps ..data to it.
func (v *kubeletVolume) update(files map[string][]byte) {
	t := v.t
	t.Helper()
	if err := os.Chmod(v.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	v.gen++
	gen := fmt.Sprintf("..2026_01_02_15_04_%02d.%d", v.gen, os.Getpid())
	genDir := filepath.Join(v.dir, gen)
	if err := os.Mkdir(genDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		f := filepath.Join(genDir, name)
		if err := os.WriteFile(f, files[name], 0o440); err != nil {
			t.Fatal(err)
		}
		if os.Geteuid() == 0 {
			// fsGroup: the kubelet gives the files to the pod's group
			// and adds group read.
			if err := os.Chown(f, 0, tillUID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.Chmod(genDir, 0o555); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(gen, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		link := filepath.Join(v.dir, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			t.Fatal(err)
		}
	}
	v.seal()
}

// seal makes the volume read-only to till, as the mount is in the pod.
// With podMounts, its folder is as the kubelet makes it (root's, the
// pod's fsGroup its group, its kubeletMode), made read-only by till's
// mount of it (inPod); without, it is 0555.
func (v *kubeletVolume) seal() {
	if !podMounts() {
		if err := os.Chmod(v.dir, 0o555); err != nil {
			v.t.Fatal(err)
		}
		return
	}
	if err := os.Chown(v.dir, 0, tillUID); err != nil {
		v.t.Fatal(err)
	}
	if err := os.Chmod(v.dir, v.mode); err != nil {
		v.t.Fatal(err)
	}
}

// podMounts reports whether till can run here with its volumes mounted
// read-only, as in the pod (inPod): as root, with unshare and setpriv.
var podMounts = sync.OnceValue(func() bool {
	if os.Geteuid() != 0 {
		return false
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		return false
	}
	return exec.Command("unshare", "-m", "--propagation", "private", "true").Run() == nil
})

// inPod returns the command that runs argv as till's container does:
// with podMounts, in a mount namespace of its own where each folder of ro
// is mounted read-only (the kubelet mounts ConfigMap, Secret and projected
// volumes so), as till's user; as till's user when the test runs as root
// without them; else as it is.
func inPod(ctx context.Context, ro []string, argv ...string) *exec.Cmd {
	if !podMounts() {
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		if os.Geteuid() == 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: tillUID, Gid: tillUID, Groups: []uint32{}}}
		}
		return cmd
	}
	script := fmt.Sprintf(`n=$1; shift
while [ "$n" -gt 0 ]; do
	mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" || exit 1
	shift; n=$((n - 1))
done
exec setpriv --reuid=%d --regid=%d --clear-groups "$@"`, tillUID, tillUID)
	args := slices.Concat([]string{"-m", "--propagation", "private", "sh", "-c", script, "sh", strconv.Itoa(len(ro))}, ro, argv)
	return exec.CommandContext(ctx, "unshare", args...)
}

// entries lists the names in the volume's folder.
func (v *kubeletVolume) entries() []string {
	des, err := os.ReadDir(v.dir)
	if err != nil {
		v.t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

// logBuffer collects a process's output for the test to read while it
// runs.
type logBuffer struct {
	mu    sync.Mutex
	lines []string
	added chan struct{}
}

func (b *logBuffer) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		b.mu.Lock()
		b.lines = append(b.lines, sc.Text())
		b.mu.Unlock()
		select {
		case b.added <- struct{}{}:
		default:
		}
	}
}

// String returns everything collected so far.
func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}

// field returns the string field of the first JSON log line whose message
// is msg.
func (b *logBuffer) field(msg, field string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range b.lines {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil && rec["message"] == msg {
			s, _ := rec[field].(string)
			return s
		}
	}
	return ""
}

// pod is till running from a pod's files, emulated in a folder: the
// ConfigMap, Secret and projected volumes at their mount paths under root.
type pod struct {
	root        string
	host        string // where the reader made the vault (till init)
	workload    workload
	setup       *tillSetup
	container   *corev1.Container
	config      *kubeletVolume
	vault       *kubeletVolume // nil: no vault, keys from sources only
	gw, admin   string         // the addresses till bound
	logs        *logBuffer
	fingerprint map[string]string
	fakes       []*fakeSource                // the Vault of each source
	volumes     map[string]*kubeletVolume    // the volumes serving the sources' files, by mount path
	volFiles    map[string]map[string][]byte // and what each holds
	served      map[string]servedFile        // how each source's file reaches till, by its path
	audit       string                       // the audit file, in its emptyDir ("": stdout)
}

// podOptions move what a test on this machine cannot have as the
// manifest says.
type podOptions struct {
	upstream  string // every route's upstream, when set: no provider is reachable
	sourceTTL string // every source's ttl, when set: a test cannot wait minutes
}

// startPod runs the till container of the named workload as its manifest
// says (args, TILL_CONFIG, the config from the ConfigMap, the vault from a
// Secret volume laid out as the kubelet lays it out, a fake Vault behind
// each source with its CA and the pod's token in the volumes that serve
// them), as till's user when the test runs as root, with the volumes'
// folders as the kubelet makes and mounts them when it can (podMounts).
// Only the ports and each source's address move: to free loopback ports,
// and the fakes.
func startPod(t *testing.T, file, workloadName string) *pod {
	t.Helper()
	return startPodWith(t, file, workloadName, podOptions{})
}

// startPodWith is startPod, with what opts moves moved as well.
func startPodWith(t *testing.T, file, workloadName string, opts podOptions) *pod {
	t.Helper()
	bin := till(t)
	var w workload
	var set *manifestSet
	for _, s := range loadSets(t) {
		for _, sw := range s.workloads {
			if s.file == file && sw.name == workloadName {
				w, set = sw, s
			}
		}
	}
	if set == nil || len(tillContainers(w)) != 1 {
		t.Fatalf("%s: no workload %s with one till container", file, workloadName)
	}
	c := tillContainers(w)[0]
	st := set.setupOf(t, w, c)

	root, err := os.MkdirTemp("", "till-k8s-pod-")
	if err != nil {
		t.Fatal(err)
	}
	// Reachable by till's user; removable by the test after the volumes
	// were sealed.
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
		os.RemoveAll(root)
	})
	p := &pod{root: root, host: filepath.Join(root, "host"), workload: w, setup: st, container: c, logs: &logBuffer{added: make(chan struct{}, 1)},
		volumes: map[string]*kubeletVolume{}, volFiles: map[string]map[string][]byte{}, served: map[string]servedFile{}}
	if err := os.Mkdir(p.host, 0o700); err != nil {
		t.Fatal(err)
	}
	rewrites := map[string]string{"admin.listen": "127.0.0.1:0"}
	if st.secret != "" {
		p.fingerprint = hostVault(t, p.host, st.cfg.vaultSecrets(), "sk-test")
		rewrites["vault.path"] = filepath.Join(root, st.cfg.Vault.Path)
		rewrites["vault.key_file"] = filepath.Join(root, st.cfg.Vault.KeyFile)
	}
	// The audit file's folder as the kubelet makes an emptyDir: empty,
	// and writable by every user.
	if f := st.cfg.Audit.File; f != "" && f != "-" {
		p.audit = filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p.audit), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Dir(p.audit), 0o777); err != nil {
			t.Fatal(err)
		}
		rewrites["audit.file"] = p.audit
	}
	var files map[string][]byte
	p.fakes, files = fakeSources(t, st.cfg, root, rewrites)

	cfgFile := filepath.Join(root, configPath(c))
	text, err := setScalars(st.cfgText, rewrites)
	if err != nil {
		t.Fatal(err)
	}
	if text, err = opts.apply(text); err != nil {
		t.Fatal(err)
	}
	volumeOf := func(file string) corev1.Volume {
		sf, err := w.serve(c, file, false)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		return sf.volume
	}
	p.config = newKubeletVolume(t, filepath.Dir(cfgFile), volumeOf(configPath(c)), map[string][]byte{filepath.Base(cfgFile): text})
	if st.secret != "" {
		p.vault = newKubeletVolume(t, filepath.Join(root, filepath.Dir(st.cfg.Vault.Path)), volumeOf(st.cfg.Vault.Path), p.secretFiles())
	}
	// Each source's file in the volume the manifest serves it from, laid
	// out as the kubelet does (a projected token too: the kubelet renews
	// it by the same ..data swap).
	for _, name := range slices.Sorted(maps.Keys(files)) {
		sf, err := w.serve(c, name, false)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		p.served[name] = sf
		if p.volFiles[sf.mount.MountPath] == nil {
			p.volFiles[sf.mount.MountPath] = map[string][]byte{}
		}
		p.volFiles[sf.mount.MountPath][sf.rel] = files[name]
	}
	for mp, vf := range p.volFiles {
		var vol corev1.Volume
		for _, sf := range p.served {
			if sf.mount.MountPath == mp {
				vol = sf.volume
			}
		}
		p.volumes[mp] = newKubeletVolume(t, filepath.Join(root, mp), vol, vf)
	}
	ro := []string{p.config.dir}
	if p.vault != nil {
		ro = append(ro, p.vault.dir)
	}
	for _, v := range p.volumes {
		ro = append(ro, v.dir)
	}

	args := slices.Clone(c.Args)
	for i := range args {
		if i > 0 && args[i-1] == "--listen" {
			args[i] = "127.0.0.1:0"
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := inPod(ctx, ro, append([]string{bin}, args...)...)
	cmd.Dir = root
	cmd.Env = append(tillEnv(), "TILL_CONFIG="+cfgFile)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard // nothing: the audit records go to their file
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { p.logs.read(out); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("till's log:\n%s", p.logs)
		}
	})
	deadline := time.After(15 * time.Second)
	for p.gw == "" || p.admin == "" {
		select {
		case <-p.logs.added:
			p.gw, p.admin = p.logs.field("till listening", "addr"), p.logs.field("admin listening", "admin_addr")
		case <-done:
			t.Fatalf("till exited before listening:\n%s", p.logs)
		case <-deadline:
			t.Fatalf("till did not listen within 15s:\n%s", p.logs)
		}
	}
	return p
}

// secretFiles is the Secret volume's content: the host's vault and key,
// under the names the volume's items give them.
func (p *pod) secretFiles() map[string][]byte {
	files := map[string][]byte{}
	for name, src := range map[string]string{
		filepath.Base(p.setup.cfg.Vault.Path):    "till.vault",
		filepath.Base(p.setup.cfg.Vault.KeyFile): "till.key",
	} {
		data, err := os.ReadFile(filepath.Join(p.host, src))
		if err != nil {
			panic(err)
		}
		files[name] = data
	}
	return files
}

// replaceFile gives the source's file name new content, as the kubelet
// updates a volume: a new generation of all its files, and a swap.
func (p *pod) replaceFile(name string, data []byte) {
	sf := p.served[name]
	files := maps.Clone(p.volFiles[sf.mount.MountPath])
	files[sf.rel] = data
	p.volFiles[sf.mount.MountPath] = files
	p.volumes[sf.mount.MountPath].update(files)
}

// apply makes the changes opts ask for in a config.
func (opts podOptions) apply(text []byte) ([]byte, error) {
	if opts == (podOptions{}) {
		return text, nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(text, &doc); err != nil {
		return nil, err
	}
	set := func(list *yaml.Node, key, value string) {
		if list == nil || value == "" {
			return
		}
		for _, item := range list.Content {
			if v := mapValue(item, key); v != nil {
				v.SetString(value)
				continue
			}
			var k, v yaml.Node
			k.SetString(key)
			v.SetString(value)
			item.Content = append(item.Content, &k, &v)
		}
	}
	set(mapValue(doc.Content[0], "routes"), "upstream", opts.upstream)
	set(mapValue(doc.Content[0], "sources"), "ttl", opts.sourceTTL)
	return yaml.Marshal(&doc)
}

// strangers lists the files in the Secret volume that the kubelet did not
// put there: none, for a till that only reads its vault.
func (p *pod) strangers() []string {
	if p.vault == nil {
		return nil
	}
	want := p.secretFiles()
	return slices.DeleteFunc(p.vault.entries(), func(name string) bool {
		_, ok := want[name]
		return ok || strings.HasPrefix(name, "..")
	})
}

// get fetches http://ADDR/path and returns the status and body.
func get(t *testing.T, addr, path string, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	maps.Copy(req.Header, header)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// healthCommand reports whether this till has the health command that
// the exec probes run (till CMD --help exits 0 for a known command).
func healthCommand(t *testing.T) bool {
	_, _, code := runTill(t, t.TempDir(), "", "health", "--help")
	return code == 0
}

// TestProbesAnswer runs each till container's probes against till started
// as its manifest says: httpGet probes as the kubelet sends them (no
// token), exec probes as the kubelet runs them in the container.
func TestProbesAnswer(t *testing.T) {
	for _, tt := range []struct{ file, workload string }{
		{"sidecar.yaml", "web"},
		{"sidecar-vault.yaml", "web"},
		{"gateway.yaml", "till"},
	} {
		t.Run(tt.file, func(t *testing.T) {
			p := startPod(t, tt.file, tt.workload)
			c := p.container
			for name, probe := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
				switch {
				case probe == nil:
				case probe.HTTPGet != nil:
					if code, body := get(t, p.admin, probe.HTTPGet.Path, nil); code != http.StatusOK {
						t.Errorf("%s probe GET %s: %d %s", name, probe.HTTPGet.Path, code, body)
					}
				case probe.Exec != nil:
					u, err := url.Parse(probe.Exec.Command[3])
					if err != nil {
						t.Fatal(err)
					}
					// What till health asks, asked directly.
					if code, body := get(t, p.admin, u.Path, nil); code != http.StatusOK {
						t.Errorf("%s probe's URL %s: %d %s", name, u.Path, code, body)
					}
					if !healthCommand(t) {
						t.Logf("%s probe: this till has no health command yet: the exec probe itself not run", name)
						continue
					}
					u.Host = p.admin
					args := slices.Concat(probe.Exec.Command[1:3], []string{u.String()})
					if _, stderr, code := runTill(t, p.root, "", args...); code != 0 {
						t.Errorf("%s probe %q: exit %d\n%s", name, probe.Exec.Command, code, stderr)
					}
				}
			}
			if p.setup.cfg.Admin.TokenSHA256 != "" {
				// Only the probes are open without the admin token.
				if code, _ := get(t, p.admin, "/metrics", nil); code != http.StatusUnauthorized {
					t.Errorf("GET /metrics without the admin token: %d, want 401", code)
				}
			}
			for _, r := range p.setup.cfg.Routes {
				if !r.hasClients() {
					continue
				}
				// A route that names its clients refuses a request
				// without a token, before any key is used.
				if code, body := get(t, p.gw, r.prefix()+"/v1/models", nil); code != http.StatusUnauthorized {
					t.Errorf("GET %s/v1/models without a client token: %d %s, want 401", r.prefix(), code, body)
				}
			}
			if extra := p.strangers(); len(extra) > 0 {
				t.Errorf("till wrote into the read-only Secret volume: %q", extra)
			}
		})
	}
}

// adminRoute is the part of GET /admin/routes this test reads.
type adminRoute struct {
	Name        string `json:"name"`
	Fingerprint string `json:"fingerprint"`
}

// routes waits until /admin/routes satisfies ok, and returns it.
func (p *pod) routes(t *testing.T, what string, ok func([]adminRoute) bool) []adminRoute {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get(t, p.admin, "/admin/routes", nil)
		var routes []adminRoute
		if code == http.StatusOK && json.Unmarshal([]byte(body), &routes) == nil && ok(routes) {
			return routes
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s; /admin/routes: %d %s", what, code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSidecarFollowsVolumeUpdates: a rotation (a new Secret) and a config
// edit (a new ConfigMap) reach the running sidecar as the kubelet delivers
// them, by a swap of the volume's ..data link, with no restart.
func TestSidecarFollowsVolumeUpdates(t *testing.T) {
	p := startPod(t, "sidecar.yaml", "web")
	secret := p.setup.cfg.vaultSecrets()[0]
	first := p.fingerprint[secret]
	p.routes(t, "the first key in use", func(rs []adminRoute) bool {
		return len(rs) > 0 && rs[0].Fingerprint == first
	})

	// Rotation: till secret set on the host, then the Secret updated.
	rotated := setSecrets(t, p.host, []string{secret}, "sk-rotated")[secret]
	if rotated == first || rotated == "" {
		t.Fatalf("the rotation printed fingerprint %q (was %q)", rotated, first)
	}
	p.vault.update(p.secretFiles())
	p.routes(t, "the rotated key in use", func(rs []adminRoute) bool {
		return slices.ContainsFunc(rs, func(r adminRoute) bool { return r.Fingerprint == rotated })
	})

	// A config edit: one more route.
	var doc yaml.Node
	if err := yaml.Unmarshal(readFile(t, p.config.dir, "till.yaml"), &doc); err != nil {
		t.Fatal(err)
	}
	routes := mapValue(doc.Content[0], "routes")
	var extra yaml.Node
	if err := yaml.Unmarshal([]byte("{name: added, preset: openai, secret: "+secret+"}"), &extra); err != nil {
		t.Fatal(err)
	}
	routes.Content = append(routes.Content, extra.Content[0])
	edited, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	p.config.update(map[string][]byte{"till.yaml": edited})
	p.routes(t, "the edited config in use", func(rs []adminRoute) bool {
		return slices.ContainsFunc(rs, func(r adminRoute) bool { return r.Name == "added" })
	})
	if strings.Contains(p.logs.String(), "reload failed") {
		t.Errorf("a reload failed:\n%s", p.logs)
	}
}

func readFile(t *testing.T, dir, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// appRequest returns what the pod's app asks till for, as its manifest
// sets it up: the path of its *_BASE_URL (plus /models, as the app's
// loop asks), and the header it sends with its *_API_KEY.
func (p *pod) appRequest(t *testing.T) (string, http.Header) {
	t.Helper()
	for _, c := range p.workload.spec.Containers {
		if isTillImage(c.Image) {
			continue
		}
		for _, e := range c.Env {
			if prefix, ok := strings.CutSuffix(e.Name, "_BASE_URL"); ok {
				u, err := url.Parse(e.Value)
				if err != nil {
					t.Fatal(err)
				}
				key, _ := envValue(&c, prefix+"_API_KEY")
				return u.Path + "/models", http.Header{"Authorization": {"Bearer " + key}}
			}
		}
	}
	t.Fatalf("%v: no app container with a *_BASE_URL", p.workload)
	return "", nil
}

// TestVaultSidecarServes runs sidecar-vault.yaml's till as its manifest
// says, in front of a fake Vault: the app's request gets the key that
// Vault holds, fetched with the token from the projected volume and
// trusted through the CA from the vault-ca volume. Then the kubelet
// renews the token (a ..data swap) as Vault drops till's login and gets a
// new version of the key: till logs in again with the new token, and the
// new key is in use, with no request failing meanwhile.
//
// The upstream moves to a local server (no provider is reachable here),
// and the source's ttl to 1s.
func TestVaultSidecarServes(t *testing.T) {
	var mu sync.Mutex
	var seen []string // the Authorization header of each request upstream
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object": "list", "data": []}`)
	}))
	defer up.Close()
	p := startPodWith(t, "sidecar-vault.yaml", "web", podOptions{upstream: up.URL, sourceTTL: "1s"})
	if len(p.fakes) != 1 || len(p.setup.cfg.refs()) != 1 {
		t.Fatalf("want one source and one ref; got %d and %d", len(p.fakes), len(p.setup.cfg.refs()))
	}
	f, ref := p.fakes[0], p.setup.cfg.refs()[0]
	path, header := p.appRequest(t)
	ask := func() string {
		t.Helper()
		if code, body := get(t, p.gw, path, header); code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
		mu.Lock()
		defer mu.Unlock()
		return seen[len(seen)-1]
	}
	if got, want := ask(), "Bearer "+f.values[ref.ref]; got != want {
		t.Fatalf("upstream got Authorization %q, want %q (the key in Vault)", got, want)
	}
	if f.vault.Logins() != 1 || f.vault.Reads(ref.path) != 1 {
		t.Errorf("logins %d, reads %d: want one of each", f.vault.Logins(), f.vault.Reads(ref.path))
	}

	// In this order, so that a refresh at any point in between succeeds:
	// the kubelet writes the renewed token, Vault takes only that one
	// (the fake is stricter than Kubernetes, where the old one stays valid
	// until it expires), drops till's login, and gets a new version.
	renewed := f.jwt + "-renewed"
	p.replaceFile(f.src.Auth.Kubernetes.JWTFile, []byte(renewed))
	f.vault.EnableKubernetes(f.src.Auth.Kubernetes.Role, renewed)
	f.vault.RevokeAll()
	f.put(ref, f.values[ref.ref]+"-v2")
	want := "Bearer " + f.values[ref.ref]
	deadline := time.Now().Add(10 * time.Second)
	for ask() != want {
		if time.Now().After(deadline) {
			t.Fatalf("the new version not in use within 10s (logins %d, refused %d)", f.vault.Logins(), f.vault.Refused())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if f.vault.Logins() < 2 {
		t.Errorf("logins %d: want a second login, with the renewed token", f.vault.Logins())
	}
	if strings.Contains(p.logs.String(), f.jwt) {
		t.Errorf("till logged the service-account token")
	}
	p.verifyAudit(t)
}

// verifyAudit checks the pod's audit file as README.md tells the reader
// to (till audit verify): it holds the records of the keys used, and its
// chain is whole.
func (p *pod) verifyAudit(t *testing.T) {
	t.Helper()
	if p.audit == "" {
		t.Fatalf("%v: the audit trail goes to stdout, not to a file", p.workload)
	}
	data, err := os.ReadFile(p.audit)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"event":"use"`) {
		t.Errorf("the audit file holds no use record:\n%s", data)
	}
	if stdout, stderr, code := runTill(t, p.root, "", "audit", "verify", p.audit); code != 0 {
		t.Errorf("till audit verify %s: exit %d\n%s%s", p.audit, code, stdout, stderr)
	}
}
