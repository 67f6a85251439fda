package proxy

import (
	"net/http"
	"net/netip"
	"sync"
)

// openTunnels are the tunnels in flight. Each is checked against every
// config a reload swaps in, as a new CONNECT would be, and ended when that
// config refuses it: otherwise a tunnel would outlive the forward mode,
// tunnel policy, client or address range that allowed it.
type openTunnels struct {
	mu   sync.Mutex
	open map[*openTunnel]struct{}
}

// openTunnel is one tunnel: admits says whether a config allows it still,
// end closes both of its sides.
type openTunnel struct {
	admits func(*live) *apiError
	end    func()
	cut    *apiError // the refusal that ended it; guarded by openTunnels.mu
}

// add tracks t, and checks it against cur, the config being served now:
// a reload may have swapped it in after the tunnel's own checks.
func (s *openTunnels) add(t *openTunnel, cur *live) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open == nil {
		s.open = make(map[*openTunnel]struct{})
	}
	s.open[t] = struct{}{}
	s.check(t, cur)
}

// remove stops tracking t, and returns the refusal a reload ended it
// with, or nil.
func (s *openTunnels) remove(t *openTunnel) *apiError {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.open, t)
	return t.cut
}

// recheck ends the tunnels that l refuses.
func (s *openTunnels) recheck(l *live) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t := range s.open {
		s.check(t, l)
	}
}

func (s *openTunnels) check(t *openTunnel, l *live) {
	if t.cut != nil {
		return
	}
	if e := t.admits(l); e != nil {
		t.cut = e
		t.end()
	}
}

// admitTunnel decides whether a tunnel opened by the CONNECT r, to the
// address dialled, is one l allows: as a new CONNECT, it must still be
// tunnelled (forward mode on, unknown hosts tunnelled, no route for its
// host), by a client admitted from its address, to an address the dial
// guard permits.
func (l *live) admitTunnel(r *http.Request, canIntercept bool, dialled netip.AddrPort) *apiError {
	_, mode, e := l.resolveConnect(r.Host, canIntercept)
	if e != nil {
		return e
	}
	if mode != modeTunnel {
		return &apiError{CodeHostNotAllowed, "this host has a route now; a new CONNECT to it is intercepted"}
	}
	id := l.clients.identify(r, "", peerCert(r), "")
	if e, ok := id.admit(r.RemoteAddr, nil); !ok {
		return &e
	}
	if !l.guard.permitted(dialled.Addr()) || l.guard.isOwn(dialled) {
		return &errTunnelForbidden
	}
	return nil
}
