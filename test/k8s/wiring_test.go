package k8s

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// kubectlSecrets are the Secrets that README.md has the reader create with
// kubectl, because they hold keys and tokens that no manifest may carry,
// with the keys each holds. Volumes and env may name them although no
// manifest defines them; the README must show how each is made.
var kubectlSecrets = map[string][]string{
	"till-vault":      {"till.vault", "till.key"},
	"chat-till-token": {"token"},
}

// kubectlConfigMaps are the ConfigMaps README.md has the reader create
// with kubectl, because their content is the reader's own (the CA of
// their Vault), with the keys each holds.
var kubectlConfigMaps = map[string][]string{
	"vault-ca": {"ca.crt"},
}

// meta returns an object's metadata; every kind the examples use has it.
func meta(obj runtime.Object) metav1.Object { return obj.(metav1.Object) }

// workload is a set of pods a manifest asks for.
type workload struct {
	kind, name string
	namespace  string // "default" unless the manifest says
	replicas   int32
	labels     map[string]string // the pods' labels
	spec       *corev1.PodSpec
}

// String names the workload as kubectl does: Deployment/web.
func (w workload) String() string { return w.kind + "/" + w.name }

// manifestSet is the objects of one manifest file, which is applied as a
// whole, so every reference must resolve within it.
type manifestSet struct {
	file       string
	text       string // the file as written, comments included
	configMaps map[string]*corev1.ConfigMap
	accounts   map[string]*corev1.ServiceAccount
	secrets    map[string]*corev1.Secret
	services   []*corev1.Service
	pdbs       []*policyv1.PodDisruptionBudget
	policies   []*networkingv1.NetworkPolicy
	workloads  []workload
	setups     map[string]*tillSetup // by workload and container, see setupOf
}

func newSet(t reporter, file string, objs []object) *manifestSet {
	t.Helper()
	s := &manifestSet{file: file, configMaps: map[string]*corev1.ConfigMap{}, accounts: map[string]*corev1.ServiceAccount{},
		secrets: map[string]*corev1.Secret{}, setups: map[string]*tillSetup{}}
	for _, o := range objs {
		switch v := o.obj.(type) {
		case *corev1.ConfigMap:
			s.configMaps[v.Name] = v
		case *corev1.ServiceAccount:
			s.accounts[v.Name] = v
		case *corev1.Secret:
			s.secrets[v.Name] = v
		case *corev1.Service:
			s.services = append(s.services, v)
		case *policyv1.PodDisruptionBudget:
			s.pdbs = append(s.pdbs, v)
		case *networkingv1.NetworkPolicy:
			s.policies = append(s.policies, v)
		case *appsv1.Deployment:
			replicas := int32(1)
			if v.Spec.Replicas != nil {
				replicas = *v.Spec.Replicas
			}
			if !selects(v.Spec.Selector, v.Spec.Template.Labels) {
				t.Errorf("%v: Deployment %s: its selector does not select its own pods", o, v.Name)
			}
			s.workloads = append(s.workloads, workload{kind: "Deployment", name: v.Name, namespace: cmp.Or(v.Namespace, "default"),
				replicas: replicas, labels: v.Spec.Template.Labels, spec: &v.Spec.Template.Spec})
		case *corev1.Pod:
			s.workloads = append(s.workloads, workload{kind: "Pod", name: v.Name, namespace: cmp.Or(v.Namespace, "default"),
				replicas: 1, labels: v.Labels, spec: &v.Spec})
		}
	}
	return s
}

// parseSet decodes a manifest file called name into a set.
func parseSet(t reporter, name string, data []byte) *manifestSet {
	t.Helper()
	s := newSet(t, name, decodeAll(t, name, data))
	s.text = string(data)
	return s
}

// loadSets decodes every manifest file into a set.
func loadSets(t *testing.T) []*manifestSet {
	t.Helper()
	var sets []*manifestSet
	for _, path := range manifestFiles(t) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		sets = append(sets, parseSet(t, filepath.Base(path), data))
	}
	return sets
}

