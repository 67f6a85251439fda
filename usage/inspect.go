// Package usage reads what model providers' APIs are asked and what they
// report: Inspect finds a request's model, stream flag and output token
// limit (for model rules and budget reservations); IncludeUsage asks an
// OpenAI-shaped stream to report its usage; a Meter reads the usage a
// response reports as it streams past, never holding it back; and Prices
// turns usage into US dollars from a per-model price table.
//
// Bodies are read by an incremental JSON scanner with a fixed amount of
// state, so neither a long request nor a 10 MB answer is ever buffered.
package usage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// Format is the shape of a provider's API, which says where a request
// names its model and where a response reports its usage.
type Format string

// The formats a route's usage setting names.
const (
	// OpenAI is the Chat Completions, Completions, Embeddings and
	// Responses APIs, and every API that copies them (Mistral, Groq, …).
	OpenAI Format = "openai"
	// Anthropic is the Messages API.
	Anthropic Format = "anthropic"
	// Gemini is the Gemini API's generateContent family, and its
	// OpenAI-compatible endpoint.
	Gemini Format = "gemini"
	// Cohere is the Chat API, v2 and v1.
	Cohere Format = "cohere"
	// None reports no usage.
	None Format = "none"
)

// ErrRepeatedField is the error of Inspect and Peek for a body that names
// a field they read more than once: parsers disagree on which one counts
// (the first, the last), so such a body could ask one thing of till and
// another of the provider.
var ErrRepeatedField = errors.New("request body repeats a field")

// ErrFieldCase is the error of Inspect and Peek for a body that names a
// field they read in another case ("Model", "ſtream"): Go's encoding/json
// and ASP.NET Core take a member whose name matches in any case, by
// Unicode's simple folding, the last one winning, so such a body could
// ask one thing of till and another of the provider.
var ErrFieldCase = errors.New("request body names a field till reads in another case")

// ErrStreamNotBoolean is the error of Inspect and Peek for a body whose
// "stream" is neither true, false nor null: some servers take "true" or 1
// as true, and would stream an answer till did not ask usage of.
var ErrStreamNotBoolean = errors.New(`request body's "stream" is not true or false`)

// Request is what Inspect finds in a request.
type Request struct {
	// Model is the model asked for: the body's "model" string or, for
	// Gemini, the model in the path. "" when there is none.
	Model string
	// Stream reports a streamed answer: "stream": true, or Gemini's
	// streamGenerateContent.
	Stream bool
	// MaxOutput is the most output tokens the request allows (the largest
	// of max_tokens, max_completion_tokens, max_output_tokens,
	// generationConfig.maxOutputTokens, also spelt
	// generation_config.max_output_tokens as Google's parser takes it,
	// and Bedrock Converse's inferenceConfig.maxTokens present), given as
	// a number or a string of digits; 0 when none is set.
	MaxOutput int64
	// Choices is how many answers the request asks for, each up to
	// MaxOutput tokens: the largest of n, best_of and Gemini's
	// generationConfig.candidateCount present; 0 when none is set.
	Choices int64
	// Background reports a Responses API request run in the background
	// ("background": true): its answer, and its usage, come later, to
	// another request.
	Background bool
	// Others are the models the request names besides Model, which the
	// provider may run for it too: a tool's (Anthropic's advisor,
	// OpenAI's image_generation) and a server-side fallback's
	// (Anthropic's "fallbacks"). Read wherever the body names them, a
	// "tools" or "fallbacks" given twice included, at most maxOthers.
	Others []string
	// Unnamed reports that the provider may run a model the request does
	// not name: fallbacks it picks ("fallbacks": "default"), an
	// image_generation tool without a model (its default), a model name
	// too long to keep, or more than maxOthers.
	Unnamed bool
}

// maxOthers is the most models Inspect keeps in Request.Others.
const maxOthers = 16

// Inspect reads a request to a route of format f: its path (after the
// route prefix) and body. It reads the same body fields for every format,
// since names do not clash between them; for Gemini the model in the path
// wins over a body "model". An empty body is fine (no model). A body that
// is not a JSON object, that names one of the fields Inspect reads twice
// or in another case (which providers might read differently from till),
// whose model is longer than 256 bytes, or that nests 1024 levels deep is
// an error; callers answer it with 400 bad_request. Inspect does not keep
// body.
func Inspect(f Format, path string, body []byte) (Request, error) {
	return inspect(f, path, body, true)
}

