package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"
)

// errInterrupted ends a command that Ctrl-C or a signal stopped before it
// changed anything (exit code 130).
var errInterrupted = errors.New("interrupted: nothing stored")

// errNoValue is Ctrl-D at the secret prompt.
var errNoValue = errors.New("no value entered (Ctrl-D): nothing stored")

// Control characters the secret prompt reads itself: the terminal is in
// raw mode, so that neither Ctrl-C nor Ctrl-D depends on a signal or on a
// read returning zero bytes, which term.ReadPassword loops on.
const (
	ctrlC     = 0x03
	ctrlD     = 0x04
	ctrlU     = 0x15
	backspace = 0x08
	del       = 0x7f
)

// readSecretInput reads the value from stdin: piped, or typed at a
// terminal without echo. ctx ending (SIGINT, SIGTERM) ends the read with
// errInterrupted, also while a pipe stays open.
func readSecretInput(ctx context.Context, e *env) ([]byte, error) {
	read := func() ([]byte, error) { return io.ReadAll(io.LimitReader(e.stdin, maxSecretInput+1)) }
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		old, err := term.MakeRaw(int(f.Fd()))
		if err != nil {
			return nil, err
		}
		// Restored on every way out, before the newline: raw mode does
		// not turn \n into \r\n.
		defer func() {
			_ = term.Restore(int(f.Fd()), old)
			fmt.Fprintln(e.stderr)
		}()
		// After MakeRaw, so that nothing typed once the prompt shows is
		// echoed.
		fmt.Fprint(e.stderr, "secret value (not echoed; Ctrl-C cancels): ")
		read = func() ([]byte, error) { return readTyped(f) }
	}
	type result struct {
		b   []byte
		err error
	}
	// The read is left behind when ctx ends first: a read on a terminal
	// or a pipe cannot be called off, and the command ends at once.
	done := make(chan result, 1)
	go func() {
		b, err := read()
		done <- result{b, err}
	}()
	select {
	case <-ctx.Done():
		return nil, errInterrupted
	case r := <-done:
		if ctx.Err() != nil {
			// A pipe's writer killed by the same Ctrl-C gives EOF on a
			// value cut short.
			clear(r.b)
			return nil, errInterrupted
		}
		return r.b, r.err
	}
}

// readTyped reads one line typed at a terminal in raw mode: Enter ends
// it, Ctrl-C and Ctrl-D cancel it, Backspace and Ctrl-U edit it.
func readTyped(r io.Reader) ([]byte, error) {
	var line []byte
	var c [1]byte
	for {
		n, err := r.Read(c[:])
		if n == 0 {
			clear(line)
			if err == nil || errors.Is(err, io.EOF) {
				return nil, errNoValue
			}
			return nil, err
		}
		switch c[0] {
		case '\r', '\n':
			return line, nil
		case ctrlC:
			clear(line)
			return nil, errInterrupted
		case ctrlD:
			clear(line)
			return nil, errNoValue
		case backspace, del:
			if len(line) > 0 {
				line = line[:len(line)-1]
			}
		case ctrlU:
			clear(line)
			line = line[:0]
		default:
			if len(line) >= maxSecretInput {
				clear(line)
				return nil, fmt.Errorf("the secret typed is larger than %d bytes", maxSecretInput)
			}
			line = append(line, c[0])
		}
	}
}
