package test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// percentEncodeAll percent-encodes every byte of s.
func percentEncodeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%%%02X", s[i])
	}
	return b.String()
}

// echoesOf are the ways a hostile upstream sends back the key it was given:
// encoded at every offset, in part, in the headers apps trust most.
func echoesOf(key string) map[string]string {
	core := strings.TrimPrefix(key, "sk-test-") // the key without its provider prefix
	return map[string]string{
		"X-B64-0":     base64.StdEncoding.EncodeToString([]byte(`{"auth":"Bearer ` + key + `"}`)),
		"X-B64-1":     base64.RawStdEncoding.EncodeToString([]byte(`{"auth": "Bearer ` + key + `"}`)),
		"X-B64-2":     base64.StdEncoding.EncodeToString([]byte(`{"auth":  "Bearer ` + key + `"}`)),
		"X-B64url":    base64.RawURLEncoding.EncodeToString([]byte("token=" + key)),
		"X-Percent":   percentEncodeAll(key),
		"X-Hex":       "0x" + hex.EncodeToString([]byte("k="+key)),
		"X-No-Prefix": core,
		"Location":    "https://evil.example/cb?k=" + url.QueryEscape(percentEncodeAll(key)),
		"Set-Cookie":  "s=" + base64.URLEncoding.EncodeToString([]byte("k="+core)) + "; Path=/; HttpOnly",
	}
}

// TestEchoEncodingsRemoved: an upstream that sends the key back in any
// encoding, at any offset, with or without its prefix, in headers,
// Location, Set-Cookie, trailers, an early 103 or a 101, gets none of it
// to the app; innocent headers pass.
func TestEchoEncodingsRemoved(t *testing.T) {
	u := newUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		echoes := echoesOf(key)
		if r.URL.Path == "/ws" {
			for k, v := range echoes {
				w.Header().Set(k, v)
			}
			w.Header().Set("X-Fine", "fine")
			c, err := websocket.Accept(w, r, nil)
			if err == nil {
				c.Close(websocket.StatusNormalClosure, "")
			}
			return
		}
		w.Header().Set("Link", "</x>; rel=preload; k="+hex.EncodeToString([]byte(key)))
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		for k, v := range echoes {
			w.Header().Set(k, v)
		}
		w.Header().Set("X-Fine", "fine")
		w.Header().Set("Trailer", "X-T-Echo, X-T-Fine")
		okHandler(w, r)
		w.Header().Set("X-T-Echo", base64.StdEncoding.EncodeToString([]byte("xy"+key)))
		w.Header().Set("X-T-Fine", "fine")
	}))
	tl := startTill(t, providerConfig(u, ""), providerSecrets, u.caFile)
	echoed := echoesOf(openaiKey)

	var early []http.Header
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		early = append(early, http.Header(h).Clone())
		return nil
	}}
	req := newRequest(t, "GET", tl.url("/openai/v1/models"), nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
	var seen strings.Builder
	for _, h := range append(early, resp.Header, resp.Trailer) {
		h.Write(&seen)
	}
	for name, v := range echoed {
		if strings.Contains(seen.String(), v) {
			t.Errorf("the echo in %s reached the app", name)
		}
	}
	if resp.Header.Get("X-Fine") != "fine" || resp.Trailer.Get("X-T-Fine") != "fine" {
		t.Errorf("innocent headers or trailers were removed:\n%s", seen.String())
	}
	if len(early) != 1 || early[0].Get("Link") != "" {
		t.Errorf("103 responses: got %v, want one without its echoing Link", early)
	}
	if resp.Trailer.Get("X-T-Echo") != "" {
		t.Error("the echoing trailer reached the app")
	}

	t.Run("101", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, resp, err := websocket.Dial(ctx, "ws://"+tl.addr+"/openai/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		var h strings.Builder
		resp.Header.Write(&h)
		suiteLeaks.text(t.Name()+" 101", h.String())
		for name, v := range echoed {
			if strings.Contains(h.String(), v) {
				t.Errorf("the echo in %s reached the app in the 101", name)
			}
		}
		if resp.Header.Get("X-Fine") != "fine" {
			t.Error("an innocent header of the 101 was removed")
		}
	})
}
