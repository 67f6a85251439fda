package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"
)

// deniedPrefixes are the ranges a tunnel may not reach unless
// forward.allow_cidrs lists them (invariant 4): what a CONNECT could use to
// reach till's host, its network or a cloud metadata service. Unspecified
// addresses are refused before allow_cidrs (see permitted).
var deniedPrefixes = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"10.0.0.0/8",      // private (RFC 1918)
		"100.64.0.0/10",   // CGNAT (RFC 6598)
		"127.0.0.0/8",     // loopback
		"169.254.0.0/16",  // link-local, cloud metadata 169.254.169.254
		"172.16.0.0/12",   // private
		"192.0.0.0/24",    // IETF protocol assignments
		"192.168.0.0/16",  // private
		"198.18.0.0/15",   // benchmarking
		"224.0.0.0/4",     // multicast
		"240.0.0.0/4",     // reserved, broadcast
		"::1/128",         // loopback
		"fc00::/7",        // unique local, AWS metadata fd00:ec2::254
		"fe80::/10",       // link-local
		"ff00::/8",        // multicast
		"100::/64",        // discard
		"2001:db8::/32",   // documentation
		"2001::/32",       // Teredo: embeds an IPv4 address
		"2002::/16",       // 6to4: embeds an IPv4 address
		"64:ff9b::/96",    // NAT64: embeds an IPv4 address (checked below too)
		"64:ff9b:1::/48",  // local-use NAT64
		"::ffff:0:0/96",   // IPv4-mapped (unmapped below)
		"::/96",           // IPv4-compatible (deprecated)
		"::ffff:0:0:0/96", // IPv4-translated (SIIT)
		"fec0::/10",       // site-local (deprecated)
		"192.88.99.0/24",  // 6to4 relay anycast
		// Cloud platform endpoints at public addresses that trust any
		// caller on the VM, as the metadata service does: Azure's
		// WireServer (goal state, extension settings) and HostGAPlugin
		// (:32526).
		"168.63.129.16/32",
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// errHostNotAllowed is returned for a tunnel target the guard refuses.
var errHostNotAllowed = errors.New("host not allowed")

// dialGuard dials tunnel targets after checking every address: it resolves
// the name once, refuses internal addresses unless allowed, refuses till's
// own listeners, and dials the very address it checked, so a DNS answer
// that changes between check and dial (rebinding) cannot slip through.
type dialGuard struct {
	allow []netip.Prefix
	own   []netip.AddrPort // listeners bound to one address
	// anyPorts are the ports of listeners bound to an unspecified
	// address, which every address of the machine reaches: those it
	// has when a tunnel dials, read then by localAddrs, not those it
	// had at start.
	anyPorts   []uint16
	localAddrs func() ([]net.Addr, error)
	resolver   interface {
		LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
	}
	dialer *net.Dialer
}

// newDialGuard returns a guard that permits the allow ranges and refuses
// till's own listeners (an unspecified listen address stands for every
// address of the machine).
func newDialGuard(allow []netip.Prefix, listeners []netip.AddrPort) *dialGuard {
	var own []netip.AddrPort
	var anyPorts []uint16
	for _, l := range listeners {
		if l.Addr().IsUnspecified() {
			anyPorts = append(anyPorts, l.Port())
			continue
		}
		own = append(own, netip.AddrPortFrom(l.Addr().Unmap(), l.Port()))
	}
	return &dialGuard{
		allow:      allow,
		own:        own,
		anyPorts:   anyPorts,
		localAddrs: net.InterfaceAddrs,
		resolver:   net.DefaultResolver,
		dialer:     &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second},
	}
}

// thisHost is 0.0.0.0/8, "this host on this network" (RFC 1122, section
// 3.2.1.3): a source address only. Dialling 0.0.0.0 (or ::, or
// ::ffff:0.0.0.0) reaches the local host, so till's own listeners.
var thisHost = netip.MustParsePrefix("0.0.0.0/8")

// permitted reports whether ip may be reached. The rules that protect till
// itself come before allow_cidrs, which cannot lift them (invariant 4):
// "0.0.0.0/0" or "::/0" must not open the admin listener.
func (g *dialGuard) permitted(ip netip.Addr) bool {
	if ip.Zone() != "" {
		// netip.Prefix.Contains never matches a zoned address, and the
		// kernel ignores the zone of a non-link-local one: refuse them all.
		return false
	}
	ip = ip.Unmap()
	if ip.IsUnspecified() || thisHost.Contains(ip) {
		return false
	}
	if ip.Is6() {
		// An IPv6 address that embeds an IPv4 one is judged by it too,
		// whatever allow_cidrs says of the IPv6 prefix.
		for _, v4 := range embeddedIPv4(ip) {
			if !g.permitted(v4) {
				return false
			}
		}
	}
	for _, p := range g.allow {
		if p.Contains(ip) {
			return true
		}
	}
	for _, p := range deniedPrefixes {
		if p.Contains(ip) {
			return false
		}
	}
	return ip.IsGlobalUnicast()
}

