package vault

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestSecretAccessors(t *testing.T) {
	single := NewSecret("openai", "sk-test", t0)
	multi := NewFieldSecret("twilio", map[string]string{"token": "tok", "sid": "AC1"}, t0)

	if v, ok := single.Value(); !ok || v != "sk-test" {
		t.Errorf("single.Value() = %q, %v; want %q, true", v, ok, "sk-test")
	}
	if _, ok := single.Field("sid"); ok {
		t.Errorf("single.Field: got ok, want false")
	}
	if got := single.FieldNames(); got != nil {
		t.Errorf("single.FieldNames: got %q, want nil", got)
	}
	if _, ok := multi.Value(); ok {
		t.Errorf("multi.Value: got ok, want false")
	}
	if v, ok := multi.Field("sid"); !ok || v != "AC1" {
		t.Errorf("multi.Field(sid) = %q, %v; want %q, true", v, ok, "AC1")
	}
	if _, ok := multi.Field("nope"); ok {
		t.Errorf("multi.Field(nope): got ok, want false")
	}
	if got, want := multi.FieldNames(), []string{"sid", "token"}; !slices.Equal(got, want) {
		t.Errorf("multi.FieldNames: got %q, want %q", got, want)
	}
	if got, want := multi.Values(), []string{"AC1", "tok"}; !slices.Equal(got, want) {
		t.Errorf("multi.Values: got %q, want %q", got, want)
	}
	if got, want := single.Values(), []string{"sk-test"}; !slices.Equal(got, want) {
		t.Errorf("single.Values: got %q, want %q", got, want)
	}
	if !single.Created.Equal(t0) || !single.Updated.Equal(t0) || !single.Expires.IsZero() {
		t.Errorf("single times: got %v %v %v, want created=updated=%v and no expiry", single.Created, single.Updated, single.Expires, t0)
	}
	var zero Secret
	if _, ok := zero.Value(); ok || zero.Values() != nil || zero.Fingerprint() != "" {
		t.Errorf("zero Secret reveals something")
	}
}

func TestNewFieldSecretCopies(t *testing.T) {
	fields := map[string]string{"sid": "AC1"}
	s := NewFieldSecret("twilio", fields, t0)
	fields["sid"] = "changed"
	if v, _ := s.Field("sid"); v != "AC1" {
		t.Errorf("got %q, want %q", v, "AC1")
	}
}

