package usage

import (
	"bytes"
	"hash/maphash"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Usage is what a provider reported about one response.
type Usage struct {
	// Model is the model the provider says answered ("" when it did not
	// say). Audit records name the model the app asked for instead.
	Model string
	// InputTokens counts every input token, cached ones included.
	InputTokens int64
	// CachedInputTokens is the part of InputTokens read from a cache.
	CachedInputTokens int64
	// OutputTokens counts output tokens, reasoning or thinking included.
	OutputTokens int64
	// Known reports whether the response carried usage; when false the
	// token counts are 0.
	Known bool
	// WebSearches counts the web searches the provider reports it ran
	// for the answer, each charged a fee besides tokens: Anthropic's
	// server_tool_use.web_search_requests, OpenAI's web_search_call
	// output items, Gemini's distinct non-empty webSearchQueries.
	WebSearches int64
	// Partial reports that the response told its usage in part only: a
	// stream that ended before its last usage event, or a Bedrock event
	// stream that ended in an exception or cut short after its usage.
	Partial bool
	// Sub is the part of this usage that sub-inferences of another model
	// than the answer's ran for it (Anthropic's advisor and fallback
	// iterations): counted in InputTokens and OutputTokens too, and
	// priced at its own model.
	Sub SubUsage
}

// SubUsage is usage a provider reports for another model than its
// answer's.
type SubUsage struct {
	// Model is the model that ran it, "" when several did.
	Model string
	// InputTokens counts its input tokens, cache reads and writes
	// included.
	InputTokens int64
	// OutputTokens counts its output tokens.
	OutputTokens int64
}

// field is a usage field a provider reports.
type field uint8

const (
	fNone         field = iota
	fInput              // input tokens, cached included where the provider includes them
	fCached             // cached input tokens, already counted in fInput
	fCacheRead          // Anthropic cache reads, not in fInput
	fCacheWrite         // Anthropic cache writes, not in fInput
	fToolInput          // Gemini tool-use prompt tokens, not in promptTokenCount
	fOutput             // output tokens
	fThoughts           // Gemini thinking tokens, not in candidatesTokenCount
	fBilledInput        // Cohere billed_units, read when tokens is absent
	fBilledOutput       //
	fWebSearches        // server-side web searches, charged per search
	fStartOutput        // Anthropic's output tokens at a stream's start (message_start)
	fIterInput          // Anthropic's iterations (below), their input tokens summed
	fIterOutput         //   and output tokens
	fSubInput           // the part of those that ran on another model
	fSubOutput          //
	nFields
	fModel       // the model's name; not a count
	fOutputType  // an OpenAI output item's type: "web_search_call" is a search
	fSearchQuery // a Gemini search query: each distinct non-empty one is a search
	// An Anthropic usage.iterations element: one sampling the answer
	// was billed for (its own messages, a compaction, an advisor's or a
	// fallback's), with its type, model and input (cache reads and
	// writes included) and output tokens.
	fIteration
	fIterType
	fIterModel
	fIterTokensIn
	fIterTokensOut
)

// counts holds the usage fields of one document or of a whole response.
type counts struct {
	n    [nFields]int64
	seen uint16 // bit f: field f was reported
}

const (
	modeNone = iota
	modeJSON
	modeSSE
	modeEventStream
)

// Meter reads the usage a provider reports in a response body as the body
// streams past, without holding any of it back: JSON bodies and each SSE
// event's data are read by an incremental scanner that keeps a few hundred
// bytes of state, however long the body; an AWS event-stream message
// (binary, CRC-checked) split between writes is kept until it is whole,
// up to 1 MiB. Create one per response with NewMeter, Write each chunk of
// the body to it, then call Usage. A Meter is not safe for concurrent
// use. The nil *Meter reads nothing.
type Meter struct {
	format Format
	mode   uint8
	done   bool
	scan   scanner
	sse    sseReader
	es     eventStream
	tree   *pathNode // the format's fields; nil reads nothing
	// nodes are the tree's nodes along the current path: nodes[i] is
	// the node of the path's i+1 first keys.
	nodes [keyDepth]*pathNode
	doc   counts // the document being read
	total counts // what the documents so far add up to
	model string
	// event holds an SSE event's data until the event ends, so that an
	// event that cannot hold usage (a chunk of text) is skipped unread;
	// long is set when it outgrew maxEvent and streams to the scanner.
	event []byte
	long  bool
	// events counts the SSE events with data read so far.
	events int64
	// queries holds a hash of each distinct search query read so far,
	// whichever chunk reported it (a stream may repeat them);
	// moreQueries counts those past maxQueries, which are not told apart.
	queries     []uint64
	moreQueries int64
	// iter is the Anthropic iteration being read; subModel the model of
	// the iterations that ran on another one, subModels set once two
	// did.
	iter      iteration
	subModel  string
	subModels bool
}

// iteration is what an Anthropic usage.iterations element holds.
type iteration struct {
	typ, model string
	in, out    int64
}

// maxQueries is the most distinct search queries told apart in one answer.
const maxQueries = 64

// querySeed hashes search queries; the hashes stay in the process.
var querySeed = maphash.MakeSeed()

// maxEvent is the most of one SSE event's data held to look it over; a
// longer event is read in full as it streams.
const maxEvent = 64 << 10

// NewMeter returns a Meter for a response in format f with the given
// Content-Type. It reads application/json (and +json, NDJSON),
// text/event-stream and application/vnd.amazon.eventstream (Bedrock's
// streams, on a route of any format) bodies, written to it as they are
// after any Content-Encoding is undone; for any other type, or format
// None, it reads nothing and Usage reports Known false.
func NewMeter(f Format, contentType string) *Meter {
	m := &Meter{}
	m.Reset(f, contentType)
	return m
}

// Reset makes m a new Meter for a response in format f with the given
// Content-Type, as NewMeter would, keeping its buffers: a server can keep
// Meters in a sync.Pool.
func (m *Meter) Reset(f Format, contentType string) {
	event := m.event[:0]
	if cap(event) > maxEvent {
		event = nil
	}
	es := eventStream{msg: m.es.msg[:0], payload: m.es.payload[:0]}
	if cap(es.msg) > maxEvent {
		es.msg = nil
	}
	*m = Meter{format: f, event: event, tree: trees[f], queries: m.queries[:0], es: es}
	m.scan.sink = m
	m.scan.skipAnyDepth = true // the model's own JSON (a tool's input) may nest deep
	m.scan.namedArrays = true  // searches are array elements
	m.scan.skipBOM = true      // a mark before the answer hides none of it
	if m.tree == nil {
		return
	}
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	switch {
	case mt == "text/event-stream":
		m.mode = modeSSE
	case mt == eventStreamType:
		m.mode, m.tree = modeEventStream, eventStreamTree
	case mt == "application/json", strings.HasSuffix(mt, "+json"),
		mt == "application/x-ndjson", mt == "application/jsonl":
		m.mode = modeJSON
	}
}

// Write reads the next chunk of the response body. It never fails, never
// blocks and keeps no reference to p; it always returns len(p), nil, so a
// Meter can sit in an io.MultiWriter or io.TeeReader.
func (m *Meter) Write(p []byte) (n int, err error) {
	n = len(p) // set first: a recovered panic returns it too
	if m == nil || m.done || m.mode == modeNone {
		return n, nil
	}
	defer m.guard()
	switch m.mode {
	case modeSSE:
		m.sse.write(m, p)
	case modeEventStream:
		m.es.write(m, p)
	default:
		m.scan.write(p)
	}
	return n, nil
}

// catchPanics is false in this package's tests, so that fuzzing sees any
// panic a guard would hide.
var catchPanics = true

// guard turns a panic while metering into an unread response: metering
// must never break the stream it reads.
func (m *Meter) guard() {
	if !catchPanics {
		return
	}
	if recover() != nil {
		m.mode = modeNone
		m.total = counts{}
	}
}

// Usage reports the usage read, once the whole body has been written.
// After it, further writes are ignored.
func (m *Meter) Usage() Usage {
	if m == nil {
		return Usage{}
	}
	if !m.done {
		m.done = true
		if m.mode != modeNone {
			func() {
				defer m.guard()
				if m.mode == modeSSE {
					if m.sse.heldCR && m.sse.st == sseData {
						m.data([]byte{'\r'}) // the stream ended after it: data
					}
					m.eventEnd() // a last event without its blank line
				} else {
					m.scan.finish()
				}
			}()
		}
	}
	t := &m.total
	u := Usage{Model: m.model}
	if m.mode == modeNone {
		return u
	}
	u.WebSearches = Add(t.n[fWebSearches], Add(int64(len(m.queries)), m.moreQueries))
	if t.seen == 0 {
		return u
	}
	in, out := t.n[fInput], t.n[fOutput]
	// An Anthropic stream tells its output at its end (message_delta):
	// one that ended before (an error event) told its start's token only.
	u.Partial = t.seen&(1<<fStartOutput) != 0 && t.seen&(1<<fOutput) == 0
	if u.Partial {
		out = t.n[fStartOutput]
	}
	if t.seen&(1<<fInput|1<<fOutput|1<<fStartOutput) == 0 {
		in, out = t.n[fBilledInput], t.n[fBilledOutput]
	}
	u.Known = true
	// A Bedrock stream that ended before its end (an exception, a
	// message cut short) may have used more than it told.
	u.Partial = u.Partial || m.mode == modeEventStream && m.es.cut()
	u.InputTokens = Add(Add(in, t.n[fCacheRead]), Add(t.n[fCacheWrite], t.n[fToolInput]))
	u.CachedInputTokens = min(Add(t.n[fCached], t.n[fCacheRead]), u.InputTokens)
	u.OutputTokens = Add(out, t.n[fThoughts])
	if t.seen&(1<<fIterInput|1<<fIterOutput) != 0 {
		// Anthropic bills every iteration, but its top-level fields tell
		// only the last message's (a compaction's are 0) or the
		// executor's (an advisor's are left out).
		u.InputTokens = max(u.InputTokens, t.n[fIterInput])
		u.OutputTokens = max(u.OutputTokens, t.n[fIterOutput])
		u.Sub = SubUsage{m.subModel, min(t.n[fSubInput], u.InputTokens), min(t.n[fSubOutput], u.OutputTokens)}
	}
	return u
}

// Events is how many SSE events with data (or event-stream events) the
// meter read: a lower bound of the output tokens of a stream cut before
// it reported them, since a provider streams at least a token an event
// (OpenAI about one).
func (m *Meter) Events() int64 {
	if m == nil {
		return 0
	}
	return m.events
}

// Add adds two non-negative token counts, saturating instead of
// overflowing: an upstream can report any count.
func Add(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// want tells the scanner whether the value beginning at its current path
// is, or may hold, a field of the format; it keeps the path's node, so
// that value and the values inside know theirs.
func (m *Meter) want(s *scanner) bool {
	n := s.pathLen()
	parent := m.tree
	if n > 1 {
		parent = m.nodes[n-2]
	}
	node := parent.child(s.key(n - 1))
	if node == nil {
		return false
	}
	m.nodes[n-1] = node
	return true
}

// value takes a value the scanner found at a path want accepted.
func (m *Meter) value(s *scanner, k kind, _, _ int64) {
	f := m.nodes[s.pathLen()-1].field
	t, whole := s.text()
	switch {
	case f == fSearchQuery && k == kString && !whole:
		m.moreQueries = Add(m.moreQueries, 1) // too long to keep: counted each time
	case f == fSearchQuery && k == kString && len(t) > 0:
		m.query(t)
	case f >= fIteration:
		m.iteration(f, k, t) // a model's name cut short stays unpriced
	case f == fNone || !whole:
	case f == fOutputType:
		if k == kString && string(t) == "web_search_call" {
			m.doc.n[fWebSearches] = Add(m.doc.n[fWebSearches], 1)
			m.doc.seen |= 1 << fWebSearches
		}
	case f == fModel:
		if k == kString && len(t) > 0 && string(t) != m.model {
			m.model = string(t)
		}
	case k == kNumber && f < nFields:
		if v, ok := parseCount(t); ok {
			m.doc.n[f] = v
			m.doc.seen |= 1 << f
		}
	}
}

// iteration reads a value of an Anthropic usage.iterations element (of
// field f); at the element's end, it adds the element's tokens to the
// document's.
func (m *Meter) iteration(f field, k kind, t []byte) {
	switch it := &m.iter; {
	case f == fIterType && k == kString:
		it.typ = string(t)
	case f == fIterModel && k == kString:
		it.model = string(t)
	case f == fIterTokensIn || f == fIterTokensOut:
		v, ok := parseCount(t)
		switch {
		case !ok || k != kNumber:
		case f == fIterTokensIn:
			it.in = Add(it.in, v)
		default:
			it.out = Add(it.out, v)
		}
	case f == fIteration && k == kObject:
		m.addDoc(fIterInput, it.in)
		m.addDoc(fIterOutput, it.out)
		if it.typ != "message" && it.model != "" {
			// An advisor's or a fallback's (a compaction runs the
			// answer's own model, and names none).
			m.addDoc(fSubInput, it.in)
			m.addDoc(fSubOutput, it.out)
			switch {
			case m.subModels:
			case m.subModel == "":
				m.subModel = it.model
			case m.subModel != it.model:
				m.subModel, m.subModels = "", true
			}
		}
		*it = iteration{}
	}
}

// addDoc adds v to the document's count of f.
func (m *Meter) addDoc(f field, v int64) {
	m.doc.n[f] = Add(m.doc.n[f], v)
	m.doc.seen |= 1 << f
}

// query counts a search query once however often the answer repeats it.
func (m *Meter) query(q []byte) {
	h := maphash.Bytes(querySeed, q)
	switch {
	case slices.Contains(m.queries, h):
	case len(m.queries) < maxQueries:
		m.queries = append(m.queries, h)
	default:
		m.moreQueries = Add(m.moreQueries, 1)
	}
}

// docEnd adds up a finished document (a JSON body, an SSE event, or a
// chunk of a JSON array). A document without usage changes nothing. For
// Anthropic, whose message_start and message_delta events each carry part
// of the usage, fields merge; for the others the last usage read wins
// whole (Gemini repeats usageMetadata in every chunk).
func (m *Meter) docEnd() {
	m.iter = iteration{} // an element the document left unfinished
	if m.doc.seen == 0 {
		return
	}
	if m.format == Anthropic {
		for f := range nFields {
			if m.doc.seen&(1<<f) != 0 {
				m.total.n[f] = m.doc.n[f]
			}
		}
		m.total.seen |= m.doc.seen
	} else {
		m.total = m.doc
	}
	m.doc = counts{}
}

// parseCount reads a token count: a non-negative JSON number with an
// integral value.
func parseCount(t []byte) (int64, bool) {
	if v, err := strconv.ParseInt(string(t), 10, 64); err == nil {
		return v, v >= 0
	}
	v, err := strconv.ParseFloat(string(t), 64)
	if err != nil || v < 0 || v >= math.MaxInt64 || v != math.Trunc(v) {
		return 0, false
	}
	return int64(v), true
}

// openAIPaths are the fields of OpenAI's Chat Completions, Completions,
// Embeddings and Responses APIs, as JSON bodies and as stream events
// (Responses streams carry the response under "response"; Groq streams
// put usage under "x_groq").
var openAIPaths = map[string]field{
	"model": fModel, "response.model": fModel,
	"usage.prompt_tokens": fInput, "usage.input_tokens": fInput,
	"response.usage.input_tokens": fInput, "x_groq.usage.prompt_tokens": fInput,
	"usage.prompt_tokens_details.cached_tokens":         fCached,
	"usage.input_tokens_details.cached_tokens":          fCached,
	"response.usage.input_tokens_details.cached_tokens": fCached,
	"usage.completion_tokens":                           fOutput, "usage.output_tokens": fOutput,
	"response.usage.output_tokens": fOutput, "x_groq.usage.completion_tokens": fOutput,
	// Responses: a web search is an output item; the stream's
	// response.completed event holds them all again.
	"output.[].type": fOutputType, "response.output.[].type": fOutputType,
}

// anthropicPaths are the fields of Anthropic's Messages API: a JSON body,
// message_start ("message.usage") and message_delta ("usage").
var anthropicPaths = map[string]field{
	"model": fModel, "message.model": fModel,
	"usage.input_tokens": fInput, "message.usage.input_tokens": fInput,
	"usage.cache_read_input_tokens": fCacheRead, "message.usage.cache_read_input_tokens": fCacheRead,
	"usage.cache_creation_input_tokens": fCacheWrite, "message.usage.cache_creation_input_tokens": fCacheWrite,
	"usage.output_tokens": fOutput, "message.usage.output_tokens": fStartOutput,
	"usage.server_tool_use.web_search_requests":         fWebSearches,
	"message.usage.server_tool_use.web_search_requests": fWebSearches,
	// Each sampling an answer was billed for, where it had more than one
	// (compaction, the advisor tool, server-side fallbacks).
	"usage.iterations.[]":                                     fIteration,
	"message.usage.iterations.[]":                             fIteration,
	"usage.iterations.[].type":                                fIterType,
	"message.usage.iterations.[].type":                        fIterType,
	"usage.iterations.[].model":                               fIterModel,
	"message.usage.iterations.[].model":                       fIterModel,
	"usage.iterations.[].input_tokens":                        fIterTokensIn,
	"message.usage.iterations.[].input_tokens":                fIterTokensIn,
	"usage.iterations.[].cache_read_input_tokens":             fIterTokensIn,
	"message.usage.iterations.[].cache_read_input_tokens":     fIterTokensIn,
	"usage.iterations.[].cache_creation_input_tokens":         fIterTokensIn,
	"message.usage.iterations.[].cache_creation_input_tokens": fIterTokensIn,
	"usage.iterations.[].output_tokens":                       fIterTokensOut,
	"message.usage.iterations.[].output_tokens":               fIterTokensOut,
}

// geminiPaths are the fields of Gemini's generateContent and
// streamGenerateContent.
var geminiPaths = map[string]field{
	"modelVersion":                          fModel,
	"usageMetadata.promptTokenCount":        fInput,
	"usageMetadata.cachedContentTokenCount": fCached,
	"usageMetadata.toolUsePromptTokenCount": fToolInput,
	"usageMetadata.candidatesTokenCount":    fOutput,
	"usageMetadata.thoughtsTokenCount":      fThoughts,
	// Grounding with Google Search: Google bills each distinct non-empty
	// query (Gemini 3), or an answer that searched at all (Gemini 2.5).
	"candidates.[].groundingMetadata.webSearchQueries.[]": fSearchQuery,
}

// coherePaths are the fields of Cohere's v2 Chat API (a JSON body, and the
// message-end event's "delta.usage") and of v1 ("meta", and the stream-end
// event's "response.meta").
var coherePaths = map[string]field{
	"usage.tokens.input_tokens": fInput, "delta.usage.tokens.input_tokens": fInput,
	"meta.tokens.input_tokens": fInput, "response.meta.tokens.input_tokens": fInput,
	"usage.tokens.output_tokens": fOutput, "delta.usage.tokens.output_tokens": fOutput,
	"meta.tokens.output_tokens": fOutput, "response.meta.tokens.output_tokens": fOutput,
	"usage.billed_units.input_tokens": fBilledInput, "delta.usage.billed_units.input_tokens": fBilledInput,
	"meta.billed_units.input_tokens": fBilledInput, "response.meta.billed_units.input_tokens": fBilledInput,
	"usage.billed_units.output_tokens": fBilledOutput, "delta.usage.billed_units.output_tokens": fBilledOutput,
	"meta.billed_units.output_tokens": fBilledOutput, "response.meta.billed_units.output_tokens": fBilledOutput,
}

// bedrockPaths are the fields of Bedrock's Converse API (a JSON body),
// whose usage tells cache reads and writes beside inputTokens, as
// Anthropic's does.
var bedrockPaths = map[string]field{
	"usage.inputTokens": fInput, "usage.outputTokens": fOutput,
	"usage.cacheReadInputTokens": fCacheRead, "usage.cacheWriteInputTokens": fCacheWrite,
}

// trees are each format's fields as a tree of keys, which the scanner
// walks a key at a time.
// Every provider also offers an OpenAI-compatible endpoint (Anthropic's
// and Gemini's /chat/completions, Cohere's compatibility API), whose
// answers are in OpenAI's shape: every tree reads those too. A route to
// Bedrock, with any usage format, also takes Converse's answers: every
// tree reads them too.
var trees = map[Format]*pathNode{
	OpenAI:    newTree(openAIPaths, bedrockPaths),
	Anthropic: newTree(anthropicPaths, openAIPaths, bedrockPaths),
	Gemini:    newTree(geminiPaths, openAIPaths, bedrockPaths),
	Cohere:    newTree(coherePaths, openAIPaths, bedrockPaths),
}

// pathNode is a key in a tree of the paths of fields: the field found
// at the path that ends with it (fNone for an object on the way to one),
// and the keys that may follow it.
type pathNode struct {
	key   string
	field field
	kids  []*pathNode
}

// newTree builds the tree of the paths (dot-separated keys) in maps.
func newTree(maps ...map[string]field) *pathNode {
	root := &pathNode{}
	for _, paths := range maps {
		for path, f := range paths {
			n := root
			for key := range strings.SplitSeq(path, ".") {
				next := n.child([]byte(key))
				if next == nil {
					next = &pathNode{key: key}
					n.kids = append(n.kids, next)
				}
				n = next
			}
			n.field = f
		}
	}
	return root
}

// child returns the node for key below n, or nil.
func (n *pathNode) child(key []byte) *pathNode {
	for _, k := range n.kids {
		if k.key == string(key) {
			return k
		}
	}
	return nil
}

// sseReader splits a text/event-stream body into fields (see the HTML
// Living Standard, "Server-sent events"). It keeps no line: the value of
// each data field streams straight into the meter's scanner, one event's
// data lines joined by a newline as the standard says, so a line of any
// length is read in full and memory stays bounded.
type sseReader struct {
	st     uint8
	name   [5]byte // the field name so far; "data" is the only one read
	n      uint8
	lastCR bool // the previous byte was a CR, so an LF right after it is part of the same line end
	// heldCR is a CR that ended a chunk inside a data or skipped line,
	// once lines end with LF: a line end if an LF follows, else data.
	heldCR bool
	// lf is set once a line ended with LF (or CRLF): streams keep to one
	// kind of line end, and a data line is then cut at its LF alone.
	lf bool
	// bom is how many bytes of a byte order mark the stream began with
	// (sseBOMPast once its first bytes are read): the standard drops one
	// leading mark, which would otherwise join the first field's name.
	bom uint8
}

// sseBOMPast is sseReader.bom once the stream's start is read.
const sseBOMPast = 0xff

const (
	sseLineStart = iota
	sseName
	sseSpace // after "data:", where one space is dropped
	sseData
	sseSkip // a comment or a field other than data
)

// write reads the next chunk of an event stream.
func (r *sseReader) write(m *Meter, p []byte) {
	if r.bom != sseBOMPast {
		p = r.leadingBOM(m, p)
	}
	for i := 0; i < len(p); {
		c := p[i]
		if r.heldCR {
			r.heldCR = false
			if c != '\n' && r.st == sseData {
				m.data([]byte{'\r'})
			}
		}
		if r.lastCR {
			r.lastCR = false
			if c == '\n' {
				r.lf = true // a CRLF split between chunks
				i++
				continue
			}
		}
		if c == '\r' && r.lf && i+1 == len(p) && (r.st == sseData || r.st == sseSkip) {
			r.heldCR = true // as the whole stream reads it: CRLF, or a CR in the line
			i++
			continue
		}
		if c == '\r' && r.lf && i+1 < len(p) && p[i+1] != '\n' && (r.st == sseData || r.st == sseSkip) {
			if r.st == sseData {
				m.data([]byte{'\r'}) // a CR alone inside a line, once lines end with LF
			}
			i++
			continue
		}
		if c == '\r' || c == '\n' {
			if c == '\n' || i+1 < len(p) && p[i+1] == '\n' {
				r.lf = true
			}
			r.endLine(m)
			r.lastCR = c == '\r'
			i++
			continue
		}
		switch r.st {
		case sseLineStart:
			r.st, r.n = sseName, 0
			if c == ':' {
				r.st = sseSkip
			} else {
				r.addName(c)
			}
		case sseName:
			if c != ':' {
				r.addName(c)
			} else if r.isData() {
				r.st = sseSpace
			} else {
				r.st = sseSkip
			}
		case sseSpace:
			r.st = sseData
			if c != ' ' {
				continue
			}
		case sseData, sseSkip:
			// The line's end, found with IndexByte (vectorized): an LF,
			// or a CR before it.
			j := len(p)
			if k := bytes.IndexByte(p[i:], '\n'); k >= 0 {
				j = i + k
				if r.lf && j > i && p[j-1] == '\r' {
					j-- // CRLF
				}
			}
			if !r.lf {
				// Until a line ended with LF, a CR alone may end one.
				if k := bytes.IndexByte(p[i:j], '\r'); k >= 0 {
					j = i + k
				}
			}
			if r.st == sseData {
				m.data(p[i:j])
			}
			i = j
			continue
		}
		i++
	}
}

// leadingBOM reads through what p holds of a byte order mark at the very
// start of the stream, however the writes cut it, and returns the rest of
// p. A mark cut short is read as the stream's first bytes, as it would
// be without this.
func (r *sseReader) leadingBOM(m *Meter, p []byte) []byte {
	for len(p) > 0 && p[0] == byteOrderMark[r.bom] {
		p = p[1:]
		if r.bom++; int(r.bom) == len(byteOrderMark) {
			r.bom = sseBOMPast
			return p
		}
	}
	if len(p) > 0 {
		read := r.bom
		r.bom = sseBOMPast
		r.write(m, bomBytes[:read])
	}
	return p
}

var bomBytes = []byte(byteOrderMark)

// addName appends c to the field name, keeping at most one byte more than
// "data" so that longer names cannot match.
func (r *sseReader) addName(c byte) {
	if int(r.n) < len(r.name) {
		r.name[r.n] = c
		r.n++
	}
}

func (r *sseReader) isData() bool { return string(r.name[:r.n]) == "data" }

// endLine handles a line end: a blank line ends the event; a data line
// adds the newline that joins it to the event's next data line.
func (r *sseReader) endLine(m *Meter) {
	switch r.st {
	case sseLineStart:
		m.eventEnd()
	case sseName:
		if r.isData() { // "data" alone is a data field with an empty value
			m.data(newline)
		}
	case sseSpace, sseData:
		m.data(newline)
	}
	r.st = sseLineStart
}

var newline = []byte{'\n'}

// data takes the next bytes of the SSE event's data.
func (m *Meter) data(b []byte) {
	if m.long {
		m.scan.write(b)
		return
	}
	if len(m.event)+len(b) > maxEvent {
		m.long = true
		m.scan.write(m.event)
		m.scan.write(b)
		m.event = m.event[:0]
		return
	}
	m.event = append(m.event, b...)
}

// eventEnd reads the event that ended, if it may hold usage, and ends
// its document.
func (m *Meter) eventEnd() {
	if m.long || len(m.event) > 0 {
		m.events++
	}
	if !m.long && mayHoldUsage(m.event) {
		m.scan.write(m.event)
	}
	m.scan.finish()
	m.event, m.long = m.event[:0], false
}

// mayHoldUsage reports whether an event's data may report usage: it names
// a usage object ("usage", "usageMetadata") whose value is not null. Most
// events of a stream, chunks of text, do not, and are skipped unread. A
// key written with escapes ("usag\u0065") is not seen: providers write
// their keys plainly, and the app writes nothing in their answers.
func mayHoldUsage(d []byte) bool {
	for {
		i := bytes.Index(d, usageKey)
		if i < 0 {
			return false
		}
		d = d[i+len(usageKey):]
		d = bytes.TrimPrefix(d, metadataSuffix)
		if len(d) == 0 || d[0] != '"' {
			continue
		}
		v := skipSpace(d[1:])
		if len(v) == 0 || v[0] != ':' {
			continue
		}
		if !bytes.HasPrefix(skipSpace(v[1:]), null) {
			return true
		}
	}
}

// skipSpace drops JSON white space from the start of b.
func skipSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r' || b[0] == '\n') {
		b = b[1:]
	}
	return b
}

var (
	usageKey       = []byte(`"usage`)
	metadataSuffix = []byte("Metadata")
	null           = []byte("null")
)
