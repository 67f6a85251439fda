package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// errFormTooLarge refuses a form or JSON body on a route checkFormMethod
// applies to that is larger than till holds to read it.
var errFormTooLarge = apiError{CodeBadRequest, "this route limits methods, and reads a form or JSON body whole for a _method field that would name another one: " +
	"this one is larger than 1 MiB and the route's max_body (hint: raise max_body)"}

// errFormMethod refuses a body whose _method field names a method the
// route does not allow.
var errFormMethod = apiError{CodeMethodNotAllowed, "a _method field in the body names a method this route does not allow"}

// checksFormMethod reports whether a route reads a POST's form or JSON
// body for a _method field, which Rails (Rack::MethodOverride), Laravel
// and Symfony honour as the request's method: a route to an upstream of
// the user's own (no preset: providers' APIs read no such field) that
// limits methods.
func checksFormMethod(preset string, methods []string) bool {
	return preset == "" && len(methods) > 0
}

// checkFormMethod refuses a POST whose body (a urlencoded or multipart
// form, or JSON) holds a _method field naming a method the route does
// not allow, before anything is sent. The body is held whole to be read,
// up to 1 MiB or max_body; a larger one is refused, as is one that
// cannot be parsed, since the upstream might read in it what till could
// not.
func (x *exchange) checkFormMethod(w http.ResponseWriter, r *http.Request, rt *route) *apiError {
	if !rt.formMethods || r.Method != http.MethodPost || !x.hasBody {
		return nil
	}
	how, err := readingOf(r.Header)
	if err != nil {
		return &apiError{CodeBadRequest, "this route limits methods, and reads a body for a _method field that would name another one: " + err.Error()}
	}
	if !how.form && !how.multipart && !how.json {
		return nil
	}
	if e, ok := x.holdBody(w, r); !ok {
		return e.ref()
	}
	if x.held == nil {
		return &errFormTooLarge
	}
	values, err := how.methods(x.held)
	if err != nil {
		return &apiError{CodeBadRequest, "the body could not be read for a _method field: " + err.Error()}
	}
	for _, v := range values {
		if m := strings.ToUpper(strings.TrimSpace(v)); !slices.Contains(rt.methods, m) {
			return &errFormMethod
		}
	}
	return nil
}

// bodyReading is how the frameworks behind an upstream may read a POST's
// body for a _method field.
type bodyReading struct {
	form      bool   // as a urlencoded form
	multipart bool   // as a multipart form, split at boundary
	boundary  string // the multipart form's boundary
	json      bool   // as JSON, its top-level object the input (Laravel)
}

// readingOf tells from a POST's Content-Type how its body may be read:
// as Rack and PHP read it, which is more often than Go's parser would.
// Rack reads a POST without a Content-Type, or with an empty one, as a
// urlencoded form, and multipart/mixed and multipart/related as
// multipart; both cut the media type at a "," as well as a ";", PHP at a
// space too. Laravel reads its input from a JSON body when the
// Content-Type holds "/json" or "+json" anywhere (isJson), whatever else
// it says. A multipart form whose boundary Go cannot read, or a request
// with more than one Content-Type (of which servers pick different ones),
// is an error.
func readingOf(h http.Header) (bodyReading, error) {
	var how bodyReading
	ct := ""
	switch cts := h["Content-Type"]; len(cts) {
	case 0:
	case 1:
		ct = cts[0]
	default:
		return how, errors.New("it has more than one Content-Type")
	}
	how.json = containsFold(ct, "/json") || containsFold(ct, "+json")
	media := looseMediaType(ct)
	how.form = media == "" || media == "application/x-www-form-urlencoded"
	if strings.HasPrefix(media, "multipart/") {
		_, params, err := mime.ParseMediaType(ct)
		if err != nil || params["boundary"] == "" || !boundaryAgrees(ct, params["boundary"]) {
			return how, errors.New("its multipart Content-Type has no boundary that Go, PHP and Rack read alike")
		}
		how.multipart, how.boundary = true, params["boundary"]
	}
	return how, nil
}

// methods returns the values of the _method fields in a body read each
// way how says. A multipart body is read twice: by Go's reader, and as
// PHP and Rack split it (multipartLooseMethods).
func (how bodyReading) methods(body []byte) ([]string, error) {
	var values []string
	if how.json {
		values = jsonMethods(body)
	}
	switch {
	case how.multipart:
		v, err := multipartMethods(body, how.boundary)
		if err != nil {
			return nil, err
		}
		loose, err := multipartLooseMethods(body, how.boundary)
		return append(append(values, v...), loose...), err
	case how.form:
		v, err := urlencodedMethods(body)
		return append(values, v...), err
	}
	return values, nil
}

