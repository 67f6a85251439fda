// Package audit writes till's audit trail (hash-chained JSON lines,
// rotated, signed checkpoints) and reads it back: verify and summary.
package audit
