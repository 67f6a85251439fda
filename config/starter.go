package config

import (
	_ "embed"
	"slices"
)

//go:embed starter.yaml
var starterYAML []byte

// StarterConfig returns the commented till.yaml that "till init" writes.
// Parse accepts it as is; its example routes are commented out, and every
// config key appears in it with a one-line comment.
func StarterConfig() []byte { return slices.Clone(starterYAML) }
