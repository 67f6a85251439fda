package proxy

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// awsVerifier checks a SigV4 signature as the AWS documentation describes
// the algorithm ("Create a signed AWS API request", Signature Version 4),
// written without the AWS SDK, from what arrived on the wire: the request
// target as sent (r.RequestURI), the headers as received, the body read.
// It is stricter than AWS where AWS is lenient: every x-amz-* header that
// arrived must be signed (S3's rule), host and x-amz-date must be signed,
// and the payload hash must be the body's.
type awsVerifier struct {
	accessKeyID, secretKey, service, region string
	now                                     time.Time
}

// uriEncode is the documentation's UriEncode: every byte but the
// unreserved characters A-Z a-z 0-9 - . _ ~ percent-encoded with upper-case
// hex; "/" kept when encodeSlash is false.
func uriEncode(s string, encodeSlash bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~':
			b.WriteByte(c)
		case c == '/' && !encodeSlash:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// canonicalURI is the path as the service computes it from the path it
// received: each segment decoded, then URI-encoded twice, but once for
// S3 (an encoded "/" stays in its segment, escaped with it).
func (v awsVerifier) canonicalURI(requestURI string) (string, error) {
	p, _, _ := strings.Cut(requestURI, "?")
	if p == "" {
		p = "/"
	}
	segs := strings.Split(p, "/")
	for i, seg := range segs {
		seg, err := url.PathUnescape(seg)
		if err != nil {
			return "", err
		}
		segs[i] = uriEncode(seg, true)
		if v.service != "s3" {
			segs[i] = uriEncode(segs[i], true)
		}
	}
	return strings.Join(segs, "/"), nil
}

// canonicalQuery sorts the query's parameters by encoded name, then value,
// each decoded and encoded again with UriEncode.
func canonicalQuery(raw string) (string, error) {
	if raw == "" {
		return "", nil
	}
	type kv struct{ k, v string }
	var pairs []kv
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		k, val, _ := strings.Cut(part, "=")
		dk, err := url.PathUnescape(k)
		if err != nil {
			return "", err
		}
		dv, err := url.PathUnescape(val)
		if err != nil {
			return "", err
		}
		pairs = append(pairs, kv{uriEncode(dk, true), uriEncode(dv, true)})
	}
	slices.SortFunc(pairs, func(a, b kv) int {
		if c := strings.Compare(a.k, b.k); c != 0 {
			return c
		}
		return strings.Compare(a.v, b.v)
	})
	var b strings.Builder
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.k + "=" + p.v)
	}
	return b.String(), nil
}

// trimAll is the documentation's Trimall: white space before and after
// removed, runs of spaces made one.
func trimAll(s string) string {
	s = strings.TrimSpace(s)
	for strings.Contains(s, "  ") {
		s = strings.ReplaceAll(s, "  ", " ")
	}
	return s
}

func hmacSHA256(key []byte, s string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(s))
	return m.Sum(nil)
}

// verify says why r, whose body was body, is not signed as AWS requires,
// or "" when it is: signed in its Authorization header, or presigned (its
// query carrying X-Amz-Algorithm), the two never together.
func (v awsVerifier) verify(r *http.Request, body []byte) string {
	_, rawQuery, _ := strings.Cut(r.RequestURI, "?")
	query, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "query: " + err.Error()
	}
	auths := r.Header.Values("Authorization")
	var a sigAuth
	switch {
	case query.Has("X-Amz-Algorithm") && len(auths) == 0:
		a, err = presignAuth(query)
	case query.Has("X-Amz-Algorithm"), len(auths) != 1:
		return fmt.Sprintf("%d Authorization headers and query authentication %v: only one auth mechanism allowed", len(auths), query.Has("X-Amz-Algorithm"))
	default:
		a, err = headerAuth(auths[0], r.Header.Get("X-Amz-Date"))
	}
	if err != nil {
		return err.Error()
	}
	return v.check(r, body, rawQuery, a)
}

// sigAuth is what a request says of its signature.
type sigAuth struct {
	presigned                            bool
	credential, signedHeaders, signature string
	date                                 string
	expires                              time.Duration // presigned only
}

