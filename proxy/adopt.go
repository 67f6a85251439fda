package proxy

import "strings"

// A reload compiles a new snapshot from the config and the vault. What
// till learned while it served the old one would go with it: the tokens
// it minted (so every route would mint anew, whichever secret changed)
// and the rests of pool keys the upstream refused (so a rate-limited key
// would be tried again at once). Before the new snapshot serves, it
// adopts both for every credential and key it still uses unchanged; a
// pool key's rest is shared, so that a request still running on the old
// snapshot rests the key for the new one too.

// adopt takes from prev, the snapshot s replaces, the tokens minted from
// a credential that s still mints with, and shares the rests of the pool
// keys s still has. It runs before s serves any request.
func (s *Snapshot) adopt(prev *Snapshot) {
	minters := map[string]*minter{}
	rests := map[string]*member{}
	sources := map[string]*sourced{}
	for _, r := range prev.routes {
		if in := r.injection; in.minter != nil {
			minters[in.mintID()] = in.minter
		}
		if r.sourced != nil {
			sources[r.name] = r.sourced
		}
		if r.pool == nil {
			continue
		}
		for _, m := range r.pool.members {
			if in := m.injection; in.minter != nil {
				minters[in.mintID()] = in.minter
			}
			if m.sourced != nil {
				sources[r.name+"\x00"+m.sourced.ref] = m.sourced
			}
			rests[r.name+"\x00"+m.id()] = m
		}
	}
	for _, r := range s.routes {
		if in := r.injection; in.minter != nil {
			in.minter.adopt(minters[in.mintID()])
		}
		if r.sourced != nil {
			r.sourced.adopt(sources[r.name])
		}
		if r.pool == nil {
			continue
		}
		for _, m := range r.pool.members {
			if in := m.injection; in.minter != nil {
				in.minter.adopt(minters[in.mintID()])
			}
			if m.sourced != nil {
				m.sourced.adopt(sources[r.name+"\x00"+m.sourced.ref])
			}
			if shared := rests[r.name+"\x00"+m.id()]; shared != nil {
				m.restUntil, m.restFP = shared.restUntil, shared.restFP
			}
		}
	}
}

// mintID names what a minted token is good for: the credential it was
// minted from, and how (endpoint, scopes, audience, installation). Of an
// injection that mints, or of a token's, it names the token; of any
// other, its key alone.
func (in *injection) mintID() string {
	switch {
	case in.minter != nil:
		return in.fp + "\x00" + in.minter.key
	case in.minted != nil:
		return in.fp + "\x00" + in.minted.key
	}
	return in.fp
}

// id names the key a pool member holds: its secret and value, or its
// ref (a sourced member's rest names the value it belongs to: restFP).
func (m *member) id() string { return m.secretName + "\x00" + m.fp }

// adopt takes old's token while it is good: the same credential minted
// it the same way. Its injection is compiled anew, since the route may
// attach it differently now. It takes old's remembered failure too: a
// reload that changes neither the credential nor how it mints does not
// make the endpoint that refused it be asked again at once.
func (m *minter) adopt(old *minter) {
	if old == nil {
		return
	}
	m.failed.CompareAndSwap(nil, old.failed.Load())
	if t := old.cur.Load(); t != nil && t.token != nil && old.good(t) {
		n := m.compile(t.token)
		n.expires, n.at, n.renewal, n.refused = t.expires, t.at, t.renewal, t.refused
		m.cur.CompareAndSwap(nil, n)
	}
}

// adopt keeps the minter of old's current value, when old read the same
// ref in the same form: the first value s compiles takes its token if
// the value is the same (see current).
func (s *sourced) adopt(old *sourced) {
	if old == nil || old.ref != s.ref || old.form != s.form {
		return
	}
	seed := old.seed.Load() // not yet taken: old compiled no value
	if in := old.last.Load(); in != nil && in.minter != nil {
		seed = in.minter
	}
	// Each route that shares s offers what it had: one that minted
	// another way does not replace a seed s can take.
	if seed != nil && strings.HasPrefix(seed.key, mintsAs(s.cr)) {
		s.seed.Store(seed)
	}
}
