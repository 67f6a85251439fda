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