// headerAuth reads an Authorization header's signature, made at date.
func headerAuth(auth, date string) (sigAuth, error) {
	rest, ok := strings.CutPrefix(auth, "AWS4-HMAC-SHA256 ")
	if !ok {
		return sigAuth{}, fmt.Errorf("not AWS4-HMAC-SHA256")
	}
	parts := map[string]string{}
	for p := range strings.SplitSeq(rest, ",") {
		k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		parts[k] = val
	}
	return sigAuth{credential: parts["Credential"], signedHeaders: parts["SignedHeaders"], signature: parts["Signature"], date: date, expires: 15 * time.Minute}, nil
}

// presignAuth reads a presigned URL's signature from its query.
func presignAuth(q url.Values) (sigAuth, error) {
	secs, err := strconv.Atoi(q.Get("X-Amz-Expires"))
	if err != nil || secs < 1 || secs > 604800 {
		return sigAuth{}, fmt.Errorf("X-Amz-Expires %q", q.Get("X-Amz-Expires"))
	}
	return sigAuth{presigned: true, credential: q.Get("X-Amz-Credential"), signedHeaders: q.Get("X-Amz-SignedHeaders"), signature: q.Get("X-Amz-Signature"),
		date: q.Get("X-Amz-Date"), expires: time.Duration(secs) * time.Second}, nil
}

// check recomputes the signature a says r carries, from the request
// received, rawQuery its query.
func (v awsVerifier) check(r *http.Request, body []byte, rawQuery string, a sigAuth) string {
	t, err := time.Parse("20060102T150405Z", a.date)
	if err != nil {
		return "bad X-Amz-Date " + a.date
	}
	if d := v.now.Sub(t); d > a.expires || d < -15*time.Minute {
		return "signature expired or not yet current"
	}
	scope := t.Format("20060102") + "/" + v.region + "/" + v.service + "/aws4_request"
	if a.credential != v.accessKeyID+"/"+scope {
		return "credential " + a.credential
	}
	signed := strings.Split(a.signedHeaders, ";")
	if !slices.IsSorted(signed) || !slices.Contains(signed, "host") || !a.presigned && !slices.Contains(signed, "x-amz-date") {
		return "signed headers " + a.signedHeaders
	}
	for name := range r.Header {
		l := strings.ToLower(name)
		if strings.HasPrefix(l, "x-amz-") && !slices.Contains(signed, l) {
			return "unsigned header " + name
		}
	}
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:])
	if got := r.Header.Get("X-Amz-Content-Sha256"); got != hash && !(a.presigned && got == "") {
		return "x-amz-content-sha256 " + got + " is not the body's " + hash
	}
	var ch strings.Builder
	for _, name := range signed {
		var vals []string
		switch name {
		case "host":
			vals = []string{r.Host}
		case "content-length":
			if r.ContentLength < 0 || len(r.TransferEncoding) > 0 {
				return "content-length signed, none sent"
			}
			vals = []string{fmt.Sprint(r.ContentLength)}
		default:
			vals = r.Header.Values(name)
			if len(vals) == 0 {
				return "signed header " + name + " was not sent"
			}
		}
		for i := range vals {
			vals[i] = trimAll(vals[i])
		}
		ch.WriteString(name + ":" + strings.Join(vals, ",") + "\n")
	}
	if a.presigned {
		rawQuery = withoutParams(rawQuery, func(p string) bool { return strings.HasPrefix(p, "X-Amz-Signature=") })
	}
	q, err := canonicalQuery(rawQuery)
	if err != nil {
		return "query: " + err.Error()
	}
	uri, err := v.canonicalURI(r.RequestURI)
	if err != nil {
		return "path: " + err.Error()
	}
	canon := strings.Join([]string{r.Method, uri, q, ch.String(), a.signedHeaders, hash}, "\n")
	crHash := sha256.Sum256([]byte(canon))
	toSign := "AWS4-HMAC-SHA256\n" + a.date + "\n" + scope + "\n" + hex.EncodeToString(crHash[:])
	k := hmacSHA256([]byte("AWS4"+v.secretKey), t.Format("20060102"))
	k = hmacSHA256(k, v.region)
	k = hmacSHA256(k, v.service)
	k = hmacSHA256(k, "aws4_request")
	want := hex.EncodeToString(hmacSHA256(k, toSign))
	if !hmac.Equal([]byte(want), []byte(a.signature)) {
		return "signature does not match; canonical request:\n" + canon
	}
	return ""
}

