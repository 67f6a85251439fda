package k8s

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Where the till image looks (Dockerfile): its config, and its user.
const (
	tillConfigFile = "/etc/till/till.yaml"
	tillBinary     = "/usr/local/bin/till"
	tillUID        = 65532
)

// tillContainers returns the pod's till containers, init containers (as
// sidecars) included.
func tillContainers(w workload) []*corev1.Container {
	var out []*corev1.Container
	for _, list := range [][]corev1.Container{w.spec.InitContainers, w.spec.Containers} {
		for i := range list {
			if isTillImage(list[i].Image) {
				out = append(out, &list[i])
			}
		}
	}
	return out
}

func isTillImage(image string) bool {
	name, _, _ := strings.Cut(image, "@")
	name = name[strings.LastIndex(name, "/")+1:]
	name, _, _ = strings.Cut(name, ":")
	return name == "till"
}

// isInit reports whether c is one of the pod's init containers.
func isInit(w workload, c *corev1.Container) bool {
	return slices.ContainsFunc(w.spec.InitContainers, func(ic corev1.Container) bool { return ic.Name == c.Name })
}

// mountAt returns the container's mount at dir.
func mountAt(c *corev1.Container, dir string) (corev1.VolumeMount, bool) {
	i := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return path.Clean(m.MountPath) == dir })
	if i < 0 {
		return corev1.VolumeMount{}, false
	}
	return c.VolumeMounts[i], true
}

// volume returns the pod's volume called name.
func (w workload) volume(name string) (corev1.Volume, bool) {
	i := slices.IndexFunc(w.spec.Volumes, func(v corev1.Volume) bool { return v.Name == name })
	if i < 0 {
		return corev1.Volume{}, false
	}
	return w.spec.Volumes[i], true
}

// envValue returns the literal value of the container's variable name.
func envValue(c *corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom == nil {
			return e.Value, true
		}
	}
	return "", false
}

// configPath is where the till container reads its config: $TILL_CONFIG,
// as the image sets it unless the manifest does.
func configPath(c *corev1.Container) string {
	if p, ok := envValue(c, "TILL_CONFIG"); ok {
		return p
	}
	return tillConfigFile
}

// keyPath maps a file in a volume to the key it holds, through the
// volume's items (none: the file is named as the key).
func keyPath(items []corev1.KeyToPath, file string) (string, bool) {
	if len(items) == 0 {
		return file, true
	}
	for _, it := range items {
		if path.Clean(it.Path) == file {
			return it.Key, true
		}
	}
	return "", false
}

// tillSetup is what a till container's manifest says about how it runs.
type tillSetup struct {
	configMap *corev1.ConfigMap
	configKey string // the ConfigMap key that holds till.yaml
	cfgText   []byte
	cfg       *tillConfig
	secret    string // the Secret that holds vault and key ("": no vault, keys from sources only)
	vaultKey  string // its key holding the vault
	keyKey    string // its key holding the vault's key
}

// setupOf follows a till container to its config and vault, failing the
// test where the trail breaks. It reports each problem once: later calls
// for the same container return the first answer.
func (s *manifestSet) setupOf(t reporter, w workload, c *corev1.Container) *tillSetup {
	t.Helper()
	id := w.String() + "/" + c.Name
	if st, ok := s.setups[id]; ok {
		return st
	}
	st := s.followSetup(t, w, c)
	s.setups[id] = st
	return st
}

