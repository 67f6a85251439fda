// Package k8s tests the Kubernetes examples in examples/kubernetes: every
// manifest decodes strictly into the Kubernetes API types, the objects are
// wired to each other and to till's config (selectors, volumes, ports,
// probes), and the real till binary accepts each ConfigMap's till.yaml and
// serves from a read-only Secret volume laid out as the kubelet does.
//
// It is a module of its own so that the Kubernetes API modules never become
// dependencies of till itself. Run it from this folder: go test ./...
package k8s
