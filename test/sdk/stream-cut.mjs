// Drives the official openai SDK as apps commonly do with a streamed
// answer: iterate the stream and `break` once the part needed has arrived
// (the SDK then aborts the HTTP request). API=chat or API=responses.
// Prints what the app got as JSON.
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.OPENAI_BASE_URL,
  apiKey: "sk-dummy-key-held-by-the-app",
  maxRetries: 0,
  timeout: 20_000,
});
const out = {};
try {
  if (process.env.API === "responses") {
    const stream = await client.responses.create({
      model: "o3",
      previous_response_id: "resp_long_conversation",
      input: "And the capital of France?",
      stream: true,
    });
    for await (const ev of stream) {
      if (ev.type === "response.output_text.delta") {
        out.text = ev.delta;
        break;
      }
    }
  } else {
    const stream = await client.chat.completions.create({
      model: "o3",
      reasoning_effort: "high",
      messages: [{ role: "user", content: "Prove it, then answer in one word." }],
      stream: true,
    });
    for await (const chunk of stream) {
      const c = chunk.choices[0]?.delta?.content;
      if (c) {
        out.text = c;
        break;
      }
    }
  }
} catch (err) {
  out.error = { status: err.status, code: err.error?.error?.code ?? err.code };
}
console.log(JSON.stringify(out));
