package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/usage"
)

// loadPrices is the price table cfg holds (config.WithPrices read it),
// or the built-in one. It reads no file: a file changed since the load
// must not price what the load checked.
func loadPrices(cfg *config.Config) *usage.Prices {
	if cfg.Prices.Table != nil {
		return cfg.Prices.Table
	}
	return usage.DefaultPrices()
}

// UnpricedModels warns of the models a route allows (allow.models) that
// cfg's price table has no price for, on a route a blocking dollar
// budget covers: their requests will be refused (errModelUnpriced). A
// glob counts as priced when the table prices its fixed part ("gpt-4.1*"
// when it prices "gpt-4.1"). One line per route and model, however many
// budgets cover it.
func UnpricedModels(cfg *config.Config) []string {
	prices := loadPrices(cfg)
	var out []string
	for _, r := range cfg.Routes {
		if r.Usage == config.UsageNone || len(r.Allow.Models) == 0 {
			continue
		}
		var budgets []string
		for _, b := range cfg.Budgets {
			if b.USD > 0 && !b.Warn && (b.Routes == nil || slices.Contains(b.Routes, r.Name)) {
				budgets = append(budgets, b.Name)
			}
		}
		if len(budgets) == 0 {
			continue
		}
		which := fmt.Sprintf("budget %q limits", budgets[0])
		if len(budgets) > 1 {
			which = fmt.Sprintf("budgets %q and %d more limit", budgets[0], len(budgets)-1)
		}
		for _, m := range r.Allow.Models {
			if !prices.Priced(strings.ReplaceAll(m, "*", "")) {
				out = append(out, fmt.Sprintf("route %q allows model %q, which the price table does not price, and %s dollars: its requests will be refused (hint: add it to prices.file)", r.Name, m, which))
			}
		}
	}
	return out
}

// readAsk reads what a request on rt asks of the provider (readBody): on
// a route that signs for Bedrock, the model is the one its path names,
// when it names one, whatever the body says: Bedrock runs that one.
func (x *exchange) readAsk(w http.ResponseWriter, r *http.Request, rt *route) (ask, *apiError) {
	a, e := x.readBody(w, r, rt)
	if x.namesModel {
		a.model = x.pathModel
	}
	return a, e
}

// readBody reads what a request on rt asks of the provider from its body,
// held in memory (holdBody) when the route meters usage and the body is
// not an upload (a file, audio), or the route has model rules: the model,
// whether it streams, its reservation. A JSON body is read under any
// Content-Type but an upload's, and under that one too on a route under a
// token or dollar budget, so that it cannot dodge budgets. For an
// OpenAI-shaped stream that does not ask for usage, it asks (the final
// chunk reports the tokens), so a stream cannot escape token budgets.
// Other bodies stream on, unread. It returns the refusal to give when the
// body cannot be read.
func (x *exchange) readBody(w http.ResponseWriter, r *http.Request, rt *route) (ask, *apiError) {
	a := ask{body: x.hasBody}
	if e := x.checkFormMethod(w, r, rt); e != nil {
		return a, e
	}
	if rt.signs {
		if e, ok := x.holdBody(w, r); !ok {
			return a, e.ref()
		}
	}
	if rt.usage == usage.None {
		return a, nil
	}
	if x.hasBody && (len(rt.models) > 0 || rt.tokenBudgeted) && contentEncoded(r.Header) {
		// What the provider unpacks, till cannot read: a model, a
		// stream or a reservation could hide in it.
		return a, &errEncodedBody
	}
	if len(rt.models) == 0 && x.hasBody && (isFilesUpload(x.outPath) || isUpload(r.Header.Get("Content-Type")) && !(rt.tokenBudgeted && x.startsLikeJSON(r))) {
		return a, nil
	}
	if e, ok := x.holdBody(w, r); !ok {
		return a, e.ref()
	}
	if x.hasBody && x.held == nil {
		if rt.tokenBudgeted {
			return a, &errTooLargeToMeter
		}
		return a, nil // too large to hold: it streams, unread
	}
	inspect := usage.Peek // what the request asks is recorded and reserved
	if len(rt.models) > 0 {
		inspect = usage.Inspect // and refused on: the body must be JSON
	}
	req, err := inspect(rt.usage, x.outPath, x.held)
	if err != nil && (rt.tokenBudgeted || errors.Is(err, usage.ErrRepeatedField) || errors.Is(err, usage.ErrFieldCase) || errors.Is(err, usage.ErrStreamNotBoolean)) {
		// Not forwarded: the provider could read a stream or a model
		// that till did not meter (a field given twice or in another
		// case, a stream asked for with "true", a body nested deeper
		// than till reads), and a budget would not count it.
		return a, &apiError{CodeBadRequest, err.Error()}
	}
	if err != nil {
		return a, nil // the provider refuses what is not JSON
	}
	if req.Background && rt.tokenBudgeted {
		return a, &errLaterUnmetered
	}
	if req.Stream && rt.asksStreamUsage(x.outPath) {
		body, changed := usage.IncludeUsage(x.held)
		if !changed && rt.tokenBudgeted && !json.Valid(x.held) {
			// Read leniently, it streams; a provider as lenient would
			// stream it without the usage till did not ask for.
			return a, &apiError{CodeBadRequest, "request body is not valid JSON"}
		}
		x.held = body
	}
	a.model, a.reserve, a.readable = req.Model, req.Reserve(), true
	a.others, a.unnamed = req.Others, req.Unnamed
	return a, nil
}

