package main

import (
	"os"
	"strings"
	"testing"
)

// TestServeListenValueNotShown: a --listen value that is not host:port
// may be a key pasted in the wrong place: it is refused as a usage error
// that neither shows it nor has the system look it up, as --url's is.
func TestServeListenValueNotShown(t *testing.T) {
	for _, tt := range []struct{ name, listen string }{
		{"key alone", "sk-proj-0123456789abcdefABCDEF"},
		{"key as the port", "127.0.0.1:sk-proj-0123456789abcdefABCDEF"},
		// Would be looked up in DNS, and quoted by the lookup's error.
		{"key as the host", "sk-proj-0123456789abcdefABCDEF:8080"},
		{"port out of range", "127.0.0.1:99999"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newCLI(t)
			if err := os.WriteFile("till.yaml", []byte("version: 1\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			out, errOut, code := c.run("", "serve", "--listen", tt.listen)
			if code != 2 || !strings.Contains(errOut, "--listen (") || !strings.Contains(errOut, "characters, not shown)") {
				t.Errorf("exit %d, stderr %q; want 2 and the value not shown", code, errOut)
			}
			if strings.Contains(out+errOut, "sk-proj") || strings.Contains(out+errOut, "99999") {
				t.Errorf("the --listen value was echoed: %q", errOut)
			}
		})
	}
}
