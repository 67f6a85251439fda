package proxy

import "time"

// fieldAttempt numbers the sends of one request's key.
const fieldAttempt = "attempt"

// writeUse records that r's key is about to be sent upstream, as its
// attempt-th send (a transport sends a request again when a reused
// connection failed under it): every send of a key is a key use. It
// reports whether the record was written; the key goes only if it was.
func (a *Audit) writeUse(r *record, attempt int, now time.Time) bool {
	w := a.ahead.Get().(*aheadWriter)
	defer a.ahead.Put(w)
	// Pooled: what it took last says nothing of this record, which
	// zerolog may never hand it (a global level drops it).
	w.written = false
	var tb [40]byte
	w.log.Info().
		Bytes(fieldTime, now.UTC().AppendFormat(tb[:0], time.RFC3339Nano)).
		Str(fieldEvent, "use").
		Str(fieldID, r.id).
		Func(r.keyUse).
		Int(fieldAttempt, attempt).
		Int64(fieldTokensIn, 0).
		Int64(fieldTokensOut, 0).
		Float64(fieldCostUSD, 0).
		Send()
	return w.written
}