// unchecked refuses a request whose use of the key till could not hold to
// the route's rules: on a route with model rules, a protocol switch
// (WebSocket), whose messages may ask for any model and are not read; on
// a route that signs with SigV4, a body signed chunk by chunk
// (chunkSigned); on a route under a token or dollar budget, what
// unmetered refuses.
func unchecked(r *http.Request, rt *route) *apiError {
	if len(rt.models) > 0 && isUpgrade(r) {
		return &errUpgradeModels
	}
	if rt.signs && chunkSigned(r.Header) {
		return &errChunkSigned
	}
	if rt.tokenBudgeted {
		return unmetered(r, rt)
	}
	return nil
}

// unmetered refuses, on a route under a token or dollar budget, a request
// whose answer till could not read the usage of: a protocol switch
// (WebSocket: OpenAI's Realtime API, Gemini Live), work that spends out
// of till's sight (spendsUnseen), or, on a Gemini route,
// an answer the app asked of Google in another form (alt=proto) or cut
// to a field mask that may leave usageMetadata out.
func unmetered(r *http.Request, rt *route) *apiError {
	if isUpgrade(r) {
		return &errUpgradeUnmetered
	}
	if r.Method == http.MethodPost && spendsUnseen(r.URL.Path) {
		return &errLaterUnmetered
	}
	if rt.usage != usage.Gemini {
		return nil
	}
	if _, ok := r.Header["X-Goog-Fieldmask"]; ok {
		return &errFieldMaskUnmetered
	}
	// Names compared decoded, so that an encoded one cannot slip through.
	for part := range queryParams(r.URL.RawQuery) {
		key, value, _ := strings.Cut(part, "=")
		k, err1 := url.QueryUnescape(key)
		v, err2 := url.QueryUnescape(value)
		k = strings.TrimPrefix(k, "$")
		if err1 != nil || err2 != nil || k == "fields" || (k == "alt" && v != "json" && v != "sse") {
			return &errFieldMaskUnmetered
		}
	}
	return nil
}

// spendsUnseen reports whether a POST to path starts spending that no
// answer to it reports: work done later (batches, fine-tuning, runs of
// assistants, evals and graders, long-running generations, caches and
// tuned models that bill as they live, agents the provider runs), or a
// session or key with which the app reaches the provider without till
// (Realtime calls and keys, Gemini Live tokens, ChatKit sessions).
// Compared in lower case, as a lenient server routes it (usage.RoutedPath).
func spendsUnseen(path string) bool {
	path = strings.ToLower(usage.RoutedPath(path))
	for _, suffix := range unseenSpending {
		if strings.HasSuffix(path, suffix) {
			return true
		}
	}
	return false
}

