package reload

import (
	"sync"
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
		keys := rt.Pool
		if keys == nil {
			keys = []proxy.KeyInfo{{Secret: rt.Secret, Fingerprint: rt.Fingerprint, Expires: rt.Expires}}
		}
		for _, k := range keys {
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

// WatchExpiry calls WarnExpiry at once, and then every interval with the
// snapshot being served then (a rotation since start is taken into
// account), until the returned function is called (once or more). now is the clock
// (time.Now outside tests).
func WatchExpiry(log zerolog.Logger, snapshot func() *proxy.Snapshot, interval time.Duration, now func() time.Time) (stop func()) {
	WarnExpiry(log, snapshot(), now())
	t := time.NewTicker(interval)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-t.C:
				WarnExpiry(log, snapshot(), now())
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			t.Stop()
			close(done)
			<-finished
		})
	}
}
