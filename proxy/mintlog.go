package proxy

import (
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// mintLogEvery is how often the log may say, per route, that requests
// could not get their token.
const mintLogEvery = 10 * time.Second

// mintFailLog keeps the warnings of requests whose token could not be
// obtained to one line per route (and message) per interval: a token
// endpoint that hangs fails every request that waits for it, at the rate
// the requests come, and a line each would flood the log (1,000 lines a
// second at 1,000 requests a second). The first failure is logged at
// once; those that follow within the interval are counted, and the
// interval's end logs how many there were, with the last one's error.
// Each request still has its own record, with its reason.
type mintFailLog struct {
	log   zerolog.Logger
	every time.Duration
	mu    sync.Mutex
	seen  map[mintFailKey]*mintFails
}

// mintFailKey is what one line speaks for.
type mintFailKey struct{ route, msg string }

// mintFails are the failures of one key since its last line.
type mintFails struct {
	last    time.Time   // when its last line was written
	count   int         // failures since, not logged yet
	secret  string      // the last one's secret
	err     string      // and its error
	pending *time.Timer // logs count at the interval's end
}

func newMintFailLog(log zerolog.Logger) *mintFailLog {
	return &mintFailLog{log: log, every: mintLogEvery, seen: map[mintFailKey]*mintFails{}}
}

// warn logs msg for a request (id) of route whose token could not be
// obtained with secret, because of err; or counts it, when a line for
// route and msg was written less than an interval ago.
func (l *mintFailLog) warn(id, route, secret string, err error, msg string) {
	k := mintFailKey{route, msg}
	now := time.Now()
	l.mu.Lock()
	f := l.seen[k]
	if f == nil {
		f = &mintFails{}
		l.seen[k] = f
	}
	if f.pending == nil && now.Sub(f.last) >= l.every {
		f.last = now
		l.mu.Unlock()
		l.log.Warn().Str("id", id).Str("route", route).Str("secret", secret).Str("error", err.Error()).Msg(msg)
		return
	}
	f.count++
	f.secret, f.err = secret, err.Error()
	if f.pending == nil {
		f.pending = time.AfterFunc(f.last.Add(l.every).Sub(now), func() { l.flush(k) })
	}
	l.mu.Unlock()
}

// flush logs how many failures of k came since its last line.
func (l *mintFailLog) flush(k mintFailKey) {
	l.mu.Lock()
	f := l.seen[k]
	since, n, secret, err := f.last, f.count, f.secret, f.err
	f.last, f.count, f.pending = time.Now(), 0, nil
	l.mu.Unlock()
	l.log.Warn().Str("route", k.route).Str("secret", secret).Str("error", err).Int("requests", n).
		Time("since", since).Msg(countedMsg(k.msg, n))
}

// flushAll logs now the failures counted since each key's last line,
// which its timer would log at the interval's end: at shutdown, the
// process may not last that long.
func (l *mintFailLog) flushAll() {
	l.mu.Lock()
	var due []mintFailKey
	for k, f := range l.seen {
		if f.pending != nil && f.pending.Stop() {
			due = append(due, k) // else its flush runs already
		}
	}
	l.mu.Unlock()
	for _, k := range due {
		l.flush(k)
	}
}

// countedMsg is the message of the line for n failures counted since the
// last line of message base.
func countedMsg(base string, n int) string {
	return base + ": " + strconv.Itoa(n) + " more requests since the last such line (the last one's error shown)"
}