// unseenSpending are the path ends of spendsUnseen, in lower case.
var unseenSpending = [...]string{
	// OpenAI's and Anthropic's batches; Gemini's, Mistral's, Cohere's.
	"/batches", ":batchgeneratecontent", ":asyncbatchembedcontent", "/batch/jobs", "/embed-jobs",
	// OpenAI: fine-tuning (and a paused job resumed), Assistants and
	// evals runs (and their tool outputs), a grader run, videos (and
	// their edits, extensions and remixes).
	"/fine_tuning/jobs", "/resume", "/runs", "/submit_tool_outputs", "/run",
	"/videos", "/videos/edits", "/videos/extensions", "/remix",
	// Agents the provider runs in a loop of its own: Anthropic's and
	// OpenAI's managed agents' sessions (/v1/sessions,
	// /v1/agents/sessions) and the events that drive them; Anthropic's
	// scheduled deployments, run or unpaused.
	"/sessions", "/events", "/deployments", "/unpause",
	// Gemini: Veo's long-running generation, tuned models, context
	// caches (billed per hour they live).
	":predictlongrunning", "/tunedmodels", "/cachedcontents",
	// Vertex AI's (on a route read as Gemini's): batch prediction and
	// tuning jobs.
	"/batchpredictionjobs", "/tuningjobs",
	// Sessions and keys the app uses without till: OpenAI Realtime
	// (WebRTC calls, client secrets, sessions), ChatKit's sessions
	// (above); Gemini Live's tokens.
	"/realtime/calls", "/realtime/client_secrets", "/realtime/transcription_sessions", "/auth_tokens",
	// Bedrock: asynchronous invocations (StartAsyncInvoke: videos and
	// the like, written to S3 later) and batch inference jobs.
	"/async-invoke", "/model-invocation-job",
}

var (
	errLaterUnmetered     = apiError{CodeBadRequest, "this route is under a token or dollar budget, and till cannot count what this spends later or out of its sight (batches, fine-tuning, runs, background and long-running jobs, videos, managed agents, caches, Realtime calls, session keys): send it through a route no such budget covers"}
	errUpgradeModels      = apiError{CodeModelNotAllowed, "this route allows only the models it lists, and the messages of a protocol switch (WebSocket) are not read to check them"}
	errUpgradeUnmetered   = apiError{CodeBadRequest, "this route is under a token or dollar budget, and till cannot count the tokens of a protocol switch (WebSocket)"}
	errFieldMaskUnmetered = apiError{CodeBadRequest, "this route is under a token or dollar budget: alt (other than json or sse), fields and X-Goog-FieldMask would hide the usage till counts"}
)

// isUpgrade reports whether r asks to switch protocols (WebSocket).
func isUpgrade(r *http.Request) bool {
	return hasToken(r.Header["Connection"], "upgrade") && r.Header.Get("Upgrade") != ""
}

// asksStreamUsage reports whether a stream to path on rt is asked to
// report its usage (stream_options.include_usage): on an OpenAI route,
// any but the Responses API's (which always reports it); on the others,
// their OpenAI-compatible Chat Completions and Completions endpoints.
// Never where the provider reports it unasked, and refuses the field.
// The path is read as a lenient server routes it (usage.RoutedPath).
func (rt *route) asksStreamUsage(path string) bool {
	path = usage.RoutedPath(path)
	switch {
	case rt.streamsReportUsage:
		return false
	case rt.usage == usage.OpenAI:
		return !strings.HasSuffix(path, "/responses")
	}
	return strings.HasSuffix(path, "/completions") // chat completions too
}

// errEncodedBody refuses a request body sent compressed where till must
// read it.
var errEncodedBody = apiError{CodeBadRequest, "this route checks the model or counts tokens, and till does not read a request body sent with a Content-Encoding: send it uncompressed"}

// contentEncoded reports whether a request's body is sent with a
// Content-Encoding other than identity (gzip, which some providers undo).
func contentEncoded(h http.Header) bool {
	for _, v := range h.Values("Content-Encoding") {
		for e := range strings.SplitSeq(v, ",") {
			if e = strings.TrimSpace(e); e != "" && !strings.EqualFold(e, "identity") {
				return true
			}
		}
	}
	return false
}