// verified is what a verifyingUpstream saw of a request: why its
// signature fails ("" when it holds), its path decoded and as sent.
type verified struct{ why, path, escaped string }

// verifyingUpstream checks the signature of each request with v, and
// sends what it saw on the channel.
func verifyingUpstream(t *testing.T, v awsVerifier) (*httptest.Server, <-chan verified) {
	got := make(chan verified, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		v := v
		v.now = time.Now()
		got <- verified{v.verify(r, body), r.URL.Path, r.URL.EscapedPath()}
	}))
	t.Cleanup(up.Close)
	return up, got
}

// TestSigV4PathAsAWSComputesIt: a path with characters that need escaping
// (a Bedrock model id's ":", sent as is by an app without an AWS SDK, or
// escaped by one; an S3 key's space) is signed for the path AWS computes
// from the one it receives: decoded, then encoded twice, or once for S3.
// The upstream gets the path that the route's rules matched.
func TestSigV4PathAsAWSComputesIt(t *testing.T) {
	paths := []struct{ sent, decoded string }{
		{"/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke", "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke"},
		{"/model/anthropic.claude-3-haiku-20240307-v1:0/invoke", "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke"},
		{"/model/a+b/invoke", "/model/a+b/invoke"},
		{"/model/a%20b/invoke", "/model/a b/invoke"},
		{"/model/caf%C3%A9/invoke", "/model/café/invoke"},
		{"/model/%61b/invoke", "/model/ab/invoke"},
		{"/model/a!$&'()*,;=@~b/invoke", "/model/a!$&'()*,;=@~b/invoke"},
	}
	for _, service := range []string{"bedrock", "s3"} {
		t.Run(service, func(t *testing.T) {
			v := awsVerifier{accessKeyID: "AKIATILLTSTPATH00001", secretKey: "tst-path-secret-0123456789abcdef", service: service, region: "us-east-1"}
			up, got := verifyingUpstream(t, v)
			gw, _ := newTestGateway(t, "version: 1\nroutes:\n  - {name: aws, upstream: {{UP}}, secret: aws, inject: {aws_sigv4: {service: "+service+", region: us-east-1}}}\n", up.URL,
				map[string]vault.Secret{"aws": vault.NewFieldSecret("aws", map[string]string{"access_key_id": v.accessKeyID, "secret_access_key": v.secretKey}, time.Now())})
			for _, p := range paths {
				w := httptest.NewRecorder()
				gw.ServeHTTP(w, httptest.NewRequest("POST", "/aws"+p.sent, strings.NewReader(`{}`)))
				if w.Code != http.StatusOK {
					t.Fatalf("%s: %d %s", p.sent, w.Code, w.Body)
				}
				s := <-got
				if s.why != "" || s.path != p.decoded {
					t.Errorf("%s: the upstream got the path %q (want %q); its check of the signature: %s", p.sent, s.path, p.decoded, s.why)
				}
			}
		})
	}
}

