package usage

import (
	"bytes"
	"encoding/binary"
	"encoding/json"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
)

// eventStreamType is the Content-Type of AWS's binary event streams, in
// which Bedrock's ConverseStream (/model/{modelId}/converse-stream) and
// InvokeModelWithResponseStream (/model/{modelId}/invoke-with-response-stream)
// answer.
const eventStreamType = "application/vnd.amazon.eventstream"

// maxMessage is the most of one event-stream message a Meter keeps while
// it waits for the rest: a longer message ends the reading, and the usage
// of an answer that had not told it by then is untold.
const maxMessage = 1 << 20

// minMessage is the length of an event-stream message without headers
// or payload: its prelude, the prelude's CRC and its own.
const minMessage = 16

// eventStreamPaths are the fields of Bedrock's streams: ConverseStream's
// metadata event ({"usage":{...},"metrics":{...}}, as Converse's answer),
// and the invocation metrics Bedrock adds to the last chunk of
// InvokeModelWithResponseStream, whatever the model.
var eventStreamPaths = map[string]field{
	"amazon-bedrock-invocationMetrics.inputTokenCount":           fInput,
	"amazon-bedrock-invocationMetrics.outputTokenCount":          fOutput,
	"amazon-bedrock-invocationMetrics.cacheReadInputTokenCount":  fCacheRead,
	"amazon-bedrock-invocationMetrics.cacheWriteInputTokenCount": fCacheWrite,
}

// eventStreamTree reads the usage of an event stream, on a route of any
// format: only Bedrock answers in one.
var eventStreamTree = newTree(bedrockPaths, eventStreamPaths)

// invocationMetrics is the key of the metrics in a chunk; a chunk without
// it is not read.
var invocationMetrics = []byte(`"amazon-bedrock-invocationMetrics"`)

// esDecoder decodes event-stream messages, checking their CRCs. It keeps
// no state between messages: one serves every Meter.
var esDecoder = eventstream.NewDecoder()

// eventStream gathers the messages of an AWS event stream (each: its total
// length and its headers' as 4-byte big-endian numbers, the prelude's CRC,
// headers, payload, the message's CRC) as the body passes in pieces.
type eventStream struct {
	msg     []byte // the message so far, when a write held part of it only
	payload []byte // the decoder's buffer for a payload
	rd      bytes.Reader
	// ended is set when reading stopped before the stream's end: an
	// exception message, a message over maxMessage or that does not
	// decode (a bad CRC).
	ended bool
}

// write reads the next piece of an event stream. A message that p holds
// whole is read in place; one split between writes is kept until its
// last byte comes.
func (e *eventStream) write(m *Meter, p []byte) {
	for len(p) > 0 && !e.ended {
		if len(e.msg) < 4 && len(e.msg)+len(p) < 4 {
			e.msg = append(e.msg, p...) // a length split between writes
			return
		}
		var prelude [4]byte
		copy(prelude[copy(prelude[:], e.msg):], p)
		n := binary.BigEndian.Uint32(prelude[:])
		switch {
		case n < minMessage || n > maxMessage:
			e.ended = true
		case len(e.msg) == 0 && int(n) <= len(p):
			e.message(m, p[:n])
			p = p[n:]
		default:
			k := min(int(n)-len(e.msg), len(p))
			e.msg, p = append(e.msg, p[:k]...), p[k:]
			if len(e.msg) == int(n) {
				e.message(m, e.msg)
				e.msg = e.msg[:0]
			}
		}
	}
}

// message reads one whole message (raw, as its prelude's length says):
// an event is counted, and a metadata event or a chunk read for its
// usage; any other message (an exception, an error, one of no type)
// ends the stream, as the AWS SDKs end it, and so does a message that
// does not decode.
func (e *eventStream) message(m *Meter, raw []byte) {
	e.rd.Reset(raw)
	msg, err := esDecoder.Decode(&e.rd, e.payload[:0])
	if err != nil {
		e.ended = true
		return
	}
	if cap(msg.Payload) <= maxEvent {
		e.payload = msg.Payload[:0]
	}
	if header(msg, ":message-type") != "event" {
		e.ended = true // an exception, an error: the SDKs stop there
		return
	}
	m.events++
	switch header(msg, ":event-type") {
	case "metadata": // ConverseStream's usage
		m.scan.write(msg.Payload)
		m.scan.finish()
	case "chunk": // {"bytes":"<base64 of the model's own chunk>"}
		var part struct {
			Bytes []byte `json:"bytes"`
		}
		if bytes.Contains(msg.Payload, []byte(`"bytes"`)) && json.Unmarshal(msg.Payload, &part) == nil &&
			bytes.Contains(part.Bytes, invocationMetrics) {
			m.scan.write(part.Bytes)
			m.scan.finish()
		}
	}
}

// header returns the string value of a message's header name, "" when
// it has none.
func header(msg eventstream.Message, name string) string {
	v, _ := msg.Headers.Get(name).(eventstream.StringValue)
	return string(v)
}

// cut reports whether the stream ended before its end: an exception, a
// message cut short or over maxMessage, or one that did not decode.
func (e *eventStream) cut() bool {
	return e.ended || len(e.msg) > 0
}
