package reload

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/tillgw/till/proxy"
	"github.com/tillgw/till/vault"
)

// ExpiryInterval is how often a running till repeats its warnings about
// expired and expiring keys: a gateway runs for months, and a warning
// logged once at start scrolls out of sight long before the key expires.
const ExpiryInterval = 24 * time.Hour

// WarnExpiry logs, at warn, each key of snap's routes (each of a pool's)
// that has expired, or expires within vault.ExpiringWindow of now, and
// returns how many it logged. A line names the route, the secret, its fingerprint, the expiry
// and the status: never a value.
func WarnExpiry(log zerolog.Logger, snap *proxy.Snapshot, now time.Time) int {
	n := 0
	for _, rt := range snap.Routes() {
		for _, k := range keysOf(rt) {
			if k.Expires.IsZero() || k.Expires.Sub(now) > vault.ExpiringWindow {
				continue
			}
			status, msg := vault.StatusExpiring, "the route's key expires within 14 days: rotate it (till secret set NAME)"
			if !now.Before(k.Expires) {
				status, msg = vault.StatusExpired, "the route's key has expired: rotate it (till secret set NAME)"
			}
			log.Warn().Str("route", rt.Name).Str("secret", k.Secret).Str("key_fp", k.Fingerprint).
				Time("expires", k.Expires.UTC()).Str("status", string(status)).Msg(msg)
			n++
		}
	}
	return n
}

// keysOf returns the keys rt attaches: each of its pool's, or its own.
func keysOf(rt proxy.RouteInfo) []proxy.KeyInfo {
	if rt.Pool != nil {
		return rt.Pool
	}
	return []proxy.KeyInfo{{Secret: rt.Secret, Fingerprint: rt.Fingerprint, Expires: rt.Expires}}
}

// ExpiryWatch warns of the keys a running till serves that have expired
// or expire soon: at Start, every interval (a warning logged once scrolls
// out of sight long before the key expires), and at the moment a key in
// use expires, when its requests begin to get secret_expired.
type ExpiryWatch struct {
	log      zerolog.Logger
	snapshot func() *proxy.Snapshot
	interval time.Duration
	now      func() time.Time
	// after waits for the next expiry (time.After outside tests).
	after   func(time.Duration) <-chan time.Time
	changed chan struct{}
	// fetched is set by Fetched until the watch looks.
	fetched  atomic.Bool
	done     chan struct{}
	finished chan struct{}
	stop     sync.Once
}

// NewExpiryWatch returns a watch of the snapshot that snapshot gives
// (the one served), with now as the clock (time.Now outside tests).
func NewExpiryWatch(log zerolog.Logger, snapshot func() *proxy.Snapshot, interval time.Duration, now func() time.Time) *ExpiryWatch {
	return &ExpiryWatch{log: log, snapshot: snapshot, interval: interval, now: now, after: time.After,
		changed: make(chan struct{}, 1), done: make(chan struct{}), finished: make(chan struct{})}
}

// Start warns at once, as WarnExpiry does, and then watches until Stop.
func (w *ExpiryWatch) Start() {
	w.fetched.Store(false) // what was fetched so far is told of here
	WarnExpiry(w.log, w.snapshot(), w.now())
	go w.run()
}

// Changed tells the watch that the keys served may have changed (a
// reload, a source's new value): the next expiry is looked for again.
func (w *ExpiryWatch) Changed() {
	select {
	case w.changed <- struct{}{}:
	default: // one is pending already
	}
}

// Fetched tells the watch that a source's value was replaced or its
// expiry moved (source.Cache.OnChange): as Changed, and a key it then
// finds served expired already, not served before, is told of too, since
// no reload's warning was.
func (w *ExpiryWatch) Fetched() {
	w.fetched.Store(true)
	w.Changed()
}

// Stop ends the watch started (once or more).
func (w *ExpiryWatch) Stop() {
	w.stop.Do(func() {
		close(w.done)
		<-w.finished
	})
}

func (w *ExpiryWatch) run() {
	defer close(w.finished)
	tick := time.NewTicker(w.interval)
	defer tick.Stop()
	var served map[servedKey][]string
	var looked time.Time
	for {
		served, looked = w.expired(served, looked, w.fetched.Swap(false))
		var next <-chan time.Time
		if at := earliest(served, looked); !at.IsZero() {
			next = w.after(at.Sub(w.now()))
		}
		select {
		case <-tick.C:
			WarnExpiry(w.log, w.snapshot(), w.now())
		case <-next:
		case <-w.changed:
		case <-w.done:
			return
		}
	}
}

// servedKey is a key as served: a rotation, or a reload that moves its
// expiry, makes another.
type servedKey struct {
	secret, fp string
	expires    time.Time
}

// expired logs, at warn, each key of before (served when last looked at,
// at looked) that has expired since and is still served, once, with the
// routes that use it. A key served already expired that was not before
// is told of when fetched says a source brought it (a value fetched
// expired, an expiry a source moved into the past); after a reload it is
// not, since WarnExpiry tells of it. It returns the keys served, with
// their routes, and when it looked.
func (w *ExpiryWatch) expired(before map[servedKey][]string, looked time.Time, fetched bool) (map[servedKey][]string, time.Time) {
	now := w.now()
	served := map[servedKey][]string{}
	for _, rt := range w.snapshot().Routes() {
		for _, k := range keysOf(rt) {
			if !k.Expires.IsZero() && k.Fingerprint != "" {
				sk := servedKey{k.Secret, k.Fingerprint, k.Expires.UTC().Round(0)}
				served[sk] = append(served[sk], rt.Name)
			}
		}
	}
	for k, routes := range served {
		_, was := before[k]
		msg := ""
		switch {
		case now.Before(k.expires):
		case was && looked.Before(k.expires):
			msg = "a key in use has just expired: its routes' requests get secret_expired; rotate it (till secret set NAME)"
		case !was && fetched:
			msg = "a key fetched from its source has expired: its routes' requests get secret_expired; rotate it at its source"
		}
		if msg != "" {
			w.log.Warn().Str("secret", k.secret).Str("key_fp", k.fp).Strs("routes", routes).
				Time("expires", k.expires).Str("status", string(vault.StatusExpired)).Msg(msg)
		}
	}
	return served, now
}

// earliest is the first expiry of keys after now; zero when there is
// none.
func earliest(keys map[servedKey][]string, now time.Time) time.Time {
	var first time.Time
	for k := range keys {
		if now.Before(k.expires) && (first.IsZero() || k.expires.Before(first)) {
			first = k.expires
		}
	}
	return first
}
