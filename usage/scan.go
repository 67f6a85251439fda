package usage

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"
)

// The scanner below is an incremental, push-style JSON tokenizer: it is fed
// bytes in chunks of any size and keeps no more than a fixed amount of state,
// whatever the length of the document. encoding/json has no incremental form
// that works without a goroutine and a pipe per response, which is why this
// exists. It names the values it passes by their path of object keys below
// the document's root, asks its sink whether it wants each value whose path
// is short enough to matter (usage fields, model names, request options),
// and reads through the others, bracket and quote, without looking. It is
// lenient: it does not check number or literal spelling, so callers that
// need strict JSON check the whole body with json.Valid first. On input it
// cannot follow it stops until reset, and never fails otherwise.

const (
	// keyDepth is how many object levels below a document's root the scanner
	// names. The deepest path read is five keys long
	// (response.usage.input_tokens_details.cached_tokens is four).
	keyDepth = 5
	// maxDepth bounds nesting; a deeper document is abandoned.
	maxDepth = 1024
	// keyMax is the longest key kept; longer keys never match a name.
	keyMax = 32
	// valMax is the longest scalar text kept; longer values are truncated
	// and marked so.
	valMax = 256
)

// kind is the type of a JSON value, named by its first byte.
type kind byte

const (
	kObject kind = '{'
	kArray  kind = '['
	kString kind = '"'
	kNumber kind = '0'
	kTrue   kind = 't'
	kFalse  kind = 'f'
	kNull   kind = 'n'
)

// sink receives what a scanner finds.
type sink interface {
	// want is asked when a value at a named path begins (s.pathLen and
	// s.key give its path) whether the sink wants it, or anything inside
	// it: a value not wanted is read through unreported.
	want(s *scanner) bool
	// value is called when a value at a named path ends (a container at
	// its closing bracket). s.pathLen and s.key give its path; s.text its
	// text when it is a scalar. start and end are byte offsets of the
	// value in the input, end exclusive.
	value(s *scanner, k kind, start, end int64)
	// docEnd is called when a document ends: a top-level value, or an
	// element of a top-level array (so a JSON array of chunks, as Gemini
	// streams without SSE, reads as one document per chunk).
	docEnd()
}

type state uint8

const (
	stValue    state = iota // expecting a value
	stArrFirst              // after '[': a value or ']'
	stObjFirst              // after '{': a key or '}'
	stKey                   // after ',' in an object: a key
	stColon                 // after a key: ':'
	stNext                  // after a value: ',' or a closing bracket
	stString                // inside a string, key or value
	stLiteral               // inside a number, true, false or null
	stSkip                  // inside a container read through unnamed
	stError                 // abandoned until reset
)

// frame is what the scanner keeps about an open container near the root.
type frame struct {
	key     [keyMax]byte // the current key, unescaped, when an object
	keyLen  uint8
	keyBad  bool // the key was too long or could not be kept
	named   bool // the container itself is at a named path
	start   int64
	members int32 // keys seen, when an object
}

// scanner is an incremental JSON tokenizer; see the comment at the top of
// this file. The zero value, with sink set, is ready to use.
type scanner struct {
	sink    sink
	st      state
	depth   int                 // open containers
	arrays  [maxDepth / 8]byte  // bit L: the container at level L is an array
	fr      [keyDepth + 2]frame // levels 1..keyDepth+1 (index 0 unused)
	docBase int                 // 1 when the root is an array of documents
	pos     int64               // offset of the next byte
	inKey   bool                // the current string is a key
	capture bool                // the current string or literal is kept
	named   bool                // the current scalar is at a named path
	cur     kind                // the current scalar's kind
	start   int64               // the current scalar's offset
	esc     uint8               // 0; 1 after '\'; 2..5 reading \u hex digits
	hex     rune                // the \u code point so far
	hi      rune                // a pending high surrogate
	val     [valMax]byte        // the current scalar's text
	valLen  int
	valBad  bool  // val was truncated or could not be kept
	closed  int32 // the keys of the object that closed last
	// namedArrays makes an array at a named path that the sink wants
	// one more level of the path, whose elements are named "[]"
	// (output.[].type), instead of reading it through unnamed.
	namedArrays bool
	// skipAnyDepth lets a skipped container nest past maxDepth: an
	// answer's usage after it still counts. A request (Inspect) is
	// refused instead, as its provider might read it otherwise.
	skipAnyDepth bool
	// skipBOM makes a UTF-8 byte order mark (EF BB BF) at the very start
	// of the input read as nothing: RFC 8259 forbids it, but a provider
	// or a proxy may put one before an answer, whose usage still counts.
	// A request (Inspect) keeps to the RFC and is refused instead.
	skipBOM bool
	// bom is how many bytes of a leading byte order mark were read.
	bom uint8
	// skip is the container being read through (stSkip): an array below
	// a document's root, inside which nothing is at a named path, or an
	// object the sink does not want. Its bytes are only counted through,
	// brackets and strings, to its end (a chat request's messages, an
	// answer's choices: most of the bytes).
	skip struct {
		depth int   // brackets open within it, its own included
		str   bool  // inside a string
		esc   bool  // after a backslash in that string
		start int64 // its offset
		kind  kind  // kArray or kObject
		named bool  // the container itself is at a named path
	}
}

