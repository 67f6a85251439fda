package proxy

import (
	"strings"

	"github.com/tillgw/till/usage"
)

// Bedrock's runtime names the model a request runs in its path, not in
// its body, and the AWS SDKs escape every byte of it but the unreserved
// ones: an ARN (an inference profile, which cross-region inference
// needs; a provisioned, custom or imported model; a prompt router) goes
// as /model/arn%3Aaws%3Abedrock%3A...%3Ainference-profile%2Fus.anthropic.../invoke.
// A route that signs for Bedrock (aws_sigv4 service bedrock) reads the
// model there, for its model rules and its records, and takes that one
// encoded slash, which every other path is refused.

// bedrockOps are the Bedrock runtime operations whose path names a
// model, /model/{modelId}/OP: the request URIs of the AWS SDKs'
// bedrockruntime clients.
var bedrockOps = []string{"invoke", "invoke-with-response-stream", "converse", "converse-stream", "count-tokens", "invoke-with-bidirectional-stream"}

// errEncodedSlash refuses an encoded slash that checkPath left to the
// route, and the route does not take.
var errEncodedSlash = apiError{CodeBadRequest, reasonEncodedSlash + " (a route that signs for Bedrock takes one in the model id of /model/{modelId}/invoke, /converse and the like only)"}

// modelPath reads, on a route that signs for Bedrock, the model that t's
// upstream path names under /model/: what lies between "/model/" and the
// path's last "/", decoded, an ARN's "/" included (the AWS SDKs send it
// escaped, %2F; other clients as is). It is decided on the upstream path,
// after the route's own, whose first segment is compared in any case.
// raw is the app's escaped path: an encoded slash in it (which checkPath
// let by only where a model id may be) must be in that model id, on such
// a route, before one of bedrockOps; else the request is refused.
func (t *target) modelPath(raw string) *apiError {
	slashes := encodedSlashes(raw)
	rel, relRaw, ok := t.relative()
	first, rest, isModel := strings.Cut(strings.TrimPrefix(rel, "/"), "/")
	underModel := isModel && strings.EqualFold(first, "model")
	if t.route.bedrock && ok && hasEmptySegment(rel, underModel) {
		return &errBedrockEmptySegment
	}
	if !t.route.bedrock || !ok || !strings.EqualFold(first, "model") {
		if slashes > 0 {
			return &errEncodedSlash
		}
		return nil
	}
	t.namesModel, t.model = isModel, rest
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		t.model = rest[:i]
	}
	if slashes > 0 {
		_, restRaw, _ := strings.Cut(strings.TrimPrefix(relRaw, "/"), "/")
		i := strings.LastIndexByte(restRaw, '/')
		if i < 0 || encodedSlashes(restRaw[:i]) != slashes || !bedrockOp(restRaw[i+1:]) {
			return &errEncodedSlash
		}
	}
	return nil
}

// errBedrockEmptySegment refuses, on a route that signs for Bedrock, a
// path with an empty segment, where the model may hide from modelPath.
var errBedrockEmptySegment = apiError{CodeBadRequest, "on a route that signs for Bedrock, the request path must not have an empty segment (// anywhere, or a / ending a /model/ path): till reads the model from /model/{modelId}/OP as written, and a server that merges slashes would run another"}

// hasEmptySegment reports whether rel, a Bedrock route's upstream path
// after its upstream's own, has an empty segment that could move where
// Bedrock finds the model: "//" anywhere ("//model/ID/converse" names no
// model to modelPath, which then reads the body's), or, under /model/, a
// last "/" (the id would take the operation in). Other paths may end in
// "/" (bedrock-agent-runtime's POST /sessions/).
func hasEmptySegment(rel string, underModel bool) bool {
	return strings.Contains(rel, "//") || underModel && len(rel) > len("/model/") && strings.HasSuffix(rel, "/")
}

// relative returns t's upstream path after the route's upstream's own,
// decoded and escaped as the app sent it, or false when it does not
// start with it.
func (t *target) relative() (rel, relRaw string, ok bool) {
	rel, ok = strings.CutPrefix(t.outPath, strings.TrimSuffix(t.route.upstream.Path, "/"))
	if !ok || !strings.HasPrefix(rel, "/") {
		return "", "", false
	}
	if t.rawPath == "" {
		return rel, rel, true
	}
	relRaw, ok = strings.CutPrefix(t.rawPath, strings.TrimSuffix(t.route.upstream.EscapedPath(), "/"))
	return rel, relRaw, ok && strings.HasPrefix(relRaw, "/")
}

// bedrockOp reports whether op, escaped, is one of bedrockOps.
func bedrockOp(op string) bool {
	for _, o := range bedrockOps {
		if op == o {
			return true
		}
	}
	return false
}

// encodedSlashes counts the encoded slashes (%2F, %2f) in the escaped
// path raw.
func encodedSlashes(raw string) int {
	n := 0
	for i := 0; i+2 < len(raw); i++ {
		if raw[i] == '%' && raw[i+1] == '2' && lower(raw[i+2]) == 'f' {
			n++
		}
	}
	return n
}

// pathForRules is the path the route's allow.paths match: the upstream
// path, in which a Bedrock model id that holds a "/" (an ARN's) stays one
// segment, its slashes written %2F. No path rule can name such a
// segment (config.ParseGlob refuses an encoded slash), so only "*" and
// "**" match it: an ARN cannot walk a rule written for other segments.
func (t target) pathForRules() string {
	if !t.namesModel || !strings.Contains(t.model, "/") {
		return t.outPath
	}
	j := strings.LastIndexByte(t.outPath, '/') // the model ends there (modelPath)
	i := j - len(t.model)
	return t.outPath[:i] + strings.ReplaceAll(t.model, "/", "%2F") + t.outPath[j:]
}

// awsNamedModel returns the id at the end of the ARN of a Bedrock
// resource that AWS names after the model it runs: a foundation model
// (arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0)
// or a system-defined (cross-region) inference profile
// (arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0).
// Resources an account creates and names (application inference
// profiles, provisioned, custom and imported models, prompts, prompt
// routers) can run any model whatever their id says: their ARNs are
// matched whole, never by id.
func awsNamedModel(arn string) (string, bool) {
	f := strings.SplitN(arn, ":", 6)
	if len(f) != 6 || f[0] != "arn" || !strings.HasPrefix(f[1], "aws") || f[2] != "bedrock" ||
		strings.Trim(f[3], "abcdefghijklmnopqrstuvwxyz0123456789-") != "" || strings.Trim(f[4], "0123456789") != "" {
		return "", false
	}
	kind, id, ok := strings.Cut(f[5], "/")
	if !ok || id == "" || strings.Contains(id, "/") || kind != "foundation-model" && kind != "inference-profile" {
		return "", false
	}
	return id, true
}

// allowed reports whether a rule of the route matches model. On a route
// that signs for Bedrock, the ARN of a foundation model or of a
// system-defined inference profile is allowed by a rule that allows its
// id (awsNamedModel) as well.
func (rt *route) allowed(model string) bool {
	if rt.matchesModel(model) {
		return true
	}
	id, ok := awsNamedModel(model)
	return ok && rt.bedrock && rt.matchesModel(id)
}

// matchesModel reports whether a rule of the route matches name.
func (rt *route) matchesModel(name string) bool {
	for _, m := range rt.models {
		if usage.MatchModel(m, name) {
			return true
		}
	}
	return false
}
