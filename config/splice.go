package config

import (
	"bytes"
	"strings"

	"gopkg.in/yaml.v3"
)

// The config's edits (client add --write, rotate, rm) change the lines
// they must and leave every other byte of the file as its author wrote
// it: comment columns, blank lines, quotes. They find those lines through
// the positions yaml.v3 gives each node. Where the layout is not the
// plain block style they expect, they fall back to re-encoding the
// document, which keeps its comments but not their columns.

// newlinesOnly reports whether data breaks its lines only with "\n" (or
// "\r\n"), so that the lines yaml.v3 counts are the lines lineStart
// counts. YAML also breaks lines at a lone "\r", NEL, U+2028 and U+2029:
// in a file that holds one, the splices would edit the wrong lines, so
// the edits re-encode it instead.
func newlinesOnly(data []byte) bool {
	for i, b := range data {
		if b == '\r' && (i+1 == len(data) || data[i+1] != '\n') {
			return false
		}
	}
	return !bytes.Contains(data, []byte("\u0085")) && !bytes.Contains(data, []byte("\u2028")) && !bytes.Contains(data, []byte("\u2029"))
}

// lineStart returns the offset in data of the start of line n (1-based);
// len(data) past the last line.
func lineStart(data []byte, n int) int {
	off := 0
	for ; n > 1; n-- {
		i := bytes.IndexByte(data[off:], '\n')
		if i < 0 {
			return len(data)
		}
		off += i + 1
	}
	return off
}

// endLine returns the last line on which n or a node in it starts.
func endLine(n *yaml.Node) int {
	last := n.Line
	for _, c := range n.Content {
		last = max(last, endLine(c))
	}
	return last
}

// continues reports whether the node of a block sequence whose entries
// begin with prefix ("  - "), whose last node starts on line to, goes on
// past that line: the first line after it that is not blank is indented
// deeper than the entries' dash (the rest of a block scalar, of a quoted
// or plain scalar broken over lines, or a comment too deep to tell).
// Lines spliced in or out after line to would cut that node in two.
func continues(data []byte, to int, prefix string) bool {
	dash := len(prefix) - len(strings.TrimLeft(prefix, " "))
	for rest := data[lineStart(data, to+1):]; len(rest) > 0; {
		line, next, _ := bytes.Cut(rest, []byte("\n"))
		if text := bytes.TrimLeft(line, " "); len(bytes.TrimSpace(text)) > 0 {
			return len(line)-len(text) > dash
		}
		rest = next
	}
	return false
}

// continuesItem reports whether item, an entry of a block sequence, goes
// on past the line its last node starts on (see continues).
func continuesItem(data []byte, item *yaml.Node) bool {
	prefix, _ := itemPrefix(data, item)
	return continues(data, endLine(item), prefix)
}

// lineBreak is the line break data uses: "\r\n" when it has one, else "\n".
func lineBreak(data []byte) string {
	if bytes.Contains(data, []byte("\r\n")) {
		return "\r\n"
	}
	return "\n"
}

// splice returns data with the bytes [from, to) replaced by s.
func splice(data []byte, from, to int, s string) []byte {
	out := make([]byte, 0, len(data)-(to-from)+len(s))
	out = append(out, data[:from]...)
	out = append(out, s...)
	return append(out, data[to:]...)
}

// insertLines returns data with lines, each ending in a line break,
// inserted at offset at, the start of a line or the end of data.
func insertLines(data []byte, at int, lines string) []byte {
	if at == len(data) && at > 0 && data[at-1] != '\n' {
		lines = lineBreak(data) + lines
	}
	return splice(data, at, at, lines)
}

// itemPrefix returns what comes before item, an entry of a block
// sequence, on its line: its indent and dash ("  - "); false when the
// line holds anything else there.
func itemPrefix(data []byte, item *yaml.Node) (string, bool) {
	start := lineStart(data, item.Line)
	end := start + item.Column - 1
	if item.Column < 1 || end > len(data) {
		return "", false
	}
	prefix := string(data[start:end])
	dash := strings.TrimLeft(prefix, " ")
	if !strings.HasPrefix(dash, "-") || len(dash) < 2 || strings.Trim(dash[1:], " ") != "" {
		return "", false
	}
	return prefix, true
}

// blockItems reports whether seq is a block sequence whose entries each
// start a line of their own ("  - ..."), as the splices need.
func blockItems(data []byte, seq *yaml.Node) bool {
	if seq.Kind != yaml.SequenceNode || seq.Style&yaml.FlowStyle != 0 || len(seq.Content) == 0 {
		return false
	}
	for _, item := range seq.Content {
		if _, ok := itemPrefix(data, item); !ok {
			return false
		}
	}
	return true
}

// itemLines renders entry as an entry of a block sequence whose entries
// begin with prefix: the first line after prefix, the others indented
// under it. A flow entry ({name: ...}) stays on one line.
func itemLines(prefix string, entry *yaml.Node) (string, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(entry); err != nil {
		return "", err
	}
	lines := strings.SplitAfter(strings.TrimSuffix(buf.String(), "\n"), "\n")
	indent := strings.Repeat(" ", len(prefix))
	var b strings.Builder
	for i, l := range lines {
		if i == 0 {
			b.WriteString(prefix)
		} else {
			b.WriteString(indent)
		}
		b.WriteString(l)
	}
	b.WriteString("\n")
	return b.String(), nil
}

// replaceScalar returns data with the text of the scalar v (plain or
// quoted, without escapes) replaced by value, written in v's style;
// false when the text at v's position is not what v holds.
func replaceScalar(data []byte, v *yaml.Node, value string) ([]byte, bool) {
	quote := ""
	switch v.Style {
	case 0:
	case yaml.DoubleQuotedStyle:
		quote = `"`
	case yaml.SingleQuotedStyle:
		quote = "'"
	default:
		return nil, false
	}
	from := lineStart(data, v.Line) + v.Column - 1
	old := quote + v.Value + quote
	if v.Column < 1 || !bytes.HasPrefix(data[min(from, len(data)):], []byte(old)) {
		return nil, false
	}
	return splice(data, from, from+len(old), quote+value+quote), true
}
