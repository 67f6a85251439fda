// Drives the official @anthropic-ai/sdk against till with each way an app
// may hand it a key: a client's till token as apiKey (which the SDK sends
// as Authorization: Bearer), a placeholder apiKey beside a till token in
// X-Api-Key (both headers at once), and placeholders only, on a route that
// needs no client. Prints what the app got, per call, as one JSON object.
import Anthropic from "@anthropic-ai/sdk";

const calls = {
  "token-as-apikey": { baseURL: process.env.BASE_WEB, apiKey: process.env.TILL_TOKEN },
  "token-in-x-api-key": {
    baseURL: process.env.BASE_WEB,
    apiKey: "sk-ant-placeholder-held-by-the-app",
    defaultHeaders: { "X-Api-Key": process.env.TILL_TOKEN },
  },
  "placeholders": {
    baseURL: process.env.BASE_OPEN,
    apiKey: "sk-ant-placeholder-held-by-the-app",
    defaultHeaders: { "X-Api-Key": "sk-ant-placeholder-in-x-api-key" },
  },
};
const out = {};
for (const [name, opts] of Object.entries(calls)) {
  const client = new Anthropic({ ...opts, maxRetries: 0, timeout: 20_000 });
  try {
    const msg = await client.messages.create({
      model: "claude-sonnet-4-5",
      max_tokens: 64,
      messages: [{ role: "user", content: "Say hello" }],
    });
    out[name] = { text: msg.content[0].text };
  } catch (err) {
    out[name] = { status: err.status ?? 0, message: String(err.message).slice(0, 200) };
  }
}
console.log(JSON.stringify(out));