func (s *manifestSet) followSetup(t reporter, w workload, c *corev1.Container) *tillSetup {
	t.Helper()
	file := configPath(c)
	m, ok := mountAt(c, path.Dir(file))
	if !ok {
		t.Fatalf("%v: container %s reads %s, but mounts nothing at %s", w, c.Name, file, path.Dir(file))
	}
	v, ok := w.volume(m.Name)
	if !ok || v.ConfigMap == nil {
		t.Fatalf("%v: container %s: %s is not a ConfigMap volume", w, c.Name, path.Dir(file))
	}
	key, ok := keyPath(v.ConfigMap.Items, path.Base(file))
	if !ok {
		t.Fatalf("%v: the ConfigMap volume %s puts no file at %s", w, v.Name, file)
	}
	cm, ok := s.configMaps[v.ConfigMap.Name]
	if !ok || cm.Data[key] == "" {
		t.Fatalf("%v: ConfigMap %q has no %q", w, v.ConfigMap.Name, key)
	}
	// A subPath mount is a copy made at start: the kubelet never updates
	// it, so till would never see an edit of the ConfigMap.
	if m.SubPath != "" || m.SubPathExpr != "" {
		t.Errorf("%v: container %s mounts its config with subPath, which the kubelet never updates", w, c.Name)
	}
	if !m.ReadOnly {
		t.Errorf("%v: container %s: mount the config read-only", w, c.Name)
	}
	cfg, err := parseTillConfig([]byte(cm.Data[key]))
	if err != nil {
		t.Fatalf("ConfigMap %s: %s: %v", cm.Name, key, err)
	}
	st := &tillSetup{configMap: cm, configKey: key, cfgText: []byte(cm.Data[key]), cfg: cfg}

	if cfg.Vault.Path == "" && cfg.Vault.KeyFile == "" {
		// No vault: section. till then looks for a vault beside its
		// config, in the ConfigMap's folder, where none is: fine for
		// routes whose keys all come from sources.
		if names := cfg.vaultSecrets(); len(names) > 0 {
			t.Fatalf("ConfigMap %s: routes use the vault secrets %q, but the config names no vault (vault.path): till would find none", cm.Name, names)
		}
		if len(cfg.Sources) == 0 {
			t.Fatalf("ConfigMap %s: no vault and no sources: no route has a key", cm.Name)
		}
		return st
	}
	vaultDir := path.Dir(cfg.Vault.Path)
	if !path.IsAbs(cfg.Vault.Path) || path.Dir(cfg.Vault.KeyFile) != vaultDir {
		t.Fatalf("ConfigMap %s: vault.path %q and vault.key_file %q: want both in one absolute folder (the Secret volume)", cm.Name, cfg.Vault.Path, cfg.Vault.KeyFile)
	}
	vm, ok := mountAt(c, vaultDir)
	if !ok {
		t.Fatalf("%v: container %s mounts nothing at %s, the vault's folder", w, c.Name, vaultDir)
	}
	if !vm.ReadOnly || vm.SubPath != "" {
		t.Errorf("%v: container %s: mount the vault's folder read-only and whole (no subPath), so that rotations reach it", w, c.Name)
	}
	vv, ok := w.volume(vm.Name)
	if !ok || vv.Secret == nil {
		t.Fatalf("%v: container %s: %s is not a Secret volume", w, c.Name, vaultDir)
	}
	st.secret = vv.Secret.SecretName
	if st.vaultKey, ok = keyPath(vv.Secret.Items, path.Base(cfg.Vault.Path)); !ok {
		t.Errorf("%v: the Secret volume %s puts no file at %s", w, vv.Name, cfg.Vault.Path)
	}
	if st.keyKey, ok = keyPath(vv.Secret.Items, path.Base(cfg.Vault.KeyFile)); !ok {
		t.Errorf("%v: the Secret volume %s puts no file at %s", w, vv.Name, cfg.Vault.KeyFile)
	}
	return st
}

// listenArg returns the address of serve's --listen flag.
func listenArg(args []string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--listen="); ok {
			return v, true
		}
		if a == "--listen" && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// checkTill checks a till container against its config and the image:
