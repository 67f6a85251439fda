package k8s

import (
	"cmp"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// minTokenExpiration is the shortest expirationSeconds the API server
// accepts for a projected service-account token.
const minTokenExpiration = 600

// servedFile is how a file reaches a container: the mount and the volume
// it comes through, and what of the volume it is.
type servedFile struct {
	mount  corev1.VolumeMount
	volume corev1.Volume
	rel    string                                // its path inside the volume ("" for the whole volume)
	kind   string                                // ConfigMap, Secret or ClusterTrustBundle: where its content comes from
	name   string                                // that object's name
	key    string                                // and key
	token  *corev1.ServiceAccountTokenProjection // or a projected service-account token
}

// serve finds how the file p (a folder, with dir) reaches container c:
// through the mount that holds it most closely, from the volume's item
// or projected source that puts a file there.
func (w workload) serve(c *corev1.Container, p string, dir bool) (servedFile, error) {
	var sf servedFile
	p = path.Clean(p)
	best := -1
	for _, m := range c.VolumeMounts {
		mp := path.Clean(m.MountPath)
		if (p == mp || strings.HasPrefix(p, mp+"/") || mp == "/") && len(mp) > best {
			sf.mount, best = m, len(mp)
		}
	}
	if best < 0 {
		return sf, fmt.Errorf("container %s mounts nothing that holds it", c.Name)
	}
	sf.rel = strings.TrimPrefix(strings.TrimPrefix(p, path.Clean(sf.mount.MountPath)), "/")
	// A subPath mount is a copy made at start: the kubelet never updates
	// it, so a rotated token or CA would never reach till.
	if sf.mount.SubPath != "" || sf.mount.SubPathExpr != "" {
		return sf, fmt.Errorf("container %s mounts it with subPath, which the kubelet never updates", c.Name)
	}
	v, ok := w.volume(sf.mount.Name)
	if !ok {
		return sf, fmt.Errorf("container %s mounts %q, which is not a volume of the pod", c.Name, sf.mount.Name)
	}
	sf.volume = v
	if dir != (sf.rel == "") {
		if dir {
			return sf, fmt.Errorf("it is a folder inside the volume %s mounted at %s: mount the volume there", v.Name, sf.mount.MountPath)
		}
		return sf, fmt.Errorf("the volume %s is mounted at the file's own path", v.Name)
	}
	switch {
	case v.ConfigMap != nil:
		sf.kind, sf.name = "ConfigMap", v.ConfigMap.Name
		if !dir {
			if sf.key, ok = keyPath(v.ConfigMap.Items, sf.rel); !ok {
				return sf, fmt.Errorf("the ConfigMap volume %s puts no file at %s", v.Name, sf.rel)
			}
		}
	case v.Secret != nil:
		sf.kind, sf.name = "Secret", v.Secret.SecretName
		if !dir {
			if sf.key, ok = keyPath(v.Secret.Items, sf.rel); !ok {
				return sf, fmt.Errorf("the Secret volume %s puts no file at %s", v.Name, sf.rel)
			}
		}
	case v.Projected != nil:
		if dir {
			return sf, nil
		}
		for _, src := range v.Projected.Sources {
			switch {
			case src.ServiceAccountToken != nil && path.Clean(src.ServiceAccountToken.Path) == sf.rel:
				sf.token = src.ServiceAccountToken
				return sf, nil
			case src.ConfigMap != nil:
				if key, ok := keyPath(src.ConfigMap.Items, sf.rel); ok {
					sf.kind, sf.name, sf.key = "ConfigMap", src.ConfigMap.Name, key
					return sf, nil
				}
			case src.Secret != nil:
				if key, ok := keyPath(src.Secret.Items, sf.rel); ok {
					sf.kind, sf.name, sf.key = "Secret", src.Secret.Name, key
					return sf, nil
				}
			case src.ClusterTrustBundle != nil && path.Clean(src.ClusterTrustBundle.Path) == sf.rel:
				sf.kind = "ClusterTrustBundle"
				if src.ClusterTrustBundle.Name != nil {
					sf.name = *src.ClusterTrustBundle.Name
				}
				return sf, nil
			}
		}
		return sf, fmt.Errorf("the projected volume %s puts no file at %s", v.Name, sf.rel)
	default:
		return sf, fmt.Errorf("the volume %s is not a ConfigMap, Secret or projected volume", v.Name)
	}
	return sf, nil
}

// volumeKind names a volume's type for messages.
func volumeKind(v corev1.Volume) string {
	switch {
	case v.ConfigMap != nil:
		return "ConfigMap"
	case v.Secret != nil:
		return "Secret"
	case v.Projected != nil:
		return "projected"
	case v.EmptyDir != nil:
		return "emptyDir"
	}
	return "other"
}

// hasToken reports whether the volume holds a service-account token.
func hasToken(v corev1.Volume) bool {
	return v.Projected != nil && slices.ContainsFunc(v.Projected.Sources, func(s corev1.VolumeProjection) bool {
		return s.ServiceAccountToken != nil
	})
}

// checkSources: every file a source of till's config reads (a CA, a
// token, a folder of secrets) reaches the till container read-only from
// a volume that serves it; a Kubernetes login's jwt_file is a projected
// service-account token with an audience, and the Vault role the
// comments set up accepts it.
func (s *manifestSet) checkSources(t reporter, w workload, c *corev1.Container, cfg *tillConfig) {
	t.Helper()
	for _, src := range cfg.Sources {
		where := fmt.Sprintf("%v: container %s: source %q", w, c.Name, src.Name)
		for _, f := range src.files() {
			sf, err := w.serve(c, f.path, f.dir)
			if err != nil {
				t.Errorf("%s: %s %s: %v", where, f.setting, f.path, err)
				continue
			}
			if !sf.mount.ReadOnly {
				t.Errorf("%s: %s %s: mount %s read-only", where, f.setting, f.path, sf.mount.MountPath)
			}
			if f.setting != jwtFileSetting {
				continue
			}
			if sf.token == nil {
				t.Errorf("%s: %s %s comes from the %s volume %s, not from a projected serviceAccountToken: Vault's Kubernetes login needs the pod's token there",
					where, f.setting, f.path, volumeKind(sf.volume), sf.volume.Name)
				continue
			}
			s.checkToken(t, where, w, sf)
			s.checkVaultRole(t, where, w, src, cfg, sf.token.Audience)
		}
	}
}

// checkToken: the projected token is for Vault alone and valid as long as
// the API server allows, and names a service account of the pod's own.
func (s *manifestSet) checkToken(t reporter, where string, w workload, sf servedFile) {
	t.Helper()
	tok := sf.token
	if tok.Audience == "" {
		t.Errorf("%s: the projected token (volume %s) has no audience: it is then a token for the API server, which whoever reads it may use there; give it its own (audience: vault) and the Vault role the same (audience=vault)", where, sf.volume.Name)
	}
	if e := tok.ExpirationSeconds; e != nil && *e < minTokenExpiration {
		t.Errorf("%s: the projected token's expirationSeconds %d: the API server refuses less than %d", where, *e, minTokenExpiration)
	}
	if sa := w.spec.ServiceAccountName; sa == "" || sa == "default" {
		t.Errorf("%s: the pod runs as the namespace's default service account: every pod of the namespace could log in to Vault as till does; give it a serviceAccountName of its own", where)
	}
}

// commentLines returns the manifest's comments as logical lines: the
// text after "#", with a line ending in a backslash joined to the next,
// as a shell reads the command a reader copies.
func commentLines(text string) []string {
	var out []string
	pending, open := "", false
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		body, ok := strings.CutPrefix(line, "#")
		if !ok {
			if open {
				out = append(out, pending)
			}
			pending, open = "", false
			continue
		}
		body = strings.TrimSpace(body)
		if open {
			pending += " " + body
		} else {
			pending = body
		}
		if cont, ok := strings.CutSuffix(pending, `\`); ok {
			pending, open = strings.TrimSpace(cont), true
			continue
		}
		out = append(out, pending)
		pending, open = "", false
	}
	if open {
		out = append(out, pending)
	}
	return out
}

// vaultWrite finds the comment line that runs `vault write ENDPOINT ...`
// and returns its key=value parameters.
func (s *manifestSet) vaultWrite(endpoint string) (map[string]string, bool) {
	cmd := "vault write " + endpoint
	for _, l := range commentLines(s.text) {
		_, rest, ok := strings.Cut(l+" ", cmd+" ")
		if !ok {
			continue
		}
		params := map[string]string{}
		for _, f := range strings.Fields(rest) {
			if k, v, ok := strings.Cut(f, "="); ok {
				params[k] = strings.Trim(v, `"'`)
			}
		}
		return params, true
	}
	return nil, false
}

