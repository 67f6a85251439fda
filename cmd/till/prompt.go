package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"unicode/utf8"

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

// inputEnd says whether what was typed at the prompt so far, ending in a
// newline, is a whole value: a value that spans lines (a PEM key, a JSON
// document) is pasted, and ends when it is whole, not at its first line.
// nil: the first line is the value.
type inputEnd func(typed []byte) bool

// pemEnd: the last line is a PEM END line.
func pemEnd(typed []byte) bool {
	body := bytes.TrimRight(typed, "\n")
	last := body[bytes.LastIndexByte(body, '\n')+1:]
	return bytes.HasPrefix(last, []byte("-----END ")) && bytes.HasSuffix(last, []byte("-----"))
}

// jsonEnd: what was typed is a JSON document.
func jsonEnd(typed []byte) bool { return json.Valid(typed) }

// readSecretInput reads the value from stdin: piped, or typed (pasted) at
// a terminal without echo, until end says it is whole. ctx ending
// (SIGINT, SIGTERM) ends the read with errInterrupted, also while a pipe
// stays open.
func readSecretInput(ctx context.Context, e *env, end inputEnd) ([]byte, error) {
	read := func() ([]byte, error) { return io.ReadAll(io.LimitReader(e.stdin, maxSecretInput+1)) }
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		old, err := term.MakeRaw(int(f.Fd()))
		if err != nil {
			return nil, err
		}
		// Restored on every way out, before the newline: raw mode does
		// not turn \n into \r\n. What is left unread (the rest of a
		// paste, keys typed ahead) is dropped first: the shell would
		// show it, run it and keep it in its history.
		defer func() {
			flushInput(f)
			_ = term.Restore(int(f.Fd()), old)
			fmt.Fprintln(e.stderr)
		}()
		raw, err := term.GetState(int(f.Fd()))
		if err != nil {
			return nil, err
		}
		// Raw again after a stop (kill -TSTP from another terminal; a
		// Ctrl-Z typed here is a byte), before the restore above.
		defer keepRaw(int(f.Fd()), old, raw)()
		// After MakeRaw, so that nothing typed once the prompt shows is
		// echoed.
		what := ""
		if end != nil {
			what = ", pasted whole"
		}
		fmt.Fprintf(e.stderr, "secret value%s (not echoed; Ctrl-C cancels): ", what)
		read = func() ([]byte, error) { return readTyped(f, end) }
	}
	return untilRead(ctx, read)
}

// untilRead returns what read returns, or errInterrupted as soon as ctx
// ends (SIGINT, SIGTERM). The read is left behind then: a read on a
// terminal or a pipe, or the open of a named pipe no one writes to,
// cannot be called off, and the command ends at once.
func untilRead(ctx context.Context, read func() ([]byte, error)) ([]byte, error) {
	type result struct {
		b   []byte
		err error
	}
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

// readTyped reads a value typed at a terminal in raw mode: Enter ends it
// (with end set, once end says it is whole; \r, \n and \r\n are each one
// newline), Ctrl-C and Ctrl-D cancel it, Backspace (a character) and
// Ctrl-U edit it.
func readTyped(r io.Reader, end inputEnd) ([]byte, error) {
	var line []byte
	var c [1]byte
	prev := byte(0)
	for {
		n, err := r.Read(c[:])
		if n == 0 {
			clear(line)
			if err == nil || errors.Is(err, io.EOF) {
				return nil, errNoValue
			}
			return nil, err
		}
		ch := c[0]
		if ch == '\n' && prev == '\r' && end != nil {
			prev = 0
			continue // one newline
		}
		prev = ch
		switch ch {
		case '\r', '\n':
			if end == nil {
				return line, nil
			}
			if len(line) >= maxSecretInput {
				clear(line)
				return nil, fmt.Errorf("the secret typed is larger than %d bytes", maxSecretInput)
			}
			line = append(line, '\n')
			if end(line) {
				return line, nil
			}
		case ctrlC:
			clear(line)
			return nil, errInterrupted
		case ctrlD:
			clear(line)
			return nil, errNoValue
		case backspace, del:
			// One character, however many bytes UTF-8 gives it.
			_, size := utf8.DecodeLastRune(line)
			line = line[:len(line)-size]
		case ctrlU:
			clear(line)
			line = line[:0]
		default:
			if len(line) >= maxSecretInput {
				clear(line)
				return nil, fmt.Errorf("the secret typed is larger than %d bytes", maxSecretInput)
			}
			line = append(line, ch)
		}
	}
}
