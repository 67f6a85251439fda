package config

import (
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
)

// CheckFileModes looks at who else can change or read the config file at
// path: whoever can write it (or its folder, where a rename replaces it)
// chooses where each key goes and what an exec source runs. A file or
// folder every user can write is refused; one its group can write, and a
// file others can read that holds limits.redis's password, are warned
// about. A folder with the sticky bit (Kubernetes' ConfigMap mounts, /tmp)
// lets no one replace another's file. Modes mean nothing of the kind on
// Windows, where it checks nothing.
func CheckFileModes(path string, c *Config) (warnings []string, err error) {
	if runtime.GOOS == "windows" {
		return nil, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	dst, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	file, folder := st.Mode().Perm(), dst.Mode().Perm()
	if dst.Mode()&fs.ModeSticky != 0 {
		folder &^= 0o022
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
	if u, err := url.Parse(c.Limits.Redis); err == nil && u.User != nil && file&0o044 != 0 {
		if _, ok := u.User.Password(); ok {
			warnings = append(warnings, fmt.Sprintf("%s holds limits.redis's password and is readable by other users (mode %v): they can reset every budget and rate (chmod 600 %s, or go-r when till runs as its group)", path, file, path))
		}
	}
	return warnings, nil
}
