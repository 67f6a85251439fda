// Drives the official openai SDK through till as an HTTPS proxy (undici's
// ProxyAgent, from HTTPS_PROXY); the app trusts till's CA through
// NODE_EXTRA_CA_CERTS, as `till env` prints. One chat completion and one
// streamed one. Prints one JSON object for the Go test.
import OpenAI from "openai";
import { fetch, ProxyAgent } from "undici";

const agent = new ProxyAgent(process.env.HTTPS_PROXY);
const client = new OpenAI({
  baseURL: process.env.OPENAI_BASE_URL,
  apiKey: "sk-dummy-key-held-by-the-app",
  maxRetries: 0,
  timeout: 20_000,
  fetch: (url, init) => fetch(url, { ...init, dispatcher: agent }),
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
await agent.close();
console.log(JSON.stringify({
  completion: completion.choices[0].message.content,
  streamed: chunks.join(""),
  chunks: chunks.length,
}));
