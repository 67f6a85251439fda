//go:build unix

package source

import (
	"os/exec"
	"syscall"
)

// killGroup runs cmd in a process group of its own and makes a cancel kill
// the whole group, so that a helper's children go with it.
func killGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

// endGroup kills what is left of the helper's process group once the
// helper has ended, and reaps those of them that are till's children: a
// till that is PID 1 (a container without an init) adopts a helper's
// orphans, which nothing else would reap.
func endGroup(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	pgid := cmd.Process.Pid
	if syscall.Kill(-pgid, syscall.SIGKILL) != nil {
		return // none left
	}
	go func() {
		for {
			_, err := syscall.Wait4(-pgid, nil, 0, nil)
			if err != syscall.EINTR && err != nil {
				return // ECHILD: none of them is till's
			}
		}
	}()
}
