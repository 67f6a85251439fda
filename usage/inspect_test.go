package usage

import (
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestInspect(t *testing.T) {
	tests := []struct {
		name   string
		format Format
		path   string
		body   string
		want   Request
		err    string // a part of the error, "" for none
	}{
		{"openai chat", OpenAI, "/v1/chat/completions",
			`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],"max_tokens":100}`,
			Request{Model: "gpt-4o-mini", MaxOutput: 100}, ""},
		{"openai stream, larger limit wins", OpenAI, "/v1/chat/completions",
			`{"model":"o3","stream":true,"max_tokens":100,"max_completion_tokens":5000}`,
			Request{Model: "o3", Stream: true, MaxOutput: 5000}, ""},
		{"openai max_completion_tokens alone", OpenAI, "/v1/chat/completions",
			`{"model":"o3","max_completion_tokens":70,"stream":false}`,
			Request{Model: "o3", MaxOutput: 70}, ""},
		{"openai responses", OpenAI, "/v1/responses",
			`{"model":"gpt-4.1","input":"Hi","max_output_tokens":300,"stream":true}`,
			Request{Model: "gpt-4.1", Stream: true, MaxOutput: 300}, ""},
		{"openai background response", OpenAI, "/v1/responses",
			`{"model":"gpt-5","input":"Hi","background":true,"metadata":{"background":false}}`,
			Request{Model: "gpt-5", Background: true}, ""},
		{"background twice", OpenAI, "/v1/responses", `{"background":false,"background":true}`, Request{}, "more than once"},
		{"background not a boolean", OpenAI, "/v1/responses", `{"background":1}`, Request{}, `"background" is not true or false`},
		{"anthropic", Anthropic, "/v1/messages",
			`{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"Hello"}],"metadata":{"model":"x","max_tokens":5}}`,
			Request{Model: "claude-sonnet-4-5", Stream: true, MaxOutput: 1024}, ""},
		{"bedrock converse", Anthropic, "/model/anthropic.claude-3-haiku-20240307-v1:0/converse",
			`{"messages":[{"role":"user","content":[{"text":"Hi"}]}],"inferenceConfig":{"maxTokens":512,"temperature":0.5}}`,
			Request{MaxOutput: 512}, ""},
		{"inferenceConfig twice", Anthropic, "/converse", `{"inferenceConfig":{},"inferenceConfig":{"maxTokens":9999}}`, Request{}, `"inferenceConfig" more than once`},
		{"cohere", Cohere, "/v2/chat",
			`{"model":"command-a-03-2025","messages":[{"role":"user","content":"Hi"}],"stream":true,"max_tokens":50}`,
			Request{Model: "command-a-03-2025", Stream: true, MaxOutput: 50}, ""},
		{"gemini generate", Gemini, "/v1beta/models/gemini-2.5-flash:generateContent",
			`{"contents":[{"parts":[{"text":"Hi"}]}],"generationConfig":{"temperature":0.2,"maxOutputTokens":800}}`,
			Request{Model: "gemini-2.5-flash", MaxOutput: 800}, ""},
		{"gemini stream", Gemini, "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
			`{"contents":[]}`, Request{Model: "gemini-2.5-pro", Stream: true}, ""},
		{"gemini v1 path", Gemini, "/v1/models/gemini-2.5-flash-lite:countTokens", ``,
			Request{Model: "gemini-2.5-flash-lite"}, ""},
		{"gemini tuned model", Gemini, "/v1beta/tunedModels/my-model-7:generateContent", `{}`,
			Request{Model: "tunedModels/my-model-7"}, ""},
		// Google's third binding: the path's model is served, not the body's.
		{"gemini dynamic model", Gemini, "/v1beta/dynamic/some-id:generateContent",
			`{"model":"models/gemini-2.5-flash","contents":[]}`, Request{Model: "dynamic/some-id"}, ""},
		{"gemini dynamic stream", Gemini, "/v1beta/dynamic/some-id:streamGenerateContent?alt=sse",
			`{"model":"models/gemini-2.5-flash"}`, Request{Model: "dynamic/some-id", Stream: true}, ""},
		// Vertex AI's binding of a tuned or deployed model: the endpoint
		// in the path is served, not the body's model.
		{"vertex endpoint", Gemini, "/v1/projects/p/locations/us-central1/endpoints/123:generateContent",
			`{"model":"gemini-2.5-flash","contents":[]}`, Request{Model: "endpoints/123"}, ""},
		{"vertex endpoint stream", Gemini, "/v1/projects/p/locations/us-central1/endpoints/123:streamGenerateContent?alt=sse",
			`{"model":"gemini-2.5-flash"}`, Request{Model: "endpoints/123", Stream: true}, ""},
		{"vertex publisher model", Gemini, "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro:generateContent",
			`{"model":"gemini-2.5-flash"}`, Request{Model: "gemini-2.5-pro"}, ""},
		{"vertex deployed model, openai-compatible", Gemini, "/v1beta1/projects/p/locations/us-central1/endpoints/123/chat/completions",
			`{"model":"google/gemini-2.5-flash","stream":true}`, Request{Model: "endpoints/123", Stream: true}, ""},
		{"vertex openai-compatible", Gemini, "/v1/projects/p/locations/us-central1/endpoints/openapi/chat/completions",
			`{"model":"google/gemini-2.5-flash"}`, Request{Model: "google/gemini-2.5-flash"}, ""},
		// A server that merges slashes and drops ";parameters" runs
		// the model behind them.
		{"gemini model behind an empty segment", Gemini, "/v1beta/models//gemini-2.5-pro:streamGenerateContent?alt=sse",
			`{"model":"gemini-2.5-flash"}`, Request{Model: "gemini-2.5-pro", Stream: true}, ""},
		{"gemini model behind a parameter", Gemini, "/v1beta/models;x/gemini-2.5-pro:generateContent",
			`{"model":"gemini-2.5-flash"}`, Request{Model: "gemini-2.5-pro"}, ""},
		{"vertex endpoint behind empty segments", Gemini, "/v1/projects/p/locations/l/endpoints///123:generateContent",
			`{"model":"gemini-2.5-flash"}`, Request{Model: "endpoints/123"}, ""},
		{"gemini path wins over body", Gemini, "/v1beta/models/gemini-2.5-flash:generateContent",
			`{"model":"gemini-2.5-pro"}`, Request{Model: "gemini-2.5-flash"}, ""},
		{"gemini openai-compatible", Gemini, "/v1beta/openai/chat/completions",
			`{"model":"gemini-2.5-pro","stream":true,"max_tokens":9}`,
			Request{Model: "gemini-2.5-pro", Stream: true, MaxOutput: 9}, ""},
		{"gemini model list", Gemini, "/v1beta/models", ``, Request{}, ""},
		{"gemini path in another format", OpenAI, "/v1beta/models/gemini-2.5-flash:generateContent", `{}`,
			Request{}, ""},
		{"empty body", OpenAI, "/v1/models", ``, Request{}, ""},
		{"blank body", OpenAI, "/v1/models", " \r\n\t", Request{}, ""},
		{"escaped key and value", OpenAI, "/v1/chat/completions",
			`{"mod\u0065l":"gpt-4o\u002dmini","stream":true}`, Request{Model: "gpt-4o-mini", Stream: true}, ""},
		{"model not a string", OpenAI, "/v1/chat/completions", `{"model":["gpt-4o"]}`, Request{}, ""},
		{"stream a string", OpenAI, "/v1/chat/completions", `{"stream":"true"}`, Request{}, `"stream" is not true or false`},
		{"stream a number", OpenAI, "/v1/chat/completions", `{"stream":1}`, Request{}, `"stream" is not true or false`},
		{"stream null", OpenAI, "/v1/chat/completions", `{"stream":null}`, Request{}, ""},
		{"stream false", OpenAI, "/v1/chat/completions", `{"stream":false}`, Request{}, ""},
		{"gemini proto spelling", Gemini, "/v1beta/models/g:generateContent",
			`{"generation_config":{"max_output_tokens":60000}}`, Request{Model: "g", MaxOutput: 60000}, ""},
		{"gemini mixed spelling", Gemini, "/v1beta/models/g:generateContent",
			`{"generationConfig":{"max_output_tokens":70}}`, Request{Model: "g", MaxOutput: 70}, ""},
		{"gemini both spellings", Gemini, "/v1beta/models/g:generateContent",
			`{"generationConfig":{"maxOutputTokens":1},"generation_config":{"max_output_tokens":99999}}`, Request{}, "more than once"},
		{"gemini limit in both spellings", Gemini, "/v1beta/models/g:generateContent",
			`{"generationConfig":{"maxOutputTokens":1,"max_output_tokens":99999}}`, Request{}, `"generationConfig.maxOutputTokens" more than once`},
		{"bad limits ignored", OpenAI, "/v1/chat/completions",
			`{"max_tokens":-5,"max_completion_tokens":"nine","max_output_tokens":2.5}`, Request{}, ""},
		{"several answers", OpenAI, "/v1/chat/completions", `{"n":3,"max_tokens":100}`, Request{MaxOutput: 100, Choices: 3}, ""},
		{"best_of", OpenAI, "/v1/completions", `{"best_of":5,"n":2,"max_tokens":10}`, Request{MaxOutput: 10, Choices: 5}, ""},
		{"candidate count", Gemini, "/v1beta/models/g:generateContent",
			`{"generationConfig":{"candidateCount":4,"maxOutputTokens":50}}`, Request{Model: "g", MaxOutput: 50, Choices: 4}, ""},
		{"n twice", OpenAI, "/v1/chat/completions", `{"n":1,"n":9}`, Request{}, `"n" more than once`},
		{"limit as a string", Gemini, "/v1beta/models/g:generateContent",
			`{"generationConfig":{"maxOutputTokens":"4096"}}`, Request{Model: "g", MaxOutput: 4096}, ""},
		{"exponent limit", OpenAI, "/v1/chat/completions", `{"max_tokens":1e3}`, Request{MaxOutput: 1000}, ""},
		{"unicode model", OpenAI, "/v1/chat/completions", `{"model":"m\u00e9\ud83d\ude00"}`,
			Request{Model: "mé😀"}, ""},
		{"not json", OpenAI, "/v1/chat/completions", `model=gpt-4o`, Request{}, "not valid JSON"},
		{"truncated json", OpenAI, "/v1/chat/completions", `{"model":"gpt-4o"`, Request{}, "not valid JSON"},
		{"array", OpenAI, "/v1/chat/completions", `[{"model":"gpt-4o"}]`, Request{}, "not a JSON object"},
		{"string", OpenAI, "/v1/chat/completions", `"gpt-4o"`, Request{}, "not a JSON object"},
		{"null", OpenAI, "/v1/chat/completions", `null`, Request{}, "not a JSON object"},
		{"duplicate model", OpenAI, "/v1/chat/completions",
			`{"model":"gpt-4o-mini","model":"o3"}`, Request{}, `"model" more than once`},
		{"duplicate model, escaped", OpenAI, "/v1/chat/completions",
			`{"model":"gpt-4o-mini","\u006dodel":"o3"}`, Request{}, `"model" more than once`},
		{"duplicate stream", OpenAI, "/v1/chat/completions",
			`{"stream":false,"stream":true}`, Request{}, `"stream" more than once`},
		{"duplicate generationConfig", Gemini, "/v1beta/models/g:generateContent",
			`{"generationConfig":{},"generationConfig":{"maxOutputTokens":99}}`, Request{}, `"generationConfig" more than once`},
		// Go's encoding/json and ASP.NET Core take a member in any case.
		{"model in another case", OpenAI, "/v1/chat/completions",
			`{"model":"gpt-4o-mini","MODEL":"o3"}`, Request{}, `another case: "model"`},
		{"stream folded", OpenAI, "/v1/chat/completions", `{"\u017ftream":true}`, Request{}, `another case: "stream"`},
		// A reader comparing names by their upper case reads ı as I.
		{"include_usage with a dotless i", OpenAI, "/v1/chat/completions",
			`{"stream":true,"stream_options":{"include_usage":true,"\u0131nclude_usage":false}}`, Request{}, `another case: "include_usage"`},
		{"include_usage in another case", OpenAI, "/v1/chat/completions",
			`{"stream":true,"stream_options":{"include_usage":true,"Include_Usage":false}}`, Request{}, `another case: "include_usage"`},
		{"tool model in another case", Anthropic, "/v1/messages",
			`{"model":"m","tools":[{"type":"advisor_20260301","Model":"o"}]}`, Request{}, `another case: "model"`},
		{"candidate count in another case", Gemini, "/v1beta/models/g:generateContent",
			`{"generation_config":{"Candidate_Count":8}}`, Request{}, `another case: "candidate_count"`},
		{"other case where nothing is read", OpenAI, "/v1/chat/completions",
			`{"model":"m","metadata":{"Model":"x"},"generationConfig":{"Model":"x"},"stream_options":{"Stream":1},"tools":[{"type":"function","function":{"name":"Model"}}]}`,
			Request{Model: "m"}, ""},
		{"long model", OpenAI, "/v1/chat/completions",
			`{"model":"` + strings.Repeat("x", 300) + `"}`, Request{}, "longer than"},
		{"anthropic advisor", Anthropic, "/v1/messages",
			`{"model":"claude-haiku-4-5","tools":[{"type":"advisor_20260301","name":"advisor","model":"claude-opus-4-8"},{"name":"f","input_schema":{"properties":{"model":{"type":"string"}}}}]}`,
			Request{Model: "claude-haiku-4-5", Others: []string{"claude-opus-4-8"}}, ""},
		{"anthropic fallbacks", Anthropic, "/v1/messages",
			`{"model":"claude-fable-5","fallbacks":[{"model":"claude-opus-4-8","max_tokens":9},"claude-sonnet-5"]}`,
			Request{Model: "claude-fable-5", Others: []string{"claude-opus-4-8", "claude-sonnet-5"}}, ""},
		{"fallbacks anthropic picks", Anthropic, "/v1/messages", `{"model":"claude-fable-5","fallbacks":"default"}`,
			Request{Model: "claude-fable-5", Unnamed: true}, ""},
		{"fallbacks off", Anthropic, "/v1/messages", `{"model":"claude-fable-5","fallbacks":"off"}`, Request{Model: "claude-fable-5"}, ""},
		{"fallbacks null", Anthropic, "/v1/messages", `{"model":"claude-fable-5","fallbacks":null}`, Request{Model: "claude-fable-5"}, ""},
		{"tools given twice", Anthropic, "/v1/messages",
			`{"tools":[{"type":"advisor_20260301","model":"a"}],"tools":[{"type":"advisor_20260301","model":"b"}]}`,
			Request{Others: []string{"a", "b"}}, ""},
		{"image tool", OpenAI, "/v1/responses", `{"model":"gpt-5","tools":[{"type":"image_generation","model":"gpt-image-2"}]}`,
			Request{Model: "gpt-5", Others: []string{"gpt-image-2"}}, ""},
		{"image tool with its default model", OpenAI, "/v1/responses",
			`{"model":"gpt-5","tools":[{"type":"web_search"},{"type":"image_generation","size":"auto","model":null}]}`,
			Request{Model: "gpt-5", Unnamed: true}, ""},
		{"tool model not a string", Anthropic, "/v1/messages", `{"tools":[{"type":"advisor_20260301","model":{"id":"x"}}]}`,
			Request{Unnamed: true}, ""},
		{"tool model too long", Anthropic, "/v1/messages", `{"tools":[{"model":"` + strings.Repeat("x", 300) + `"}]}`,
			Request{Unnamed: true}, ""},
		{"too many other models", Anthropic, "/v1/messages", `{"tools":[` + strings.Repeat(`{"model":"m"},`, maxOthers) + `{"model":"n"}]}`,
			Request{Others: slices.Repeat([]string{"m"}, maxOthers), Unnamed: true}, ""},
		{"deep nesting", OpenAI, "/v1/chat/completions",
			`{"model":"m","x":` + strings.Repeat("[", 1100) + strings.Repeat("]", 1100) + `}`, Request{}, "nests too deeply"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Inspect(tt.format, tt.path, []byte(tt.body))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one with %q", err, tt.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestIncludeUsage(t *testing.T) {
	tests := []struct {
		name, body, want string // want "" means unchanged
	}{
		{"absent", `{"model":"gpt-4o","stream":true,"messages":[]}`,
			`{"model":"gpt-4o","stream":true,"messages":[],"stream_options":{"include_usage":true}}`},
		{"absent, pretty", "{\n  \"stream\": true,\n  \"n\": 1.50000000000000000001\n}\n",
			"{\n  \"stream\": true,\n  \"n\": 1.50000000000000000001,\"stream_options\":{\"include_usage\":true}\n}\n"},
		{"false", `{"stream":true,"stream_options":{"include_usage":false},"x":1e400}`,
			`{"stream":true,"stream_options":{"include_usage":true},"x":1e400}`},
		{"null include_usage", `{"stream":true,"stream_options":{"include_usage":null}}`,
			`{"stream":true,"stream_options":{"include_usage":true}}`},
		{"null stream_options", `{"stream_options":null,"stream":true}`,
			`{"stream_options":{"include_usage":true},"stream":true}`},
		{"empty stream_options", `{"stream":true,"stream_options":{ }}`,
			`{"stream":true,"stream_options":{"include_usage":true}}`},
		{"other stream_options", `{"stream":true,"stream_options":{"x":"y"}}`,
			`{"stream":true,"stream_options":{"include_usage":true,"x":"y"}}`},
		{"last duplicate counts", `{"stream":true,"stream_options":{"include_usage":true},"stream_options":{"include_usage":false}}`,
			`{"stream":true,"stream_options":{"include_usage":true},"stream_options":{"include_usage":true}}`},
		{"nested look-alike is not it", `{"stream":true,"x":{"stream_options":{"include_usage":true}}}`,
			`{"stream":true,"x":{"stream_options":{"include_usage":true}},"stream_options":{"include_usage":true}}`},
		{"true already", `{"stream":true,"stream_options":{"include_usage":true}}`, ""},
		{"stream false", `{"stream":false}`, ""},
		{"stream absent", `{"model":"gpt-4o"}`, ""},
		{"stream not a bool", `{"stream":"true"}`, ""},
		{"last stream false", `{"stream":true,"stream":false}`, ""},
		{"stream_options not an object", `{"stream":true,"stream_options":"x"}`, ""},
		{"not json", `stream=true`, ""},
		{"invalid json", `{"stream":true,}`, ""},
		{"array", `[{"stream":true}]`, ""},
		{"empty", ``, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.body)
			got, changed := IncludeUsage(in)
			if tt.want == "" {
				if changed || string(got) != tt.body {
					t.Fatalf("changed to %s", got)
				}
				return
			}
			if !changed || string(got) != tt.want {
				t.Fatalf("got %s (changed %v), want %s", got, changed, tt.want)
			}
			if string(in) != tt.body {
				t.Fatal("the input was modified")
			}
		})
	}
}

func TestPeekSkipsValidation(t *testing.T) {
	body := []byte(`{"model":"gpt-4o","max_tokens":7,"messages":[{"role":"user","content":"hi"}]}`)
	want, err := Inspect(OpenAI, "/v1/chat/completions", body)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Peek(OpenAI, "/v1/chat/completions", body); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Peek: %+v %v, want %+v", got, err, want)
	}
	for _, bad := range []string{`[1]`, `{"model":"a","model":"b"}`, `{"model":`} {
		if r, err := Peek(OpenAI, "/v1/chat/completions", []byte(bad)); err == nil && r.Model != "" {
			t.Errorf("Peek(%s) read model %q", bad, r.Model)
		}
	}
}

