// Drives till as an HTTPS proxy with undici's ProxyAgent (HTTP/1.1 and,
// allowH2, HTTP/2 inside the tunnel) and EnvHttpProxyAgent, each with a
// client's token in its proxy URL only (undici sends it on the CONNECT),
// and the openai SDK over one of them; and an http:// URL in absolute
// form. Two requests per agent, so the second rides the tunnel the first
// opened. Prints one JSON object.
import OpenAI from "openai";
import { fetch, ProxyAgent, EnvHttpProxyAgent } from "undici";

const out = {};

async function twice(name, dispatcher, base = process.env.PROVIDER_URL) {
  const got = [];
  for (let i = 0; i < 2; i++) {
    const res = await fetch(`${base}/v1/models/${name}-${i}`, { dispatcher });
    got.push(res.status + " " + (await res.text()));
  }
  out[name] = got;
}

const h1 = new ProxyAgent(process.env.PROXY_A);
await twice("undici-h1", h1);
const h2 = new ProxyAgent({ uri: process.env.PROXY_B, allowH2: true });
await twice("undici-h2", h2);
const env = new EnvHttpProxyAgent(); // HTTPS_PROXY: client a
await twice("undici-env", env);
// An http:// URL: undici tunnels it too (CONNECT, then plain HTTP), unless
// proxyTunnel is off, when it sends absolute-form requests, each with the
// proxy credentials.
const plain = new ProxyAgent({ uri: process.env.PROXY_B, proxyTunnel: false });
await twice("undici-plain", plain, process.env.PROVIDER_URL.replace("https:", "http:"));

const client = new OpenAI({
  baseURL: process.env.PROVIDER_URL + "/v1",
  apiKey: "sk-dummy-key-held-by-the-app",
  maxRetries: 0,
  timeout: 20_000,
  fetch: (u, init) => fetch(u, { ...init, dispatcher: h2 }),
});
const c = await client.chat.completions.create({ model: "gpt-test", messages: [{ role: "user", content: "hi" }] });
out["openai-h2"] = [c.choices[0].message.content];
await Promise.all([h1.close(), h2.close(), env.close(), plain.close()]);
console.log(JSON.stringify(out));
