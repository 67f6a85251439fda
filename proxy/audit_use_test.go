package proxy

import (
	"bytes"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/tillgw/till/audit"
)

// TestWriteUseFailsClosed: writeUse reports a use record written only
// when the sink took it in this call. Its writers are pooled: one that
// took the last record must not report it again for a record zerolog
// never handed to it (the process-wide zerolog.SetGlobalLevel, the usual
// way to quiet a log, drops every event below it), or a key goes with no
// record of its use.
func TestWriteUseFailsClosed(t *testing.T) {
	var buf bytes.Buffer
	a := NewAudit(audit.New(&buf, audit.Options{}))
	rec := record{id: "r1", route: "openai", secret: "openai", keyFP: "sha256:0123456789abcdef"}
	if !a.writeUse(&rec, 1, time.Now()) {
		t.Fatal("setup: the first use record was not written")
	}
	defer zerolog.SetGlobalLevel(zerolog.GlobalLevel())
	zerolog.SetGlobalLevel(zerolog.WarnLevel)
	written := buf.Len()
	if a.writeUse(&rec, 2, time.Now()) {
		t.Errorf("writeUse reported a use record written; the sink got %d bytes more", buf.Len()-written)
	}
}
