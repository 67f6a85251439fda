// Drives the official openai SDK against till in base-URL mode: one chat
// completion and one streamed chat completion. The app holds only a dummy
// key; till attaches the real one. Prints one JSON object for the Go test.
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.OPENAI_BASE_URL,
  apiKey: "sk-dummy-key-held-by-the-app",
  maxRetries: 0,
  timeout: 20_000,
});

const completion = await client.chat.completions.create({
  model: "gpt-test",
  messages: [{ role: "user", content: "Say hello" }],
});

const stream = await client.chat.completions.create({
  model: "gpt-test",
  messages: [{ role: "user", content: "Count" }],
  stream: true,
});
const chunks = [];
for await (const chunk of stream) {
  chunks.push(chunk.choices[0]?.delta?.content ?? "");
}

console.log(JSON.stringify({
  completion: completion.choices[0].message.content,
  streamed: chunks.join(""),
  chunks: chunks.length,
}));