// reset readies s for a new document, keeping the sink and offset.
func (s *scanner) reset() {
	s.st, s.depth, s.docBase = stValue, 0, 0
	s.inKey, s.capture, s.esc, s.hi = false, false, 0, 0
}

// isArray reports whether the container at level l is an array.
func (s *scanner) isArray(l int) bool { return s.arrays[l>>3]&(1<<(l&7)) != 0 }

// pathLen is the number of keys in the path of a value whose parent
// container is at the current depth.
func (s *scanner) pathLen() int { return s.depth - s.docBase }

// key returns the i-th key of the current path (0 is nearest the root):
// "[]" for an array's element.
func (s *scanner) key(i int) []byte {
	l := s.docBase + 1 + i
	if s.isArray(l) {
		return arrayKey
	}
	f := &s.fr[l]
	return f.key[:f.keyLen]
}

// arrayKey is the path key of an array's elements.
var arrayKey = []byte("[]")

// text returns the current scalar's text (a string's unescaped content)
// and whether it is complete.
func (s *scanner) text() ([]byte, bool) { return s.val[:s.valLen], !s.valBad }

// isNamed reports whether a value inside the container at level d sits at
// a named path: one to keyDepth keys below the document root, through
// objects (and, with namedArrays, arrays), with every key kept whole.
func (s *scanner) isNamed(d int) bool {
	rel := d - s.docBase
	if rel < 1 || rel > keyDepth {
		return false
	}
	for l := s.docBase + 1; l <= d; l++ {
		if s.isArray(l) && !s.namedArrays || !s.isArray(l) && s.fr[l].keyBad {
			return false
		}
	}
	return true
}

// byteOrderMark is UTF-8's byte order mark, U+FEFF.
const byteOrderMark = "\xef\xbb\xbf"

// leadingBOM reads through what p holds of a byte order mark at the very
// start of the input (skipBOM), and returns the rest of p. A mark cut
// short by anything else abandons the input, as its first byte would.
func (s *scanner) leadingBOM(p []byte) []byte {
	for len(p) > 0 && int(s.bom) < len(byteOrderMark) && s.pos == int64(s.bom) {
		if p[0] != byteOrderMark[s.bom] {
			if s.bom > 0 {
				s.st = stError
			}
			break
		}
		s.bom++
		s.pos++
		p = p[1:]
	}
	return p
}

// write feeds p to the scanner. It keeps no reference to p.
func (s *scanner) write(p []byte) {
	if s.skipBOM && s.pos < int64(len(byteOrderMark)) {
		p = s.leadingBOM(p)
	}
	for i := 0; i < len(p); {
		c := p[i]
		switch s.st {
		case stError:
			s.pos += int64(len(p) - i)
			return
		case stString:
			if s.esc != 0 {
				s.escape(c)
				break
			}
			// Fast path: a run of plain bytes.
			j := i
			for j < len(p) && p[j] != '"' && p[j] != '\\' {
				j++
			}
			if j > i {
				if s.capture {
					s.putRun(p[i:j])
				}
				s.pos += int64(j - i)
				i = j
				continue
			}
			if c == '\\' {
				s.esc = 1
				break
			}
			s.endString()
		case stSkip:
			j := s.skipped(p[i:])
			s.pos += int64(j)
			i += j
			continue
		case stLiteral:
			if isSpace(c) || c == ',' || c == ']' || c == '}' {
				// The byte ends the literal and is read again as what follows.
				s.endValue(s.cur, s.start, s.pos, s.named)
				continue
			}
			if s.capture {
				s.putByte(c)
			}
		default:
			if isSpace(c) {
				j := i + 1
				for j < len(p) && isSpace(p[j]) {
					j++
				}
				s.pos += int64(j - i)
				i = j
				continue
			}
			s.structural(c)
		}
		i++
		s.pos++
	}
}

