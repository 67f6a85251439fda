package config

import (
	"strings"
	"testing"
	"time"
)

// Hostile config files get an error, quickly, and never a crash.
func TestParseHostile(t *testing.T) {
	laughs := "version: 1\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
	prev := "a"
	for i := range 8 {
		name := string(rune('b' + i))
		laughs += name + ": &" + name + " [" + strings.Repeat("*"+prev+",", 8) + "*" + prev + "]\n"
		prev = name
	}
	tests := []struct {
		name, doc, want string
	}{
		{"alias bomb", laughs, "till.yaml:2"},
		{"alias bomb under a known key", laughs + "routes: *i\n", "yaml aliases are not supported"},
		{"deep nesting", "version: 1\nroutes: " + strings.Repeat("[", 200_000) + strings.Repeat("]", 200_000) + "\n", "till.yaml"},
		{"ten-megabyte string", "version: 1\nlisten: \"" + strings.Repeat("x", 10<<20) + "\"\n", "larger than 1 MiB"},
		{"binary", "\x00\x01\x02\xff\xfe", "till.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			_, err := Parse("till.yaml", []byte(tt.doc), t.TempDir())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tt.want)
			}
			if len(err.Error()) > 4096 {
				t.Errorf("the error is %d bytes: it should name the problem, not echo the file", len(err.Error()))
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}
