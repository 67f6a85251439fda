package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/smithy-go/encoding/httpbinding"

	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// sigV4 is how a route signs its requests with AWS Signature Version 4:
// the long-lived credentials from its secret, and what they sign for.
type sigV4 struct {
	creds   aws.Credentials
	service string
	region  string
	signer  *v4.Signer // signer or s3Signer: how the service escapes the path
}

// sigV4Headers are the headers of the app's own signature, removed before
// till signs: an app using an AWS SDK signs with dummy credentials.
var sigV4Headers = []string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Content-Sha256"}

// presignParams are the query parameters of a presigned URL, which an app
// could put in its query, with till's access key and the second till
// signs in: till's signature over them, should it reach the app (an
// upstream reflecting the request in a body), would be that of a URL
// good for up to a week, without headers and without till.
var presignParams = []string{"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token"}

// withoutPresignParams removes the presignParams from a raw query, in
// any case and however escaped.
func withoutPresignParams(raw string) string {
	if !containsFold(raw, "x-amz-") && !strings.Contains(raw, "%") {
		return raw
	}
	return withoutParams(raw, func(part string) bool {
		key, _, _ := strings.Cut(part, "=")
		k, err := url.QueryUnescape(key)
		return err != nil || slices.ContainsFunc(presignParams, func(p string) bool { return strings.EqualFold(k, p) })
	})
}

// signer is the AWS SDK's SigV4 signer, which escapes the path it signs
// once more, as every service but S3 does; s3Signer signs it as sent.
// Both are safe for concurrent use.
var (
	signer   = v4.NewSigner()
	s3Signer = v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true })
)

// escapesPathOnce reports whether service (a signing name) computes the
// path of a signature escaped once, as S3 does, rather than twice.
func escapesPathOnce(service string) bool {
	return service == "s3" || service == "s3-object-lambda" || service == "s3-outposts"
}

// compileSigV4 reads the credentials of cfg's secret sec: the fields
// access_key_id, secret_access_key and, optionally, session_token. It
// returns them with the values to scrub from echoes, or why it cannot.
func compileSigV4(cfg *config.AWSSigV4, sec vault.Secret) (*sigV4, []string, string) {
	id, okID := sec.Field("access_key_id")
	key, okKey := sec.Field("secret_access_key")
	if !okID || !okKey {
		return nil, nil, "aws_sigv4 needs a secret with the fields access_key_id and secret_access_key: " + lacking(sec, "access_key_id", "secret_access_key") + " (till secret set NAME --json)"
	}
	token, _ := sec.Field("session_token")
	// A field may span lines (a --json value, a source's document); a
	// credential that does would fail every request at its send (the
	// id and token go in headers) or sign it wrongly.
	for _, f := range [...]struct{ name, value string }{{"access_key_id", id}, {"secret_access_key", key}, {"session_token", token}} {
		if strings.ContainsAny(f.value, "\r\n") {
			return nil, nil, "aws_sigv4: the field " + f.name + " spans lines; each AWS credential is one line (was a newline kept?)"
		}
	}
	s := &sigV4{creds: aws.Credentials{AccessKeyID: id, SecretAccessKey: key, SessionToken: token, Source: "till"}, service: cfg.Service, region: cfg.Region, signer: signer}
	if escapesPathOnce(cfg.Service) {
		s.signer = s3Signer
	}
	values := []string{key}
	if token != "" {
		values = append(values, token)
	}
	return s, values, ""
}

// signV4 signs out, whose body x holds, with the route's credentials, and
// scrubs the signature from echoes as it does the key: echoed to the
// app, it would sign the same request without till for a quarter of an
// hour.
func (x *exchange) signV4(out *http.Request) error {
	if err := x.inj.sigV4.sign(out, x.held, time.Now()); err != nil {
		return err
	}
	auth := out.Header.Get("Authorization")
	_, sig, _ := strings.Cut(auth, "Signature=")
	x.sentForms = append(slices.Clip(x.echoForms()), echoForms([]string{auth, sig})...)
	return nil
}

// sign signs out, whose body is body, for now: the body's SHA-256 goes in
// X-Amz-Content-Sha256, which is signed with the other headers. The path
// goes escaped as AWS's SDKs send it (awsPath), and the signer signs it as
// it goes, escaped once more (but for S3), as AWS computes it from the
// path it received: a path escaped otherwise (an app's "v1:0" in a model
// id, "a+b") would be refused. It stands for the same path, the one the
// route's rules matched.
func (s *sigV4) sign(out *http.Request, body []byte, now time.Time) error {
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:])
	out.Header["X-Amz-Content-Sha256"] = []string{hash}
	out.URL.RawPath = awsPath(out.URL.EscapedPath())
	out.URL.RawQuery = withoutPresignParams(out.URL.RawQuery)
	return s.signer.SignHTTP(context.Background(), s.creds, out, hash, s.service, s.region, now)
}

// awsPath escapes the escaped path raw again as AWS's SDKs escape a path:
// each segment decoded, then every byte but A-Z a-z 0-9 - . _ ~ escaped,
// "/" within a segment too. Only a Bedrock model id holds one, %2F (an
// ARN's: target.modelPath), which stays in its segment.
func awsPath(raw string) string {
	var b strings.Builder
	for {
		seg, rest, more := strings.Cut(raw, "/")
		dec, err := url.PathUnescape(seg)
		if err != nil {
			dec = seg // checkPath refused invalid escapes
		}
		b.WriteString(httpbinding.EscapePath(dec, true))
		if !more {
			return b.String()
		}
		b.WriteByte('/')
		raw = rest
	}
}

// chunkSigned reports whether a request's body is framed and signed
// chunk by chunk (AWS's streaming signatures): Content-Encoding
// aws-chunked (S3's uploads, with or without a checksum trailer), an
// X-Amz-Content-Sha256 of STREAMING-... (those, and the event streams of
// Bedrock's InvokeModelWithBidirectionalStream or Transcribe), or an
// X-Amz-Decoded-Content-Length. Each chunk's signature is chained from
// the app's own, which till replaces, and the framing would be hashed
// into till's signature as if it were the body: such a body cannot be
// signed again. No bedrock-runtime operation but the bidirectional
// stream sends one (the AWS SDK's bedrockruntime client).
func chunkSigned(h http.Header) bool {
	for _, v := range h.Values("Content-Encoding") {
		for c := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(c), "aws-chunked") {
				return true
			}
		}
	}
	_, decoded := h["X-Amz-Decoded-Content-Length"]
	return decoded || slices.ContainsFunc(h.Values("X-Amz-Content-Sha256"), func(v string) bool {
		return len(v) >= len("STREAMING-") && strings.EqualFold(v[:len("STREAMING-")], "STREAMING-")
	})
}

// errChunkSigned refuses a body signed chunk by chunk (chunkSigned).
var errChunkSigned = apiError{CodeBadRequest, "this route signs the request with SigV4 over its whole body, and cannot sign a body framed and signed chunk by chunk (Content-Encoding: aws-chunked, X-Amz-Content-Sha256: STREAMING-...): send it whole (for S3, AWS_REQUEST_CHECKSUM_CALCULATION=when_required turns off the SDKs' checksum trailers)"}
