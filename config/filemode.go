package config

import (
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
)

// CheckFileModes looks at who else can change or read the config file at
// path: whoever can write it (or its folder, where a rename replaces it)
// chooses where each key goes and what an exec source runs. A file or
// folder every user can write is refused; one its group can write, and a
// file others can read that holds limits.redis's password, are warned
// about. A folder with the sticky bit (/tmp, Kubernetes' Secret mounts)
// lets no one replace another's file, and no one writes what is root's on
// a read-only mount (Kubernetes' ConfigMap mounts); but a config there
// that another user owns is refused (see planted). The vault's and its
// key's files and folders (CheckVaultModes), and a source's folder or
// helper, that every user can write are refused too (checkSourceModes).
// Modes mean nothing of the kind on Windows, where it checks nothing.
func CheckFileModes(path string, c *Config) (warnings []string, err error) {
	if runtime.GOOS == "windows" {
		return nil, nil
	}
	file, err := writeMode(path)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	folder, err := writeMode(dir)
	if err != nil {
		return nil, err
	}
	switch {
	case file&0o002 != 0:
		return nil, fmt.Errorf("%s is writable by every user (mode %v): whoever writes it chooses where keys are sent (hint: chmod o-w %s)", path, file, path)
	case folder&0o002 != 0:
		return nil, fmt.Errorf("the folder %s of %s is writable by every user (mode %v): whoever writes there can replace the config, which chooses where keys are sent (hint: chmod o-w %s)", dir, path, folder, dir)
	case file&0o020 != 0:
		warnings = append(warnings, fmt.Sprintf("%s is writable by its group (mode %v): each member chooses where keys are sent (chmod g-w %s)", path, file, path))
	case folder&0o020 != 0:
		warnings = append(warnings, fmt.Sprintf("the folder %s of %s is writable by its group (mode %v): each member can replace the config (chmod g-w %s)", dir, path, folder, dir))
	}
	if uid, dir, ok := planted(path); ok {
		return nil, fmt.Errorf("%s is owned by uid %d, neither root nor you, in %s, a folder where every user can add files: whoever put it there chooses where keys are sent (hint: use a config in a folder of your own; if the file is yours, chown it)", path, uid, dir)
	}
	if err := CheckVaultModes(c); err != nil {
		return nil, err
	}
	if err := checkSourceModes(c); err != nil {
		return nil, err
	}
	if u, err := url.Parse(c.Limits.Redis); err == nil && u.User != nil && file&0o044 != 0 {
		if _, ok := u.User.Password(); ok {
			warnings = append(warnings, fmt.Sprintf("%s holds limits.redis's password and is readable by other users (mode %v): they can reset every budget and rate (chmod 600 %s, or go-r when till runs as its group)", path, file, path))
		}
	}
	return warnings, nil
}

// CheckVaultModes refuses a vault or key file, or the folder of either,
// that every user can write (a folder with the sticky bit excepted):
// whoever writes there swaps in a key of their own and a vault sealed
// with it, and chooses the keys requests carry; and a vault or key file
// that another user put in a sticky folder such as /tmp (see planted).
// What does not exist yet is left to the commands that read or make it.
// It checks nothing on Windows.
func CheckVaultModes(c *Config) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	for _, f := range []struct{ setting, path string }{{"vault.path", c.Vault.Path}, {"vault.key_file", c.Vault.KeyFile}} {
		if f.path == "" {
			continue
		}
		for _, p := range []string{f.path, filepath.Dir(f.path)} {
			if m, err := writeMode(p); err == nil && m&0o002 != 0 {
				return fmt.Errorf("%s, of %s, is writable by every user (mode %v): whoever writes there swaps in their own vault and key, and chooses the keys sent (hint: chmod o-w %s)", p, f.setting, m, p)
			}
		}
		if uid, dir, ok := planted(f.path); ok {
			return fmt.Errorf("%s, of %s, is owned by uid %d, neither root nor you, in %s, a folder where every user can add files: whoever put it there can read what is stored under it (hint: keep the vault and its key in a folder of your own; if the file is yours, chown it)", f.path, f.setting, uid, dir)
		}
	}
	return nil
}

// planted reports a file at path (a link, or what it names) that is in
// a folder where every user can add files, as /tmp, and that neither
// root nor the user running till owns, with its owner and the folder.
// The folder's sticky bit keeps others from replacing a file of till's,
// not from putting their own there first for till to find: a config
// that sends keys to them, or a key and a vault they can read, which
// root would fill (it keeps a vault's owner). A folder of root's on a
// read-only mount takes no new file.
func planted(path string) (uid uint32, dir string, ok bool) {
	dir = filepath.Dir(path)
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm()&0o002 == 0 || sealedByMount(dir, st) {
		return 0, "", false
	}
	for _, stat := range []func(string) (fs.FileInfo, error){os.Lstat, os.Stat} {
		fi, err := stat(path)
		if err != nil {
			continue
		}
		if uid, known := ownerOf(fi); known && uid != 0 && int(uid) != os.Geteuid() {
			return uid, dir, true
		}
	}
	return 0, "", false
}