// embeddedIPv4 extracts the IPv4 addresses ip may embed: NAT64's
// well-known prefix (64:ff9b::/96, RFC 6052), IPv4-compatible (::/96),
// SIIT's IPv4-translated (::ffff:0:0:0/96, RFC 7915), 6to4 (2002::/16)
// and Teredo (2001::/32, client address obfuscated) have one place for
// it. A local-use NAT64 prefix (64:ff9b:1::/48, RFC 8215) may be any
// sub-prefix, of a length till cannot know, so each of RFC 6052's layouts
// (section 2.2) that fits gives a reading and the caller refuses ip when
// any is refused: /96 always, /64 when the u-octet (bits 64-71) and the
// suffix are zero. The /48 and /56 layouts leave the last 32 bits zero,
// whose /96 reading, 0.0.0.0, is always refused: they fail closed.
func embeddedIPv4(ip netip.Addr) []netip.Addr {
	b := ip.As16()
	v4 := func(i, j, k, l int) netip.Addr { return netip.AddrFrom4([4]byte{b[i], b[j], b[k], b[l]}) }
	switch {
	case b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && isZero(b[4:12]),
		isZero(b[0:12]),
		isZero(b[0:8]) && b[8] == 0xff && b[9] == 0xff && isZero(b[10:12]):
		return []netip.Addr{v4(12, 13, 14, 15)}
	case b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4] == 0x00 && b[5] == 0x01:
		out := []netip.Addr{v4(12, 13, 14, 15)}
		if b[8] == 0 && isZero(b[13:16]) {
			out = append(out, v4(9, 10, 11, 12))
		}
		return out
	case b[0] == 0x20 && b[1] == 0x02:
		return []netip.Addr{v4(2, 3, 4, 5)}
	case b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0:
		return []netip.Addr{netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]})}
	}
	return nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// isOwn reports whether ap is one of till's own listeners. Any loopback
// address on a listener's port counts: 127.0.0.2 reaches 127.0.0.1's
// socket when the listener is bound to the whole range. On the port of
// a listener bound to every address, so does any address the machine
// has now, or every address when they cannot be read.
func (g *dialGuard) isOwn(ap netip.AddrPort) bool {
	ip := ap.Addr().Unmap()
	for _, o := range g.own {
		if o.Port() == ap.Port() && (o.Addr() == ip || ip.IsLoopback()) {
			return true
		}
	}
	if !slices.Contains(g.anyPorts, ap.Port()) {
		return false
	}
	addrs, err := g.localAddrs()
	if err != nil || ip.IsLoopback() {
		return true
	}
	return slices.ContainsFunc(addrs, func(a net.Addr) bool {
		p, err := netip.ParsePrefix(a.String())
		return err == nil && p.Addr().Unmap() == ip
	})
}

// dial resolves host, checks the addresses and dials the first one allowed.
func (g *dialGuard) dial(ctx context.Context, host string, port uint16) (net.Conn, error) {
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		addrs, err = g.resolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, fmt.Errorf("resolve %q: %w", host, err)
		}
	}
	for _, ip := range addrs {
		ap := netip.AddrPortFrom(ip.Unmap(), port)
		if !g.permitted(ip) || g.isOwn(ap) {
			continue
		}
		c, err := g.dialer.DialContext(ctx, "tcp", ap.String())
		if err == nil && slices.Contains(g.anyPorts, port) && isSelf(c) {
			c.Close()
			return nil, fmt.Errorf("%w: %q is this machine, on till's port %d", errHostNotAllowed, host, port)
		}
		return c, err
	}
	return nil, fmt.Errorf("%w: %q resolves only to addresses tunnels may not reach", errHostNotAllowed, host)
}

// isSelf reports whether c goes from this machine to itself: the kernel
// dials a local address from that address, one that is no interface's
// too (an AnyIP route: "ip route add local 10.201.0.0/24 dev lo"), which
// isOwn cannot know.
func isSelf(c net.Conn) bool {
	l, lok := c.LocalAddr().(*net.TCPAddr)
	r, rok := c.RemoteAddr().(*net.TCPAddr)
	return lok && rok && l.AddrPort().Addr().Unmap() == r.AddrPort().Addr().Unmap()
}
