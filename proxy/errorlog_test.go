package proxy

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"go.uber.org/zap"
)

// TestForeignText: a library's line may quote a network peer (a TLS
// server name); as a message it keeps no control character, invisible
// rune or invalid UTF-8, and no more than maxForeignText bytes, while a
// printable line is unchanged.
func TestForeignText(t *testing.T) {
	long := strings.Repeat("a", 70000)
	for _, tt := range []struct{ name, in, want string }{
		{"printable", `http: TLS handshake error from 10.0.0.7:50434: EOF "quoted"`, `http: TLS handshake error from 10.0.0.7:50434: EOF "quoted"`},
		{"unicode", "name: café.example", "name: café.example"},
		{"newline", "a\nb\r\n", `a\nb\r\n`},
		{"escape", "x\x1b[2Jy\x7f\u0085", `x\x1b[2Jy\x7f\u0085`},
		{"bidi", "evil\u202etxt.exe\u2028", `evil\u202etxt.exe\u2028`},
		{"invalid utf-8", "a\xffb\xc3", `a\xffb\xc3`},
		{"backslash", `a\nb`, `a\\nb`},
		{"long", long, long[:maxForeignText] + "…"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := foreignText(tt.in); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestErrorLogEscapes: net/http's error log line is one event, its
// message escaped, whatever a peer put in it.
func TestErrorLogEscapes(t *testing.T) {
	var buf bytes.Buffer
	NewErrorLog(zerolog.New(&buf), "http").Printf("http: TLS handshake error from 10.0.0.7:1: identifier: %s", "x\nFORGED\x1b[2J")
	var ev map[string]any
	if err := json.Unmarshal(buf.Bytes(), &ev); err != nil {
		t.Fatalf("not one JSON line: %q", buf.String())
	}
	want := `http: TLS handshake error from 10.0.0.7:1: identifier: x\nFORGED\x1b[2J`
	if ev["message"] != want || ev["level"] != "debug" || ev["component"] != "http" {
		t.Errorf("got %v, want debug, http, %q", ev, want)
	}
}

// TestACMEChallengeProbeAtDebug: certmagic's error for a client hello
// offering only acme-tls/1 with no challenge pending (anyone can send
// one) is a failed handshake, logged at debug; its other errors keep
// their level.
func TestACMEChallengeProbeAtDebug(t *testing.T) {
	var buf bytes.Buffer
	zl := NewZapLogger(zerolog.New(&buf), func() zerolog.Level { return zerolog.DebugLevel })
	log := quietProbes(zl).Named("handshake").With(zap.String("k", "v"))
	log.Error(alpnChallengeFailed, zap.String("server_name", "probe.example"))
	log.Error("could not get certificate from issuer")
	got := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(got) != 2 || !strings.Contains(got[0], `"level":"debug"`) || !strings.Contains(got[1], `"level":"error"`) {
		t.Errorf("got:\n%s\nwant the challenge probe at debug, the obtain error at error", buf.String())
	}
}