// selects reports whether a non-empty label selector matches the labels.
func selects(sel *metav1.LabelSelector, lbls map[string]string) bool {
	if sel == nil || (len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0) {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && s.Matches(labels.Set(lbls))
}

// selected returns the workloads whose pods sel matches.
func (s *manifestSet) selected(sel *metav1.LabelSelector) []workload {
	var out []workload
	for _, w := range s.workloads {
		if selects(sel, w.labels) {
			out = append(out, w)
		}
	}
	return out
}

// containerPort finds a port of the workload's containers by name or
// number.
func (w workload) containerPort(p intstr.IntOrString) (corev1.ContainerPort, bool) {
	for _, c := range slices.Concat(w.spec.InitContainers, w.spec.Containers) {
		for _, cp := range c.Ports {
			if p.Type == intstr.String && cp.Name == p.StrVal || p.Type == intstr.Int && cp.ContainerPort == p.IntVal {
				return cp, true
			}
		}
	}
	return corev1.ContainerPort{}, false
}

// reporter is the part of testing.TB the checks use, so that a test can
// also run them on a broken manifest and collect what they say.
type reporter interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// TestWiring checks that the objects of each manifest file refer to each
// other correctly: the mistakes kubectl apply accepts and a cluster only
// shows as a pod that never starts or a Service without endpoints.
func TestWiring(t *testing.T) {
	for _, s := range loadSets(t) {
		t.Run(s.file, func(t *testing.T) { s.check(t) })
	}
}

// check runs every wiring check on the set.
func (s *manifestSet) check(t reporter) {
	t.Helper()
	if len(s.workloads) == 0 {
		t.Fatalf("no Deployment or Pod")
	}
	for _, w := range s.workloads {
		s.checkVolumes(t, w)
		s.checkEnv(t, w)
		s.checkServiceAccount(t, w)
	}
	s.checkServices(t)
	s.checkPDBs(t)
	s.checkPolicies(t)
	tills := 0
	for _, w := range s.workloads {
		for _, c := range tillContainers(w) {
			tills++
			s.checkTill(t, w, c)
		}
		s.checkBaseURLs(t, w)
	}
	if tills == 0 {
		t.Errorf("no till container")
	}
}

// checkVolumes: every mount names a volume of the pod, and every
// ConfigMap and Secret a volume names exists, with the keys it maps.
func (s *manifestSet) checkVolumes(t reporter, w workload) {
	t.Helper()
	volumes := map[string]corev1.Volume{}
	for _, v := range w.spec.Volumes {
		volumes[v.Name] = v
	}
	for _, c := range slices.Concat(w.spec.InitContainers, w.spec.Containers) {
		for _, m := range c.VolumeMounts {
			if _, ok := volumes[m.Name]; !ok {
				t.Errorf("%v: container %s mounts %q, which is not a volume of the pod", w, c.Name, m.Name)
			}
		}
	}
	for _, v := range w.spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			for _, it := range v.ConfigMap.Items {
				s.wantConfigMapKey(t, w, v.ConfigMap.Name, it.Key)
			}
			s.wantConfigMapKey(t, w, v.ConfigMap.Name, "")
		case v.Secret != nil:
			for _, it := range v.Secret.Items {
				s.wantSecretKey(t, w, v.Secret.SecretName, it.Key)
			}
			s.wantSecretKey(t, w, v.Secret.SecretName, "")
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if cm := src.ConfigMap; cm != nil {
					for _, it := range cm.Items {
						s.wantConfigMapKey(t, w, cm.Name, it.Key)
					}
					s.wantConfigMapKey(t, w, cm.Name, "")
				}
				if sec := src.Secret; sec != nil {
					for _, it := range sec.Items {
						s.wantSecretKey(t, w, sec.Name, it.Key)
					}
					s.wantSecretKey(t, w, sec.Name, "")
				}
			}
		}
	}
}

