package usage

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

var fuzzFormats = []Format{OpenAI, Anthropic, Gemini, Cohere}

// FuzzMeter checks that a Meter never panics, that how the body is cut
// into writes never changes what it reads, and that what it reports is
// sane.
func FuzzMeter(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.*")
	for _, name := range files {
		body, _ := os.ReadFile(name)
		for i := range fuzzFormats {
			f.Add(body, uint8(i), strings.HasSuffix(name, ".sse"), uint64(1))
		}
	}
	f.Add([]byte(`{"usage":{"prompt_tokens":1e2,"x":"\ud83d\ude00\u"}}`), uint8(0), false, uint64(2))
	f.Add([]byte("\ufeff"+`{"usage":{"prompt_tokens":2,"completion_tokens":3}}`), uint8(0), false, uint64(5))
	f.Add([]byte("\xef\xbb\ufeff{}"), uint8(1), false, uint64(6))
	f.Add([]byte("\ufeffdata: {\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}\n\n"), uint8(0), true, uint64(7))
	f.Add([]byte("\xef\ufeffdata: {\"usage\":{\"input_tokens\":2}}\r\r"), uint8(1), true, uint64(8))
	f.Add([]byte("data: {\"usage\":\r\ndata: {\"prompt_tokens\":2}}\r\r: x\n\n"), uint8(0), true, uint64(3))
	f.Add([]byte(`{"usage":{"input_tokens":1,"iterations":[{"type":"advisor_message","model":"m","input_tokens":5,"output_tokens":2},{"type":"compaction","input_tokens":9}]}}`),
		uint8(1), false, uint64(4))
	f.Fuzz(func(t *testing.T, body []byte, format uint8, sse bool, seed uint64) {
		fm := fuzzFormats[int(format)%len(fuzzFormats)]
		ct := "application/json"
		if sse {
			ct = "text/event-stream"
		}
		got := checkMeter(t, fm, ct, body, seed)
		if len(body) == 0 || body[0] != byteOrderMark[0] {
			// A byte order mark before an answer, JSON or an event
			// stream, hides none of it.
			if marked := checkMeter(t, fm, ct, append([]byte(byteOrderMark), body...), seed); marked != got {
				t.Fatalf("after a byte order mark: %+v; without: %+v", marked, got)
			}
		}
	})
}

// checkMeter meters body whole and in pieces of random sizes, and checks
// that each way reads the same sane usage.
func checkMeter(t *testing.T, fm Format, ct string, body []byte, seed uint64) Usage {
	rng := rand.New(rand.NewPCG(seed, seed))
	whole := feed(NewMeter(fm, ct), body, 0, rng)
	for _, step := range []int{1, 5} {
		if got := feed(NewMeter(fm, ct), body, step, rng); got != whole {
			t.Fatalf("step %d: %+v; whole: %+v", step, got, whole)
		}
	}
	if whole.InputTokens < 0 || whole.OutputTokens < 0 || whole.CachedInputTokens < 0 ||
		whole.CachedInputTokens > whole.InputTokens || whole.Sub.InputTokens < 0 || whole.Sub.OutputTokens < 0 ||
		whole.Sub.InputTokens > whole.InputTokens || whole.Sub.OutputTokens > whole.OutputTokens {
		t.Fatalf("insane usage %+v", whole)
	}
	if !whole.Known && (whole.InputTokens != 0 || whole.OutputTokens != 0) {
		t.Fatalf("unknown usage with counts %+v", whole)
	}
	return whole
}

// FuzzMeterEventStream meters Bedrock event streams (checkMeter): a
// ConverseStream's first events, then a message the SDK's encoder frames
// around the fuzzed payload (kind 0: a metadata event, 1: a chunk of it
// in base64, 2: an exception, 3: raw, framed by no one), then the fuzzed
// tail as it is: a message cut short, a bad CRC, a length out of bounds.
func FuzzMeterEventStream(f *testing.F) {
	for i, p := range []string{
		`{"usage":{"inputTokens":3,"outputTokens":4,"cacheReadInputTokens":5},"metrics":{"latencyMs":1}}`,
		`{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":25,"outputTokenCount":40}}`,
		`{"message":"throttled"}`,
		`{"usage":{"inputTokens":1e2,"outputTokens":-1}}`,
	} {
		f.Add([]byte(p), uint8(i), []byte{}, uint8(i), uint64(i))
		f.Add([]byte(p), uint8(i), converseMetadata(f), uint8(i), uint64(i))
		f.Add([]byte(p), uint8(i), converseMetadata(f)[:9], uint8(i), uint64(i))
	}
	f.Add([]byte{}, uint8(3), invokeStream(f), uint8(0), uint64(9))
	f.Fuzz(func(t *testing.T, payload []byte, kind uint8, tail []byte, format uint8, seed uint64) {
		var msg []byte
		switch kind % 4 {
		case 0:
			msg = evsFrame(t, "event", "metadata", string(payload))
		case 1:
			msg = evsChunk(t, string(payload))
		case 2:
			msg = evsFrame(t, "exception", "modelStreamErrorException", string(payload))
		default:
			msg = payload
		}
		body := slices.Concat(converseStream(t), msg, tail)
		checkMeter(t, fuzzFormats[int(format)%len(fuzzFormats)], evsType, body, seed)
	})
}