var (
	policyWriteRE = regexp.MustCompile(`vault policy write (\S+)`)
	policyPathRE  = regexp.MustCompile(`path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]`)
)

// policyReads reports whether the comments write a policy called name
// that lets its holder read the KV v2 data path p.
func (s *manifestSet) policyReads(name, p string) bool {
	for _, l := range commentLines(s.text) {
		m := policyWriteRE.FindStringSubmatch(l)
		if m == nil || m[1] != name {
			continue
		}
		for _, pm := range policyPathRE.FindAllStringSubmatch(l, -1) {
			glob, caps := pm[1], pm[2]
			covers := glob == p || strings.HasSuffix(glob, "*") && strings.HasPrefix(p, strings.TrimSuffix(glob, "*"))
			if covers && strings.Contains(caps, `"read"`) {
				return true
			}
		}
	}
	return false
}

// listParam reports whether a comma-separated parameter of a Vault role
// holds want (or "*").
func listParam(v, want string) bool {
	for item := range strings.SplitSeq(v, ",") {
		if item = strings.TrimSpace(item); item == want || item == "*" {
			return true
		}
	}
	return false
}

// checkVaultRole: the comments show the Vault role till logs in as, and
// it accepts this pod's token (its service account, namespace and
// audience) and grants a policy that reads every ref of the source. A
// role that does not is a pod that starts, reports ready, and answers
// every request with 503 secret_unavailable.
func (s *manifestSet) checkVaultRole(t reporter, where string, w workload, src tillSource, cfg *tillConfig, audience string) {
	t.Helper()
	endpoint := "auth/" + src.authMount() + "/role/" + src.Auth.Kubernetes.Role
	params, ok := s.vaultWrite(endpoint)
	if !ok {
		t.Errorf("%s: no `vault write %s ...` among the comments of %s: show the reader Vault's side", where, endpoint, s.file)
		return
	}
	cmd := "vault write " + endpoint
	if _, ok := params["audiences"]; ok {
		t.Errorf("%s: %s audiences=...: a Kubernetes role's parameter is audience; Vault ignores audiences= with a mere warning, and checks no audience", where, cmd)
	}
	if params["audience"] != audience {
		t.Errorf("%s: %s has audience=%q, but the projected token's audience is %q: Vault refuses the login", where, cmd, params["audience"], audience)
	}
	sa := cmp.Or(w.spec.ServiceAccountName, "default")
	if !listParam(params["bound_service_account_names"], sa) {
		t.Errorf("%s: %s has bound_service_account_names=%q, which does not name the pod's service account %q", where, cmd, params["bound_service_account_names"], sa)
	}
	if !listParam(params["bound_service_account_namespaces"], w.namespace) {
		t.Errorf("%s: %s has bound_service_account_namespaces=%q, which does not name the pod's namespace %q", where, cmd, params["bound_service_account_namespaces"], w.namespace)
	}
	policies := cmp.Or(params["token_policies"], params["policies"])
	for _, ref := range cfg.refs() {
		if ref.source != src.Name {
			continue
		}
		mount, entry, ok := strings.Cut(ref.path, "/")
		if !ok {
			continue // till check says what is wrong with it
		}
		data := mount + "/data/" + entry
		if !slices.ContainsFunc(strings.Split(policies, ","), func(p string) bool { return s.policyReads(strings.TrimSpace(p), data) }) {
			t.Errorf("%s: no policy of the role (%s), as the comments write it, reads %q, where KV v2 keeps %s", where, cmp.Or(policies, "none"), data, ref.ref)
		}
	}
}
