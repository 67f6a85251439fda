// Drives the official openai SDK against till: a chat completion, and a
// streamed one that does not ask for usage (till asks for it). Prints what
// the app saw as one JSON object for the Go test.
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.OPENAI_BASE_URL,
  apiKey: "sk-dummy-key-held-by-the-app",
  maxRetries: 0,
  timeout: 20_000,
});
const model = process.env.MODEL || "gpt-4o-mini";

const out = {};
try {
  const completion = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "Say hello" }],
  });
  out.completion = completion.choices[0].message.content;
  out.usage = completion.usage;

  const stream = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "Count" }],
    stream: true,
  });
  const words = [];
  for await (const chunk of stream) {
    words.push(chunk.choices[0]?.delta?.content ?? "");
    if (chunk.usage) out.streamUsage = chunk.usage;
  }
  out.streamed = words.join("");
} catch (err) {
  out.error = { status: err.status, code: err.error?.error?.code ?? err.code };
}
console.log(JSON.stringify(out));
