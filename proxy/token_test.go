package proxy

import (
	"strings"
	"testing"
)

// TestNewToken checks that a new token has the shape the gateway strips
// and scrubs, and that two are never the same.
func TestNewToken(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		if len(tok) != len(TokenPrefix)+TokenLength || !strings.HasPrefix(tok, TokenPrefix) {
			t.Fatalf("got a token of %d characters, want %s and %d base62", len(tok), TokenPrefix, TokenLength)
		}
		for i := len(TokenPrefix); i < len(tok); i++ {
			if !isBase62(tok[i]) {
				t.Fatalf("got a token with %q at %d, want base62 only", tok[i], i)
			}
		}
		if !holdsClientToken("Bearer " + tok) {
			t.Fatal("the gateway does not recognise a new token")
		}
		if seen[tok] {
			t.Fatal("two tokens are the same")
		}
		seen[tok] = true
	}
}
