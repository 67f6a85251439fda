package usage

import (
	"bytes"
	"encoding/base64"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
)

const evsType = "application/vnd.amazon.eventstream"

// evsFrame encodes one event-stream message with the SDK's encoder: an
// event (kind "event", name its :event-type) or an exception (kind
// "exception", name its :exception-type).
func evsFrame(t testing.TB, kind, name, payload string) []byte {
	t.Helper()
	msg := eventstream.Message{Payload: []byte(payload)}
	msg.Headers.Set(":message-type", eventstream.StringValue(kind))
	typeHeader := ":event-type"
	if kind == "exception" {
		typeHeader = ":exception-type"
	}
	msg.Headers.Set(typeHeader, eventstream.StringValue(name))
	msg.Headers.Set(":content-type", eventstream.StringValue("application/json"))
	var b bytes.Buffer
	if err := eventstream.NewEncoder().Encode(&b, msg); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// evsChunk encodes an InvokeModelWithResponseStream chunk: the model's own
// JSON, in base64, under "bytes" (and Bedrock's padding, "p").
func evsChunk(t testing.TB, modelJSON string) []byte {
	return evsFrame(t, "event", "chunk", `{"bytes":"`+base64.StdEncoding.EncodeToString([]byte(modelJSON))+`","p":"abcdefgh"}`)
}

// converseStream is a ConverseStream answer up to its metadata event
// (with its usage, cache reads and writes beside inputTokens), whose
// frames follow.
func converseStream(t testing.TB, end ...[]byte) []byte {
	frames := [][]byte{
		evsFrame(t, "event", "messageStart", `{"p":"abcd","role":"assistant"}`),
		evsFrame(t, "event", "contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"Hello"},"p":"abcdefghij"}`),
		evsFrame(t, "event", "contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"! How can I help?"},"p":"ab"}`),
		evsFrame(t, "event", "contentBlockStop", `{"contentBlockIndex":0,"p":"abcdefghijklmnop"}`),
		evsFrame(t, "event", "messageStop", `{"p":"abcdefg","stopReason":"end_turn"}`),
	}
	return bytes.Join(append(frames, end...), nil)
}

// converseMetadata is ConverseStream's last event, with its usage.
func converseMetadata(t testing.TB) []byte {
	return evsFrame(t, "event", "metadata", `{"metrics":{"latencyMs":612},"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJ","usage":{"cacheReadInputTokens":1500,"cacheWriteInputTokens":500,"inputTokens":12,"outputTokens":9,"totalTokens":2021}}`)
}

// invokeStream is an InvokeModelWithResponseStream answer from a Claude
// model: the model's own stream events, the last with Bedrock's
// invocation metrics. Anthropic's usage inside is not read: the metrics
// count every model family alike.
func invokeStream(t testing.TB) []byte {
	return bytes.Join([][]byte{
		evsChunk(t, `{"type":"message_start","message":{"model":"claude-3-haiku-20240307","usage":{"input_tokens":99,"output_tokens":1}}}`),
		evsChunk(t, `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}`),
		evsChunk(t, `{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":98}}`),
		evsChunk(t, `{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":25,"outputTokenCount":40,"invocationLatency":812,"firstByteLatency":301,"cacheReadInputTokenCount":100,"cacheWriteInputTokenCount":50}}`),
	}, nil)
}

// TestMeterEventStream: Bedrock's streams (ConverseStream,
// InvokeModelWithResponseStream) answer in AWS's binary event-stream
// framing, whose usage was unread: a stream without maxTokens had its
// output free under a token budget. Their usage is read however the body
// is cut into writes, on a route of any format.
func TestMeterEventStream(t *testing.T) {
	llama := bytes.Join([][]byte{
		evsChunk(t, `{"generation":"Hi","prompt_token_count":null,"generation_token_count":1,"stop_reason":null}`),
		evsChunk(t, `{"generation":"","prompt_token_count":null,"generation_token_count":2,"stop_reason":"stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":8,"outputTokenCount":2,"invocationLatency":300,"firstByteLatency":200}}`),
	}, nil)
	tests := []struct {
		name   string
		body   []byte
		want   Usage
		events int64
	}{
		{"converse-stream", converseStream(t, converseMetadata(t)), Usage{"", 2012, 1500, 9, true, 0, false, SubUsage{}}, 6},
		{"invoke-with-response-stream", invokeStream(t), Usage{"", 175, 100, 40, true, 0, false, SubUsage{}}, 4},
		{"llama", llama, Usage{"", 8, 0, 2, true, 0, false, SubUsage{}}, 2},
		// Cut before its usage, or ended by an exception: untold, its
		// events counted (a lower bound of its output).
		{"cut", converseStream(t, converseMetadata(t)[:20]), Usage{}, 5},
		{"exception", converseStream(t, evsFrame(t, "exception", "modelStreamErrorException", `{"message":"model failed","originalStatusCode":500}`)), Usage{}, 5},
		{"error message", converseStream(t, evsFrame(t, "error", "x", ``), converseMetadata(t)), Usage{}, 5},
		// After its usage: known, but partial.
		{"exception after usage", converseStream(t, converseMetadata(t), evsFrame(t, "exception", "throttlingException", `{"message":"slow down"}`)),
			Usage{"", 2012, 1500, 9, true, 0, true, SubUsage{}}, 6},
		{"cut after usage", converseStream(t, converseMetadata(t), converseMetadata(t)[:3]), Usage{"", 2012, 1500, 9, true, 0, true, SubUsage{}}, 6},
		{"empty", nil, Usage{}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, f := range fuzzFormats {
				meterAllWays(t, f, evsType, tt.body, tt.want)
				m := NewMeter(f, evsType+"; x=y")
				splitEverywhere(t, f, tt.body, tt.want)
				m.Write(tt.body)
				if got := m.Events(); got != tt.events {
					t.Errorf("%d events, want %d", got, tt.events)
				}
			}
		})
	}
}

// splitEverywhere meters body written in two pieces, split at each of
// its bytes, and checks each gives want.
func splitEverywhere(t *testing.T, f Format, body []byte, want Usage) {
	t.Helper()
	for i := range body {
		m := NewMeter(f, evsType)
		m.Write(body[:i])
		m.Write(body[i:])
		if got := m.Usage(); got != want {
			t.Fatalf("split at %d: got %+v, want %+v", i, got, want)
		}
	}
}

// TestMeterEventStreamBroken: a message whose CRC does not match, or that
// says it is longer than 1 MiB, ends the reading (the usage after it is
// unread: untold), and the meter keeps no more than a few bytes of it.
func TestMeterEventStreamBroken(t *testing.T) {
	bad := converseStream(t)
	bad[len(bad)-5] ^= 1 // the payload of messageStop
	huge := evsFrame(t, "event", "contentBlockDelta", `{"delta":{"text":"`+string(bytes.Repeat([]byte("a"), maxMessage))+`"}}`)
	hugeLen := append([]byte{0x7f, 0xff, 0xff, 0xff}, converseMetadata(t)[4:]...)
	for name, body := range map[string][]byte{
		"bad CRC":       append(bad, converseMetadata(t)...),
		"bad prelude":   append(append([]byte{0, 0, 0, 40, 0, 0, 0, 0, 1, 2, 3, 4}, make([]byte, 28)...), converseMetadata(t)...),
		"too short":     append([]byte{0, 0, 0, 3}, converseMetadata(t)...),
		"shorter":       append([]byte{0, 0, 0, 1}, converseMetadata(t)...),
		"over 1 MiB":    append(huge, converseMetadata(t)...),
		"length 2 GiB":  hugeLen,
		"payload short": append(converseStream(t)[:30], converseMetadata(t)...),
	} {
		t.Run(name, func(t *testing.T) {
			want := Usage{}
			meterAllWays(t, Anthropic, evsType, body, want)
			m := NewMeter(Anthropic, evsType)
			for i := range body {
				m.Write(body[i : i+1])
				if cap(m.es.msg) > maxEvent {
					t.Fatalf("after %d bytes, the meter holds %d", i, cap(m.es.msg))
				}
			}
			if got := m.Usage(); got != want {
				t.Fatalf("got %+v, want %+v", got, want)
			}
		})
	}
}

// TestMeterEventStreamOtherTypes: a JSON or SSE answer is not read as an
// event stream, nor an event stream as either.
func TestMeterEventStreamOtherTypes(t *testing.T) {
	if got := feed(NewMeter(Anthropic, jsonType), converseStream(t, converseMetadata(t)), 0, nil); got.Known {
		t.Errorf("an event stream read as JSON: %+v", got)
	}
	if got := feed(NewMeter(None, evsType), converseStream(t, converseMetadata(t)), 0, nil); got.Known {
		t.Errorf("format none read an event stream: %+v", got)
	}
	if got := feed(NewMeter(Anthropic, evsType), readTestdata(t, "bedrock_converse.json"), 0, nil); got.Known {
		t.Errorf("JSON read as an event stream: %+v", got)
	}
}
