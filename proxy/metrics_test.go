package proxy

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/tillgw/till/audit"
	"github.com/tillgw/till/config"
	"github.com/tillgw/till/vault"
)

// gauge returns the value of the series of name whose labels include
// labels, and whether there is one.
func gauge(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue series
				}
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue(), true
			}
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// TestSecretExpiryMetric checks till_secret_expiry_timestamp_seconds: the
// earlier of a secret's expiry and max_age after its update, absent with
// neither, never for till's own keys, and the snapshot's after a swap.
func TestSecretExpiryMetric(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	expiring := vault.NewSecret("openai", testKey, now)
	expiring.Expires = now.Add(30 * 24 * time.Hour)
	stale := vault.NewSecret("old", "old-key-0123456789", now)
	stale.Expires = now.Add(365 * 24 * time.Hour) // later than max_age
	forever := vault.NewSecret("forever", "forever-key-0123456789", now)
	ca := vault.NewSecret(config.CASecret, "not a provider key", now)
	ca.Expires = now.Add(time.Hour)
	secrets := map[string]vault.Secret{"openai": expiring, "old": stale, "forever": forever, config.CASecret: ca}
	parse := func(yaml string) *config.Config {
		t.Helper()
		cfg, err := config.Parse("till.yaml", []byte(strings.ReplaceAll(yaml, "{{UP}}", "https://api.example.com")), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}

	m := NewMetrics(testAudit(io.Discard))
	if _, ok := gauge(t, m.Registry(), "till_secret_expiry_timestamp_seconds", nil); ok {
		t.Error("a secret expiry before there is a gateway")
	}
	gw := New(NewSnapshot(parse(baseYAML), secrets), Options{Audit: testAudit(io.Discard), Log: zerolog.Nop(), Metrics: m})
	tests := []struct {
		secret string
		want   time.Time // zero: absent
	}{
		{"openai", expiring.Expires},
		{"old", stale.Expires},
		{"forever", time.Time{}},
		{config.CASecret, time.Time{}},
	}
	for _, tt := range tests {
		got, ok := gauge(t, m.Registry(), "till_secret_expiry_timestamp_seconds", map[string]string{"secret": tt.secret})
		if tt.want.IsZero() {
			if ok {
				t.Errorf("%s: got %v, want no series", tt.secret, got)
			}
		} else if !ok || got != float64(tt.want.Unix()) {
			t.Errorf("%s: got %v (present %v), want %d", tt.secret, got, ok, tt.want.Unix())
		}
	}

	// A reload with vault.max_age: the earlier of the two counts.
	gw.Swap(NewSnapshot(parse("version: 1\nvault: {max_age: 90d}\n"+baseYAML[len("version: 1\n"):]), secrets))
	maxAge := now.Add(90 * 24 * time.Hour)
	for secret, want := range map[string]time.Time{"openai": expiring.Expires, "old": maxAge, "forever": maxAge} {
		if got, ok := gauge(t, m.Registry(), "till_secret_expiry_timestamp_seconds", map[string]string{"secret": secret}); !ok || got != float64(want.Unix()) {
			t.Errorf("after a reload with max_age, %s: got %v (present %v), want %d", secret, got, ok, want.Unix())
		}
	}
	if _, ok := gauge(t, m.Registry(), "till_secret_expiry_timestamp_seconds", map[string]string{"secret": config.CASecret}); ok {
		t.Error("till's CA key has an expiry series")
	}
}

// TestRequestsInFlightMetric checks the gauge during a request held by
// its upstream, and after.
func TestRequestsInFlightMetric(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
	}))
	defer up.Close()
	cfg, err := config.Parse("till.yaml", []byte(strings.ReplaceAll(baseYAML, "{{UP}}", up.URL)), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a := testAudit(io.Discard)
	m := NewMetrics(a)
	gw := New(NewSnapshot(cfg, secrets(time.Now())), Options{Audit: a, Log: zerolog.Nop(), Metrics: m})
	inFlight := func() float64 {
		v, ok := gauge(t, m.Registry(), "till_requests_in_flight", nil)
		if !ok {
			t.Fatal("no till_requests_in_flight")
		}
		return v
	}
	if got := inFlight(); got != 0 {
		t.Errorf("at rest: got %v, want 0", got)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		gw.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/openai/v1/models/x", nil))
	}()
	<-arrived
	if got := inFlight(); got != 1 {
		t.Errorf("during a request: got %v, want 1", got)
	}
	close(release)
	<-done
	if got := inFlight(); got != 0 {
		t.Errorf("after the request: got %v, want 0", got)
	}
}

