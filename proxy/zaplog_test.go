package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/zap"
)

// TestZapLogger checks that zap entries (certmagic's) reach the zerolog
// log at their level, with their fields and logger name, and that the
// level function, read at each entry, filters them.
func TestZapLogger(t *testing.T) {
	var buf bytes.Buffer
	var least atomic.Int32
	least.Store(int32(zerolog.InfoLevel))
	zl := NewZapLogger(zerolog.New(&buf).With().Str("component", "certmagic").Logger(), func() zerolog.Level { return zerolog.Level(least.Load()) })
	log := zl.Named("renew").With(zap.Strings("identifiers", []string{"till.example"}))

	log.Debug("choosing certificate")
	log.Info("certificate renewed", zap.Duration("remaining", time.Hour))
	log.Warn("renewal is taking long")
	log.Error("could not get certificate from issuer", zap.Error(errors.New("acme: rate limited")), zap.Int("attempt", 2))
	least.Store(int32(zerolog.ErrorLevel))
	log.Warn("hidden once the level is error")
	least.Store(int32(zerolog.DebugLevel))
	log.Debug("shown at debug")
	zl.Named(".acme_client").Info("trying to solve challenge")

	var got []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		got = append(got, m)
	}
	want := []struct{ level, message string }{
		{"info", "certificate renewed"},
		{"warn", "renewal is taking long"},
		{"error", "could not get certificate from issuer"},
		{"debug", "shown at debug"},
	}
	if last := got[len(got)-1]; last["logger"] != "acme_client" {
		t.Errorf("got logger %v, want acme_client", last["logger"])
	}
	got = got[:len(got)-1]
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(got), len(want), buf.String())
	}
	for i, w := range want {
		if got[i]["level"] != w.level || got[i]["message"] != w.message {
			t.Errorf("line %d: got %v %q, want %s %q", i, got[i]["level"], got[i]["message"], w.level, w.message)
		}
		if got[i]["component"] != "certmagic" || got[i]["logger"] != "renew" {
			t.Errorf("line %d: got component %v logger %v, want certmagic, renew", i, got[i]["component"], got[i]["logger"])
		}
		if ids, _ := got[i]["identifiers"].([]any); len(ids) != 1 || ids[0] != "till.example" {
			t.Errorf("line %d: got identifiers %v, want [till.example]", i, got[i]["identifiers"])
		}
	}
	if got[2]["error"] != "acme: rate limited" || got[2]["attempt"] != float64(2) {
		t.Errorf("error line fields: got %v", got[2])
	}
}

// TestZapLoggerOwnLevel checks that, without a level function, the zerolog
// logger's own level filters.
func TestZapLoggerOwnLevel(t *testing.T) {
	var buf bytes.Buffer
	log := NewZapLogger(zerolog.New(&buf).Level(zerolog.WarnLevel), nil)
	if log.Core().Enabled(zap.InfoLevel) || !log.Core().Enabled(zap.WarnLevel) {
		t.Error("the logger's level is not the least level")
	}
	log.Info("no")
	log.Warn("yes")
	if out := buf.String(); strings.Contains(out, `"no"`) || !strings.Contains(out, `"message":"yes"`) {
		t.Errorf("got %q", out)
	}
}