// TestSigV4SignatureIsNoPresignedURL: an app that puts a presigned URL's
// parameters in its query (X-Amz-Algorithm, the key's X-Amz-Credential,
// X-Amz-Date the second till signs in, X-Amz-Expires a week) and gets
// till's signature back (from an upstream that reflects requests in its
// body, SECURITY.md's known limits) must not hold the X-Amz-Signature of a
// presigned URL, good for a week, without till: the parameters are neither
// signed nor sent.
func TestSigV4SignatureIsNoPresignedURL(t *testing.T) {
	v := awsVerifier{accessKeyID: "AKIATILLTSTPRESIGN01", secretKey: "tst-presign-secret-0123456789abcdef", service: "bedrock", region: "us-east-1"}
	sec := vault.NewFieldSecret("aws", map[string]string{"access_key_id": v.accessKeyID, "secret_access_key": v.secretKey}, time.Now())
	s, _, problem := compileSigV4(&config.AWSSigV4{Service: v.service, Region: v.region}, sec)
	if problem != "" {
		t.Fatal(problem)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	body := []byte(`{"prompt":"hi"}`)
	const target = "https://bedrock-runtime.us-east-1.amazonaws.com/model/m/invoke?"
	presign := url.Values{
		"X-Amz-Algorithm":     {"AWS4-HMAC-SHA256"},
		"X-Amz-Credential":    {v.accessKeyID + "/20260102/us-east-1/bedrock/aws4_request"},
		"X-Amz-Date":          {"20260102T030405Z"},
		"X-Amz-Expires":       {"604800"},
		"X-Amz-SignedHeaders": {"content-length;host;x-amz-content-sha256;x-amz-date"},
	}.Encode()
	out := httptest.NewRequest("POST", target+presign+"&a=1", bytes.NewReader(body))
	out.RequestURI = ""
	if err := s.sign(out, body, at); err != nil {
		t.Fatal(err)
	}
	out.RequestURI = out.URL.RequestURI()
	v.now = at
	if why := v.verify(out, body); why != "" {
		t.Errorf("till's own request: %s", why)
	}
	// Six days on, the app presigns with the signature.
	_, sig, _ := strings.Cut(out.Header.Get("Authorization"), "Signature=")
	replay := httptest.NewRequest("POST", target+presign+"&a=1&X-Amz-Signature="+sig, bytes.NewReader(body))
	replay.RequestURI = replay.URL.RequestURI()
	replay.Header.Set("X-Amz-Date", out.Header.Get("X-Amz-Date"))
	replay.Header.Set("X-Amz-Content-Sha256", out.Header.Get("X-Amz-Content-Sha256"))
	v.now = at.Add(6 * 24 * time.Hour)
	if why := v.verify(replay, body); why == "" {
		t.Errorf("till signed the app's presign parameters (%s): its signature makes a presigned URL that works for a week, without till or its audit", out.URL.RawQuery)
	}
}

// TestSigV4SignsWhatIsSent: over a real connection, what till signs is
// what the upstream receives, checked by the verifier written from AWS's
// documentation: a body announced with Expect: 100-continue or sent
// chunked (with the app's UNSIGNED-PAYLOAD), an empty one, and the app's
// own headers (X-Amz-Target, which names a JSON-protocol operation, a
// header given twice), each signed as sent.
func TestSigV4SignsWhatIsSent(t *testing.T) {
	v := awsVerifier{accessKeyID: "AKIATILLTSTSENT00001", secretKey: "tst-sent-secret-0123456789abcdef", service: "bedrock", region: "us-east-1"}
	type seen struct {
		why    string
		target string
	}
	got := make(chan seen, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		v := v
		v.now = time.Now()
		got <- seen{v.verify(r, body), r.Header.Get("X-Amz-Target")}
	}))
	defer up.Close()
	gw, _ := newTestGateway(t, "version: 1\nroutes:\n  - {name: aws, upstream: {{UP}}, secret: aws, inject: {aws_sigv4: {service: bedrock, region: us-east-1}}}\n", up.URL,
		map[string]vault.Secret{"aws": vault.NewFieldSecret("aws", map[string]string{"access_key_id": v.accessKeyID, "secret_access_key": v.secretKey}, time.Now())})
	till := httptest.NewServer(gw)
	defer till.Close()
	for _, raw := range []string{
		"POST /aws/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n{}",
		"POST /aws/x HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nX-Amz-Content-Sha256: UNSIGNED-PAYLOAD\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
		"POST /aws/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
		"POST /aws/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nX-Amz-Target: Svc.Op\r\nX-Amz-Meta-A: 1\r\nX-Amz-Meta-A:  2  3 \r\n\r\n{}",
	} {
		c, err := net.Dial("tcp", till.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, raw)
		br := bufio.NewReader(c)
		res, err := http.ReadResponse(br, nil)
		for err == nil && res.StatusCode < 200 {
			res, err = http.ReadResponse(br, nil) // 100 Continue
		}
		c.Close()
		first, _, _ := strings.Cut(raw, "\r\n\r\n")
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("%q: %v %v", first, res, err)
		}
		if s := <-got; s.why != "" || strings.Contains(raw, "X-Amz-Target") && s.target != "Svc.Op" {
			t.Errorf("%q: the upstream's check: %s (X-Amz-Target %q)", first, s.why, s.target)
		}
	}
}

