// Package atomicfile replaces files that a running till reads (the vault,
// the config) so that a reader sees the old file or the new one, whole,
// and never a mix; and serialises the till commands that edit one.
package atomicfile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/gofrs/flock"
)

// ErrLocked is returned by Lock when another process held the lock for
// the whole wait.
var ErrLocked = errors.New("locked by another till command")

// Lock takes the exclusive lock that guards path, waiting up to timeout,
// and returns the function that releases it. The lock is a file beside
// path (path + ".lock", mode 0600, owned as path is) held with flock, so
// it serialises processes as well as goroutines. It stays when released:
// removing it would let a waiter lock an unlinked file while a newcomer
// locks a fresh one.
func Lock(path string, timeout time.Duration) (unlock func(), err error) {
	fl := LockFile(path)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ok, err := fl.TryLockContext(ctx, 20*time.Millisecond)
	if err == nil && !ok {
		err = ctx.Err()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		fl.Close()
		return nil, fmt.Errorf("%w; gave up after %s", ErrLocked, timeout)
	}
	if err != nil {
		fl.Close()
		return nil, fmt.Errorf("cannot lock: %w", err)
	}
	MatchOwner(path+".lock", path)
	return func() { fl.Unlock(); fl.Close() }, nil
}

// LockFile is the lock file that guards path (see Lock), not yet locked.
// It is opened, and created with mode 0600, never through a symbolic link
// at its name: one that another user left there would have till create
// the file it names, wherever that is.
func LockFile(path string) *flock.Flock {
	return flock.New(path+".lock", flock.SetPermissions(0o600), flock.SetFlag(os.O_CREATE|os.O_RDONLY|NoFollow))
}

// Replace writes data to path through a temp file beside it that is
// complete on disk before it takes path's name, so that a reader never
// sees half of it. The new file has mode perm and, when root replaces
// another user's file, keeps that user as its owner.
func Replace(path string, data []byte, perm fs.FileMode) error {
	return replace(path, data, perm, true)
}

// ReplaceOwn is Replace for a file whose content is new to everyone, such
// as a private key: the new file is owned by whoever runs till, never by
// the owner of what was at path, which another user who can write the
// folder may have left there (or linked to a file of theirs) for root to
// fill.
func ReplaceOwn(path string, data []byte, perm fs.FileMode) error {
	return replace(path, data, perm, false)
}

func replace(path string, data []byte, perm fs.FileMode, keepOwner bool) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if keepOwner {
		MatchOwner(tmp.Name(), path)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	SyncDir(dir)
	return nil
}

// SyncDir makes a rename or link in dir durable; a failure only weakens
// durability, the change itself is done.
func SyncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
