//go:build unix

package regfiletest

import (
	"os"
	"runtime"
	"syscall"
)

// Fed returns what done gives: the error of a reader of the named pipe
// fifo. Should the reader wait on the pipe instead of refusing it, Fed
// writes content to it, which ends the wait, so that the test gets what
// the reader made of content (not the pipe's refusal) and fails, rather
// than hangs.
func Fed(fifo, content string, done <-chan error) error {
	for {
		select {
		case err := <-done:
			return err
		default:
		}
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.WriteString(content)
			w.Close()
			return <-done
		}
		runtime.Gosched()
	}
}