// TestSigV4RefusesChunkSignedBodies: a body the app framed and signed
// chunk by chunk (S3's aws-chunked uploads, with their trailers; an
// event stream such as Bedrock's InvokeModelWithBidirectionalStream)
// carries signatures chained from the app's own, which till cannot sign
// again: hashed whole, framing and all, it would reach the upstream as
// another body. Such a request is refused with 400 before anything is
// sent; an unsigned payload, which till hashes itself, goes.
func TestSigV4RefusesChunkSignedBodies(t *testing.T) {
	v := awsVerifier{accessKeyID: "AKIATILLTSTCHUNK0001", secretKey: "tst-chunk-secret-0123456789abcdef", service: "s3", region: "us-east-1"}
	up, got := verifyingUpstream(t, v)
	gw, _ := newTestGateway(t, "version: 1\nroutes:\n  - {name: aws, upstream: {{UP}}, secret: aws, inject: {aws_sigv4: {service: s3, region: us-east-1}}}\n", up.URL,
		map[string]vault.Secret{"aws": vault.NewFieldSecret("aws", map[string]string{"access_key_id": v.accessKeyID, "secret_access_key": v.secretKey}, time.Now())})
	const framed = "5;chunk-signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\nhello\r\n0;chunk-signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n\r\n"
	tests := []struct {
		name, header, value string
		refused             bool
	}{
		{"aws-chunked", "Content-Encoding", "aws-chunked", true},
		{"aws-chunked among others", "Content-Encoding", "gzip, AWS-Chunked", true},
		{"a signed stream", "X-Amz-Content-Sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", true},
		{"an unsigned stream with a trailer", "X-Amz-Content-Sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER", true},
		{"an event stream", "X-Amz-Content-Sha256", "STREAMING-AWS4-HMAC-SHA256-EVENTS", true},
		{"a decoded length", "X-Amz-Decoded-Content-Length", "5", true},
		{"an unsigned payload", "X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD", false},
		{"gzip", "Content-Encoding", "gzip", false},
	}
	for _, tt := range tests {
		req := httptest.NewRequest("PUT", "/aws/bucket/key", strings.NewReader(framed))
		req.Header.Set(tt.header, tt.value)
		w := httptest.NewRecorder()
		gw.ServeHTTP(w, req)
		if code := w.Header().Get("X-Till-Error"); (code == CodeBadRequest) != tt.refused || !tt.refused && code != "" {
			t.Errorf("%s: got %d %q, want refused %v", tt.name, w.Code, code, tt.refused)
		}
		select { // the upstream answered before ServeHTTP returned
		case s := <-got:
			if tt.refused || s.why != "" {
				t.Errorf("%s: reached the upstream; its check of the signature: %q", tt.name, s.why)
			}
		default:
			if !tt.refused {
				t.Errorf("%s: did not reach the upstream", tt.name)
			}
		}
	}
}

// TestSigV4CredentialsAreOneLine: a credential field that spans lines (a
// JSON written from a file read whole, its newline kept) is refused as
// the route compiles, naming the field, so till check reports it. It
// went into the Authorization or X-Amz-Security-Token header, which the
// transport refused at every request: 502 upstream_unreachable, "till
// could not reach the upstream"; a secret key that spans lines signed
// every request wrongly.
func TestSigV4CredentialsAreOneLine(t *testing.T) {
	good := map[string]string{"access_key_id": "AKIAEXAMPLE", "secret_access_key": "abc0123456789/xyz", "session_token": "tok0123456789"}
	for _, field := range []string{"", "access_key_id", "secret_access_key", "session_token"} {
		t.Run("field "+field, func(t *testing.T) {
			fields := maps.Clone(good)
			if field != "" {
				fields[field] += "\n"
			}
			_, _, problem := compileSigV4(&config.AWSSigV4{Service: "bedrock", Region: "us-east-1"}, vault.NewFieldSecret("cred", fields, time.Now()))
			switch {
			case field == "" && problem != "":
				t.Errorf("one-line credentials: problem %q", problem)
			case field != "" && !strings.Contains(problem, field):
				t.Errorf("got problem %q, want one naming %s", problem, field)
			case strings.Contains(problem, "abc0123456789") || strings.Contains(problem, "tok0123456789"):
				t.Errorf("the problem quotes a credential: %q", problem)
			}
		})
	}
}
