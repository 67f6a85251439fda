package proxy

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tillgw/till/vault/source"
)

// Metrics are the gateway's Prometheus metrics. Labels carry route,
// client and secret names only: never a key, a token or a path.
type Metrics struct {
	// children caches the labelled series the hot path touches, so that
	// a request costs map lookups rather than label hashing.
	children  sync.Map // childKey -> prometheus.Counter / prometheus.Observer
	registry  *prometheus.Registry
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	upstream  *prometheus.HistogramVec
	keyUses   *prometheus.CounterVec
	reloads   *prometheus.CounterVec
	redisErrs prometheus.Counter
	// tokens, cost and unpriced count what metered answers used.
	tokens   *prometheus.CounterVec
	cost     *prometheus.CounterVec
	unpriced *prometheus.CounterVec
	// unpricedModels are the models unpriced names; others count as "other".
	unpricedModels modelSet
	fetches        *prometheus.CounterVec
	// loaded is when the config and vault last loaded (at start or by a
	// reload), lastOK whether the last reload did; build is
	// till_build_info.
	loaded prometheus.Gauge
	lastOK prometheus.Gauge
	build  *prometheus.GaugeVec
	// gateway is the gateway the metrics read their gauges from at
	// scrape time (requests in flight, secret expiry); nil until New.
	gateway atomic.Pointer[Gateway]
	// sources, when set, lists what the source cache holds, for the age
	// and expiry of keys fetched from sources.
	sources atomic.Pointer[func() []source.Status]
}

// Descriptions of the metrics read from the gateway at scrape time.
var secretExpiryDesc = prometheus.NewDesc("till_secret_expiry_timestamp_seconds",
	"When each secret in use expires, in Unix seconds: the earlier of its expiry and vault.max_age after its version time. Absent for a secret with neither.",
	[]string{"secret"}, nil)
var poolKeyDesc = prometheus.NewDesc("till_pool_key_state",
	"Each key of a route's pool: 1 while it is used, 0 while it rests after the upstream refused it (429, 402, 529, 401, 403) or could not be reached.",
	[]string{"route", "key_fp"}, nil)
var budgetRemainingDesc = prometheus.NewDesc("till_budget_remaining",
	"What each budget counter has left in its window: requests, tokens or usd (reservations in flight counted as used).",
	[]string{"budget", "counter", "kind"}, nil)
var secretAgeDesc = prometheus.NewDesc("till_secret_age_seconds",
	"Time since the version of each secret in use was created: its last update in the vault, or the version time its source reports (Vault KV created_time, AWS CreatedDate, file mtime; the first fetch when it reports none), kept while the value stays the same.",
	[]string{"secret"}, nil)