// where it listens, how it is probed, what it mounts, how it is confined.
func (s *manifestSet) checkTill(t reporter, w workload, c *corev1.Container) {
	t.Helper()
	st := s.setupOf(t, w, c)
	cfg := st.cfg
	where := fmt.Sprintf("%v: container %s", w, c.Name)

	if len(c.Command) > 0 || len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Errorf("%s: want the image's entrypoint with args [serve ...], got command %q args %q", where, c.Command, c.Args)
	}
	listen, ok := listenArg(c.Args)
	switch {
	case !ok:
		t.Errorf("%s: give --listen, or the image's default (0.0.0.0:8080) applies whatever till.yaml says", where)
	case listen != cfg.Listen:
		t.Errorf("%s: --listen %s, but till.yaml says listen: %s", where, listen, cfg.Listen)
	}
	listenPort, err := port(cfg.Listen)
	if err != nil {
		t.Errorf("till.yaml: listen %q: %v", cfg.Listen, err)
	}
	if cp, ok := w.containerPort(intstr.FromString("http")); ok && cp.ContainerPort != listenPort {
		t.Errorf("%s: port http is %d, but till listens on %d", where, cp.ContainerPort, listenPort)
	}

	// A sidecar on loopback serves its pod only; a shared gateway needs
	// every route to name its clients.
	if isLoopback(cfg.Listen) {
		if len(w.spec.Containers) == 0 || (len(w.spec.Containers) == 1 && !isInit(w, c)) {
			t.Errorf("%s: till listens on loopback, but no app shares its pod", where)
		}
	} else {
		for _, r := range cfg.Routes {
			if !r.hasClients() {
				t.Errorf("ConfigMap %s: route %q on the non-loopback listener %s names no clients: anything that reaches the pod could use its key", st.configMap.Name, r.name(), cfg.Listen)
			}
		}
	}
	if isInit(w, c) {
		if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("%s: an init container needs restartPolicy: Always to run as a sidecar", where)
		}
	}

	s.checkGrace(t, w, c, cfg)
	s.checkProbes(t, w, c, cfg)
	s.checkSources(t, w, c, cfg)
	checkConfined(t, where, w.spec.SecurityContext, c.SecurityContext)

	if cfg.Limits.Redis != "" {
		s.checkRedis(t, cfg.Limits.Redis)
	}
}

// checkGrace: the pod waits for the preStop hook and then for till's
// shutdown_grace before it kills till, so requests in flight can finish.
func (s *manifestSet) checkGrace(t reporter, w workload, c *corev1.Container, cfg *tillConfig) {
	t.Helper()
	grace, err := cfg.grace()
	if err != nil {
		t.Errorf("till.yaml: shutdown_grace %q: %v", cfg.ShutdownGrace, err)
		return
	}
	var preStop time.Duration
	if l := c.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
		preStop = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
	}
	pod := time.Duration(corev1.DefaultTerminationGracePeriodSeconds) * time.Second
	if p := w.spec.TerminationGracePeriodSeconds; p != nil {
		pod = time.Duration(*p) * time.Second
	}
	if pod < preStop+grace {
		t.Errorf("%v: terminationGracePeriodSeconds %v is shorter than the preStop sleep (%v) and shutdown_grace (%v)", w, pod, preStop, grace)
	}
}

// healthSeconds is how long till health waits for an answer
// (cmd/till's healthTimeout).
const healthSeconds = 2