// finish ends the current document at the end of its input: a pending
// literal ends, and the sink hears docEnd if the document was not complete.
func (s *scanner) finish() {
	if s.st == stLiteral {
		s.endValue(s.cur, s.start, s.pos, s.named)
	}
	if s.depth > 0 || s.st == stError || s.st == stString {
		s.sink.docEnd()
	}
	s.reset()
}

// structural handles a non-space byte outside strings and literals.
func (s *scanner) structural(c byte) {
	switch s.st {
	case stValue, stArrFirst:
		if s.st == stArrFirst && c == ']' {
			s.close(c)
			return
		}
		s.beginValue(c)
	case stObjFirst, stKey:
		switch {
		case c == '"':
			s.beginKey()
		case c == '}' && s.st == stObjFirst:
			s.close(c)
		default:
			s.st = stError
		}
	case stColon:
		if c != ':' {
			s.st = stError
			return
		}
		s.st = stValue
	case stNext:
		switch c {
		case ',':
			if s.isArray(s.depth) {
				s.st = stValue
			} else {
				s.st = stKey
			}
		case '}', ']':
			s.close(c)
		default:
			s.st = stError
		}
	}
}

// beginValue starts the value whose first byte is c.
func (s *scanner) beginValue(c byte) {
	named := s.isNamed(s.depth) && s.sink.want(s)
	switch {
	case s.depth+1 < maxDepth && (c == '[' && s.depth >= 1 && !(named && s.namedArrays) || c == '{' && !named && s.depth > s.docBase):
		s.skip.depth, s.skip.str, s.skip.esc = 1, false, false
		s.skip.start, s.skip.kind, s.skip.named = s.pos, kind(c), named
		s.st = stSkip
	case c == '{' || c == '[':
		if s.depth+1 >= maxDepth {
			s.st = stError
			return
		}
		s.depth++
		l := s.depth
		if c == '[' {
			s.arrays[l>>3] |= 1 << (l & 7)
			s.st = stArrFirst
		} else {
			s.arrays[l>>3] &^= 1 << (l & 7)
			s.st = stObjFirst
		}
		if l == 1 {
			s.docBase = 0
			if c == '[' {
				s.docBase = 1
			}
		}
		if l < len(s.fr) {
			s.fr[l] = frame{named: named, start: s.pos}
		}
	case c == '"':
		s.scalar(kString, named)
		s.st = stString
	case c == '-' || c >= '0' && c <= '9' || c == 't' || c == 'f' || c == 'n':
		k := kNumber
		if c >= 'a' {
			k = kind(c)
		}
		s.scalar(k, named)
		if s.capture {
			s.putByte(c)
		}
		s.st = stLiteral
	default:
		s.st = stError
	}
}

// scalar starts a string or literal value.
func (s *scanner) scalar(k kind, named bool) {
	s.cur, s.start, s.named, s.capture = k, s.pos, named, named
	s.valLen, s.valBad, s.inKey = 0, false, false
}

// beginKey starts an object key at the current level.
func (s *scanner) beginKey() {
	l := s.depth
	s.inKey, s.capture = true, l < len(s.fr)
	if s.capture {
		f := &s.fr[l]
		f.keyLen, f.keyBad = 0, false
		f.members++
	}
	s.st = stString
}

// endString handles the closing quote of a key or string value.
func (s *scanner) endString() {
	if s.hi != 0 {
		s.flushSurrogate()
	}
	if s.inKey {
		s.inKey, s.capture = false, false
		s.st = stColon
		return
	}
	s.endValue(kString, s.start, s.pos+1, s.named)
}

// close handles a closing bracket c.
func (s *scanner) close(c byte) {
	l := s.depth
	if s.isArray(l) != (c == ']') {
		s.st = stError
		return
	}
	var f frame
	if l < len(s.fr) {
		f = s.fr[l]
	}
	s.depth--
	s.closed = f.members
	k := kObject
	if c == ']' {
		k = kArray
	}
	s.endValue(k, f.start, s.pos+1, f.named)
}

// endValue reports a value that ended inside the container at the current
// depth, and moves on.
func (s *scanner) endValue(k kind, start, end int64, named bool) {
	s.capture = false
	if named {
		s.sink.value(s, k, start, end)
	}
	switch {
	case s.depth == 0:
		s.sink.docEnd()
		s.reset()
	case s.depth == 1 && s.docBase == 1:
		s.sink.docEnd()
		s.st = stNext
	default:
		s.st = stNext
	}
}

