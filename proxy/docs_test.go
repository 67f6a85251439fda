package proxy

import (
	"encoding/json"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// referenceSection returns the text of docs/reference.md under the
// heading "## title", up to the next such heading.
func referenceSection(t *testing.T, title string) string {
	t.Helper()
	b, err := os.ReadFile("../docs/reference.md")
	if err != nil {
		t.Fatal(err)
	}
	_, s, ok := strings.Cut(string(b), "\n## "+title+"\n")
	if !ok {
		t.Fatalf("docs/reference.md has no section %q", title)
	}
	s, _, _ = strings.Cut(s, "\n## ")
	return s
}

// TestReferenceErrorTable: docs/reference.md's table of error codes gives
// each code till answers with the status it is answered with, and names
// every one of them.
func TestReferenceErrorTable(t *testing.T) {
	codes := []string{CodeRouteNotFound, CodeClientUnauthenticated, CodeClientForbidden,
		CodeMethodNotAllowed, CodePathNotAllowed, CodeHostNotAllowed, CodeOriginForbidden,
		CodeBadRequest, CodeRateLimited, CodeBudgetExceeded, CodeModelNotAllowed,
		CodeSecretMissing, CodeSecretExpired, CodeSecretUnavailable, CodeAuditUnavailable,
		CodeUpstreamUnreachable, CodeUpstreamTimeout, CodeCredentialUnavailable}
	row := regexp.MustCompile("(?m)^\\| (`[a-z_]+`(?:, `[a-z_]+`)*) \\| ([0-9]+)[^|]*\\|$")
	name := regexp.MustCompile("`([a-z_]+)`")
	documented := map[string]int{}
	for _, m := range row.FindAllStringSubmatch(referenceSection(t, "Errors"), -1) {
		status, _ := strconv.Atoi(m[2])
		for _, c := range name.FindAllStringSubmatch(m[1], -1) {
			documented[c[1]] = status
		}
	}
	for _, code := range codes {
		status, ok := documented[code]
		switch {
		case !ok:
			t.Errorf("docs/reference.md: the error table lacks %s", code)
		case status != statusOf(code):
			t.Errorf("docs/reference.md: the error table gives %s status %d, till answers %d", code, status, statusOf(code))
		}
	}
	for code := range documented {
		if !slices.Contains(codes, code) && code != codeClientClosed && code != codeShutdown {
			t.Errorf("docs/reference.md: the error table names %s, which till does not answer with", code)
		}
	}
}

// TestReferenceMetrics: docs/reference.md's list of metrics names every
// metric of till's own that /metrics serves, each with its labels, and no
// other.
func TestReferenceMetrics(t *testing.T) {
	m := NewMetrics(testAudit(io.Discard))
	served := map[string]string{}
	ch := make(chan *prometheus.Desc)
	go func() {
		m.Registry().Describe(ch)
		close(ch)
	}()
	desc := regexp.MustCompile(`^Desc\{fqName: "(till_[a-z_]+)", .*variableLabels: \{([a-z_,]*)\}\}$`)
	for d := range ch {
		if s := desc.FindStringSubmatch(d.String()); s != nil {
			served[s[1]] = s[2]
		}
	}
	if len(served) < 15 {
		t.Fatalf("found %d metrics of till's: is the Desc format changed?", len(served))
	}
	documented := map[string]string{}
	for _, s := range regexp.MustCompile("`(till_[a-z_]+)(?:\\{([a-z_,]*)\\})?`").FindAllStringSubmatch(referenceSection(t, "Metrics"), -1) {
		documented[s[1]] = s[2]
	}
	for _, name := range slices.Sorted(maps.Keys(served)) {
		labels, ok := documented[name]
		switch {
		case !ok:
			t.Errorf("docs/reference.md: the metrics lack %s{%s}", name, served[name])
		case labels != served[name]:
			t.Errorf("docs/reference.md: the metrics give %s{%s}, till serves {%s}", name, labels, served[name])
		}
	}
	for name := range documented {
		if _, ok := served[name]; !ok {
			t.Errorf("docs/reference.md: the metrics name %s, which till does not serve", name)
		}
	}
}

// TestReferenceAuditFields: docs/reference.md's table of request record
// fields names every field a request record has (time, level, event,
// seq and prev are told of above and below it), and its list of a use
// record's fields every one of those.
func TestReferenceAuditFields(t *testing.T) {
	section := referenceSection(t, "Audit records")
	table := map[string]bool{}
	name := regexp.MustCompile("`([a-z_]+)`")
	for line := range strings.SplitSeq(section, "\n") {
		if cells := strings.Split(line, " | "); strings.HasPrefix(line, "| `") && len(cells) > 1 {
			for _, m := range name.FindAllStringSubmatch(cells[0], -1) {
				table[m[1]] = true
			}
		}
	}
	_, use, _ := strings.Cut(section, "- **`use`**")
	use, _, _ = strings.Cut(use, "- **`request`**")
	told := []string{fieldTime, "level", fieldEvent, "seq", "prev"}
	var buf strings.Builder
	a := testAudit(&buf)
	r := &record{start: time.Now(), id: "1", mode: modeReverse, keyFP: "sha256:0123456789abcdef", cred: credStatic, outcome: outcomeForwarded}
	a.write(r, time.Now())
	a.writeUse(r, 1, time.Now())
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("wrote %d records, want a request and a use record:\n%s", len(lines), buf.String())
	}
	for i, line := range lines {
		var fields map[string]any
		if err := json.Unmarshal([]byte(line), &fields); err != nil {
			t.Fatal(err)
		}
		for _, f := range slices.Sorted(maps.Keys(fields)) {
			switch {
			case slices.Contains(told, f):
			case i == 0 && !table[f]:
				t.Errorf("docs/reference.md: the table of request record fields lacks %s", f)
			case i == 1 && !strings.Contains(use, "`"+f+"`"):
				t.Errorf("docs/reference.md: the fields of a use record lack %s", f)
			}
		}
	}
}
