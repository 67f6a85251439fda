//go:build unix

package main

import (
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"
)

// notifyReopen relays SIGUSR1, which asks till to reopen its audit file
// (after logrotate moved it, say), to c.
func notifyReopen(c chan<- os.Signal) { signal.Notify(c, syscall.SIGUSR1) }

// keepRaw keeps the terminal fd in the state raw (the secret prompt's:
// no echo) across a stop from outside, until the returned func is
// called. At SIGTSTP, which it catches, it gives the terminal back as it
// was (old) and stops; at SIGCONT (and once continued) it sets raw
// again, whatever the shell did with the terminal meanwhile (bash turns
// echo back on before fg), so that nothing typed after fg is echoed.
// SIGSTOP cannot be caught: the shell, not till, hands the terminal over
// then.
func keepRaw(fd int, old, raw *term.State) (stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTSTP, syscall.SIGCONT)
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			case s := <-sigs:
				if s == syscall.SIGTSTP {
					_ = term.Restore(fd, old)
					// Stopped until SIGCONT. By SIGSTOP: Go never gives
					// SIGTSTP its default action back once caught.
					_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
				}
				_ = term.Restore(fd, raw)
			}
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
		<-finished
	}
}