// TestAuditHealthyMetric checks that the gauge follows the sink.
func TestAuditHealthyMetric(t *testing.T) {
	sink := &failingWriter{}
	a := NewAudit(audit.New(sink, audit.Options{}))
	cfg, err := config.Parse("till.yaml", []byte(strings.ReplaceAll(baseYAML, "{{UP}}", "https://api.example.com")), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(a)
	gw := New(NewSnapshot(cfg, secrets(time.Now())), Options{Audit: a, Log: zerolog.Nop(), Metrics: m})
	if got, _ := gauge(t, m.Registry(), "till_audit_healthy", nil); got != 1 {
		t.Errorf("with a working sink: got %v, want 1", got)
	}
	sink.mu.Lock()
	sink.fail = true
	sink.mu.Unlock()
	gw.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/nowhere", nil))
	if got, _ := gauge(t, m.Registry(), "till_audit_healthy", nil); got != 0 {
		t.Errorf("with a failing sink: got %v, want 0", got)
	}
}

// TestBuildAndReloadMetrics checks till_build_info and the time of the
// last successful load, which a failed reload leaves alone.
func TestBuildAndReloadMetrics(t *testing.T) {
	start := time.Now()
	m := NewMetrics(testAudit(io.Discard))
	m.SetBuild("v0.0.1", "abc", "go1.0")
	m.SetBuild("v1.2.3", "0123abcd", "go1.26.8")
	if got, ok := gauge(t, m.Registry(), "till_build_info", map[string]string{"version": "v1.2.3", "commit": "0123abcd", "go": "go1.26.8"}); !ok || got != 1 {
		t.Errorf("build info: got %v (present %v), want 1", got, ok)
	}
	if _, ok := gauge(t, m.Registry(), "till_build_info", map[string]string{"version": "v0.0.1"}); ok {
		t.Error("build info keeps the series of an earlier SetBuild")
	}

	loaded := func() float64 {
		v, ok := gauge(t, m.Registry(), "till_config_last_reload_success_timestamp_seconds", nil)
		if !ok {
			t.Fatal("no till_config_last_reload_success_timestamp_seconds")
		}
		return v
	}
	first := loaded()
	if first < float64(start.Unix()) || first > float64(time.Now().Unix()+1) {
		t.Errorf("at start: got %v, want about %d", first, start.Unix())
	}
	time.Sleep(5 * time.Millisecond)
	m.Reload(false)
	if got := loaded(); got != first {
		t.Errorf("after a failed reload: got %v, want %v unchanged", got, first)
	}
	m.Reload(true)
	if got := loaded(); got <= first {
		t.Errorf("after a reload: got %v, want later than %v", got, first)
	}
}

// TestUnpricedModelsCapped: the model label of till_usage_unpriced_total
// can come from an app (an upstream that echoes it): past a cap, names
// count as "other", so no client makes series of its own.
func TestUnpricedModelsCapped(t *testing.T) {
	m := NewMetrics(testAudit(io.Discard))
	for i := 0; i < 1000; i++ {
		r := &record{route: "openai", client: "web"}
		m.usage(r, fmt.Sprintf("attacker-%d", i), false)
	}
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "till_usage_unpriced_total" {
			if n := len(f.GetMetric()); n != maxUnpricedModels+1 {
				t.Fatalf("till_usage_unpriced_total has %d series after 1000 requests naming random models, want %d", n, maxUnpricedModels+1)
			}
		}
	}
}

// TestReloadsSeriesExistAtStart: both results of till_reloads_total are
// there, at 0, before any reload, so an increase catches the first.
func TestReloadsSeriesExistAtStart(t *testing.T) {
	m := NewMetrics(testAudit(io.Discard))
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "till_reloads_total" && len(f.GetMetric()) == 2 && f.GetMetric()[0].GetCounter().GetValue() == 0 {
			return
		}
	}
	t.Fatal("till_reloads_total is absent from /metrics until the first reload (want result=\"ok\" and result=\"failed\" at 0)")
}

