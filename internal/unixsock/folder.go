package unixsock

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// CheckFolder refuses a socket path that a user other than the one who
// asks, or root, could have put a socket of their own at while till was
// down, and the CLI would send it the admin token: a folder its group or
// others may write to (a sticky bit does not stop them creating the
// name), another user's folder (a /tmp/till made by someone else is
// theirs to fill), or a folder above it, or a symbolic link on the way,
// that such a user could move or swap (walk). Root trusts the owner of
// the socket's folder too (till's user, such as systemd's
// RuntimeDirectory gives it), above it as well, but no third user, nor
// the owner of a name in a sticky shared folder, which anyone may have
// made (a /tmp/till made before till's user did).
func CheckFolder(path string) error {
	if runtime.GOOS == "windows" {
		return errors.New("a Unix socket's access cannot be checked on Windows")
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return err
	}
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%q is not a folder", dir)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("folder %q is writable by its group or others (mode %04o), who could take the socket's name while till is down", dir, st.Mode().Perm())
	}
	folderOwner, ok := owner(st)
	if !ok {
		return fmt.Errorf("folder %q: cannot tell who owns it", dir)
	}
	steps, err := walk(dir, path)
	if err != nil {
		return err
	}
	me := geteuid()
	for _, s := range steps {
		uid, ok := owner(s.info)
		switch {
		case !ok:
			return fmt.Errorf("%q: cannot tell who owns it", s.path)
		case uid == me || uid == 0 || me == 0 && uid == folderOwner && !s.shared:
		case s.shared:
			// Anyone may have made the name: its owner is no sign of
			// till's user, whoever asks.
			return fmt.Errorf("%q belongs to user %d, not to you (%d) or root, and is in a folder others may write to, where anyone may have made it: they could put a socket of their own at %q", s.path, uid, me, path)
		case me == 0:
			return fmt.Errorf("%q belongs to user %d, who could put a socket of their own at %q: only root and the socket folder's owner (%d) may own the folders on the way", s.path, uid, path, folderOwner)
		default:
			return fmt.Errorf("%q belongs to user %d, not to you (%d) or root: its owner could put a socket of their own at %q", s.path, uid, me, path)
		}
	}
	return nil
}

// maxLinks is how many symbolic links walk follows (Linux's MAXSYMLINKS).
const maxLinks = 40

// step is a folder the way to a socket's folder passes, or a name it
// takes in a sticky folder others may write to: its owner could change
// where the way leads.
type step struct {
	path string
	info fs.FileInfo
	// shared marks a name in a sticky folder others may write to: any
	// user may have made it, so its owner, even the socket folder's, is
	// trusted only when it is the asking user or root.
	shared bool
}

// walk follows dir from the root as the kernel resolves it, symbolic
// links included, and returns every step whose owner decides where dir
// leads, dir itself last. A folder on the way that its group or others
// may write to is refused unless it is sticky (as /tmp is), where only
// a name's owner may move it: those names are steps too. OpenSSH's
// StrictModes checks the folders above a key file so (safe_path), on
// the path resolved; walk checks the links on the way as well, which
// their folder's writers could swap.
func walk(dir, socket string) ([]step, error) {
	root, err := os.Lstat("/")
	if err != nil {
		return nil, err
	}
	if err := onTheWay("/", root, socket); err != nil {
		return nil, err
	}
	steps := []step{{"/", root, false}}
	cur, curInfo := "/", root
	rest, links := strings.Split(dir, "/"), 0
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			// cur is a folder reached by steps, and so is its parent.
			cur = filepath.Dir(cur)
			if curInfo, err = os.Lstat(cur); err != nil {
				return nil, err
			}
			continue
		}
		next := filepath.Join(cur, name)
		st, err := os.Lstat(next)
		if err != nil {
			return nil, err
		}
		if curInfo.Mode().Perm()&0o022 != 0 {
			steps = append(steps, step{next, st, true}) // in a sticky shared folder
		}
		if st.Mode().Type() == fs.ModeSymlink {
			if links++; links > maxLinks {
				return nil, fmt.Errorf("%q: more than %d symbolic links on the way", dir, maxLinks)
			}
			target, err := os.Readlink(next)
			if err != nil {
				return nil, err
			}
			if filepath.IsAbs(target) {
				cur, curInfo = "/", root
			}
			rest = append(strings.Split(target, "/"), rest...)
			continue
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("%q is not a folder", next)
		}
		if err := onTheWay(next, st, socket); err != nil {
			return nil, err
		}
		steps = append(steps, step{next, st, false})
		cur, curInfo = next, st
	}
	return steps, nil
}

// onTheWay refuses a folder on the way to socket that its group or
// others may write to, unless it is sticky.
func onTheWay(path string, st fs.FileInfo, socket string) error {
	if perm := st.Mode().Perm(); perm&0o022 != 0 && st.Mode()&fs.ModeSticky == 0 {
		return fmt.Errorf("folder %q, on the way to %q, is writable by its group or others (mode %04o) and not sticky: they could move the folders in it and put a socket of their own at the name", path, socket, perm)
	}
	return nil
}
