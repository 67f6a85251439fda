package ca

import (
	"crypto/tls"
	"strings"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
)

// renewBefore is how long before expiry a cached leaf is replaced.
const renewBefore = time.Hour

// Leaves hands out leaf certificates per host: minted on first use, kept in
// a bounded LRU cache, renewed before they expire. Concurrent first
// handshakes to one host share one mint.
type Leaves struct {
	ca    *CA
	cache *lru.Cache[string, *tls.Certificate]
	group singleflight.Group
	mints atomic.Int64
	now   func() time.Time
}

// NewLeaves returns a leaf cache of the given size signed by ca.
func NewLeaves(ca *CA, size int) (*Leaves, error) {
	cache, err := lru.New[string, *tls.Certificate](size)
	if err != nil {
		return nil, err
	}
	return &Leaves{ca: ca, cache: cache, now: time.Now}, nil
}

// Get returns a valid leaf certificate for host.
func (l *Leaves) Get(host string) (*tls.Certificate, error) {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if c, ok := l.cache.Get(host); ok && l.fresh(c) {
		return c, nil
	}
	v, err, _ := l.group.Do(host, func() (any, error) {
		if c, ok := l.cache.Get(host); ok && l.fresh(c) {
			return c, nil
		}
		c, err := l.ca.Mint(host, l.now())
		if err != nil {
			return nil, err
		}
		l.mints.Add(1)
		l.cache.Add(host, c)
		return c, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*tls.Certificate), nil
}

// fresh reports whether a cached leaf may still be served: valid now and
// for renewBefore more. A leaf minted while the clock ran ahead, which
// then stepped back, is not valid yet: apps would refuse it until the
// clock caught up.
func (l *Leaves) fresh(c *tls.Certificate) bool {
	now := l.now()
	return !now.Before(c.Leaf.NotBefore) && now.Add(renewBefore).Before(c.Leaf.NotAfter)
}

// Mints counts the certificates minted so far.
func (l *Leaves) Mints() int64 { return l.mints.Load() }