// checkProbes: readiness on /readyz and liveness on /healthz of the admin
// listener, reached as the kubelet reaches it.
func (s *manifestSet) checkProbes(t reporter, w workload, c *corev1.Container, cfg *tillConfig) {
	t.Helper()
	where := fmt.Sprintf("%v: container %s", w, c.Name)
	if cfg.Admin.Listen == "" {
		t.Errorf("%s: till.yaml has no admin.listen to probe", where)
		return
	}
	adminPort, err := port(cfg.Admin.Listen)
	if err != nil {
		t.Errorf("till.yaml: admin.listen %q: %v", cfg.Admin.Listen, err)
		return
	}
	probes := []struct {
		name, path string
		probe      *corev1.Probe
		required   bool
	}{
		{"readinessProbe", "/readyz", c.ReadinessProbe, true},
		{"livenessProbe", "/healthz", c.LivenessProbe, true},
		{"startupProbe", "/readyz", c.StartupProbe, false},
	}
	for _, p := range probes {
		if p.probe == nil {
			if p.required {
				t.Errorf("%s: no %s", where, p.name)
			}
			continue
		}
		switch h := p.probe.ProbeHandler; {
		case h.HTTPGet != nil:
			// The kubelet connects to the pod's IP: a loopback admin
			// listener never answers it.
			if isLoopback(cfg.Admin.Listen) {
				t.Errorf("%s: %s: httpGet reaches the pod IP, but admin.listen is %s (use exec: till health)", where, p.name, cfg.Admin.Listen)
			}
			if h.HTTPGet.Host != "" {
				t.Errorf("%s: %s: httpGet.host %q: leave it to the pod IP", where, p.name, h.HTTPGet.Host)
			}
			cp, ok := w.containerPort(h.HTTPGet.Port)
			if h.HTTPGet.Port.Type == intstr.Int {
				cp, ok = corev1.ContainerPort{ContainerPort: h.HTTPGet.Port.IntVal}, true
			}
			if !ok || cp.ContainerPort != adminPort {
				t.Errorf("%s: %s: port %s, but admin.listen is %s", where, p.name, h.HTTPGet.Port.String(), cfg.Admin.Listen)
			}
			if h.HTTPGet.Path != p.path {
				t.Errorf("%s: %s: path %q, want %q", where, p.name, h.HTTPGet.Path, p.path)
			}
		case h.Exec != nil:
			cmd := h.Exec.Command
			if len(cmd) != 4 || cmd[0] != tillBinary || cmd[1] != "health" || cmd[2] != "--url" {
				t.Errorf("%s: %s: exec %q, want [%s health --url URL]", where, p.name, cmd, tillBinary)
				continue
			}
			u, err := url.Parse(cmd[3])
			if err != nil || u.Scheme != "http" || u.Path != p.path {
				t.Errorf("%s: %s: URL %q, want http://ADMIN%s", where, p.name, cmd[3], p.path)
				continue
			}
			host, uport, _ := net.SplitHostPort(u.Host)
			lhost, lport, _ := net.SplitHostPort(cfg.Admin.Listen)
			if uport != lport || (host != lhost && !(lhost == "0.0.0.0" && host == "127.0.0.1")) {
				t.Errorf("%s: %s: URL %q, but admin.listen is %s", where, p.name, cmd[3], cfg.Admin.Listen)
			}
			// The kubelet kills an exec probe at timeoutSeconds (1 by
			// default): till health must have its own 2 s to say why.
			if p.probe.TimeoutSeconds < healthSeconds+1 {
				t.Errorf("%s: %s: timeoutSeconds %d: till health waits up to %d s; give it %d", where, p.name, p.probe.TimeoutSeconds, healthSeconds, healthSeconds+1)
			}
		default:
			t.Errorf("%s: %s: want httpGet or exec", where, p.name)
		}
	}
}

// checkConfined: till runs as the image's non-root user, on a read-only
// root, with no capabilities, no privilege escalation and the runtime's
// seccomp profile.
func checkConfined(t reporter, where string, pod *corev1.PodSecurityContext, c *corev1.SecurityContext) {
	t.Helper()
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	if c == nil {
		c = &corev1.SecurityContext{}
	}
	pick := func(container, pod *int64) *int64 {
		if container != nil {
			return container
		}
		return pod
	}
	if v := c.RunAsNonRoot; v == nil && pod.RunAsNonRoot == nil || v != nil && !*v || v == nil && !*pod.RunAsNonRoot {
		t.Errorf("%s: want runAsNonRoot: true", where)
	}
	if u := pick(c.RunAsUser, pod.RunAsUser); u == nil || *u != tillUID {
		t.Errorf("%s: want runAsUser: %d", where, tillUID)
	}
	if g := pick(c.RunAsGroup, pod.RunAsGroup); g == nil || *g != tillUID {
		t.Errorf("%s: want runAsGroup: %d", where, tillUID)
	}
	if pod.FSGroup == nil || *pod.FSGroup != tillUID {
		t.Errorf("%s: want the pod's fsGroup: %d, or the Secret's files are root's alone", where, tillUID)
	}
	if c.ReadOnlyRootFilesystem == nil || !*c.ReadOnlyRootFilesystem {
		t.Errorf("%s: want readOnlyRootFilesystem: true", where)
	}
	if c.AllowPrivilegeEscalation == nil || *c.AllowPrivilegeEscalation {
		t.Errorf("%s: want allowPrivilegeEscalation: false", where)
	}
	if c.Capabilities == nil || !slices.Contains(c.Capabilities.Drop, "ALL") || len(c.Capabilities.Add) > 0 {
		t.Errorf("%s: want capabilities: {drop: [ALL]} and none added", where)
	}
	seccomp := pod.SeccompProfile
	if c.SeccompProfile != nil {
		seccomp = c.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: want seccompProfile: {type: RuntimeDefault}", where)
	}
}