// checkServiceAccount: the pod's service account is one of the set, no
// container gets the API server's token (none of them talks to it), and
// only till mounts a service-account token (its Vault login).
func (s *manifestSet) checkServiceAccount(t reporter, w workload) {
	t.Helper()
	var account *corev1.ServiceAccount
	if sa := w.spec.ServiceAccountName; sa != "" && sa != "default" {
		if account = s.accounts[sa]; account == nil {
			t.Errorf("%v: ServiceAccount %q is not among the manifests: the pod is never created", w, sa)
		}
	}
	automount := true
	switch {
	case w.spec.AutomountServiceAccountToken != nil:
		automount = *w.spec.AutomountServiceAccountToken
	case account != nil && account.AutomountServiceAccountToken != nil:
		automount = *account.AutomountServiceAccountToken
	}
	if automount {
		t.Errorf("%v: want automountServiceAccountToken: false, or every container, the app's included, gets a token for the API server", w)
	}
	for _, c := range slices.Concat(w.spec.InitContainers, w.spec.Containers) {
		if isTillImage(c.Image) {
			continue
		}
		for _, m := range c.VolumeMounts {
			if v, ok := w.volume(m.Name); ok && hasToken(v) {
				t.Errorf("%v: container %s mounts the service-account token (volume %s): only till needs it, to log in to Vault", w, c.Name, v.Name)
			}
		}
	}
}

// checkEnv: every ConfigMap and Secret that env or envFrom names exists.
func (s *manifestSet) checkEnv(t reporter, w workload) {
	t.Helper()
	for _, c := range slices.Concat(w.spec.InitContainers, w.spec.Containers) {
		for _, e := range c.Env {
			if e.ValueFrom == nil {
				continue
			}
			if r := e.ValueFrom.SecretKeyRef; r != nil {
				s.wantSecretKey(t, w, r.Name, r.Key)
			}
			if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
				s.wantConfigMapKey(t, w, r.Name, r.Key)
			}
		}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil {
				s.wantSecretKey(t, w, e.SecretRef.Name, "")
			}
			if e.ConfigMapRef != nil {
				s.wantConfigMapKey(t, w, e.ConfigMapRef.Name, "")
			}
		}
	}
}

// wantConfigMapKey fails unless the ConfigMap exists with key ("" for
// any).
func (s *manifestSet) wantConfigMapKey(t reporter, w workload, name, key string) {
	t.Helper()
	cm, ok := s.configMaps[name]
	if !ok {
		keys, ok := kubectlConfigMaps[name]
		switch {
		case !ok:
			t.Errorf("%v: ConfigMap %q is not among the manifests", w, name)
		case key != "" && !slices.Contains(keys, key):
			t.Errorf("%v: ConfigMap %q, made with kubectl, has keys %v, not %q", w, name, keys, key)
		}
		return
	}
	if key != "" {
		if _, ok := cm.Data[key]; !ok {
			t.Errorf("%v: ConfigMap %q has no key %q", w, name, key)
		}
	}
}

// wantSecretKey fails unless the Secret exists with key ("" for any),
// among the manifests or among those the README has made with kubectl.
func (s *manifestSet) wantSecretKey(t reporter, w workload, name, key string) {
	t.Helper()
	if sec, ok := s.secrets[name]; ok {
		_, inData := sec.Data[key]
		_, inString := sec.StringData[key]
		if key != "" && !inData && !inString {
			t.Errorf("%v: Secret %q has no key %q", w, name, key)
		}
		return
	}
	keys, ok := kubectlSecrets[name]
	switch {
	case !ok:
		t.Errorf("%v: Secret %q is neither among the manifests nor one README.md creates with kubectl", w, name)
	case key != "" && !slices.Contains(keys, key):
		t.Errorf("%v: Secret %q, made with kubectl, has keys %v, not %q", w, name, keys, key)
	}
}