// Peek is Inspect without the check that the whole body is valid JSON,
// which costs as much again: for reading what a request asks (to record
// it, to reserve against a budget), never for refusing one. What it reads
// from a body that is not valid JSON, the provider refuses anyway.
func Peek(f Format, path string, body []byte) (Request, error) {
	return inspect(f, path, body, false)
}

func inspect(f Format, path string, body []byte, strict bool) (Request, error) {
	var r Request
	if trimmed := bytes.TrimLeft(body, " \t\r\n"); len(trimmed) > 0 {
		if strict && !json.Valid(body) {
			return Request{}, errors.New("request body is not valid JSON")
		}
		if trimmed[0] != '{' {
			return Request{}, errors.New("request body is not a JSON object")
		}
		x := sinks.Get().(*inspectSink)
		defer sinks.Put(x)
		*x = inspectSink{}
		x.s.sink = x
		x.s.namedArrays = true // the elements of "tools" and "fallbacks"
		x.s.write(body)
		if x.s.st == stError {
			return Request{}, fmt.Errorf("request body nests too deeply (%d levels at most)", maxDepth-1)
		}
		x.s.finish()
		if x.err != nil {
			return Request{}, x.err
		}
		r = x.req
	}
	if f == Gemini {
		if m, stream := geminiPath(path); m != "" {
			r.Model, r.Stream = m, r.Stream || stream
		}
	}
	return r, nil
}

// geminiPath returns the model a Gemini API path names, such as
// "gemini-2.5-flash" in /v1beta/models/gemini-2.5-flash:generateContent,
// "tunedModels/x" in /v1beta/tunedModels/x:generateContent or "dynamic/x"
// in /v1beta/dynamic/x:generateContent (Google's three bindings, whose
// model stands over the body's), "endpoints/x" in Vertex AI's
// .../endpoints/x:generateContent or .../endpoints/x/chat/completions
// (the endpoint serves its deployed or tuned model; but for
// .../endpoints/openapi/..., whose body names the model), and whether the
// method streams. The path is read as RoutedPath reads it.
func geminiPath(path string) (model string, stream bool) {
	path, _, _ = strings.Cut(path, "?")
	path = RoutedPath(path)
	var prefix, rest string
	if _, after, ok := strings.Cut(path, "/models/"); ok {
		rest = after
	} else if _, after, ok := strings.Cut(path, "/tunedModels/"); ok {
		prefix, rest = "tunedModels/", after
	} else if _, after, ok := strings.Cut(path, "/dynamic/"); ok {
		prefix, rest = "dynamic/", after
	} else if _, after, ok := strings.Cut(path, "/endpoints/"); ok && !strings.HasPrefix(after, "openapi/") && !strings.HasPrefix(after, "openapi:") {
		prefix, rest = "endpoints/", after
	}
	name, method, _ := strings.Cut(rest, ":")
	name, _, _ = strings.Cut(name, "/")
	if name == "" {
		return "", false
	}
	return prefix + name, method == "streamGenerateContent"
}

// RoutedPath is path as servers that merge slashes and drop a segment's
// ";parameters" (nginx, Tomcat, Jetty, Spring) route it, a trailing
// slash gone too: models//NAME and models;x/NAME run NAME there, and the
// body's model must not stand in for the one the path names. What till
// reads from a path's end (which endpoint it is) it reads from this.
func RoutedPath(path string) string {
	if !strings.Contains(path, "//") && !strings.Contains(path, ";") && !strings.HasSuffix(path, "/") {
		return path
	}
	var b strings.Builder
	for seg := range strings.SplitSeq(path, "/") {
		if seg, _, _ = strings.Cut(seg, ";"); seg != "" {
			b.WriteString("/" + seg)
		}
	}
	return b.String()
}

// sinks keeps inspectSinks (a scanner's state is about 1 KB) for the
// next request.
var sinks = sync.Pool{New: func() any { return new(inspectSink) }}

// inspectSink collects what Inspect reads.
type inspectSink struct {
	s    scanner
	req  Request
	seen uint16 // bit i: inspected[i] was read
	err  error
	// tool is what the element of "tools" being read holds.
	tool struct{ imageGeneration, model bool }
}

