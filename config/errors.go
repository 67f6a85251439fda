package config

import (
	"fmt"
	"strconv"
)

// Error is one problem in a config file. Parse returns all of them joined
// with errors.Join; use errors.As to get at the parts.
type Error struct {
	// File is the config's name as given to Parse.
	File string
	// Line is the 1-based line of the problem; 0 when it has none.
	Line int
	// Path is the field, e.g. "routes[2].upstream"; "" for the whole file.
	Path string
	// Message says what is wrong, with a hint in parentheses where one
	// helps. It never quotes a value that could be a secret.
	Message string
}

// Error formats the problem as "file:line: path: message".
func (e *Error) Error() string {
	s := e.File
	if e.Line > 0 {
		s += ":" + strconv.Itoa(e.Line)
	}
	if e.Path != "" {
		s += ": " + e.Path
	}
	return s + ": " + e.Message
}

func newError(file string, line int, path, format string, args ...any) *Error {
	return &Error{File: file, Line: line, Path: path, Message: fmt.Sprintf(format, args...)}
}