// skipped reads p inside a container read through and returns how many
// bytes it took: all of p, or up to and including the container's closing
// bracket, when its end is reported.
func (s *scanner) skipped(p []byte) int {
	k := &s.skip
	for j := 0; j < len(p); j++ {
		if k.str {
			if k.esc {
				k.esc = false
				continue
			}
			// The string's next quote or backslash, by IndexByte.
			q := bytes.IndexByte(p[j:], '"')
			if q < 0 {
				q = len(p) - j
			}
			if b := bytes.IndexByte(p[j:j+q], '\\'); b >= 0 {
				j += b
				k.esc = true
				continue
			}
			j += q
			if j < len(p) {
				k.str = false
			}
			continue
		}
		// The next quote or bracket: the bytes between, white space and
		// scalars, say nothing of where the container ends.
		for j < len(p) && !skipStops[p[j]] {
			j++
		}
		if j == len(p) {
			break
		}
		switch p[j] {
		case '"':
			k.str = true
		case '[', '{':
			k.depth++
			if s.depth+k.depth >= maxDepth && !s.skipAnyDepth {
				s.st = stError
				return len(p)
			}
		case ']', '}':
			k.depth--
			if k.depth == 0 {
				s.pos += int64(j) // the closing bracket's offset
				s.endValue(k.kind, k.start, s.pos+1, k.named)
				s.pos -= int64(j)
				return j + 1
			}
		}
	}
	return len(p)
}

// escape handles byte c after a backslash in a string.
func (s *scanner) escape(c byte) {
	if s.esc == 1 {
		s.esc = 0
		switch c {
		case 'u':
			s.esc, s.hex = 2, 0
		case 'b':
			s.putByte('\b')
		case 'f':
			s.putByte('\f')
		case 'n':
			s.putByte('\n')
		case 'r':
			s.putByte('\r')
		case 't':
			s.putByte('\t')
		default: // '"', '\\', '/', and leniently anything else
			s.putByte(c)
		}
		return
	}
	var v rune
	switch {
	case c >= '0' && c <= '9':
		v = rune(c - '0')
	case c >= 'a' && c <= 'f':
		v = rune(c-'a') + 10
	case c >= 'A' && c <= 'F':
		v = rune(c-'A') + 10
	default:
		// Not JSON; keep the string from matching anything.
		s.esc = 0
		s.spoil()
		return
	}
	s.hex = s.hex<<4 | v
	if s.esc++; s.esc < 6 {
		return
	}
	s.esc = 0
	if !s.capture {
		return
	}
	r := s.hex
	if s.hi != 0 {
		if r >= 0xDC00 && r <= 0xDFFF {
			r = utf16.DecodeRune(s.hi, r)
			s.hi = 0
			s.putRune(r)
			return
		}
		s.flushSurrogate()
	}
	if r >= 0xD800 && r <= 0xDBFF {
		s.hi = r
		return
	}
	s.putRune(r)
}

// flushSurrogate writes a high surrogate that no low one followed.
func (s *scanner) flushSurrogate() {
	s.hi = 0
	s.putRune(utf8.RuneError)
}

// putRune appends r, UTF-8 encoded, to the text being kept.
func (s *scanner) putRune(r rune) {
	var b [utf8.UTFMax]byte
	n := utf8.EncodeRune(b[:], r)
	s.putRun(b[:n])
}

// putByte appends c to the text being kept.
func (s *scanner) putByte(c byte) {
	s.putRun([]byte{c})
}

// putRun appends b to the key or value being kept, marking it spoilt when
// it does not fit.
func (s *scanner) putRun(b []byte) {
	if !s.capture {
		return
	}
	if s.hi != 0 {
		s.flushSurrogate()
	}
	if s.inKey {
		f := &s.fr[s.depth]
		if int(f.keyLen)+len(b) > keyMax {
			f.keyBad = true
			return
		}
		f.keyLen += uint8(copy(f.key[f.keyLen:], b))
		return
	}
	if s.valLen+len(b) > valMax {
		s.valBad = true
		return
	}
	s.valLen += copy(s.val[s.valLen:], b)
}

// spoil marks the key or value being kept as unusable.
func (s *scanner) spoil() {
	if !s.capture {
		return
	}
	if s.inKey {
		s.fr[s.depth].keyBad = true
	} else {
		s.valBad = true
	}
}

// skipStops are the bytes a container read through is followed by.
var skipStops = [256]bool{'"': true, '[': true, ']': true, '{': true, '}': true}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