// startsLikeJSON reports whether the body, after white space, starts with
// "{" (or is white space as far as it looked): a JSON request sent under
// an upload's Content-Type, in UTF-8 or, as JSON readers such as Python's
// take too, with a byte order mark or in UTF-16 or UTF-32. Unless held
// already, it reads ahead at most 512 bytes of r's body, which stay in
// it, to be read again.
func (x *exchange) startsLikeJSON(r *http.Request) bool {
	p, err := x.held, error(nil)
	if p == nil {
		br := bufio.NewReaderSize(r.Body, 512)
		r.Body = struct {
			io.Reader
			io.Closer
		}{br, r.Body}
		p, err = br.Peek(512)
	}
	rest := bytes.TrimLeft(p, " \t\r\n")
	if len(rest) == 0 {
		return x.held == nil && err == nil // 512 bytes of white space: look at it whole
	}
	for _, e := range jsonEncodings {
		if opensObject(bytes.TrimPrefix(p, []byte(e.mark)), e.width, e.at) {
			return true
		}
	}
	return false
}

// jsonEncodings are the ways of writing a JSON text that JSON readers
// take: its byte order mark, the bytes a character takes and which of
// them holds an ASCII one. UTF-32's marks go before UTF-16's, which begin
// them.
var jsonEncodings = []struct {
	mark      string
	width, at int
}{
	{"\xef\xbb\xbf", 1, 0},
	{"\x00\x00\xfe\xff", 4, 3}, {"\xff\xfe\x00\x00", 4, 0},
	{"\xfe\xff", 2, 1}, {"\xff\xfe", 2, 0},
}

// opensObject reports whether p, read as characters of width bytes whose
// ASCII byte is at, starts with "{" after JSON white space.
func opensObject(p []byte, width, at int) bool {
	for ; len(p) >= width; p = p[width:] {
		c := p[at]
		for i := range width {
			if i != at && p[i] != 0 {
				return false
			}
		}
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return c == '{'
		}
	}
	return false
}

// isUpload reports whether a Content-Type is that of an upload, which
// streams unread: multipart forms, octet streams, audio, images, video.
func isUpload(contentType string) bool {
	media, _, _ := strings.Cut(contentType, ";")
	media = strings.ToLower(strings.TrimSpace(media))
	for _, p := range []string{"multipart/", "audio/", "image/", "video/"} {
		if strings.HasPrefix(media, p) {
			return true
		}
	}
	return media == "application/octet-stream"
}

// allowsModel applies the route's model rules to what the request asks:
// a body that could not be read, or names no model, is refused; so is a
// model no rule matches, the request's or another it names for the
// provider to run (a tool's, a fallback's), and a request that lets the
// provider pick one. A request without a body or a model in its path
// (a GET of the model list) asks for no model and passes.
func (rt *route) allowsModel(a ask) (apiError, bool) {
	if len(rt.models) == 0 || (!a.body && a.model == "") {
		return apiError{}, true
	}
	if !a.readable && a.model != "" {
		a.readable = true // a model in the path, and a body that is not JSON
	}
	switch {
	case !a.readable && rt.usage == usage.None:
		return errNoModelRead, false
	case !a.readable:
		return apiError{CodeBadRequest, "this route checks the model, and the request body is not JSON it can read (or is over 1 MiB)"}, false
	case a.model == "":
		return apiError{CodeBadRequest, "this route checks the model, and the request names none"}, false
	case !rt.allowed(a.model):
		return apiError{CodeModelNotAllowed, "this route does not allow this model"}, false
	case a.unnamed:
		return errOtherUnnamed, false
	}
	for _, m := range a.others {
		if !rt.allowed(m) {
			return apiError{CodeModelNotAllowed, "this route does not allow a model this request names for a tool or a fallback"}, false
		}
	}
	return apiError{}, true
}

// errNoModelRead refuses, on a route with model rules that reads no body
// (one that signs for Bedrock, without usage), a request whose path
// names no model.
var errNoModelRead = apiError{CodeBadRequest, "this route checks the model, and reads it only from a Bedrock path /model/{modelId}/...; this request has a body and no such path (hint: usage: openai reads the body's model, as Bedrock's OpenAI-compatible API takes it)"}

// errOtherUnnamed refuses, on a route with model rules, a request that
// lets the provider run a model it does not name.
var errOtherUnnamed = apiError{CodeBadRequest, "this route checks the model, and the request lets the provider pick one it does not name (\"fallbacks\" other than a list of models, or an image_generation tool without a model): name them"}

