//go:build linux

package test

import (
	"bufio"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The sidecar image, imitated without a container engine: a root file
// system holding only the static binary (as the Dockerfile builds it), the
// config's folder mounted read-only at /etc/till and the host's data
// folder mounted read-write at /var/lib/till, in a private mount namespace
// where that root is read-only. till runs chrooted there as uid 65532, the
// image's user, like `docker compose up`; other till commands run the same
// way beside it, like `docker compose exec`.

// imageUID is the distroless nonroot user the image runs as.
const imageUID = 65532

// sidecar is the imitated container.
type sidecar struct {
	root   string // the container's root, as a path that reaches it from here
	caFile string // SSL_CERT_FILE inside, or ""
}

// newSidecar builds the image's file system under a temp folder, mounts
// configDir (a host folder holding till.yaml) and data (a host folder)
// into it, and keeps the
// mount namespace alive with a holder process until the test ends. It
// skips the test unless it runs as root; as root, under CI, a namespace
// that cannot be made fails it.
func newSidecar(t *testing.T, configDir, data, caFile string) *sidecar {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CI") != "" {
			t.Fatalf(format, args...)
		}
		t.Skipf(format, args...)
	}
	if os.Geteuid() != 0 {
		t.Skipf("needs root: a mount namespace, chroot and uid %d", imageUID)
	}
	root := filepath.Join(t.TempDir(), "root")
	for _, d := range []string{"usr/local/bin", "etc/till", "etc/ssl", "var/lib/till", "proc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The image's binary: static, as the Dockerfile builds it (CGO_ENABLED=0);
	// the root holds no loader or libc.
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(root, "usr/local/bin/till"), "github.com/tillgw/till/cmd/till")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the static binary: %v\n%s", err, out)
	}
	s := &sidecar{}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "etc/ssl/upstream.pem"), pem, 0o644); err != nil {
			t.Fatal(err)
		}
		s.caFile = "/etc/ssl/upstream.pem"
	}

	const script = `set -e
mount --bind "$1" "$1"
mount -o remount,bind,ro "$1"
mount --bind "$2" "$1/etc/till"
mount -o remount,bind,ro "$1/etc/till"
mount --bind "$3" "$1/var/lib/till"
mount --rbind /proc "$1/proc"
echo ready
exec sleep 600`
	holder := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", root, configDir, data)
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	holder.Stderr = &stderr
	if err := holder.Start(); err != nil {
		unavailable("unshare: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- holder.Wait() }()
	t.Cleanup(func() {
		_ = holder.Process.Kill()
		<-done
	})
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "ready\n" {
		holder.Process.Kill()
		unavailable("cannot make the container's mounts in a private mount namespace: %v %s", <-done, stderr.String())
	}
	s.root = fmt.Sprintf("/proc/%d/root%s", holder.Process.Pid, root)
	return s
}

// command is till with args run inside the sidecar as the image's user,
// with the image's environment.
func (s *sidecar) command(args ...string) *exec.Cmd {
	cmd := exec.Command("/usr/local/bin/till", args...)
	cmd.Dir = "/"
	cmd.Env = []string{"TILL_CONFIG=/etc/till/till.yaml"}
	if s.caFile != "" {
		cmd.Env = append(cmd.Env, "SSL_CERT_FILE="+s.caFile)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     s.root,
		Credential: &syscall.Credential{Uid: imageUID, Gid: imageUID},
	}
	return cmd
}

// run runs a till command to its end inside the sidecar (docker compose
// exec -T till till ...).
func (s *sidecar) run(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := s.command(args...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	suiteLeaks.text("sidecar till "+strings.Join(args, " ")+" stdout", o.String())
	suiteLeaks.text("sidecar till "+strings.Join(args, " ")+" stderr", e.String())
	if ee, ok := err.(*exec.ExitError); ok {
		return o.String(), e.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run till %v in the sidecar: %v", args, err)
	}
	return o.String(), e.String(), 0
}

// serve starts till serve inside the sidecar and waits for it to listen.
func (s *sidecar) serve(t *testing.T, data string) *till {
	t.Helper()
	tl := &till{t: t, dir: data, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	tl.cmd = s.command("serve", "--listen", "127.0.0.1:0")
	tl.cmd.Stdout, tl.cmd.Stderr = tl.stdout, tl.stderr
	if err := tl.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { tl.exit = tl.cmd.Wait(); close(tl.done) }()
	t.Cleanup(tl.stop)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if tl.addr = tl.logged("till listening", "addr"); tl.addr != "" {
			return tl
		}
		select {
		case <-tl.done:
			t.Fatalf("till exited in the sidecar before listening: %v\n%s", tl.exit, tl.stderr.String())
		default:
		}
	}
	t.Fatalf("till did not listen in the sidecar\n%s", tl.stderr.String())
	return nil
}

// chownAll is `chown -R uid:uid dir`.
func chownAll(t *testing.T, dir string, uid int) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, uid)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// fileOwner is the uid owning path.
func fileOwner(t *testing.T, path string) int {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return int(st.Sys().(*syscall.Stat_t).Uid)
}

// sidecarConfig is examples/sidecar-compose/config/till.yaml as shipped, with the
// route sent to the test's upstream and the admin listener on a free port.
func sidecarConfig(t *testing.T, upstream string) string {
	t.Helper()
	b, err := os.ReadFile("../examples/sidecar-compose/config/till.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	for _, want := range []string{"path: /var/lib/till/till.vault", "key_file: /var/lib/till/till.key", "file: /var/lib/till/audit.log"} {
		if !strings.Contains(cfg, want) {
			t.Fatalf("examples/sidecar-compose/config/till.yaml no longer has %q; update this test", want)
		}
	}
	for _, r := range [][2]string{
		{"    preset: openai\n", "    preset: openai\n    upstream: " + upstream + "\n"},
		{"listen: 127.0.0.1:9090", "listen: 127.0.0.1:0"},
	} {
		if strings.Count(cfg, r[0]) != 1 {
			t.Fatalf("examples/sidecar-compose/config/till.yaml no longer has %q once; update this test", r[0])
		}
		cfg = strings.Replace(cfg, r[0], r[1], 1)
	}
	return cfg
}

// TestSidecarLayout runs the sidecar as the compose example does: data
// folder prepared on the host (till init, secret set, chown 65532), till
// as uid 65532 with a read-only root, then rotations from inside the
// container and from the host, each used by the running till within about
// a second.
func TestSidecarLayout(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skipf("needs root: chown, a mount namespace, chroot and uid %d", imageUID)
	}
	u := newUpstream(t, http.HandlerFunc(okHandler))
	host := t.TempDir()
	data := filepath.Join(host, "till-data")
	config := filepath.Join(host, "config", "till.yaml")
	if err := os.Mkdir(filepath.Dir(config), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(config, []byte(sidecarConfig(t, u.URL)), 0o644); err != nil {
		t.Fatal(err)
	}

	// The host's preparation, as the example's README gives it.
	keys := []string{"sk-sidecar-one-0123456789abcdef", "sk-sidecar-two-0123456789abcdef",
		"sk-sidecar-three-0123456789abcdef", "sk-sidecar-four-0123456789abcdef"}
	for _, k := range keys {
		suiteLeaks.key(k)
	}
	mustTill := func(dir, stdin string, args ...string) string {
		t.Helper()
		out, errOut, code := runTill(t, dir, stdin, nil, args...)
		if code != 0 {
			t.Fatalf("till %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	mustTill(host, "", "init", "--dir", "./till-data")
	if fi, err := os.Stat(data); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("init --dir made the data folder %v (%v), want mode 0700: it holds the vault and its key", fi.Mode(), err)
	}
	mustTill(host, keys[0], "secret", "set", "openai", "-c", "./till-data/till.yaml")
	// The sidecar's config on the host names container paths: refused,
	// with nothing created, when /var/lib/till is not there.
	if _, err := os.Stat("/var/lib/till"); err != nil {
		_, errOut, code := runTill(t, host, keys[1], nil, "secret", "set", "openai", "-c", config)
		if code != 1 || !strings.Contains(errOut, "the vault folder /var/lib/till does not exist") || !strings.Contains(errOut, "hint: ") {
			t.Errorf("secret set on the host with the container's config: exit %d, want 1 and the missing folder named\n%s", code, errOut)
		}
		if _, err := os.Stat("/var/lib/till"); err == nil {
			os.RemoveAll("/var/lib/till")
			t.Fatal("secret set on the host created /var/lib/till: a vault nothing reads")
		}
	}
	chownAll(t, data, imageUID)

	sc := newSidecar(t, filepath.Dir(config), data, u.caFile)
	tl := sc.serve(t, data)
	if status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tl.cmd.Process.Pid)); err != nil || !strings.Contains(string(status), fmt.Sprintf("\nUid:\t%d\t", imageUID)) {
		t.Fatalf("till does not run as uid %d: %v", imageUID, err)
	}
	lastKey := func() string {
		t.Helper()
		resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
		if resp.StatusCode != 200 {
			t.Fatalf("got %d %s, want 200\n%s", resp.StatusCode, body, tl.stderr.String())
		}
		return strings.TrimPrefix(u.last(t).Header.Get("Authorization"), "Bearer ")
	}
	// waitKey sends requests until the upstream receives key, and says how
	// long that took after the rotation's end.
	waitKey := func(what, key string, since time.Time) {
		t.Helper()
		for {
			if got := lastKey(); got == key {
				t.Logf("%s: used %v after the rotation", what, time.Since(since).Round(time.Millisecond))
				return
			}
			if time.Since(since) > 2*time.Second {
				t.Fatalf("%s: the upstream still gets the old key 2s after the rotation\n%s", what, tl.stderr.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if got := lastKey(); got != keys[0] {
		t.Fatalf("the upstream got a key of %d characters, want the one set on the host", len(got))
	}

	// The root is read-only, for root too; only the data folder is writable.
	if _, errOut, code := sc.run(t, "", "init", "--dir", "/etc/till/more"); code != 1 || !strings.Contains(errOut, "read-only file system") {
		t.Errorf("writing outside the data folder: exit %d, want 1 and read-only file system\n%s", code, errOut)
	}
	// The layout this replaces: a vault mounted as a single file, its
	// folder read-only. A rotation cannot take the lock beside it, and the
	// hint says to mount the folder.
	b, err := os.ReadFile(filepath.Join(data, "till.vault"))
	if err != nil {
		t.Fatal(err)
	}
	single := filepath.Join(filepath.Dir(config), "till.vault")
	if err := os.WriteFile(single, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(single, imageUID, imageUID); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(config), "single-file.yaml"),
		[]byte("version: 1\nvault: {path: /etc/till/till.vault, key_file: /var/lib/till/till.key}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := sc.run(t, keys[1], "secret", "set", "openai", "-c", "/etc/till/single-file.yaml")
	if code != 1 || !strings.Contains(errOut, "till.vault.lock: read-only file system") ||
		!strings.Contains(errOut, "hint: till writes a lock and each new vault beside the vault: the folder /etc/till must be writable") {
		t.Errorf("rotating a vault in a read-only folder: exit %d, want 1 with the folder hint\n%s", code, errOut)
	}

	// The image's HEALTHCHECK, in the container.
	if out, errOut, code := sc.run(t, "", "health", "--url", "http://"+tl.adminAddr()); code != 0 || !strings.Contains(out, ": ready") {
		t.Errorf("till health in the sidecar: exit %d\n%s%s", code, out, errOut)
	}

	// Rotation inside the container: docker compose exec -T till till secret set openai.
	out, errOut, code := sc.run(t, keys[1], "secret", "set", "openai")
	if code != 0 || !strings.Contains(out, `rotated secret "openai" (`+fingerprintOf(keys[1])+`) in /var/lib/till/till.vault`) {
		t.Fatalf("secret set in the sidecar: exit %d\n%s%s", code, out, errOut)
	}
	waitKey("rotated in the container", keys[1], time.Now())
	lock := filepath.Join(data, "till.vault.lock")
	if owner := fileOwner(t, lock); owner != imageUID {
		t.Errorf("the vault's lock is owned by %d, want %d", owner, imageUID)
	}
	entries, _ := os.ReadDir(data)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"audit.log", "till.key", "till.vault", "till.vault.lock", "till.yaml"}; !slices.Equal(names, want) {
		t.Errorf("the data folder holds %v, want %v", names, want)
	}

	// Rotation from the host, as root, through till: the vault stays 65532's.
	mustTill(host, keys[2], "secret", "set", "openai", "-c", "./till-data/till.yaml")
	rotated := time.Now()
	for _, f := range []string{"till.vault", "till.vault.lock"} {
		if owner := fileOwner(t, filepath.Join(data, f)); owner != imageUID {
			t.Errorf("after root's rotation %s is owned by %d, want %d", f, owner, imageUID)
		}
	}
	waitKey("rotated on the host by root", keys[2], rotated)

	// A vault made elsewhere and renamed in, root's: till cannot read it and
	// keeps serving the old key; the chown that mends it is picked up.
	stage := filepath.Join(host, "stage")
	if err := os.Mkdir(stage, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"till.vault", "till.key"} {
		b, err := os.ReadFile(filepath.Join(data, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(stage, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mustTill(stage, keys[3], "secret", "set", "openai")
	if err := os.Rename(filepath.Join(stage, "till.vault"), filepath.Join(data, "till.vault")); err != nil {
		t.Fatal(err)
	}
	if !tl.waitLog("permission denied") || !strings.Contains(tl.stderr.String(), "reload failed: still serving the previous config") {
		t.Fatalf("a vault till cannot read: no failed reload logged\n%s", tl.stderr.String())
	}
	if got := lastKey(); got != keys[2] {
		t.Errorf("after a failed reload the upstream got a key of %d characters, want the previous one", len(got))
	}
	if err := os.Chown(filepath.Join(data, "till.vault"), imageUID, imageUID); err != nil {
		t.Fatal(err)
	}
	waitKey("renamed in by root, then chowned", keys[3], time.Now())

	resp, _ := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil))
	tl.stop()
	if tl.exit != nil {
		t.Errorf("till exited with %v after SIGINT, want 0\n%s", tl.exit, tl.stderr.String())
	}
	// The trail is in the data folder, on the host, and checks out.
	trail, err := os.ReadFile(filepath.Join(data, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	needle := `"id":"` + resp.Header.Get("X-Till-Request-Id") + `"`
	if !slices.ContainsFunc(strings.Split(string(trail), "\n"), func(l string) bool {
		return strings.Contains(l, needle) && strings.Contains(l, `"event":"request"`) && strings.Contains(l, fingerprintOf(keys[3]))
	}) {
		t.Errorf("no request record of the last request with key %s in the data folder's audit.log", fingerprintOf(keys[3]))
	}
	pub, _, code := sc.run(t, "", "audit", "pubkey")
	if code != 0 {
		t.Fatalf("till audit pubkey in the container: exit %d", code)
	}
	pubFile := filepath.Join(host, "audit.pub")
	if err := os.WriteFile(pubFile, []byte(pub), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := runTill(t, host, "", nil, "audit", "verify", "--pubkey", pubFile, filepath.Join(data, "audit.log")); code != 0 {
		t.Errorf("till audit verify on the host: exit %d\n%s%s", code, out, errOut)
	}
	tl.assertNoLeak(keys)
}

// TestSidecarClientEditsShow: in the sidecar layout the README's docker
// run and examples/sidecar-compose give (the config's folder mounted at
// /etc/till), till client rotate on the host's config, which renames a new
// file over the config, reaches the running till as it says it does: the
// old token, rotated because it leaked, stops working. A single-file bind
// mount would keep showing the container the old file.
func TestSidecarClientEditsShow(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skipf("needs root: chown, a mount namespace, chroot and uid %d", imageUID)
	}
	u := newUpstream(t, http.HandlerFunc(okHandler))
	host := t.TempDir()
	data := filepath.Join(host, "till-data")
	config := filepath.Join(host, "config", "till.yaml")
	if err := os.Mkdir(filepath.Dir(config), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(sidecarConfig(t, u.URL), "clients: any", "clients: [app]", 1)
	if err := os.WriteFile(config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	mustTill := func(dir, stdin string, args ...string) string {
		t.Helper()
		out, errOut, code := runTill(t, dir, stdin, nil, args...)
		if code != 0 {
			t.Fatalf("till %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	key := "sk-sidecar-clients-0123456789abcdef"
	suiteLeaks.key(key)
	mustTill(host, "", "init", "--dir", "./till-data")
	mustTill(host, key, "secret", "set", "openai", "-c", "./till-data/till.yaml")
	tokenRE := regexp.MustCompile(`\btill_[0-9A-Za-z]{40}\b`)
	// The example's own advice: "till client add app", then clients: [app].
	oldTok := tokenRE.FindString(mustTill(host, "", "client", "add", "app", "--write", "-c", config))
	chownAll(t, data, imageUID)

	sc := newSidecar(t, filepath.Dir(config), data, u.caFile)
	tl := sc.serve(t, data)
	status := func(tok string) int {
		req := newRequest(t, "GET", tl.url("/openai/v1/models"), nil)
		req.Header.Set("X-Till-Token", tok)
		resp, _ := do(t, req)
		return resp.StatusCode
	}
	if got := status(oldTok); got != 200 {
		t.Fatalf("client app before the rotation: %d, want 200\n%s", got, tl.stderr.String())
	}

	out := mustTill(host, "", "client", "rotate", "app", "-c", config)
	newTok := tokenRE.FindString(out)
	if !strings.Contains(out, "the old token stops working then") {
		t.Fatalf("client rotate no longer promises the running till takes it:\n%s", out)
	}
	tl.cmd.Process.Signal(sighup)
	deadline := time.Now().Add(3 * time.Second)
	for status(oldTok) != 401 || status(newTok) != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("3s after client rotate on the host (and a SIGHUP) the running sidecar still takes the old token (%d) and not the new (%d): it never sees the config the rotation renamed into place\n%s",
				status(oldTok), status(newTok), tl.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kubeletConfigMap lays out dir as the kubelet lays out a ConfigMap
// volume holding till.yaml: the folder root's with mode (0777, 2777 under
// fsGroup: not sticky), the file in a timestamped folder that ..data
// links to, and till.yaml a link into ..data.
func kubeletConfigMap(t *testing.T, dir, config string, mode os.FileMode) {
	t.Helper()
	gen := filepath.Join(dir, "..2026_01_02_15_04_05.1")
	if err := os.MkdirAll(gen, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(gen, "till.yaml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Base(gen), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/till.yaml", filepath.Join(dir, "till.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
}

// TestSidecarServesConfigMapFolder: a config from a ConfigMap volume, as
// the Kubernetes examples mount it, is served. The kubelet makes the
// volume's folder 0777 (2777 under fsGroup), root's, and mounts it
// read-only in the pod: no one there can write it, so it is not the
// folder every user can write that the mode check refuses. A user's
// folder mounted read-only still is.
func TestSidecarServesConfigMapFolder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skipf("needs root: chown, a mount namespace, chroot and uid %d", imageUID)
	}
	u := newUpstream(t, http.HandlerFunc(okHandler))
	key := "sk-sidecar-configmap-0123456789abcdef"
	suiteLeaks.key(key)
	for _, mode := range []os.FileMode{0o777, 0o777 | os.ModeSetgid} {
		t.Run(mode.String(), func(t *testing.T) {
			host := t.TempDir()
			data := filepath.Join(host, "till-data")
			if out, errOut, code := runTill(t, host, "", nil, "init", "--dir", "./till-data"); code != 0 {
				t.Fatalf("till init: exit %d\n%s%s", code, out, errOut)
			}
			if out, errOut, code := runTill(t, host, key, nil, "secret", "set", "openai", "-c", "./till-data/till.yaml"); code != 0 {
				t.Fatalf("till secret set: exit %d\n%s%s", code, out, errOut)
			}
			chownAll(t, data, imageUID)
			configMap := filepath.Join(host, "configmap")
			kubeletConfigMap(t, configMap, sidecarConfig(t, u.URL), mode)

			sc := newSidecar(t, configMap, data, u.caFile)
			if out, errOut, code := sc.run(t, "", "check"); code != 0 {
				t.Errorf("till check of a ConfigMap's config: exit %d\n%s%s", code, out, errOut)
			}
			tl := sc.serve(t, data)
			if resp, body := do(t, newRequest(t, "GET", tl.url("/openai/v1/models"), nil)); resp.StatusCode != 200 {
				t.Errorf("got %d %s, want 200", resp.StatusCode, body)
			}
			// A user's folder mounted read-only (a checkout, bind-mounted)
			// may be written on the host: its mode still counts.
			if err := os.Chown(configMap, 1000, 1000); err != nil {
				t.Fatal(err)
			}
			if _, errOut, code := sc.run(t, "", "check"); code != 1 || !strings.Contains(errOut, "writable by every user") {
				t.Errorf("till check of a user's 0777 folder mounted read-only: exit %d, want 1 and the folder refused\n%s", code, errOut)
			}
		})
	}
}

// TestSidecarTLSListenerReadOnlyVault: a listener served over TLS with
// certificates from till's CA starts with its vault in a read-only folder,
// as a Kubernetes Secret volume is. Those certificates were kept in
// till-certs beside the vault, so till could not start there.
func TestSidecarTLSListenerReadOnlyVault(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skipf("needs root: chown, a mount namespace, chroot and uid %d", imageUID)
	}
	u := newUpstream(t, http.HandlerFunc(okHandler))
	key := "sk-sidecar-tls-0123456789abcdef"
	suiteLeaks.key(key)
	host := t.TempDir()
	prep := filepath.Join(host, "prep")
	for _, args := range [][]string{
		{"init", "--dir", "./prep"},
		{"secret", "set", "openai", "-c", "./prep/till.yaml"},
		{"ca", "init", "-c", "./prep/till.yaml"},
	} {
		if out, errOut, code := runTill(t, host, key, nil, args...); code != 0 {
			t.Fatalf("till %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
	}
	// The vault, its key and the CA certificate in the folder mounted
	// read-only at /etc/till, beside the config.
	secret := filepath.Join(host, "secret")
	if err := os.Mkdir(secret, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"till.vault", "till.key", "till-ca.pem"} {
		b, err := os.ReadFile(filepath.Join(prep, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(secret, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := fmt.Sprintf(`version: 1
tls: {names: [localhost]}
vault: {path: /etc/till/till.vault, key_file: /etc/till/till.key}
forward: {ca_cert: /etc/till/till-ca.pem}
audit: {file: /var/lib/till/audit.log}
routes:
  - {name: openai, preset: openai, upstream: %q}
`, u.URL)
	if err := os.WriteFile(filepath.Join(secret, "till.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	chownAll(t, secret, imageUID)
	data := filepath.Join(host, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	chownAll(t, data, imageUID)

	sc := newSidecar(t, secret, data, u.caFile)
	tl := sc.serve(t, data)
	caPEM, err := os.ReadFile(filepath.Join(secret, "till-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(tl.addr)
	resp, err := tlsClient(t, caPEM, nil).Get("https://localhost:" + port + "/openai/v1/models")
	if err != nil {
		t.Fatalf("GET over TLS: %v\n%s", err, tl.stderr.String())
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET over TLS: %d, want 200", resp.StatusCode)
	}
}