// jsonMethods returns the _method members of a JSON body's top-level
// object: Laravel takes its input from it (json_decode), and Symfony's
// getMethod a string there as the method; Express's method-override,
// given req.body._method, takes a string or an array's first element.
// A name counts in any case and however escaped; of two members of one
// name, json_decode and JSON.parse keep the last, as Go's map decoding
// does. A body that is not JSON has none: json_decode and JSON.parse
// refuse all that Go's parser refuses (and invalid UTF-8, which Go's
// takes), and JSON Lines or JSON text sequences, which Laravel also
// takes for JSON, are read by none of them.
func jsonMethods(body []byte) []string {
	var members map[string]json.RawMessage
	if json.Unmarshal(body, &members) != nil {
		return nil
	}
	var out []string
	for k, v := range members {
		if !strings.EqualFold(k, "_method") {
			continue
		}
		var list []json.RawMessage
		if json.Unmarshal(v, &list) == nil && len(list) > 0 {
			v = bytes.TrimSpace(list[0])
		}
		var s string
		if len(v) > 0 && v[0] == '"' && json.Unmarshal(v, &s) == nil {
			out = append(out, s)
		}
	}
	return out
}

// boundaryAgrees reports whether PHP and Rack take Go's boundary from
// the Content-Type ct. PHP takes the value after the first "boundary" in
// ct and the "=" that follows, up to a quote or to a "," or ";", spaces
// kept; Rack the value after "boundary=" up to a quote, "," or ";" (from
// the last "boundary" before 2.2.22). With one "boundary" in ct, "=" right
// after it, and no "," or ";" in the value, all three agree.
func boundaryAgrees(ct, boundary string) bool {
	i := indexFold(ct, "boundary")
	if i < 0 {
		return false
	}
	rest := ct[i+len("boundary"):]
	v, ok := strings.CutPrefix(rest, "=")
	if !ok || indexFold(rest, "boundary") >= 0 {
		return false
	}
	if q, ok := strings.CutPrefix(v, `"`); ok {
		v, _, _ = strings.Cut(q, `"`)
	} else if j := strings.IndexAny(v, ",;"); j >= 0 {
		v = v[:j]
	}
	return v == boundary && !strings.ContainsAny(v, ",;")
}

// looseMediaType is a Content-Type's media type as Rack and PHP read it:
// in lower case, up to the first ";", "," or white space.
func looseMediaType(ct string) string {
	ct = strings.ToLower(strings.TrimSpace(ct))
	if i := strings.IndexAny(ct, ";, \t"); i >= 0 {
		ct = ct[:i]
	}
	return ct
}

// isMethodField reports whether a form or query field's name is read as
// _method (in any case) by Rack, PHP or Go: PHP ends a name at a NUL
// byte, drops its leading spaces and reads "." for "_"; Rack 2 drops
// leading "[" and "]" and reads "_method]" and "_method[...]" (its nested
// forms) as _method.
func isMethodField(name string) bool {
	name, _, _ = strings.Cut(name, "\x00")
	name = strings.TrimLeft(name, " []")
	if len(name) < 7 || name[0] != '_' && name[0] != '.' || !strings.EqualFold(name[1:7], "method") {
		return false
	}
	return len(name) == 7 || name[7] == '[' || name[7] == ']'
}

// urlencodedMethods returns the values of a form's _method fields, its
// pairs split at "&" and ";" as Rack splits them.
func urlencodedMethods(body []byte) ([]string, error) {
	var out []string
	for part := range strings.FieldsFuncSeq(string(body), func(r rune) bool { return r == '&' || r == ';' }) {
		k, v, _ := strings.Cut(part, "=")
		name, err := url.QueryUnescape(k)
		if err != nil {
			return nil, errors.New("a field name is not well escaped")
		}
		if !isMethodField(name) {
			continue
		}
		value, err := url.QueryUnescape(v)
		if err != nil {
			return nil, errors.New("a _method value is not well escaped")
		}
		out = append(out, value)
	}
	return out, nil
}

// maxMethodValue is the most of a _method field read: a method name.
const maxMethodValue = 64

// multipartMethods returns the values of a multipart form's _method
// fields.
func multipartMethods(body []byte, boundary string) ([]string, error) {
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	var out []string
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, errors.New("not a well-formed multipart form")
		}
		name, err := partName(p)
		if err != nil {
			return nil, err
		}
		if !isMethodField(name) {
			continue
		}
		v, err := io.ReadAll(io.LimitReader(p, maxMethodValue+1))
		if err != nil {
			return nil, errors.New("not a well-formed multipart form")
		}
		out = append(out, string(v))
	}
}

// partName is the name a part's Content-Disposition gives it, whatever
// its disposition type: Rack reads the name of an "attachment" too, where
// Go's FormName gives none. A disposition Go cannot parse that mentions
// _method is an error, not a part to pass over.
func partName(p *multipart.Part) (string, error) {
	cd := p.Header.Get("Content-Disposition")
	_, params, err := mime.ParseMediaType(cd)
	if err != nil {
		if containsFold(cd, "_method") {
			return "", errors.New("a part's Content-Disposition is not well formed")
		}
		return "", nil
	}
	return params["name"], nil
}