// inspected are the body fields Inspect reads, each allowed once (in
// either of the spellings Google's parser takes for Gemini's).
var inspected = [...]string{
	"model", "stream", "max_tokens", "max_completion_tokens", "max_output_tokens",
	"generationConfig", "generationConfig.maxOutputTokens", "background",
	"n", "best_of", "generationConfig.candidateCount",
	"inferenceConfig", "inferenceConfig.maxTokens",
}

// keyPath is a path of keys to a value: a scanner's current one, or,
// with last set, that path with its last key read as last. A struct, not
// an interface: its methods inline on the path of every value read.
type keyPath struct {
	s    *scanner
	last []byte
}

func (p keyPath) pathLen() int { return p.s.pathLen() }

func (p keyPath) key(i int) []byte {
	if p.last != nil && i == p.s.pathLen()-1 {
		return p.last
	}
	return p.s.key(i)
}

// readKeys are the keys of the paths Inspect reads (reads), each spelt
// as Inspect reads it.
var readKeys = [...]string{
	"model", "stream", "max_tokens", "max_completion_tokens", "max_output_tokens",
	"generationConfig", "generation_config", "maxOutputTokens", "candidateCount", "candidate_count",
	"background", "n", "best_of", "inferenceConfig", "maxTokens",
	"tools", "type", "fallbacks", "stream_options", "include_usage",
}

// reads reports whether Inspect reads the value at p: an inspected field
// (or a container holding one), a path to another model, or the
// stream_options.include_usage that IncludeUsage reads.
func reads(p keyPath) bool {
	n := p.pathLen()
	streamOptions := n >= 1 && n <= 2 && string(p.key(0)) == "stream_options"
	return inspectedAt(p) >= 0 || otherAt(p) != otherNone ||
		streamOptions && (n == 1 || string(p.key(1)) == "include_usage")
}

// foldedReadKeys maps each key of readKeys, folded (foldKey), to itself.
var foldedReadKeys = func() map[string]string {
	m := make(map[string]string, len(readKeys))
	for _, k := range readKeys {
		m[strings.ToLower(k)] = k
	}
	return m
}()

// caseless returns the key of readKeys that the last key of s's path
// spells in another case, where Inspect reads that key, or "". It is
// asked of every member Inspect passes by: one map lookup, not a
// comparison with each key.
func caseless(s *scanner) string {
	last := s.key(s.pathLen() - 1)
	var buf [keyMax]byte
	folded, ok := foldKey(buf[:0], last)
	if !ok {
		return ""
	}
	k, ok := foldedReadKeys[string(folded)]
	if !ok || string(last) == k || !reads(keyPath{s, []byte(k)}) {
		return ""
	}
	return k
}

// foldKey appends key to dst as it matches an ASCII key by
// bytes.EqualFold (Unicode's simple folding, as Go's encoding/json
// matches names): ASCII in lower case, and the only other runes that
// fold to ASCII, the long s (U+017F) and the Kelvin sign (U+212A), as s
// and k; and the dotless ı (U+0131) as i, since its upper case is I: a
// reader that compares names by their upper case (as .NET's may) reads
// it so. It returns false for a key holding any other rune, which no
// ASCII key matches. Each rune folds to one byte: dst needs no more room
// than key.
func foldKey(dst, key []byte) ([]byte, bool) {
	for i := 0; i < len(key); {
		switch c := key[i]; {
		case c < utf8.RuneSelf:
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
			i++
		case bytes.HasPrefix(key[i:], []byte("\u017f")):
			dst = append(dst, 's')
			i += len("\u017f")
		case bytes.HasPrefix(key[i:], []byte("\u212a")):
			dst = append(dst, 'k')
			i += len("\u212a")
		case bytes.HasPrefix(key[i:], []byte("\u0131")):
			dst = append(dst, 'i')
			i += len("\u0131")
		default:
			return dst, false
		}
	}
	return dst, true
}

// inspectedAt returns the index in inspected of the value at p, or -1.
func inspectedAt(s keyPath) int {
	switch n := s.pathLen(); {
	case n == 1 && isGenerationConfig(s.key(0)):
		return 5
	case n == 1 && string(s.key(0)) == "background":
		return 7
	case n == 1 && string(s.key(0)) == "n":
		return 8
	case n == 1 && string(s.key(0)) == "best_of":
		return 9
	case n == 1 && string(s.key(0)) == "inferenceConfig":
		return 11
	case n == 1:
		return slices.Index(inspected[:5], string(s.key(0)))
	case n == 2 && isGenerationConfig(s.key(0)) && (string(s.key(1)) == "maxOutputTokens" || string(s.key(1)) == "max_output_tokens"):
		return 6
	case n == 2 && isGenerationConfig(s.key(0)) && (string(s.key(1)) == "candidateCount" || string(s.key(1)) == "candidate_count"):
		return 10
	case n == 2 && string(s.key(0)) == "inferenceConfig" && string(s.key(1)) == "maxTokens":
		return 12
	}
	return -1
}

