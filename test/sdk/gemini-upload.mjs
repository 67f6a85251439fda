// Drives the official Google Gen AI SDK (@google/genai) against till in
// base-URL mode: two Gemini Files API uploads, one from a file on disk
// (GEMINI_UPLOAD_FILE) and one from a Blob, each a resumable upload (a
// start, then the bytes and the finalize at the session URL the start
// names). The app holds only a dummy key; till attaches the real one.
// Prints one JSON object for the Go test.
import { GoogleGenAI } from "@google/genai";

const ai = new GoogleGenAI({
  apiKey: "dummy-key-held-by-the-app",
  httpOptions: { baseUrl: process.env.GEMINI_BASE_URL, timeout: 20_000 },
});

const fromPath = await ai.files.upload({
  file: process.env.GEMINI_UPLOAD_FILE,
  config: { mimeType: "text/plain" },
});
const fromBlob = await ai.files.upload({
  file: new Blob(["from a blob"], { type: "text/plain" }),
  config: { mimeType: "text/plain" },
});

console.log(JSON.stringify({
  path: { name: fromPath.name, sizeBytes: fromPath.sizeBytes, sha256Hash: fromPath.sha256Hash },
  blob: { name: fromBlob.name, sizeBytes: fromBlob.sizeBytes, sha256Hash: fromBlob.sha256Hash },
}));