// NewMetrics registers till's metrics, the Go and process collectors, and
// audit failures as read from audit.
func NewMetrics(audit *Audit) *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "till_requests_total", Help: "Requests on the gateway listener, by route, client, outcome and HTTP status code.",
		}, []string{"route", "client", "outcome", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "till_request_duration_seconds", Help: "Time from a request's arrival to the end of its response.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"route"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "till_upstream_duration_seconds", Help: "Time from sending a request upstream to its response headers.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"route"}),
		keyUses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "till_key_uses_total", Help: "Requests a key was attached to, by secret and route.",
		}, []string{"secret", "route"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "till_reloads_total", Help: "Reloads of the config and vault, by result (ok, failed).",
		}, []string{"result"}),
		redisErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "till_rate_limit_store_errors_total", Help: "Rate and budget decisions and budget settlements the shared store (limits.redis) failed; limits.on_redis_error applied.",
		}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "till_tokens_total", Help: "Tokens the provider reported, by route, client and kind (input, cached input included; output).",
		}, []string{"route", "client", "kind"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "till_cost_usd_total", Help: "What the answers cost in US dollars, priced from the model price table, by route and client.",
		}, []string{"route", "client"}),
		unpriced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "till_usage_unpriced_total", Help: "Answers with token usage for a model the price table does not list, by route and model: priced at 0, or at the table's dearest prices when no model is named (labelled other).",
		}, []string{"route", "model"}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "till_secret_fetches_total", Help: "Fetches of secrets from sources, by source and result (ok, error).",
		}, []string{"source", "result"}),
		loaded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "till_config_last_reload_success_timestamp_seconds", Help: "When the config and vault last loaded successfully, at start or by a reload, in Unix seconds.",
		}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "till_config_last_reload_successful", Help: "1 when the last reload (or the start) loaded the config and vault, 0 when it failed and the config before it still serves (alert on it: a failed reload is counted once).",
		}),
		build: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "till_build_info", Help: "Always 1; the labels say which till runs: its version, VCS commit and Go version.",
		}, []string{"version", "commit", "go"}),
	}
	// The metrics are made once the config at start has loaded.
	m.loaded.SetToCurrentTime()
	m.lastOK.Set(1)
	// Both results exist from the start: a rate or increase over a series
	// born at 1 would miss the first failed reload.
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("failed")
	m.registry.MustRegister(m.requests, m.duration, m.upstream, m.keyUses, m.reloads, m.redisErrs, m.fetches, m.loaded, m.lastOK, m.build, m.tokens, m.cost, m.unpriced,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "till_audit_failures_total", Help: "Audit records that could not be written.",
		}, func() float64 { return float64(audit.Failures()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "till_audit_healthy", Help: "1 while the audit sink takes records, 0 while it fails (requests are then refused).",
		}, func() float64 { return boolValue(audit.Healthy()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "till_requests_in_flight", Help: "Requests on the gateway listener not finished yet (open tunnels and upgraded connections included).",
		}, func() float64 {
			if g := m.gateway.Load(); g != nil {
				return float64(g.active.Load())
			}
			return 0
		}),
		gatewayCollector{m},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Registry is what /metrics serves.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// SetBuild sets till_build_info's labels: the version, the VCS commit and
// the Go version till was built with.
func (m *Metrics) SetBuild(version, commit, goVersion string) {
	m.build.Reset()
	m.build.WithLabelValues(version, commit, goVersion).Set(1)
}

// Reload counts a reload; ok says whether it was swapped in.
func (m *Metrics) Reload(ok bool) {
	if m == nil {
		return
	}
	result := "ok"
	if !ok {
		result = "failed"
	}
	m.reloads.WithLabelValues(result).Inc()
	m.lastOK.Set(boolValue(ok))
	if ok {
		m.loaded.SetToCurrentTime()
	}
}

// gatewayCollector reads, at each scrape, what the served snapshot says
// of the vault's secrets: a reload changes it with no series to clean up.
type gatewayCollector struct{ m *Metrics }

func (c gatewayCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- secretExpiryDesc
	ch <- secretAgeDesc
	ch <- poolKeyDesc
	ch <- budgetRemainingDesc
}

func (c gatewayCollector) Collect(ch chan<- prometheus.Metric) {
	g := c.m.gateway.Load()
	if g == nil {
		return
	}
	snap, now := g.Snapshot(), time.Now()
	emit := func(t secretTimes) {
		ch <- prometheus.MustNewConstMetric(secretAgeDesc, prometheus.GaugeValue, now.Sub(t.version).Seconds(), t.name)
		if !t.expires.IsZero() {
			ch <- prometheus.MustNewConstMetric(secretExpiryDesc, prometheus.GaugeValue, float64(t.expires.Unix()), t.name)
		}
	}
	for _, t := range snap.secrets {
		emit(t)
	}
	if len(snap.budgets) > 0 {
		if rows, err := g.Usage(context.Background()); err == nil {
			for _, r := range rows {
				ch <- prometheus.MustNewConstMetric(budgetRemainingDesc, prometheus.GaugeValue, r.Remaining, r.Budget, r.Counter, string(r.Kind))
			}
		}
	}
	for _, rt := range snap.routes {
		if rt.pool == nil {
			continue
		}
		// Two members may hold the same key (a copy, during a rotation):
		// one series each key, usable when either is, since a series
		// sent twice fails the whole scrape.
		usable := map[string]bool{}
		var fps []string
		for _, m := range rt.pool.members {
			fp := m.fp
			if m.sourced != nil {
				if in := m.sourced.last.Load(); in != nil {
					fp = in.fp
				}
			}
			if fp == "" {
				continue
			}
			if _, seen := usable[fp]; !seen {
				fps = append(fps, fp)
			}
			usable[fp] = usable[fp] || !m.restsWith(fp, now)
		}
		for _, fp := range fps {
			ch <- prometheus.MustNewConstMetric(poolKeyDesc, prometheus.GaugeValue, boolValue(usable[fp]), rt.name, fp)
		}
	}
	if list := c.m.sources.Load(); list != nil {
		for _, st := range (*list)() {
			if st.Secret.Fingerprint() != "" {
				emit(timesOf(st.Ref, st.Secret, snap.maxAge))
			}
		}
	}
}

// WatchSources makes the secret age and expiry metrics cover the keys
// list reports, as a source cache's Statuses does.
func (m *Metrics) WatchSources(list func() []source.Status) {
	if m != nil {
		m.sources.Store(&list)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// childKey names one cached series.
type childKey struct {
	metric                         byte
	route, client, outcome, secret string
	status                         int
}

const (
	metricRequests byte = iota
	metricDuration
	metricUpstream
	metricKeyUses
	metricTokensIn
	metricTokensOut
	metricCost
)

// child returns the cached series for k, making it on first use.
func (m *Metrics) child(k childKey) any {
	if c, ok := m.children.Load(k); ok {
		return c
	}
	vec, values := m.series(k)
	c, _ := vec.GetMetricWithLabelValues(values...)
	got, _ := m.children.LoadOrStore(k, c)
	return got
}

// series returns the vector of k's metric and k's label values in it.
func (m *Metrics) series(k childKey) (*prometheus.MetricVec, []string) {
	switch k.metric {
	case metricRequests:
		return m.requests.MetricVec, []string{k.route, k.client, k.outcome, strconv.Itoa(k.status)}
	case metricDuration:
		return m.duration.MetricVec, []string{k.route}
	case metricUpstream:
		return m.upstream.MetricVec, []string{k.route}
	case metricKeyUses:
		return m.keyUses.MetricVec, []string{k.secret, k.route}
	case metricTokensIn:
		return m.tokens.MetricVec, []string{k.route, k.client, "input"}
	case metricTokensOut:
		return m.tokens.MetricVec, []string{k.route, k.client, "output"}
	default:
		return m.cost.MetricVec, []string{k.route, k.client}
	}
}

// forget drops the series of the routes and clients s no longer has, and
// of the keys its routes no longer use: each reload that renames or
// removes them would otherwise leave their series in every scrape until
// till restarts. A request still in flight on the snapshot before s may
// make one again; the next reload drops it.
func (m *Metrics) forget(s *Snapshot) {
	if m == nil {
		return
	}
	routes := make(map[string]*route, len(s.routes))
	for _, rt := range s.routes {
		routes[rt.name] = rt
	}
	goneRoutes := map[string]bool{}
	m.children.Range(func(key, _ any) bool {
		k := key.(childKey)
		rt, ok := routes[k.route]
		if (ok || k.route == "") && (k.client == "" || k.client == anonymous || s.clients.byName(k.client) != nil) &&
			(k.metric != metricKeyUses || ok && rt.keyNamed(k.secret) != nil) {
			return true
		}
		if !ok {
			goneRoutes[k.route] = true
		}
		vec, values := m.series(k)
		vec.DeleteLabelValues(values...)
		m.children.Delete(key)
		return true
	})
	// An unpriced model's series follows its route's token counts.
	for name := range goneRoutes {
		m.unpriced.DeletePartialMatch(prometheus.Labels{"route": name})
	}
}

// observe records a finished request.
func (m *Metrics) observe(r *record, end time.Time) {
	if m == nil {
		return
	}
	m.child(childKey{metric: metricRequests, route: r.route, client: r.client, outcome: r.outcome, status: r.status}).(prometheus.Counter).Inc()
	m.child(childKey{metric: metricDuration, route: r.route}).(prometheus.Observer).Observe(end.Sub(r.start).Seconds())
	if r.keyFP != "" {
		m.child(childKey{metric: metricKeyUses, secret: r.secret, route: r.route}).(prometheus.Counter).Inc()
	}
}

// usage counts what a metered answer used; model, when unpriced, is
// labelled only when it looks like a model name, else as "other" ("" as
// well), so an app cannot make series of its own.
func (m *Metrics) usage(r *record, model string, priced bool) {
	if m == nil {
		return
	}
	m.child(childKey{metric: metricTokensIn, route: r.route, client: r.client}).(prometheus.Counter).Add(float64(r.tokensIn))
	m.child(childKey{metric: metricTokensOut, route: r.route, client: r.client}).(prometheus.Counter).Add(float64(r.tokensOut))
	m.child(childKey{metric: metricCost, route: r.route, client: r.client}).(prometheus.Counter).Add(r.costUSD)
	if !priced {
		if !plainModel(model) || !m.unpricedModels.admit(model) {
			model = "other"
		}
		m.unpriced.WithLabelValues(r.route, model).Inc()
	}
}

// maxUnpricedModels caps the models till_usage_unpriced_total names: the
// name can come from an app (an upstream that echoes the model asked for),
// and each would be a series of its own.
const maxUnpricedModels = 64

// modelSet admits up to maxUnpricedModels distinct names, the first seen.
type modelSet struct {
	mu    sync.Mutex
	names map[string]struct{}
}

func (s *modelSet) admit(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.names[name]; ok {
		return true
	}
	if len(s.names) >= maxUnpricedModels {
		return false
	}
	if s.names == nil {
		s.names = map[string]struct{}{}
	}
	s.names[name] = struct{}{}
	return true
}

// plainModel reports whether s looks like a model name: 1 to 64 letters,
// digits and ".-_:/@", holding no credential (an app's till token or
// provider key, sent in the wrong field: labels hold names only).
func plainModel(s string) bool {
	if s == "" || len(s) > 64 || holdsCredential(s) {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(".-_:/@", c) >= 0) {
			return false
		}
	}
	return true
}

// limitStoreError counts a rate or budget decision, or a settlement, the
// shared store could not make.
func (m *Metrics) limitStoreError() {
	if m == nil {
		return
	}
	m.redisErrs.Inc()
}

// observeUpstream records the time to an upstream's response headers.
func (m *Metrics) observeUpstream(route string, d time.Duration) {
	if m == nil {
		return
	}
	m.child(childKey{metric: metricUpstream, route: route}).(prometheus.Observer).Observe(d.Seconds())
}

// SecretFetch counts one fetch from a source: result is "ok" or "error".
// A nil Metrics counts nothing.
func (m *Metrics) SecretFetch(source, result string) {
	if m == nil {
		return
	}
	m.fetches.WithLabelValues(source, result).Inc()
}