// checkSourceModes refuses a files source's folder, and an exec source's
// program or the folder it is in, that every user can write (a folder
// with the sticky bit lets no one replace another's file): whoever writes
// there chooses the key requests carry (their own, to read what the app
// sends) or runs code as till. What does not exist yet is left to the
// fetch, which fails.
func checkSourceModes(c *Config) error {
	for _, s := range c.Sources {
		switch s.Type {
		case "files":
			if m, err := writeMode(s.Dir); err == nil && m&0o002 != 0 {
				return fmt.Errorf("the folder %s of source %q is writable by every user (mode %v): whoever writes there chooses the keys sent (hint: chmod o-w %s)", s.Dir, s.Name, m, s.Dir)
			}
		case "exec":
			if len(s.Command) == 0 {
				continue
			}
			prog, err := exec.LookPath(s.Command[0])
			if err != nil {
				continue
			}
			if abs, err := filepath.Abs(prog); err == nil {
				prog = abs
			}
			for _, p := range []string{prog, filepath.Dir(prog)} {
				if m, err := writeMode(p); err == nil && m&0o002 != 0 {
					return fmt.Errorf("%s, which source %q runs, is writable by every user (mode %v): whoever writes there runs code as till (hint: chmod o-w %s)", p, s.Name, m, p)
				}
			}
		}
	}
	return checkRefModes(c)
}

// checkRefModes refuses a route's ref to a files source whose file, or a
// folder under the source's folder that its fetch looks a name up in
// (links followed, as the fetch follows them), every user can write:
// whoever writes there swaps in their own key, as in the source's folder.
func checkRefModes(c *Config) error {
	dirs := map[string]string{}
	for _, s := range c.Sources {
		if s.Type == "files" {
			dirs[s.Name] = s.Dir
		}
	}
	for _, r := range c.Routes {
		for _, k := range r.Keys() {
			if k.Ref == nil || dirs[k.Ref.Source] == "" {
				continue
			}
			folders, file := lookups(dirs[k.Ref.Source], k.Ref.Path)
			for _, f := range folders {
				if m, err := writeMode(f); err == nil && m&0o002 != 0 {
					return fmt.Errorf("the folder %s, where source %q looks up a route's key, is writable by every user (mode %v): whoever writes there swaps in their own key (hint: chmod o-w %s)", f, k.Ref.Source, m, f)
				}
			}
			if file == "" {
				continue
			}
			if m, err := writeMode(file); err == nil && m&0o002 != 0 {
				return fmt.Errorf("%s, a key of source %q, is writable by every user (mode %v): whoever writes it chooses the key sent (hint: chmod o-w %s)", file, k.Ref.Source, m, file)
			}
		}
	}
	return nil
}

// maxLinks bounds the links lookups follows, as the system bounds them.
const maxLinks = 40

// lookups walks the path rel under dir as a fetch opens it, each link
// followed where it leads, and returns the folders under dir (dir
// included) in which it looks a name up, and the file it reaches ("" when
// there is none yet, which the fetch reports).
func lookups(dir, rel string) (folders []string, file string) {
	dir = filepath.Clean(dir)
	cur, names := dir, strings.Split(rel, "/")
	for links := 0; len(names) > 0; {
		name := names[0]
		names = names[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		if (cur == dir || strings.HasPrefix(cur, dir+string(filepath.Separator))) && !slices.Contains(folders, cur) {
			folders = append(folders, cur)
		}
		next := filepath.Join(cur, name)
		fi, err := os.Lstat(next)
		if err != nil {
			return folders, ""
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(next)
			if links++; err != nil || links > maxLinks {
				return folders, ""
			}
			if filepath.IsAbs(target) {
				cur = "/"
			}
			names = append(strings.Split(target, "/"), names...)
			continue
		}
		if len(names) == 0 {
			return folders, next
		}
		cur = next
	}
	return folders, ""
}

// writeMode is the permission bits of the file or folder at path (a link
// followed), without the write bits that cannot be used: a folder's sticky
// bit lets no one replace another's file in it, and no one writes what is
// root's on a read-only mount (sealedByMount).
func writeMode(path string) (fs.FileMode, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	m := st.Mode().Perm()
	if st.IsDir() && st.Mode()&fs.ModeSticky != 0 {
		m &^= 0o022
	}
	if sealedByMount(path, st) {
		m &^= 0o222
	}
	return m, nil
}