// checkRedis: limits.redis names a Service of the set, on a port it
// serves, or a host outside it (one with a dot).
func (s *manifestSet) checkRedis(t reporter, raw string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "redis" && u.Scheme != "rediss" {
		t.Errorf("limits.redis %q: want redis://HOST:PORT/DB", raw)
		return
	}
	if strings.Contains(u.Hostname(), ".") {
		return // a Redis of your own, elsewhere
	}
	s.wantServicePort(t, "limits.redis", u)
}

// wantServicePort fails unless u's host is a Service of the set that
// serves u's port to pods of the set; it returns those pods.
func (s *manifestSet) wantServicePort(t reporter, what string, u *url.URL) []workload {
	t.Helper()
	i := slices.IndexFunc(s.services, func(svc *corev1.Service) bool { return svc.Name == u.Hostname() })
	if i < 0 {
		t.Errorf("%s %q: no Service %q in %s", what, u.String(), u.Hostname(), s.file)
		return nil
	}
	svc := s.services[i]
	want, err := port(u.Host)
	if err != nil {
		t.Errorf("%s %q: name the port", what, u.String())
		return nil
	}
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == want }) {
		t.Errorf("%s %q: Service %s has no port %d", what, u.String(), svc.Name, want)
	}
	return s.selected(&metav1.LabelSelector{MatchLabels: svc.Spec.Selector})
}

// checkBaseURLs: an app's *_BASE_URL reaches a till (its sidecar on
// loopback, or a Service in front of one) on a route that exists.
func (s *manifestSet) checkBaseURLs(t reporter, w workload) {
	t.Helper()
	for _, c := range w.spec.Containers {
		if isTillImage(c.Image) {
			continue
		}
		for _, e := range c.Env {
			if !strings.HasSuffix(e.Name, "_BASE_URL") || e.ValueFrom != nil {
				continue
			}
			u, err := url.Parse(e.Value)
			if err != nil || u.Scheme != "http" {
				t.Errorf("%v: %s=%q: want an http URL to till", w, e.Name, e.Value)
				continue
			}
			var tills []*tillConfig
			if isLoopback(u.Host) {
				for _, tc := range tillContainers(w) {
					if cfg := s.setupOf(t, w, tc).cfg; cfg.Listen == u.Host {
						tills = append(tills, cfg)
					}
				}
			} else {
				for _, tw := range s.wantServicePort(t, e.Name, u) {
					for _, tc := range tillContainers(tw) {
						tills = append(tills, s.setupOf(t, tw, tc).cfg)
					}
				}
			}
			if len(tills) == 0 {
				t.Errorf("%v: %s=%q reaches no till", w, e.Name, e.Value)
			}
			for _, cfg := range tills {
				if _, ok := cfg.routeFor(u.Path); !ok {
					t.Errorf("%v: %s=%q: no route of till has a prefix for %s", w, e.Name, e.Value, u.Path)
				}
			}
		}
	}
}
