// Drives the official @octokit/rest package against till in base-URL
// mode: the app holds a dummy token; till attaches a GitHub App
// installation token it minted. Prints what the app saw as JSON.
import { Octokit } from "@octokit/rest";

const octokit = new Octokit({ baseUrl: process.env.GITHUB_BASE_URL, auth: "ghp_dummy_held_by_the_app", request: { retries: 0 } });
const out = {};
try {
  const { data, status } = await octokit.rest.repos.get({ owner: "till", repo: "till" });
  out.status = status;
  out.fullName = data.full_name;
} catch (err) {
  out.error = { status: err.status, message: String(err.message).slice(0, 200) };
}
console.log(JSON.stringify(out));