// FuzzInspect checks Inspect against encoding/json.
func FuzzInspect(f *testing.F) {
	for _, s := range []string{
		`{"model":"gpt-4o","stream":true,"max_tokens":5,"max_completion_tokens":9}`,
		`{"mod\u0065l":"x\ud83d\ude00","generationConfig":{"maxOutputTokens":1e3}}`,
		`{"model":"a","model":"b"}`,
		`[1,2]`, `{"a":[{"model":"x"}]}`, `{"background":true,"model":"o3"}`, `{"stream":"true"}`,
		`{"generation_config":{"max_output_tokens":5}}`, `{"stream":true,"max_output_tokens":-1}`, ``,
		`{"inferenceConfig":{"maxTokens":"12"},"max_tokens":3}`,
		`{"tools":[{"type":"image_generation"},{"model":"a"}],"fallbacks":[{"model":"b"},"c"]}`, `{"fallbacks":"default"}`,
		`{"Model":"a","STREAM":true,"\u017ftream":false}`,
	} {
		f.Add(uint8(0), "/v1/chat/completions", []byte(s))
		f.Add(uint8(2), "/v1beta/models/gemini-2.5-flash:streamGenerateContent", []byte(s))
	}
	f.Fuzz(func(t *testing.T, format uint8, path string, body []byte) {
		fm := fuzzFormats[int(format)%len(fuzzFormats)]
		got, err := Inspect(fm, path, body)
		if len(bytes.TrimLeft(body, " \t\r\n")) == 0 {
			if err != nil {
				t.Fatalf("empty body: %v", err)
			}
			return
		}
		var v any
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		jsonErr := dec.Decode(&v)
		m, isObject := v.(map[string]any)
		if !json.Valid(body) || jsonErr != nil || !isObject {
			if err == nil {
				t.Fatalf("no error for a body that is not a JSON object")
			}
			return
		}
		if err != nil {
			msg := err.Error()
			if !strings.Contains(msg, "more than once") && !strings.Contains(msg, "nests too deeply") &&
				!strings.Contains(msg, "longer than") && !strings.Contains(msg, "is not true or false") &&
				!strings.Contains(msg, "another case") {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		for _, name := range []string{"stream", "background"} {
			if v := m[name]; v != nil && v != true && v != false {
				t.Fatalf("no error for a %s of %v", name, v)
			}
		}
		if !utf8.Valid(body) {
			return // encoding/json replaces invalid UTF-8; Inspect keeps it
		}
		var want Request
		want.Model, _ = m["model"].(string)
		want.Stream = m["stream"] == true
		want.Background = m["background"] == true
		count := func(to *int64, v any) {
			n, ok := v.(json.Number)
			if str, isStr := v.(string); isStr {
				n, ok = json.Number(str), str != "" && strings.Trim(str, "0123456789.eE+-") == ""
			}
			if !ok {
				return
			}
			c, ok := int64(-1), false
			if i, err := n.Int64(); err == nil {
				c, ok = i, i >= 0
			} else if f, err := n.Float64(); err == nil && f >= 0 && f < math.MaxInt64 && f == math.Trunc(f) {
				c, ok = int64(f), true
			}
			if ok && c > *to {
				*to = c
			}
		}
		limit := func(v any) { count(&want.MaxOutput, v) }
		limit(m["max_tokens"])
		limit(m["max_completion_tokens"])
		limit(m["max_output_tokens"])
		count(&want.Choices, m["n"])
		count(&want.Choices, m["best_of"])
		for _, name := range []string{"generationConfig", "generation_config"} {
			if g, ok := m[name].(map[string]any); ok {
				limit(g["maxOutputTokens"])
				limit(g["max_output_tokens"])
				count(&want.Choices, g["candidateCount"])
				count(&want.Choices, g["candidate_count"])
			}
		}
		if c, ok := m["inferenceConfig"].(map[string]any); ok {
			limit(c["maxTokens"])
		}
		if fm == Gemini {
			if model, stream := geminiPath(path); model != "" {
				want.Model, want.Stream = model, want.Stream || stream
			}
		}
		// The other models of the last "tools" and "fallbacks" (which
		// encoding/json keeps) are among Inspect's, which reads all.
		for _, o := range otherModels(m) {
			if !got.Unnamed && !slices.Contains(got.Others, o) {
				t.Fatalf("other model %q not read: got %+v", o, got)
			}
		}
		got.Others, got.Unnamed = nil, false
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
		// A Go server reads members in any case, the last one winning:
		// it reads what Inspect read.
		var goServer struct {
			Model  any `json:"model"`
			Stream any `json:"stream"`
		}
		if json.Unmarshal(body, &goServer) == nil && fm != Gemini {
			if model, _ := goServer.Model.(string); model != got.Model || (goServer.Stream == true) != got.Stream {
				t.Fatalf("a Go server reads model %v and stream %v, Inspect %+v", goServer.Model, goServer.Stream, got)
			}
		}
	})
}

// otherModels are the models m names in its tools and fallbacks.
func otherModels(m map[string]any) []string {
	var out []string
	tools, _ := m["tools"].([]any)
	for _, t := range tools {
		if t, ok := t.(map[string]any); ok {
			if name, ok := t["model"].(string); ok {
				out = append(out, name)
			}
		}
	}
	fallbacks, _ := m["fallbacks"].([]any)
	for _, f := range fallbacks {
		if name, ok := f.(string); ok {
			out = append(out, name)
		} else if f, ok := f.(map[string]any); ok {
			if name, ok := f["model"].(string); ok {
				out = append(out, name)
			}
		}
	}
	return out
}

// FuzzIncludeUsage checks that IncludeUsage's output is JSON that decodes
// to its input with stream_options.include_usage set, exactly when it
// should change anything.
func FuzzIncludeUsage(f *testing.F) {
	for _, s := range []string{
		`{"model":"gpt-4o","stream":true}`,
		`{"stream":true,"stream_options":{"include_usage":false,"x":1}}`,
		`{"stream":true,"stream_options":null}`,
		`{"stream":true,"stream_options":{}}`,
		`{"stream":true,"stream_options":{"include_usage":true}}`,
		`{"stream":true,"stream_options":"x"}`,
		"{\n\"stream\" : true ,\"n\":1.000000000000000000001}\n",
		`{"stream":false}`, `[]`, `nope`,
		`{"stre\u0061m":true,"stream_options":{"include_usage":true},"stream_options":{}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		in := bytes.Clone(body)
		out, changed := IncludeUsage(body)
		if !bytes.Equal(in, body) {
			t.Fatal("the input was modified")
		}
		v, ok := decodeNumbers(body)
		m, isObject := v.(map[string]any)
		if !ok || !isObject {
			if changed || !bytes.Equal(out, body) {
				t.Fatalf("changed a body that is not a JSON object: %s", out)
			}
			return
		}
		so, hasSO := m["stream_options"]
		soMap, soIsMap := so.(map[string]any)
		want := m["stream"] == true && (!hasSO || so == nil || soIsMap && soMap["include_usage"] != true)
		if !changed {
			if want && bytes.Count(body, []byte("["))+bytes.Count(body, []byte("{")) < maxDepth {
				t.Fatalf("left unchanged: %s", body)
			}
			if !bytes.Equal(out, body) {
				t.Fatal("unchanged, yet returned other bytes")
			}
			return
		}
		if !want {
			t.Fatalf("changed %s to %s", body, out)
		}
		got, ok := decodeNumbers(out)
		if !ok {
			t.Fatalf("output is not JSON: %s", out)
		}
		if soIsMap {
			soMap["include_usage"] = true
		} else {
			m["stream_options"] = map[string]any{"include_usage": true}
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("%s\nbecame %s", body, out)
		}
	})
}

// decodeNumbers decodes one JSON value, keeping numbers as written.
func decodeNumbers(b []byte) (any, bool) {
	if !json.Valid(b) {
		return nil, false
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	err := dec.Decode(&v)
	return v, err == nil
}

// FuzzFoldKey: the key of readKeys that caseless finds for a member's
// name (foldKey, then one lookup) is the one bytes.EqualFold matches, as
// Go's encoding/json matches names (Unicode's simple folding: the long s
// and the Kelvin sign too), or by upper case (the dotless ı as I).
func FuzzFoldKey(f *testing.F) {
	for _, k := range readKeys {
		f.Add([]byte(strings.ToUpper(k)))
	}
	f.Add([]byte("\u017ftream"))
	f.Add([]byte("max_to\u212aens"))
	f.Add([]byte("MODEL\xff"))
	f.Add([]byte("\u0130nclude_usage"))
	f.Add([]byte("\u0131nclude_usage"))
	f.Fuzz(func(t *testing.T, name []byte) {
		if len(name) > keyMax {
			return // never a named key
		}
		want := ""
		// The dotless ı is I in upper case (foldKey).
		dotted := bytes.ReplaceAll(name, []byte("\u0131"), []byte("i"))
		for _, k := range readKeys {
			if bytes.EqualFold(dotted, []byte(k)) {
				want = k
			}
		}
		got := ""
		if folded, ok := foldKey(nil, name); ok {
			got = foldedReadKeys[string(folded)]
		}
		if got != want {
			t.Fatalf("%q: foldKey finds %q, bytes.EqualFold %q", name, got, want)
		}
	})
}
