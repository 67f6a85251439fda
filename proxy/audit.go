package proxy

import (
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/audit"
	"github.com/tillgw/till/config"
)

// Audit record field names: part of the interface contract.
const (
	fieldTime     = "time"
	fieldEvent    = "event"
	fieldID       = "id"
	fieldMode     = "mode"
	fieldClient   = "client"
	fieldRoute    = "route"
	fieldSecret   = "secret"
	fieldKeyFP    = "key_fp"
	fieldMethod   = "method"
	fieldHost     = "host"
	fieldPath     = "path"
	fieldStatus   = "status"
	fieldBytesIn  = "bytes_in"
	fieldBytesOut = "bytes_out"
	fieldDuration = "duration_ms"
	fieldOutcome  = "outcome"
	fieldReason   = "reason"
	// Later fields: usage (model, tokens and price) and how the key was
	// used (credential).
	fieldModel      = "model"
	fieldTokensIn   = "tokens_in"
	fieldTokensOut  = "tokens_out"
	fieldCostUSD    = "cost_usd"
	fieldCredential = "credential"
)

// Outcomes of a request, as audited.
const (
	outcomeForwarded = "forwarded"
	outcomeDenied    = "denied"
	outcomeError     = "error"
)

// Audit builds audit records and writes them to its sink: one `use`
// record before each send of a key (writeUse), and one `request` record
// when a request ends (write). While the sink cannot be written, the
// gateway refuses new requests (invariant 8).
type Audit struct {
	sink  *audit.Sink
	log   zerolog.Logger
	ahead sync.Pool // of *aheadWriter
}

// NewAudit writes records to sink.
func NewAudit(sink *audit.Sink) *Audit {
	a := &Audit{sink: sink, log: zerolog.New(sink)}
	a.ahead.New = func() any {
		w := &aheadWriter{sink: sink}
		w.log = zerolog.New(w)
		return w
	}
	return a
}

// aheadWriter writes one write-ahead record at a time, and keeps whether
// it was written.
type aheadWriter struct {
	sink    *audit.Sink
	log     zerolog.Logger
	written bool
}

func (w *aheadWriter) Write(p []byte) (int, error) {
	w.written = w.sink.WriteNow(p)
	return len(p), nil
}

// Healthy reports whether the sink takes records.
func (a *Audit) Healthy() bool { return a.sink.Healthy() }

// Failures counts the records that could not be written when due.
func (a *Audit) Failures() uint64 { return a.sink.Failures() }

// record is what one request leaves in the audit log.
type record struct {
	start    time.Time
	id       string
	attempt  int // sends of the key
	mode     string
	client   string
	route    string
	secret   string
	keyFP    string
	method   string
	host     string
	path     string
	status   int
	bytesIn  int64
	bytesOut int64
	outcome  string
	reason   string
	// model is the model the app asked for; tokensIn (cached input
	// included) and tokensOut are what the response reported, costUSD
	// their price; zero when unknown.
	model     string
	tokensIn  int64
	tokensOut int64
	costUSD   float64
	// cred says how the key was used: credStatic, or the mechanism that
	// signed or minted with it.
	cred string
}

// notShown stands in a record for what the app sent where no credential
// belongs (a model, a path) when it holds one: the record says that one
// was there, for the incident it is, and never holds it (invariant 2).
const notShown = "(credential not shown)"

// recordedPath is a path, or a Host, as the records carry it: as the
// app sent it, or notShown when it holds a till client token (checkPath
// refuses such a path): of the shape till makes, or a client's of cs as
// a segment (tokenInPath).
func recordedPath(path string, cs clientSet) string {
	if holdsClientToken(path) || cs.tokenInPath(path) {
		return notShown
	}
	return path
}

// recordedModel is model as the records carry it: as the app sent it,
// or notShown when it holds a credential: a till client token (of
// the shape till makes, or a client's of cs of any shape), a form of the
// key in forms, or what looks like a provider's key.
func recordedModel(model string, cs clientSet, forms []string) string {
	if model != "" && (holdsCredential(model) || isClientToken(model, cs) || echoes([]string{model}, forms)) {
		return notShown
	}
	return model
}

// recordModel puts the model d names in x's record as recordedModel
// shows it, judged with d's key and the clients of cs; a model hidden
// there hides the request's path (decoded) too when it names it
// (Gemini's, Bedrock's).
func (x *exchange) recordModel(d Decision, path string, cs clientSet) {
	var forms []string
	if d.inj != nil {
		forms = d.inj.echoForms
	}
	x.rec.model = recordedModel(d.Model, cs, forms)
	if x.rec.model == notShown && strings.Contains(path, d.Model) {
		x.rec.path = notShown
	}
}

// holdsCredential reports whether s, text an app sent where no
// credential belongs, holds one: a till client token of the shape till
// makes, or what looks like a provider's key (config.HoldsKey).
func holdsCredential(s string) bool {
	return holdsClientToken(s) || config.HoldsKey(s)
}

// How a key is used, in the record's credential field.
const (
	credStatic    = "static"     // attached as the config says
	credSigV4     = "sigv4"      // signed with AWS SigV4
	credOAuth2    = "oauth2"     // a token minted with OAuth2 client credentials
	credGitHubApp = "github_app" // a GitHub App installation token
	credGoogle    = "google"     // a Google service account's token
)

// write emits the record as one JSON line, every field present.
func (a *Audit) write(r *record, end time.Time) {
	var e *zerolog.Event
	switch r.outcome {
	case outcomeForwarded:
		e = a.log.Info()
	case outcomeDenied:
		e = a.log.Warn()
	default:
		e = a.log.Error()
	}
	var tb [40]byte
	e.Bytes(fieldTime, r.start.UTC().AppendFormat(tb[:0], time.RFC3339Nano)).
		Str(fieldEvent, "request").
		Str(fieldID, r.id).
		Str(fieldMode, r.mode).
		Func(r.keyUse).
		Int(fieldAttempt, r.attempt).
		Int(fieldStatus, r.status).
		Int64(fieldBytesIn, r.bytesIn).
		Int64(fieldBytesOut, r.bytesOut).
		Float64(fieldDuration, float64(end.Sub(r.start).Microseconds())/1000).
		Int64(fieldTokensIn, r.tokensIn).
		Int64(fieldTokensOut, r.tokensOut).
		Float64(fieldCostUSD, r.costUSD).
		Str(fieldOutcome, r.outcome).
		Str(fieldReason, r.reason).
		Send()
}

// keyUse adds the fields that say who used which key for what: they are
// in both kinds of record, request and use.
func (r *record) keyUse(e *zerolog.Event) {
	e.Str(fieldClient, r.client).
		Str(fieldRoute, r.route).
		Str(fieldSecret, r.secret).
		Str(fieldKeyFP, r.keyFP).
		Str(fieldMethod, r.method).
		Str(fieldHost, r.host).
		Str(fieldPath, r.path).
		Str(fieldModel, r.model).
		Str(fieldCredential, r.credential())
}

// nameKey makes in the record's key: its secret, its fingerprint and how
// it is used.
func (r *record) nameKey(in *injection) {
	r.secret, r.keyFP, r.cred = in.secretName, in.fp, in.cred
	if r.cred == "" {
		r.cred = credStatic
	}
}

// credential says how the key was used, once one was; "" otherwise.
func (r *record) credential() string {
	if r.keyFP == "" {
		return ""
	}
	return r.cred
}