// isGenerationConfig reports whether key names Gemini's generation
// config, in the JSON name or the proto field name Google takes as well.
func isGenerationConfig(key []byte) bool {
	return string(key) == "generationConfig" || string(key) == "generation_config"
}

// Paths of the values that name other models (Request.Others), and of
// the containers on the way to them.
const (
	otherNone = iota
	otherTools
	otherTool          // tools.[]
	otherToolType      // tools.[].type
	otherToolModel     // tools.[].model
	otherFallbacks     // fallbacks: "default", "off" or a list
	otherFallback      // fallbacks.[]: an object, or a model's name
	otherFallbackModel // fallbacks.[].model
)

// otherAt returns which of the paths of other models p is, or otherNone.
func otherAt(s keyPath) int {
	n := s.pathLen()
	if n == 0 || n > 3 || n > 1 && string(s.key(1)) != "[]" {
		return otherNone
	}
	last := ""
	if n == 3 {
		last = string(s.key(2))
	}
	switch tools := string(s.key(0)) == "tools"; {
	case !tools && string(s.key(0)) != "fallbacks":
		return otherNone
	case n == 1 && tools:
		return otherTools
	case n == 2 && tools:
		return otherTool
	case tools && last == "type":
		return otherToolType
	case tools && last == "model":
		return otherToolModel
	case n == 1:
		return otherFallbacks
	case n == 2:
		return otherFallback
	case last == "model":
		return otherFallbackModel
	}
	return otherNone
}

// want takes the inspected fields (generationConfig among them, which
// holds one), the paths to other models and stream_options (read for
// their case alone), and fails on one of them spelt in another case.
func (x *inspectSink) want(s *scanner) bool {
	if reads(keyPath{s: s}) {
		return true
	}
	if k := caseless(s); k != "" {
		x.fail(fmt.Errorf("%w: %q", ErrFieldCase, k))
	}
	return false
}

func (x *inspectSink) value(s *scanner, k kind, _, _ int64) {
	i := inspectedAt(keyPath{s: s})
	if i < 0 {
		x.other(s, k)
		return
	}
	if x.seen&(1<<i) != 0 {
		x.fail(fmt.Errorf("%w: %q more than once", ErrRepeatedField, inspected[i]))
		return
	}
	x.seen |= 1 << i
	t, whole := s.text()
	switch i {
	case 0:
		if k == kString && !whole {
			x.fail(fmt.Errorf("model name is longer than %d bytes", valMax))
		} else if k == kString {
			x.req.Model = string(t)
		}
	case 1:
		if k != kTrue && k != kFalse && k != kNull {
			x.fail(ErrStreamNotBoolean)
		}
		x.req.Stream = k == kTrue
	case 7:
		if k != kTrue && k != kFalse && k != kNull {
			x.fail(errors.New(`request body's "background" is not true or false`))
		}
		x.req.Background = k == kTrue
	case 5, 11:
	case 8, 9, 10:
		if v, ok := parseCount(t); ok && (k == kNumber || k == kString) && whole && v > x.req.Choices {
			x.req.Choices = v
		}
	default:
		// A count may come as a string too: Google's proto JSON parser
		// reads "maxOutputTokens": "4096" as 4096.
		if v, ok := parseCount(t); ok && (k == kNumber || k == kString) && whole && v > x.req.MaxOutput {
			x.req.MaxOutput = v
		}
	}
}

