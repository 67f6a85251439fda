package proxy

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// errFormTooLarge refuses a form on a route checkFormMethod applies to
// that is larger than till holds to read it.
var errFormTooLarge = apiError{CodeBadRequest, "this route limits methods, and reads a form body whole for a _method field that would name another one: " +
	"this one is larger than 1 MiB and the route's max_body (hint: raise max_body)"}

// errFormMethod refuses a form whose _method field names a method the
// route does not allow.
var errFormMethod = apiError{CodeMethodNotAllowed, "a _method field in the form body names a method this route does not allow"}

// checksFormMethod reports whether a route reads a POST's form body for a
// _method field, which Rails (Rack::MethodOverride), Laravel and Symfony
// honour as the request's method: a route to an upstream of the user's
// own (no preset: providers' APIs read no such field) that limits methods.
func checksFormMethod(preset string, methods []string) bool {
	return preset == "" && len(methods) > 0
}

// checkFormMethod refuses a POST whose form body (urlencoded or
// multipart) holds a _method field naming a method the route does not
// allow, before anything is sent. The body is held whole to be read, up
// to 1 MiB or max_body; a larger form is refused, as is one that cannot
// be parsed, since the upstream might read in it what till could not.
func (x *exchange) checkFormMethod(w http.ResponseWriter, r *http.Request, rt *route) *apiError {
	if !rt.formMethods || r.Method != http.MethodPost || !x.hasBody {
		return nil
	}
	how, err := readingOf(r.Header)
	if err != nil {
		return &apiError{CodeBadRequest, "this route limits methods, and reads a form body for a _method field that would name another one: " + err.Error()}
	}
	if !how.form && !how.multipart {
		return nil
	}
	if e, ok := x.holdBody(w, r); !ok {
		return &e
	}
	if x.held == nil {
		return &errFormTooLarge
	}
	var values []string
	if how.multipart {
		values, err = multipartMethods(x.held, how.boundary)
	} else {
		values, err = urlencodedMethods(x.held)
	}
	if err != nil {
		return &apiError{CodeBadRequest, "the form body could not be read: " + err.Error()}
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
}

// readingOf tells from a POST's Content-Type how its body may be read:
// as Rack and PHP read it, which is more often than Go's parser would.
// Rack reads a POST without a Content-Type, or with an empty one, as a
// urlencoded form, and multipart/mixed and multipart/related as
// multipart; both cut the media type at a "," as well as a ";", PHP at a
// space too. A multipart form whose boundary Go cannot read, or a request
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
	media := looseMediaType(ct)
	how.form = media == "" || media == "application/x-www-form-urlencoded"
	if strings.HasPrefix(media, "multipart/") {
		_, params, err := mime.ParseMediaType(ct)
		if err != nil || params["boundary"] == "" {
			return how, errors.New("its multipart Content-Type has no boundary Go can read")
		}
		how.multipart, how.boundary = true, params["boundary"]
	}
	return how, nil
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
