package proxy

import "strings"

// Bedrock's runtime names the model a request runs in its path, not in
// its body: POST /model/{modelId}/invoke, /invoke-with-response-stream,
// /converse, /converse-stream, /count-tokens and
// /invoke-with-bidirectional-stream (the request URIs of the AWS SDKs'
// bedrockruntime clients). A route that signs for Bedrock (aws_sigv4
// service bedrock) reads the model there, for its model rules and its
// records, whatever a body says.

// modelPath reads, on a route that signs for Bedrock, the model that t's
// upstream path names under /model/: what lies between "/model/" and the
// path's last "/", decoded, an ARN's "/" included (the AWS SDKs send it
// escaped, %2F; other clients as is). It is decided on the upstream path,
// after the route's own, whose first segment is compared in any case.
func (t *target) modelPath() {
	rt := t.route
	if !rt.bedrock {
		return
	}
	rel, ok := strings.CutPrefix(t.outPath, strings.TrimSuffix(rt.upstream.Path, "/"))
	if !ok || !strings.HasPrefix(rel, "/") {
		return
	}
	first, rest, ok := strings.Cut(rel[1:], "/")
	if !ok || !strings.EqualFold(first, "model") {
		return
	}
	t.namesModel = true
	t.model = rest
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		t.model = rest[:i]
	}
}
