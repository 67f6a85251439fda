package proxy

import (
	"crypto/rand"
	"math/big"
)

// tokenChars is base62: tokens survive URLs, headers and shells unquoted.
const tokenChars = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// NewToken returns a new client token: TokenPrefix and TokenLength random
// base62 characters, the shape the gateway recognises wherever a token
// would leave till. Only its SHA-256 is kept (clients[].token_sha256).
func NewToken() (string, error) {
	b := []byte(TokenPrefix)
	max := big.NewInt(int64(len(tokenChars)))
	for range TokenLength {
		n, err := rand.Int(rand.Reader, max)
		if err != nil {
			return "", err
		}
		b = append(b, tokenChars[n.Int64()])
	}
	return string(b), nil
}
