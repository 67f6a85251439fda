package k8s

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// recorder is a reporter that collects what the checks say instead of
// failing the test.
type recorder struct{ msgs []string }

// Helper does nothing: a recorder keeps messages, not lines.
func (r *recorder) Helper() {}

// Errorf records the complaint and lets the check go on.
func (r *recorder) Errorf(format string, args ...any) {
	r.msgs = append(r.msgs, fmt.Sprintf(format, args...))
}

// Fatalf records and stops the check, as testing.T's does.
func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	panic(r)
}

// run runs fn, stopping where it called Fatalf.
func (r *recorder) run(fn func(reporter)) {
	defer func() {
		if p := recover(); p != nil && p != any(r) {
			panic(p)
		}
	}()
	fn(r)
}

// TestWiringCatches breaks the examples one way at a time and expects the
// wiring checks to say so: checks that pass on anything prove nothing.
func TestWiringCatches(t *testing.T) {
	tests := []struct {
		name, file, old, new, want string
	}{
		{"sidecar without restartPolicy", "sidecar.yaml", "restartPolicy: Always  ", "", "restartPolicy: Always"},
		{"listen flag against config", "sidecar.yaml", `"--listen", "127.0.0.1:8080"`, `"--listen", "127.0.0.1:8081"`, "--listen"},
		{"exec probe on the wrong port", "sidecar.yaml", "127.0.0.1:9090/readyz", "127.0.0.1:9091/readyz", "admin.listen"},
		{"exec probe killed before till health answers", "sidecar.yaml", "periodSeconds: 10\n            timeoutSeconds: 3", "periodSeconds: 10", "timeoutSeconds 0"},
		{"exec probe on the wrong path", "sidecar.yaml", "127.0.0.1:9090/healthz", "127.0.0.1:9090/readyz", "want http://ADMIN/healthz"},
		{"config mounted with subPath", "sidecar.yaml", "mountPath: /etc/till\n", "mountPath: /etc/till\n              subPath: till.yaml\n", "subPath"},
		{"missing ConfigMap", "sidecar.yaml", "name: till-sidecar\n            items", "name: till-sidecarr\n            items", `ConfigMap "till-sidecarr" is not among`},
		{"base URL off till's listener", "sidecar.yaml", "http://127.0.0.1:8080/openai/v1", "http://127.0.0.1:8081/openai/v1", "reaches no till"},
		{"mount without a volume", "sidecar.yaml", "- name: till-vault\n              mountPath", "- name: till-vaults\n              mountPath", "not a volume of the pod"},
		{"Service selecting nothing", "gateway.yaml", "type: ClusterIP\n  selector:\n    app.kubernetes.io/name: till\n", "type: ClusterIP\n  selector:\n    app.kubernetes.io/name: tilll\n", "selects no pods"},
		{"httpGet probe off the admin port", "gateway.yaml", "port: admin", "port: http", "admin.listen"},
		{"admin on loopback probed over the pod IP", "gateway.yaml", "listen: 0.0.0.0:9090", "listen: 127.0.0.1:9090", "httpGet reaches the pod IP"},
		{"grace past the pod's", "gateway.yaml", "shutdown_grace: 25s", "shutdown_grace: 36s", "terminationGracePeriodSeconds"},
		{"PDB as large as the Deployment", "gateway.yaml", "minAvailable: 1", "minAvailable: 2", "blocks every node drain"},
		{"policy port till lacks", "gateway.yaml", "          port: 8080\n    - to:", "          port: 8081\n    - to:", "not a container port"},
		{"missing kubectl Secret", "gateway.yaml", "name: chat-till-token", "name: chat-till-tokn", `Secret "chat-till-tokn" is neither`},
		{"gateway route without clients", "gateway.yaml", "        clients: [chat]\n", "", "names no clients"},
		{"Redis that is not there", "gateway.yaml", "redis://till-redis:6379/0", "redis://redis:6379/0", "no Service"},
		{"writable root", "gateway.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem"},
		{"base URL without a route", "gateway.yaml", "http://till:8080/openai/v1", "http://till:8080/anthropic/v1", "no route"},
		{"vault folder not mounted", "gateway.yaml", "mountPath: /var/lib/till", "mountPath: /var/lib/tll", "mounts nothing at /var/lib/till"},
		{"policy peer selecting nothing", "gateway.yaml", "        - podSelector:\n            matchLabels:\n              app.kubernetes.io/name: till-redis\n", "        - podSelector:\n            matchLabels:\n              app.kubernetes.io/name: till-rediss\n", "selects no pods"},
		// sidecar-vault.yaml: the token, the CA and the Vault role.
		{"jwt_file's folder not mounted", "sidecar-vault.yaml", "mountPath: /var/run/secrets/vault\n", "mountPath: /var/run/secrets/vaults\n", "jwt_file /var/run/secrets/vault/token: container till mounts nothing that holds it"},
		{"jwt_file not the projected token", "sidecar-vault.yaml", "path: token\n", "path: jwt\n", "projected volume vault-token puts no file at token"},
		{"token mounted with subPath", "sidecar-vault.yaml", "mountPath: /var/run/secrets/vault\n              readOnly", "mountPath: /var/run/secrets/vault\n              subPath: token\n              readOnly", "mounts it with subPath"},
		{"jwt_file from a Secret", "sidecar-vault.yaml", "projected:\n            sources:\n              - serviceAccountToken:\n                  audience: vault\n                  expirationSeconds: 3600\n                  path: token\n", "secret:\n            secretName: till-vault\n", "comes from the Secret volume vault-token, not from a projected serviceAccountToken"},
		{"token mounted writable", "sidecar-vault.yaml", "mountPath: /var/run/secrets/vault\n              readOnly: true", "mountPath: /var/run/secrets/vault\n              readOnly: false", "mount /var/run/secrets/vault read-only"},
		{"app mounts the token", "sidecar-vault.yaml", "value: not-a-real-key           # till discards it and injects the real one\n", "value: not-a-real-key\n          volumeMounts:\n            - name: vault-token\n              mountPath: /var/run/secrets/vault\n              readOnly: true\n", "container app mounts the service-account token"},
		{"API token in every container", "sidecar-vault.yaml", "      automountServiceAccountToken: false\n", "      automountServiceAccountToken: true\n", "want automountServiceAccountToken: false"},
		{"pod without its service account", "sidecar-vault.yaml", "      serviceAccountName: web ", "      serviceAccountName: default ", "default service account"},
		{"service account not in the manifest", "sidecar-vault.yaml", "      serviceAccountName: web ", "      serviceAccountName: webb ", `ServiceAccount "webb" is not among`},
		{"token without audience", "sidecar-vault.yaml", "                  audience: vault\n", "", "has no audience"},
		{"token audience Vault does not take", "sidecar-vault.yaml", "                  audience: vault\n", "                  audience: openbao\n", `audience="vault", but the projected token's audience is "openbao"`},
		{"token expiring too soon", "sidecar-vault.yaml", "expirationSeconds: 3600", "expirationSeconds: 300", "expirationSeconds 300"},
		{"ca_file not mounted", "sidecar-vault.yaml", "mountPath: /etc/till-vault-ca\n", "mountPath: /etc/vault-ca\n", "ca_file /etc/till-vault-ca/ca.crt: container till mounts nothing"},
		{"ca_file not in the volume", "sidecar-vault.yaml", "path: ca.crt", "path: ca.pem", "ConfigMap volume vault-ca puts no file at ca.crt"},
		{"CA ConfigMap nobody makes", "sidecar-vault.yaml", "name: vault-ca                  #", "name: vault-cert                #", `ConfigMap "vault-cert" is not among`},
		{"role for another service account", "sidecar-vault.yaml", "bound_service_account_names=web ", "bound_service_account_names=api ", "does not name the pod's service account"},
		{"role in another namespace", "sidecar-vault.yaml", "bound_service_account_namespaces=default ", "bound_service_account_namespaces=prod ", "does not name the pod's namespace"},
		{"role audiences, which Vault ignores", "sidecar-vault.yaml", " audience=vault ", " audiences=vault ", "Vault ignores audiences="},
		{"role not shown", "sidecar-vault.yaml", "auth/kubernetes/role/web-till", "auth/kubernetes/role/web", "no `vault write auth/kubernetes/role/web-till ...`"},
		{"policy that reads another path", "sidecar-vault.yaml", `path "secret/data/openai"`, `path "secret/openai"`, `reads "secret/data/openai"`},
		{"policy without read", "sidecar-vault.yaml", `capabilities = ["read"]`, `capabilities = ["list"]`, `reads "secret/data/openai"`},
		{"route on a vault that is not there", "sidecar-vault.yaml", `secret: "corp:secret/openai#api_key"`, `secret: openai`, "names no vault"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(examplesDir, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(data), tt.old) {
				t.Fatalf("%s no longer holds %q: update this test", tt.file, tt.old)
			}
			broken := strings.Replace(string(data), tt.old, tt.new, 1)
			r := &recorder{}
			r.run(func(rep reporter) { parseSet(rep, tt.file, []byte(broken)).check(rep) })
			for _, m := range r.msgs {
				if strings.Contains(m, tt.want) {
					return
				}
			}
			t.Errorf("no complaint containing %q; got %q", tt.want, r.msgs)
		})
	}
}
