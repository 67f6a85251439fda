package proxy

import (
	"context"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// memStorage is a certmagic.Storage in memory, for the listener's
// certificates from till's own CA: till signs them again at each start,
// so none needs to outlive the process, and nothing is written beside the
// vault, whose folder may be read-only (a Kubernetes Secret volume). Keys
// are slash-separated paths, as certmagic.FileStorage reads them.
type memStorage struct {
	mu    sync.Mutex
	items map[string]memItem
	locks map[string]chan struct{}
}

var _ certmagic.Storage = (*memStorage)(nil)

// memItem is a stored value and when it was stored.
type memItem struct {
	value    []byte
	modified time.Time
}

func newMemStorage() *memStorage {
	return &memStorage{items: map[string]memItem{}, locks: map[string]chan struct{}{}}
}

// lock returns the channel that holds name's lock while it is taken.
func (s *memStorage) lock(name string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locks[name] == nil {
		s.locks[name] = make(chan struct{}, 1)
	}
	return s.locks[name]
}

// Lock takes name's lock, waiting until it is free or ctx is done.
func (s *memStorage) Lock(ctx context.Context, name string) error {
	select {
	case s.lock(name) <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Unlock frees name's lock.
func (s *memStorage) Unlock(_ context.Context, name string) error {
	select {
	case <-s.lock(name):
		return nil
	default:
		return fmt.Errorf("unlock %q: not locked", name)
	}
}

// Store keeps a copy of value at key.
func (s *memStorage) Store(_ context.Context, key string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items[key] = memItem{value: slices.Clone(value), modified: time.Now()}
	return nil
}

// Load returns a copy of the value at key, fs.ErrNotExist when none.
func (s *memStorage) Load(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.items[key]
	if !ok {
		return nil, fmt.Errorf("load %q: %w", key, fs.ErrNotExist)
	}
	return slices.Clone(it.value), nil
}

// Delete removes key and every key under it.
func (s *memStorage) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	maps.DeleteFunc(s.items, func(k string, _ memItem) bool { return k == key || strings.HasPrefix(k, key+"/") })
	return nil
}

// Exists reports whether key holds a value or has keys under it.
func (s *memStorage) Exists(_ context.Context, key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.items[key]
	return ok || s.hasUnder(key)
}

// hasUnder reports whether a key lies under prefix; s.mu is held.
func (s *memStorage) hasUnder(prefix string) bool {
	for k := range s.items {
		if strings.HasPrefix(k, prefix+"/") {
			return true
		}
	}
	return false
}

// List returns the keys under prefix: every one when recursive, else
// those one level down (values and folders alike), as FileStorage does;
// fs.ErrNotExist when there are none.
func (s *memStorage) List(_ context.Context, prefix string, recursive bool) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []string
	for k := range s.items {
		rest, ok := strings.CutPrefix(k, prefix+"/")
		if !ok {
			continue
		}
		for i, c := range rest {
			if c == '/' {
				keys = append(keys, prefix+"/"+rest[:i])
				if !recursive {
					break
				}
			}
		}
		if recursive || !strings.Contains(rest, "/") {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("list %q: %w", prefix, fs.ErrNotExist)
	}
	slices.Sort(keys)
	return slices.Compact(keys), nil
}

// Stat describes the value at key, or the folder of keys under it.
func (s *memStorage) Stat(_ context.Context, key string) (certmagic.KeyInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if it, ok := s.items[key]; ok {
		return certmagic.KeyInfo{Key: key, Modified: it.modified, Size: int64(len(it.value)), IsTerminal: true}, nil
	}
	if s.hasUnder(key) {
		return certmagic.KeyInfo{Key: key}, nil
	}
	return certmagic.KeyInfo{}, fmt.Errorf("stat %q: %w", key, fs.ErrNotExist)
}
