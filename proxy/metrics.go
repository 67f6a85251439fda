package proxy

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
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
}

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
			Name: "till_rate_limit_store_errors_total", Help: "Rate-limit decisions taken without the shared store (limits.on_redis_error applied).",
		}),
	}
	m.registry.MustRegister(m.requests, m.duration, m.upstream, m.keyUses, m.reloads, m.redisErrs,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "till_audit_failures_total", Help: "Audit records that could not be written.",
		}, func() float64 { return float64(audit.Failures()) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Registry is what /metrics serves.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

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
)

// child returns the cached series for k, making it on first use.
func (m *Metrics) child(k childKey) any {
	if c, ok := m.children.Load(k); ok {
		return c
	}
	var c any
	switch k.metric {
	case metricRequests:
		c = m.requests.WithLabelValues(k.route, k.client, k.outcome, strconv.Itoa(k.status))
	case metricDuration:
		c = m.duration.WithLabelValues(k.route)
	case metricUpstream:
		c = m.upstream.WithLabelValues(k.route)
	case metricKeyUses:
		c = m.keyUses.WithLabelValues(k.secret, k.route)
	}
	c, _ = m.children.LoadOrStore(k, c)
	return c
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

// limitStoreError counts a rate decision the shared store could not make.
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