// chargeCut charges an answer cut before it told all its usage (an app
// that hung up once it had its text, or before the answer began; a
// timeout; an Anthropic stream ended by an error event) as chargeUntold
// does. Ending early must not dodge a budget.
func (x *exchange) chargeCut(u usage.Usage, events int64, model string, prices *usage.Prices) {
	if x.readWhole && u.Known && !u.Partial {
		return // read to its end, the app there or not: its usage is whole
	}
	if x.rec.outcome == outcomeError || u.Partial {
		x.chargeUntold(u, events, model, prices)
	}
}

// chargeUntold charges a request whose key went, beyond the usage u its
// answer told: the output tokens it reserved, or a token for each event
// it streamed when that is more (one that set no max_tokens reserved
// none); and, when it told no input (OpenAI tells it in the last chunk),
// an estimate of its body's: a token per 4 bytes. Priced at the model's
// prices, or the dearest when it names none. A request none of whose last
// attempt was written (its connection was refused) reached no provider,
// and is not charged.
func (x *exchange) chargeUntold(u usage.Usage, events int64, model string, prices *usage.Prices) {
	if x.ticket == nil || x.attempts.Load() == 0 || !x.wrote.Load() {
		return
	}
	cut := usage.Usage{OutputTokens: max(x.ticket.Reserved()-u.OutputTokens, events-u.OutputTokens, 0)}
	if u.InputTokens == 0 {
		cut.InputTokens = max(int64(len(x.held)), x.bytesIn.Load()) / 4
	}
	x.cutTokens = usage.Add(cut.InputTokens, cut.OutputTokens)
	x.cutUSD, _ = prices.Cost(model, cut)
}

// meters keeps the Meters of answers that have ended, for the next ones.
var meters = sync.Pool{New: func() any { return new(usage.Meter) }}

// startMeter sets, on a route that meters usage, the meter that reads it
// from the answer res as the answer goes to the app: unzipped first when
// the upstream gzipped it all the same (gunzipAnswer).
func (x *exchange) startMeter(res *http.Response) {
	if x.metered() {
		gunzipAnswer(res)
		x.meter = meters.Get().(*usage.Meter)
		x.meter.Reset(x.route.usage, res.Header.Get("Content-Type"))
	}
}

// gunzipAnswer undoes the gzip coding of an answer that has it although
// till asked for none (Accept-Encoding: identity): the meter reads the
// answer as the app gets it, plain, so that its usage counts. An answer
// in another coding (br, zstd, several) is left as it is: its usage is
// unread, and charged as untold.
func gunzipAnswer(res *http.Response) {
	v := res.Header.Values("Content-Encoding")
	if len(v) != 1 {
		return
	}
	if coding := strings.TrimSpace(v[0]); !strings.EqualFold(coding, "gzip") && !strings.EqualFold(coding, "x-gzip") {
		return
	}
	res.Body = &gunzipBody{src: res.Body}
	res.ContentLength = -1
	delete(res.Header, "Content-Encoding")
	delete(res.Header, "Content-Length")
}

// gunzipBody reads a gzipped body plain. Its gzip header is read at the
// first Read, so that an empty body (a HEAD's, a 204's) reads as empty.
type gunzipBody struct {
	src io.ReadCloser
	zr  *gzip.Reader
}

func (b *gunzipBody) Read(p []byte) (int, error) {
	if b.zr == nil {
		zr, err := gzip.NewReader(b.src)
		if err != nil {
			return 0, err // io.EOF for an empty body
		}
		b.zr = zr
	}
	return b.zr.Read(p)
}

func (b *gunzipBody) Close() error { return b.src.Close() }

// metered reports whether the exchange's answer is read for its usage,
// and charged: on a route that meters usage, unless the request spends
// nothing (spendsNothing).
func (x *exchange) metered() bool {
	return x.route != nil && x.route.usage != usage.None && !spendsNothing(x.rec.method, x.outPath)
}

