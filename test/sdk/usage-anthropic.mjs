// Drives the official @anthropic-ai/sdk against till: a message, and a
// streamed one. Prints what the app saw as one JSON object for the Go test.
import Anthropic from "@anthropic-ai/sdk";

const client = new Anthropic({
  baseURL: process.env.ANTHROPIC_BASE_URL,
  apiKey: "sk-ant-dummy-key-held-by-the-app",
  maxRetries: 0,
  timeout: 20_000,
});
const model = "claude-sonnet-4-5";

const out = {};
try {
  const msg = await client.messages.create({
    model,
    max_tokens: 64,
    messages: [{ role: "user", content: "Say hello" }],
  });
  out.text = msg.content[0].text;
  out.usage = msg.usage;

  const stream = client.messages.stream({
    model,
    max_tokens: 64,
    messages: [{ role: "user", content: "Count" }],
  });
  const final = await stream.finalMessage();
  out.streamed = final.content[0].text;
  out.streamUsage = final.usage;
} catch (err) {
  out.error = { status: err.status, message: String(err.message).slice(0, 200) };
}
console.log(JSON.stringify(out));