// other reads a value on the way to another model than the request's.
func (x *inspectSink) other(s *scanner, k kind) {
	t, whole := s.text()
	switch at := otherAt(keyPath{s: s}); {
	case at == otherToolType && k == kString && string(t) == "image_generation":
		x.tool.imageGeneration = true
	case at == otherToolModel && k != kNull:
		x.tool.model = true
		x.addOther(k, t, whole)
	case at == otherTool && k == kObject:
		if x.tool.imageGeneration && !x.tool.model {
			x.req.Unnamed = true // OpenAI runs its default image model
		}
		x.tool = struct{ imageGeneration, model bool }{}
	case at == otherFallbacks && k == kString && string(t) != "off",
		at == otherFallbacks && k != kString && k != kArray && k != kNull:
		x.req.Unnamed = true // "default": Anthropic picks the models
	case at == otherFallback && k == kString, at == otherFallbackModel:
		x.addOther(k, t, whole)
	}
}

// addOther keeps another model the request names.
func (x *inspectSink) addOther(k kind, t []byte, whole bool) {
	if k != kString || !whole || len(x.req.Others) == maxOthers {
		x.req.Unnamed = true // a model that cannot be checked
		return
	}
	x.req.Others = append(x.req.Others, string(t))
}

func (x *inspectSink) fail(err error) {
	if x.err == nil {
		x.err = err
	}
}

func (x *inspectSink) docEnd() {}

// IncludeUsage makes a streamed OpenAI Chat Completions (or legacy
// Completions) request report its usage: when body is a JSON object with
// "stream": true and stream_options.include_usage is not true (absent,
// false or null), it returns a copy of body with include_usage set to true
// and true. Only the bytes needed change: the member is added after the
// last one (or as stream_options' first), or the false or null value is
// replaced, so every other field, value and number stays byte for byte as
// the app sent it. Otherwise it returns body unchanged and false.
//
// Do not use it for the Responses API (/v1/responses), which reports usage
// in every stream and has no include_usage option. When a key appears
// twice, the last one counts, as in the providers' JSON parsers.
func IncludeUsage(body []byte) ([]byte, bool) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(body) {
		return body, false
	}
	x := includeSink{}
	x.s.sink = &x
	x.s.write(body)
	if x.s.st == stError || !x.stream {
		return body, false
	}
	const member = `"stream_options":{"include_usage":true}`
	so, iu := x.so, x.iu
	switch {
	case so.k == 0:
		return splice(body, x.lastEnd, x.lastEnd, ","+member), true
	case so.k == kNull, so.k == kObject && so.members == 0:
		return splice(body, so.start, so.end, `{"include_usage":true}`), true
	case so.k != kObject:
		return body, false // not a valid request; leave it to the provider
	case iu.k == 0:
		return splice(body, so.start+1, so.start+1, `"include_usage":true,`), true
	case iu.k == kTrue:
		return body, false
	default:
		return splice(body, iu.start, iu.end, "true"), true
	}
}

// splice returns a copy of b with b[start:end] replaced by s.
func splice(b []byte, start, end int64, s string) []byte {
	out := make([]byte, 0, int64(len(b))-(end-start)+int64(len(s)))
	out = append(out, b[:start]...)
	out = append(out, s...)
	return append(out, b[end:]...)
}

// span is where a value lies in a body.
type span struct {
	k          kind // 0: absent
	start, end int64
	members    int32
}

// includeSink collects what IncludeUsage reads.
type includeSink struct {
	s       scanner
	stream  bool  // the last top-level "stream" is true
	lastEnd int64 // the end of the last top-level member's value
	so      span  // the last top-level stream_options
	iu      span  // the last include_usage in so
	pending span  // the last include_usage in the stream_options being read
}

// want takes every value: the end of each top-level one is where a member
// can be added.
func (x *includeSink) want(*scanner) bool { return true }

func (x *includeSink) value(s *scanner, k kind, start, end int64) {
	switch s.pathLen() {
	case 1:
		x.lastEnd = end
		switch string(s.key(0)) {
		case "stream":
			x.stream = k == kTrue
		case "stream_options":
			x.so = span{k: k, start: start, end: end, members: s.closed}
			x.iu, x.pending = x.pending, span{}
		}
	case 2:
		if string(s.key(0)) == "stream_options" && string(s.key(1)) == "include_usage" {
			x.pending = span{k: k, start: start, end: end}
		}
	}
}

func (x *includeSink) docEnd() {}

// Reserve is the most output tokens the request may use, as DESIGN.md
// takes it: its limit for each answer it asks for; 0 when it sets no
// limit. Counts saturate.
func (r Request) Reserve() int64 {
	n := max(r.Choices, 1)
	if r.MaxOutput > math.MaxInt64/n {
		return math.MaxInt64
	}
	return r.MaxOutput * n
}
