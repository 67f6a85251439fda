// Package k8s tests the Kubernetes examples in examples/kubernetes: every
// manifest decodes strictly into the Kubernetes API types, the objects are
// wired to each other and to till's config (selectors, volumes, ports,
// probes, service-account tokens), and the real till binary accepts each
// ConfigMap's till.yaml and serves from read-only volumes laid out as the
// kubelet does, its audit trail in a file on an emptyDir, in front of a
// strict fake Vault for a config whose keys come from Vault.
//
// It is a module of its own so that the Kubernetes API modules never become
// dependencies of till itself. It requires till's module (replaced by the
// repository, ../..) for that fake only: github.com/tillgw/till/test/fake.
// Run it from this folder: go test ./...
package k8s
