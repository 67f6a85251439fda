package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

// TestReadTyped: the secret prompt reads a line in raw mode, where the
// terminal edits nothing and sends no signal: Enter ends it, Ctrl-C and
// Ctrl-D cancel it (term.ReadPassword hung on both).
func TestReadTyped(t *testing.T) {
	tests := []struct {
		name, typed string
		want        string
		err         error
	}{
		{"enter", "sk-abc\r", "sk-abc", nil},
		{"newline", "sk-abc\n", "sk-abc", nil},
		{"backspace", "sk-abx\x7fc\r", "sk-abc", nil},
		{"ctrl-h", "sk-abx\bc\r", "sk-abc", nil},
		{"backspace past the start", "\x7f\x7fsk\r", "sk", nil},
		// One character erased, not one byte of it: a byte left of
		// "é" would be refused, and erasing "é" with one press and
		// "b" with the next must not leave the "b".
		{"backspace over é", "sk-abé\x7f\x7fcd\r", "sk-acd", nil},
		{"backspace over €", "sk-€\x7fx\r", "sk-x", nil},
		{"ctrl-u", "wrong\x15sk-abc\r", "sk-abc", nil},
		{"ctrl-c", "sk-ab\x03c\r", "", errInterrupted},
		{"ctrl-d", "sk-ab\x04c\r", "", errNoValue},
		{"ctrl-d first", "\x04", "", errNoValue},
		{"end of input", "sk-ab", "", errNoValue},
		{"enter alone", "\r", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readTyped(strings.NewReader(tt.typed), nil)
			if !errors.Is(err, tt.err) || string(got) != tt.want {
				t.Errorf("got %q, %v; want %q, %v", got, err, tt.want, tt.err)
			}
		})
	}
}

// TestReadTypedSpansLines: a PEM key or a JSON document pasted at the
// prompt is read until it is whole, whatever newlines the terminal sends,
// not cut at its first line.
func TestReadTypedSpansLines(t *testing.T) {
	const key = "-----BEGIN PRIVATE KEY-----\nTUlJQ2Vn\nc2VjcmV0\n-----END PRIVATE KEY-----\n"
	tests := []struct {
		name, typed string
		end         inputEnd
		want        string
		err         error
	}{
		{"pem, cr", strings.ReplaceAll(key, "\n", "\r") + "after\r", pemEnd, key, nil},
		{"pem, crlf", strings.ReplaceAll(key, "\n", "\r\n"), pemEnd, key, nil},
		{"pem, lf", key, pemEnd, key, nil},
		{"pem cut short", "-----BEGIN PRIVATE KEY-----\rTUlJ", pemEnd, "", errNoValue},
		{"pem, ctrl-d", "-----BEGIN PRIVATE KEY-----\r\x04", pemEnd, "", errNoValue},
		{"json", "{\r  \"sid\": \"a\",\r  \"token\": \"b\"\r}\rafter\r", jsonEnd, "{\n  \"sid\": \"a\",\n  \"token\": \"b\"\n}\n", nil},
		{"json on one line", `{"sid": "a"}` + "\r", jsonEnd, `{"sid": "a"}` + "\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readTyped(strings.NewReader(tt.typed), tt.end)
			if !errors.Is(err, tt.err) || string(got) != tt.want {
				t.Errorf("got %q, %v; want %q, %v", got, err, tt.want, tt.err)
			}
		})
	}
}

// TestSecretInputInterrupted: SIGINT or SIGTERM (ctx) ends a read that
// is still waiting, and a value read in full once ctx has ended is not
// taken: a pipe's writer killed by the same Ctrl-C ends it early.
func TestSecretInputInterrupted(t *testing.T) {
	r, w := io.Pipe()
	defer w.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := readSecretInput(ctx, &env{stdin: r, stderr: io.Discard}, nil)
		done <- err
	}()
	w.Write([]byte("sk-half"))
	cancel()
	if err := <-done; !errors.Is(err, errInterrupted) {
		t.Errorf("got %v, want %v", err, errInterrupted)
	}
	if _, err := readSecretInput(ctx, &env{stdin: strings.NewReader("sk-cut"), stderr: io.Discard}, nil); !errors.Is(err, errInterrupted) {
		t.Errorf("after ctx ended: got %v, want %v", err, errInterrupted)
	}
}

// TestSecretSetInterrupted: an interrupted secret set exits 130 and
// stores nothing.
func TestSecretSetInterrupted(t *testing.T) {
	c := newCLI(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errOut strings.Builder
	code := run(ctx, []string{"secret", "set", "openai"}, &env{
		stdin: strings.NewReader(key), stdout: &out, stderr: &errOut, getenv: func(string) string { return "" },
	})
	if code != exitInterrupted || errOut.String() != "till: interrupted: nothing stored\n" {
		t.Errorf("exit %d, stderr %q", code, errOut.String())
	}
	if out, _, _ := c.run("", "secret", "list"); strings.Contains(out, "openai") {
		t.Errorf("the secret was stored: %s", out)
	}
}