// BenchmarkPeek1KB reads what a 1 kB chat request asks for.
func BenchmarkPeek1KB(b *testing.B) {
	body := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + strings.Repeat("lorem ipsum ", 80) + `"}]}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if r, err := Peek(OpenAI, "/v1/chat/completions", body); err != nil || r.Model == "" {
			b.Fatal(err)
		}
	}
}

// BenchmarkPeekChatRequest reads what a chat request as an SDK sends it
// asks for: a short prompt among the options, a dozen top-level members,
// each of which Peek checks for a field it reads spelt in another case.
func BenchmarkPeekChatRequest(b *testing.B) {
	body := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"temperature":0.2,"top_p":1,` +
		`"frequency_penalty":0,"presence_penalty":0,"user":"u1","seed":4,"response_format":{"type":"json_object"},` +
		`"parallel_tool_calls":true,"store":false,"metadata":{"a":"b"},"stream":true,"stream_options":{"include_usage":true},` +
		`"max_completion_tokens":300}`)
	b.ReportAllocs()
	for b.Loop() {
		if r, err := Peek(OpenAI, "/v1/chat/completions", body); err != nil || r.Model == "" {
			b.Fatal(err)
		}
	}
}

func TestReserve(t *testing.T) {
	for _, tt := range []struct {
		r    Request
		want int64
	}{
		{Request{MaxOutput: 100, Choices: 3}, 300},
		{Request{MaxOutput: 100}, 100},
		{Request{Choices: 2}, 0},
		{Request{MaxOutput: 1 << 40, Choices: 1 << 40}, math.MaxInt64},
	} {
		if got := tt.r.Reserve(); got != tt.want {
			t.Errorf("%+v.Reserve() = %d, want %d", tt.r, got, tt.want)
		}
	}
}