// TestKubectlSecretsDocumented: every Secret and ConfigMap the manifests
// expect but do not carry is made by a command in README.md, with the
// keys expected.
func TestKubectlSecretsDocumented(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(examplesDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	made := map[string][]string{}
	for name, keys := range kubectlSecrets {
		made["kubectl create secret generic "+name+" "] = keys
	}
	for name, keys := range kubectlConfigMaps {
		made["kubectl create configmap "+name+" "] = keys
	}
	for cmd, keys := range made {
		var line string
		for l := range strings.Lines(string(readme)) {
			if strings.Contains(l, cmd) {
				line = l
				break
			}
		}
		if line == "" {
			t.Errorf("README.md does not show %q", cmd+"...")
			continue
		}
		for _, k := range keys {
			if !strings.Contains(line, "--from-file="+k) {
				t.Errorf("README.md: %q makes no key %q (want --from-file=%s)", strings.TrimSpace(line), k, k)
			}
		}
	}
}

// checkServices: each Service selects pods of the set, on ports they
// have.
func (s *manifestSet) checkServices(t reporter) {
	t.Helper()
	for _, svc := range s.services {
		if len(svc.Spec.Selector) == 0 {
			t.Errorf("Service %s: no selector", svc.Name)
			continue
		}
		ws := s.selected(&metav1.LabelSelector{MatchLabels: svc.Spec.Selector})
		if len(ws) == 0 {
			t.Errorf("Service %s: its selector %v selects no pods of %s", svc.Name, svc.Spec.Selector, s.file)
		}
		for _, p := range svc.Spec.Ports {
			target := p.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(p.Port)
			}
			for _, w := range ws {
				if _, ok := w.containerPort(target); !ok {
					t.Errorf("Service %s: port %d's target %s is not a container port of %v", svc.Name, p.Port, target.String(), w)
				}
			}
		}
	}
}

// checkPDBs: each PodDisruptionBudget selects pods of the set and leaves
// room for one eviction.
func (s *manifestSet) checkPDBs(t reporter) {
	t.Helper()
	for _, pdb := range s.pdbs {
		ws := s.selected(pdb.Spec.Selector)
		if len(ws) == 0 {
			t.Errorf("PodDisruptionBudget %s: its selector selects no pods of %s", pdb.Name, s.file)
			continue
		}
		var replicas int32
		for _, w := range ws {
			replicas += w.replicas
		}
		if m := pdb.Spec.MinAvailable; m != nil && m.Type == intstr.Int && m.IntVal >= replicas {
			t.Errorf("PodDisruptionBudget %s: minAvailable %d of %d replicas blocks every node drain", pdb.Name, m.IntVal, replicas)
		}
	}
}

// checkPolicies: each NetworkPolicy applies to pods of the set; a peer
// chosen by pod labels alone (so in the same namespace) is pods of the set,
// and the ports named are ports those pods have.
func (s *manifestSet) checkPolicies(t reporter) {
	t.Helper()
	for _, np := range s.policies {
		subjects := s.selected(&np.Spec.PodSelector)
		if len(subjects) == 0 {
			t.Errorf("NetworkPolicy %s: its podSelector selects no pods of %s", np.Name, s.file)
		}
		for i, rule := range np.Spec.Egress {
			for _, peer := range rule.To {
				s.checkPeer(t, fmt.Sprintf("NetworkPolicy %s: egress[%d]", np.Name, i), peer, rule.Ports)
			}
		}
		for i, rule := range np.Spec.Ingress {
			for _, peer := range rule.From {
				s.checkPeer(t, fmt.Sprintf("NetworkPolicy %s: ingress[%d]", np.Name, i), peer, nil)
			}
			for _, p := range rule.Ports {
				for _, w := range subjects {
					if p.Port != nil {
						if _, ok := w.containerPort(*p.Port); !ok {
							t.Errorf("NetworkPolicy %s: ingress[%d]: port %s is not a container port of %v", np.Name, i, p.Port.String(), w)
						}
					}
				}
			}
		}
	}
}

func (s *manifestSet) checkPeer(t reporter, where string, peer networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) {
	t.Helper()
	if peer.PodSelector == nil || peer.NamespaceSelector != nil {
		return // an address block, or pods of other namespaces
	}
	ws := s.selected(peer.PodSelector)
	if len(ws) == 0 {
		t.Errorf("%s: the peer %v selects no pods of %s", where, peer.PodSelector.MatchLabels, s.file)
	}
	for _, p := range ports {
		for _, w := range ws {
			if p.Port != nil {
				if _, ok := w.containerPort(*p.Port); !ok {
					t.Errorf("%s: port %s is not a container port of %v", where, p.Port.String(), w)
				}
			}
		}
	}
}