// multipartLooseMethods returns the values of the parts of a multipart
// body that PHP or Rack may read as _method fields where Go's reader
// sees none. PHP ends a part at "\n--boundary" however that line goes
// on, and reads a bare "\n" as a line's end where Go holds to the first
// delimiter's "\r\n"; Rack takes a part's name from the last "; name="
// before the next colon, across lines and inside another parameter's
// quotes, or from a Content-ID, and reads its headers up to the first
// blank "\r\n" line where PHP and Go stop at a blank "\n" one; neither
// stops reading headers at a delimiter. So every "--boundary" starts a
// part here, and a part whose headers, read either way, may name a
// _method field counts. When the two ways read its headers to different
// ends, its value is not known: an error. Each byte is read a few times
// at most, whatever the body.
func multipartLooseMethods(body []byte, boundary string) ([]string, error) {
	s, dash := string(body), "--"+boundary
	names, blanks, heads := methodNames(s), blankLines(s), allIndex(s, "\r\n\r\n")
	var out []string
	lineEnd := -1
	for at := strings.Index(s, dash); at >= 0; {
		i := at + len(dash)
		end := len(s)
		if next := strings.Index(s[i:], dash); next >= 0 {
			end = i + next
		}
		if lineEnd < i {
			lineEnd = len(s)
			if j := strings.IndexByte(s[i:], '\n'); j >= 0 {
				lineEnd = i + j
			}
		}
		start := len(s) // after the first blank line after the delimiter's
		if k, _ := slices.BinarySearch(blanks, lineEnd+1); k < len(blanks) {
			start = blanks[k] + 1
			if s[blanks[k]] == '\r' {
				start++
			}
		}
		rackStart := -1 // Rack's part starts after the delimiter's "\r\n"
		if strings.HasPrefix(s[i:], "\r\n") {
			if k, _ := slices.BinarySearch(heads, i); k < len(heads) {
				rackStart = heads[k] + 4
			}
		}
		if k, _ := slices.BinarySearch(names, at); k < len(names) && names[k] < max(start, rackStart) {
			if rackStart >= 0 && rackStart != start {
				return nil, errors.New("a part's headers end in one place for PHP and in another for Rack")
			}
			v, _, _ := strings.Cut(s[start:min(len(s), start+maxMethodValue+1+len(dash))], dash)
			out = append(out, v[:min(len(v), maxMethodValue+1)])
		}
		if end == len(s) {
			break
		}
		at = end
	}
	return out, nil
}

// methodNames returns, in order, where s may name a _method field as a
// part's headers do for PHP or Rack: by a "name" parameter, its value
// quoted (its backslash escapes undone, as Rack undoes them) or not, or
// by a Content-ID.
func methodNames(s string) []int {
	var at []int
	for i := 0; i+len("name") <= len(s); i++ {
		switch {
		case strings.EqualFold(s[i:i+len("name")], "name"):
			v, ok := strings.CutPrefix(strings.TrimLeft(s[i+len("name"):], " \t\r\n"), "=")
			if ok && isMethodField(valueStart(strings.TrimLeft(v, " \t\r\n"), " \t\r\n;,\"")) {
				at = append(at, i)
			}
		case len(s)-i >= len("content-id:") && strings.EqualFold(s[i:i+len("content-id:")], "content-id:"):
			if isMethodField(valueStart(strings.TrimLeft(s[i+len("content-id:"):], " \t\r\n"), "\r\n")) {
				at = append(at, i)
			}
		}
	}
	return at
}

// valueStart is as much of the header parameter value v as isMethodField
// needs: its leading spaces and brackets dropped, then up to 8 bytes.
// A quoted value ends at its closing quote, its backslash escapes undone;
// another at a byte in stop.
func valueStart(v, stop string) string {
	if q, ok := strings.CutPrefix(v, `"`); ok {
		v, stop = q, `"`
	}
	var b []byte
	for i := 0; i < len(v) && len(b) < 8 && strings.IndexByte(stop, v[i]) < 0; i++ {
		c := v[i]
		if stop == `"` && c == '\\' && i+1 < len(v) {
			i++
			c = v[i]
		}
		if len(b) > 0 || c != ' ' && c != '[' && c != ']' {
			b = append(b, c)
		}
	}
	return string(b)
}

// blankLines returns, in order, where each blank line of s ("\n" or
// "\r\n" alone) starts.
func blankLines(s string) []int {
	var at []int
	for i := 0; i < len(s); i++ {
		if (i == 0 || s[i-1] == '\n') && (s[i] == '\n' || strings.HasPrefix(s[i:], "\r\n")) {
			at = append(at, i)
		}
	}
	return at
}

// allIndex returns, in order, where each sub starts in s, overlapping
// ones included.
func allIndex(s, sub string) []int {
	var at []int
	for i := strings.Index(s, sub); i >= 0; {
		at = append(at, i)
		j := strings.Index(s[i+1:], sub)
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return at
}

// indexFold is the index of the first sub, an ASCII word, in s, in any
// case, or -1.
func indexFold(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return i
		}
	}
	return -1
}