// spendsNothing reports whether a request to path costs nothing, whatever
// usage its answer tells: one that is no POST (a stored response, a batch,
// a list, looked at again: what they used was charged when they ran), a
// POST that cancels work, one that counts an input's tokens
// (Anthropic's count_tokens, OpenAI's input_tokens, Gemini's
// countTokens, Bedrock's count-tokens), or a Gemini Files API upload
// (isFilesUpload). Compared as spendsUnseen compares.
func spendsNothing(method, path string) bool {
	if method != http.MethodPost || isFilesUpload(path) {
		return true
	}
	path = strings.ToLower(strings.TrimRight(path, "/"))
	for _, suffix := range [...]string{"/cancel", "/count_tokens", "/input_tokens", ":counttokens", "/count-tokens"} {
		if strings.HasSuffix(path, suffix) {
			return true
		}
	}
	return false
}

// isFilesUpload reports whether path is the Gemini Files API's upload
// endpoint (/upload/v1beta/files): the start of a resumable upload, and
// the chunks of the file's bytes that follow it at the session URL
// (localize). It stores a file and runs no model: the chunks, sent as
// application/json by Google's SDKs, are file bytes, not a request to
// read, and the upload costs no tokens. Compared as spendsUnseen compares.
func isFilesUpload(path string) bool {
	path = strings.ToLower(strings.TrimRight(path, "/"))
	rest, ok := strings.CutSuffix(path, "/files")
	version := rest[strings.LastIndexByte(rest, '/')+1:]
	return ok && strings.HasSuffix(rest, "/upload/"+version) && strings.HasPrefix(version, "v")
}

// codeUsageUnknown is the audit reason of a forwarded answer whose token
// usage could not be read, or was told in part, on a route that meters
// it: its record's tokens and cost may be less than it used, and than its
// budgets charged.
const codeUsageUnknown = "usage_unknown"

// account reads what the answer used from the meter, prices it and counts
// it in the record and the metrics.
func (g *Gateway) account(x *exchange, prices *usage.Prices) {
	if x.meter == nil {
		if x.metered() {
			// No answer came: the app hung up first, a timeout.
			x.chargeCut(usage.Usage{}, 0, x.model, prices)
		}
		return
	}
	u, events := x.meter.Usage(), x.meter.Events()
	meters.Put(x.meter)
	x.meter = nil
	if !u.Known {
		if x.rec.outcome != outcomeForwarded || x.rec.status >= 300 {
			x.chargeCut(u, events, x.model, prices)
			return
		}
		// An answer that told no usage (a model list tells none; an
		// image or a transcription may not): a budget charges what the
		// request could have used.
		x.chargeUntold(u, events, x.model, prices)
		if x.rec.reason == "" && (x.model != "" || x.cutTokens > 0) {
			x.rec.reason = codeUsageUnknown
		}
		return
	}
	model := u.Model
	if model == "" {
		model = x.model
	}
	priceAs := model
	if !prices.Priced(model) && model != x.model {
		// A dated version the table does not list yet, of the model
		// the request asked for; or, when the request named none (an
		// upload till does not read), "": the table's dearest prices,
		// since a model the budget's check never saw must not be free.
		priceAs = x.model
	}
	// An Anthropic stream tells its input (and 1 output token) at once,
	// its output only at the end.
	x.chargeCut(u, events, priceAs, prices)
	if x.rec.reason == "" && u.Partial {
		// Told in part: the record keeps what was told, and says that
		// it is not all (a budget charged more).
		x.rec.reason = codeUsageUnknown
	}
	x.rec.tokensIn, x.rec.tokensOut = u.InputTokens, u.OutputTokens
	usd, priced := prices.Cost(priceAs, u)
	if priced {
		model = priceAs
	}
	x.rec.costUSD = usd
	if recordedModel(model, x.live.clients, x.echoForms()) == notShown {
		// An upstream's echo of the key, or a credential the app sent
		// as its model (a client's token made by hand, which no shape
		// gives away): never a label, as the record never shows it.
		model = ""
	}
	g.metrics.usage(&x.rec, model, priced)
}

// modelInPath is the model a request names in its path (Gemini's
// /v1beta/models/NAME:generateContent), "" for none.
func modelInPath(f usage.Format, path string) string {
	if f == usage.None {
		return ""
	}
	req, _ := usage.Inspect(f, path, nil)
	return req.Model
}