// TestPoolSameKeyScrapes: two pool members holding the same key (a copy
// made while rotating) give one till_pool_key_state series, and /metrics
// still answers.
func TestPoolSameKeyScrapes(t *testing.T) {
	now := time.Now()
	secrets := map[string]vault.Secret{
		"a": vault.NewSecret("a", testKey, now),
		"b": vault.NewSecret("b", testKey, now), // same value, another name
	}
	cfg, err := config.Parse("till.yaml", []byte("version: 1\nroutes:\n  - {name: openai, preset: openai, upstream: https://api.example.com, secret: [a, b]}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(testAudit(io.Discard))
	gw := New(NewSnapshot(cfg, secrets), Options{Audit: testAudit(io.Discard), Log: zerolog.Nop(), Metrics: m})
	h := NewAdmin(AdminOptions{Gateway: gw, Metrics: m})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics = %d: %.200s", rec.Code, rec.Body.String())
	}
}

// TestReloadForgetsGoneSeries: the series of a route, a client or a key
// a reload removed are gone from the next scrape; those of what stays are
// kept. Each reload to new names (a client per deployment, say) once
// added series that stayed until till restarted.
func TestReloadForgetsGoneSeries(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"model":"unpriced-model","usage":{"prompt_tokens":3,"completion_tokens":4}}`)
	}))
	defer up.Close()
	m := NewMetrics(testAudit(io.Discard))
	var gw *Gateway
	serve := func(i int) *Snapshot {
		t.Helper()
		token := fmt.Sprintf("till_reloadtoken%d", i)
		y := fmt.Sprintf("version: 1\nclients:\n  - {name: keep, token_sha256: %x}\n  - {name: c%d, token_sha256: %x}\n"+
			"routes:\n  - {name: kept, preset: openai, secret: openai, upstream: %[4]s}\n  - {name: r%[2]d, preset: openai, secret: openai, upstream: %[4]s}\n",
			sha256.Sum256([]byte("till_keeptoken")), i, sha256.Sum256([]byte(token)), up.URL)
		cfg, err := config.Parse("till.yaml", []byte(y), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		s := NewSnapshot(cfg, secrets(time.Now()))
		if gw == nil {
			gw = New(s, Options{Audit: testAudit(io.Discard), Log: zerolog.Nop(), Metrics: m})
		} else {
			gw.Swap(s)
		}
		for _, path := range []string{fmt.Sprintf("/r%d/v1/chat/completions", i), "/kept/v1/chat/completions", "/nowhere"} {
			for _, tok := range []string{token, "till_keeptoken"} {
				req := httptest.NewRequest("POST", path, strings.NewReader(`{"model":"unpriced-model"}`))
				req.Header.Set("X-Till-Token", tok)
				rec := httptest.NewRecorder()
				gw.ServeHTTP(rec, req)
				if path != "/nowhere" && rec.Code != 200 {
					t.Fatalf("%s: status %d", path, rec.Code)
				}
			}
		}
		return s
	}
	labels := func() map[string]int {
		families, err := m.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, f := range families {
			if !strings.HasPrefix(f.GetName(), "till_") {
				continue
			}
			for _, s := range f.GetMetric() {
				seen["series"]++
				for _, l := range s.GetLabel() {
					seen[l.GetName()+"="+l.GetValue()]++
				}
			}
		}
		return seen
	}
	serve(0)
	serve(1)
	first := labels()
	for i := 2; i < 10; i++ {
		serve(i)
	}
	last := labels()
	for _, gone := range []string{"route=r1", "client=c1", "route=r8"} {
		if last[gone] != 0 {
			t.Errorf("after the reloads that removed it, %d series with %s", last[gone], gone)
		}
	}
	for _, kept := range []string{"route=kept", "client=keep", "route=r9", "client=c9", "route=", "model=unpriced-model"} {
		if last[kept] == 0 {
			t.Errorf("no series with %s, which the config served has", kept)
		}
	}
	if first["series"] != last["series"] {
		t.Errorf("%d till_ series after 2 configs, %d after 10 of the same shape", first["series"], last["series"])
	}
}

// TestMetricHelpReadsWell: the help text /metrics serves for each of
// till's metrics, which dashboards show beside it, repeats no word
// ("cached cached input").
func TestMetricHelpReadsWell(t *testing.T) {
	ch := make(chan *prometheus.Desc)
	go func() {
		NewMetrics(testAudit(io.Discard)).Registry().Describe(ch)
		close(ch)
	}()
	desc := regexp.MustCompile(`^Desc\{fqName: "(till_[a-z_]+)", help: "((?:[^"\\]|\\.)*)"`)
	n := 0
	for d := range ch {
		s := desc.FindStringSubmatch(d.String())
		if s == nil {
			continue
		}
		n++
		words := strings.Fields(strings.ToLower(s[2]))
		for i := 1; i < len(words); i++ {
			if words[i] == words[i-1] {
				t.Errorf("%s: its help repeats %q: %s", s[1], words[i], s[2])
			}
		}
	}
	if n < 15 {
		t.Fatalf("found the help of %d metrics of till's: is the Desc format changed?", n)
	}
}

// TestLastReloadSuccessfulMetric: till_config_last_reload_successful says
// whether the config and vault on disk are the ones served: 0 from a
// failed reload (the previous config still serves) until one succeeds.
// The failed counter grows once per failure, so an alert on its increase
// clears by itself while the stale config still serves.
func TestLastReloadSuccessfulMetric(t *testing.T) {
	m := NewMetrics(testAudit(io.Discard))
	for _, step := range []struct {
		reload *bool
		want   float64
	}{
		{nil, 1}, // at start: loaded
		{new(bool), 0},
		{nil, 0}, // still, however long after
		{func() *bool { b := true; return &b }(), 1},
	} {
		if step.reload != nil {
			m.Reload(*step.reload)
		}
		if got, ok := gauge(t, m.Registry(), "till_config_last_reload_successful", nil); !ok || got != step.want {
			t.Fatalf("after reloads so far: got %v (present %v), want %v", got, ok, step.want)
		}
	}
}