func TestFingerprint(t *testing.T) {
	re := regexp.MustCompile(`^sha256:[0-9a-f]{16}$`)
	sum := sha256.Sum256([]byte("sk-test"))
	wantSingle := "sha256:" + hex.EncodeToString(sum[:])[:16]
	sum = sha256.Sum256([]byte(`{"sid":"AC1","token":"a<b&c"}`))
	wantMulti := "sha256:" + hex.EncodeToString(sum[:])[:16]

	tests := []struct {
		name string
		s    Secret
		want string
	}{
		{"single", NewSecret("openai", "sk-test", t0), wantSingle},
		{"single other name and time", NewSecret("other", "sk-test", t0.Add(time.Hour)), wantSingle},
		{"multi", NewFieldSecret("twilio", map[string]string{"token": "a<b&c", "sid": "AC1"}, t0), wantMulti},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.s.Fingerprint()
			if !re.MatchString(got) {
				t.Errorf("got %q, want it to match %s", got, re)
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	if a, b := NewSecret("x", "sk-test", t0).Fingerprint(), NewSecret("x", "sk-test2", t0).Fingerprint(); a == b {
		t.Errorf("different values share fingerprint %q", a)
	}
}

type exportedHolder struct {
	Secret Secret
	Note   string
}

type unexportedHolder struct {
	s    Secret
	note string
}

func TestRedaction(t *testing.T) {
	const value = "sk-live-VERYSECRET-0123"
	const field = "tok-FIELDSECRET-4567"
	secrets := []Secret{
		NewSecret("openai", value, t0),
		NewFieldSecret("twilio", map[string]string{"sid": value, "token": field}, t0),
	}
	for _, s := range secrets {
		s.Expires = t0.Add(time.Hour)
		ps := &s
		holders := map[string]any{
			"secret":            s,
			"pointer":           ps,
			"exported field":    exportedHolder{Secret: s, Note: "n"},
			"unexported field":  unexportedHolder{s: s, note: "n"},
			"pointer to holder": &unexportedHolder{s: s},
			"map":               map[string]Secret{s.Name: s},
			"slice":             []Secret{s},
			"any slice":         []any{s, ps},
		}
		var outputs = map[string]string{}
		for hname, h := range holders {
			for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d", "%T"} {
				outputs[s.Name+" "+hname+" "+verb] = fmt.Sprintf(verb, h)
			}
			if b, err := json.Marshal(h); err == nil { // unexported holders marshal to {}
				outputs[s.Name+" "+hname+" json"] = string(b)
			}
		}
		var buf bytes.Buffer
		log := zerolog.New(&buf)
		log.Info().Object("secret", s).Msg("object")
		log.Info().Interface("secret", s).Msg("interface")
		log.Info().Interface("holder", exportedHolder{Secret: s}).Msg("holder")
		log.Info().Any("map", map[string]Secret{s.Name: s}).Msg("any")
		log.Info().Str("s", s.String()).Msg("str")
		outputs[s.Name+" zerolog"] = buf.String()

		for name, out := range outputs {
			t.Run(name, func(t *testing.T) {
				for _, leak := range []string{value, field, "VERYSECRET", "FIELDSECRET"} {
					if strings.Contains(out, leak) {
						t.Errorf("got %q, want no %q in it", out, leak)
					}
				}
			})
		}
		if out := outputs[s.Name+" zerolog"]; strings.Count(out, s.Fingerprint()) != 5 {
			t.Errorf("zerolog: got %q, want the fingerprint %q in every line", out, s.Fingerprint())
		}
	}

	s := secrets[0]
	if got, want := s.String(), "vault.Secret{name=openai fp="+s.Fingerprint()+" value=REDACTED}"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	})
	if want := []string{"created", "expires", "fingerprint", "name", "updated"}; !slices.Equal(keys, want) {
		t.Errorf("json keys: got %q, want %q", keys, want)
	}
	if m["expires"] != nil {
		t.Errorf("json expires: got %v, want null", m["expires"])
	}
}

func TestStatus(t *testing.T) {
	day := 24 * time.Hour
	now := t0.Add(100 * day)
	tests := []struct {
		name      string
		updated   time.Time
		expires   time.Time
		maxAge    time.Duration
		want      Status
		wantUntil time.Time
	}{
		{name: "no expiry no max age", updated: t0, want: StatusOK},
		{name: "expires far", updated: t0, expires: now.Add(30 * day), want: StatusOK, wantUntil: now.Add(30 * day)},
		{name: "expires in 15 days", updated: t0, expires: now.Add(15 * day), want: StatusOK, wantUntil: now.Add(15 * day)},
		{name: "expires in 14 days", updated: t0, expires: now.Add(14 * day), want: StatusExpiring, wantUntil: now.Add(14 * day)},
		{name: "expires in 1 hour", updated: t0, expires: now.Add(time.Hour), want: StatusExpiring, wantUntil: now.Add(time.Hour)},
		{name: "expires now", updated: t0, expires: now, want: StatusExpired, wantUntil: now},
		{name: "expired", updated: t0, expires: now.Add(-day), want: StatusExpired, wantUntil: now.Add(-day)},
		{name: "max age ok", updated: now.Add(-10 * day), maxAge: 90 * day, want: StatusOK, wantUntil: now.Add(80 * day)},
		{name: "max age expiring", updated: now.Add(-80 * day), maxAge: 90 * day, want: StatusExpiring, wantUntil: now.Add(10 * day)},
		{name: "max age expired", updated: now.Add(-91 * day), maxAge: 90 * day, want: StatusExpired, wantUntil: now.Add(-day)},
		{name: "expires before max age", updated: now, expires: now.Add(day), maxAge: 90 * day, want: StatusExpiring, wantUntil: now.Add(day)},
		{name: "max age before expires", updated: now.Add(-95 * day), expires: now.Add(300 * day), maxAge: 90 * day, want: StatusExpired, wantUntil: now.Add(-5 * day)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSecret("openai", "sk-test", tt.updated)
			s.Created = tt.updated.Add(-day)
			s.Expires = tt.expires
			if got := s.Status(now, tt.maxAge); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if got := s.ExpiresAt(tt.maxAge); !got.Equal(tt.wantUntil) {
				t.Errorf("ExpiresAt: got %q, want %q", got, tt.wantUntil)
			}
		})
	}
}
