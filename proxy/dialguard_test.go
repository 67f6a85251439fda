package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
)

func TestDialGuardPermitted(t *testing.T) {
	g := newDialGuard(nil, nil)
	tests := []struct {
		ip   string
		want bool
	}{
		{"93.184.216.34", true},
		{"2606:2800:220:1:248:1893:25c8:1946", true},
		{"127.0.0.1", false},
		{"127.1.2.3", false},
		{"10.0.0.1", false},
		{"172.16.5.4", false},
		{"192.168.1.1", false},
		{"100.64.0.1", false},
		{"169.254.169.254", false},
		{"0.0.0.0", false},
		{"224.0.0.1", false},
		{"255.255.255.255", false},
		{"::1", false},
		{"::", false},
		{"fe80::1", false},
		{"fd00:ec2::254", false},
		{"fc00::1", false},
		{"ff02::1", false},
		{"::ffff:127.0.0.1", false},
		{"::ffff:169.254.169.254", false},
		{"::ffff:93.184.216.34", true},
		{"::127.0.0.1", false},
		{"64:ff9b::7f00:1", false},
		{"64:ff9b::a9fe:a9fe", false},
		{"2002:7f00:1::", false},
		{"2002:a9fe:a9fe::1", false},
		{"2001:0:4136:e378:8000:63bf:80ff:fffe", false},
		{"fd00:ec2::254%1", false},
		{"fd00:ec2::254%eth0", false},
		{"2606:2800:220:1:248:1893:25c8:1946%1", false},
		{"fec0::1", false},
		{"::ffff:0:7f00:1", false},
	}
	for _, tt := range tests {
		if got := g.permitted(netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("permitted(%s): got %v, want %v", tt.ip, got, tt.want)
		}
	}
	allowed := newDialGuard([]netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("127.0.0.0/8")}, nil)
	for ip, want := range map[string]bool{"10.1.2.3": true, "10.2.0.1": false, "127.0.0.1": true, "::ffff:10.1.0.9": true, "169.254.169.254": false} {
		if got := allowed.permitted(netip.MustParseAddr(ip)); got != want {
			t.Errorf("with allow_cidrs, permitted(%s): got %v, want %v", ip, got, want)
		}
	}
}

// fakeResolver answers every name with the same addresses.
type fakeResolver []netip.Addr

func (f fakeResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return f, nil
}

func TestDialGuardDialsTheCheckedAddress(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	till := netip.MustParseAddrPort("127.0.0.1:1")

	g := newDialGuard(nil, []netip.AddrPort{till})
	g.resolver = fakeResolver{netip.MustParseAddr("127.0.0.1")}
	if _, err := g.dial(context.Background(), "rebind.example", port); !errors.Is(err, errHostNotAllowed) {
		t.Errorf("a name resolving to loopback: got %v, want errHostNotAllowed", err)
	}
	if _, err := g.dial(context.Background(), "::ffff:127.0.0.1", port); !errors.Is(err, errHostNotAllowed) {
		t.Errorf("IPv4-mapped loopback literal: got %v, want errHostNotAllowed", err)
	}

	g = newDialGuard([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, []netip.AddrPort{till})
	g.resolver = fakeResolver{netip.MustParseAddr("10.9.9.9"), netip.MustParseAddr("127.0.0.1")}
	c, err := g.dial(context.Background(), "mixed.example", port)
	if err != nil {
		t.Fatalf("allowed loopback: %v", err)
	}
	if got := c.RemoteAddr().String(); got != l.Addr().String() {
		t.Errorf("dialled %s, want the checked %s", got, l.Addr())
	}
	c.Close()
	if _, err := g.dial(context.Background(), "127.0.0.1", 1); !errors.Is(err, errHostNotAllowed) {
		t.Errorf("till's own listener: got %v, want errHostNotAllowed", err)
	}
	if _, err := g.dial(context.Background(), "127.0.0.2", 1); !errors.Is(err, errHostNotAllowed) {
		t.Errorf("till's own port on another loopback address: got %v, want errHostNotAllowed", err)
	}
}

// TestDialGuardProtectsTillWhateverAllowed: no allow_cidrs, however wide,
// lets a tunnel reach till's own host through an unspecified address,
// given as a literal or by a name that resolves to one (issue 12, point 1).
func TestDialGuardProtectsTillWhateverAllowed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	admin := netip.MustParseAddrPort(l.Addr().String())
	everything := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	g := newDialGuard(everything, []netip.AddrPort{admin})
	for _, host := range []string{"0.0.0.0", "::", "::ffff:0.0.0.0", "0.1.2.3", "127.0.0.1", "::1", "::ffff:127.0.0.1"} {
		if c, err := g.dial(context.Background(), host, admin.Port()); !errors.Is(err, errHostNotAllowed) {
			if c != nil {
				c.Close()
			}
			t.Errorf("%s on till's port: got %v, want errHostNotAllowed", host, err)
		}
	}
	for _, ip := range []string{"0.0.0.0", "::"} {
		g.resolver = fakeResolver{netip.MustParseAddr(ip)}
		if c, err := g.dial(context.Background(), "zero.example", admin.Port()); !errors.Is(err, errHostNotAllowed) {
			if c != nil {
				c.Close()
			}
			t.Errorf("a name resolving to %s: got %v, want errHostNotAllowed", ip, err)
		}
	}
	for ip, want := range map[string]bool{"0.0.0.0": false, "::": false, "::ffff:0.0.0.0": false, "0.255.0.1": false,
		"10.0.0.1": true, "127.0.0.2": true, "fd00::1": true, "93.184.216.34": true} {
		if got := g.permitted(netip.MustParseAddr(ip)); got != want {
			t.Errorf("with allow_cidrs 0.0.0.0/0 and ::/0, permitted(%s): got %v, want %v", ip, got, want)
		}
	}
}

// Allowing a NAT64 prefix (64:ff9b::/96, which an IPv6-only network needs
// to reach IPv4 hosts at all) does not open the private, metadata and
// CGNAT IPv4 addresses behind the translator: an embedded IPv4 address is
// judged by itself first.
func TestNAT64AllowKeepsEmbeddedIPv4Check(t *testing.T) {
	g := newDialGuard([]netip.Prefix{netip.MustParsePrefix("64:ff9b::/96")}, nil)
	if !g.permitted(netip.MustParseAddr("64:ff9b::5db8:d822")) { // 93.184.216.34
		t.Fatal("control: a public IPv4 host via NAT64 must be reachable")
	}
	for _, ip := range []string{
		"64:ff9b::a9fe:a9fe", // 169.254.169.254, cloud metadata
		"64:ff9b::a00:1",     // 10.0.0.1
		"64:ff9b::c0a8:101",  // 192.168.1.1
		"64:ff9b::6440:1",    // 100.64.0.1 CGNAT
	} {
		if g.permitted(netip.MustParseAddr(ip)) {
			t.Errorf("allow_cidrs [64:ff9b::/96]: %s (embeds a refused IPv4 address) is permitted", ip)
		}
	}
}

// TestDialGuardRefusesCloudPlatformEndpoints: cloud platform endpoints
// that answer any caller on the VM without credentials, like the metadata
// service, but at a public address: Azure's WireServer (168.63.129.16,
// goal state and extension settings on :80, the HostGAPlugin on :32526;
// Mandiant's "WireServing Up Credentials", 2024, took AKS clusters from
// it). A tunnel or relay from till must not reach them (invariant 4,
// "cloud-metadata") unless allow_cidrs says so, as for 169.254.169.254.
func TestDialGuardRefusesCloudPlatformEndpoints(t *testing.T) {
	g := newDialGuard(nil, nil)
	for _, ip := range []string{"168.63.129.16", "::ffff:168.63.129.16", "64:ff9b::a83f:8110"} {
		if g.permitted(netip.MustParseAddr(ip)) {
			t.Errorf("permitted(%s) = true: Azure's WireServer is reachable through tunnels and absolute-form relays", ip)
		}
	}
	g.resolver = fakeResolver{netip.MustParseAddr("168.63.129.16")}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // never actually connect: the guard must refuse before dialling
	if _, err := g.dial(ctx, "wireserver.example", 80); !errors.Is(err, errHostNotAllowed) {
		t.Errorf("a name resolving to 168.63.129.16: got %v, want errHostNotAllowed", err)
	}
	allowed := newDialGuard([]netip.Prefix{netip.MustParsePrefix("168.63.129.16/32")}, nil)
	if !allowed.permitted(netip.MustParseAddr("168.63.129.16")) {
		t.Error("allow_cidrs [168.63.129.16/32]: the WireServer stays refused; allow_cidrs opens it, as it opens 169.254.169.254")
	}
}

// TestEmbeddedIPv4JudgedUnderAnyTranslatorPrefix: SECURITY.md promises
// that an IPv6 address embedding an IPv4 one (NAT64 ...) is judged by its
// IPv4 address first, whatever allow_cidrs says of the IPv6 prefix; that
// held for the well-known 64:ff9b::/96 only. A local-use NAT64 prefix
// (RFC 8215, 64:ff9b:1::/48, here as /96 and /64 sub-prefixes) or an SIIT
// prefix (::ffff:0:0:0/96), allowed so an IPv6-only host can reach IPv4,
// opened the metadata service and loopback behind the translator.
func TestEmbeddedIPv4JudgedUnderAnyTranslatorPrefix(t *testing.T) {
	for _, tt := range []struct{ allow, public, metadata, loopback string }{
		{"64:ff9b:1::/96", "64:ff9b:1::5db8:d822", "64:ff9b:1::a9fe:a9fe", "64:ff9b:1::7f00:1"},
		// RFC 6052's /64 layout, the IPv4 address in bits 72-103 (read
		// as /96 these are 200.0.0.0 and 1.0.0.0, both public): Alibaba
		// Cloud's metadata 100.100.100.200, and 127.0.0.1.
		{"64:ff9b:1::/64", "64:ff9b:1:0:5d:b8d8:2200:0", "64:ff9b:1:0:64:6464:c800:0", "64:ff9b:1:0:7f:0:100:0"},
		{"::ffff:0:0:0/96", "::ffff:0:5db8:d822", "::ffff:0:a9fe:a9fe", "::ffff:0:7f00:1"},
	} {
		g := newDialGuard([]netip.Prefix{netip.MustParsePrefix(tt.allow)}, nil)
		if !g.permitted(netip.MustParseAddr(tt.public)) {
			t.Fatalf("control: allow_cidrs [%s]: %s (93.184.216.34) must be reachable", tt.allow, tt.public)
		}
		for _, ip := range []string{tt.metadata, tt.loopback} {
			if g.permitted(netip.MustParseAddr(ip)) {
				t.Errorf("allow_cidrs [%s]: %s (embeds a refused IPv4 address) is permitted", tt.allow, ip)
			}
		}
	}
	// The /48 layout (bits 48-63 and 72-87) ends in 32 zero bits, read
	// as /96 as 0.0.0.0: refused whatever it embeds, failing closed.
	g := newDialGuard([]netip.Prefix{netip.MustParsePrefix("64:ff9b:1::/48")}, nil)
	if g.permitted(netip.MustParseAddr("64:ff9b:1:5db8:d8:2200::")) {
		t.Error("allow_cidrs [64:ff9b:1::/48]: an address in RFC 6052's /48 layout is permitted")
	}
}

// TestDialGuardRefusesAddressAddedAfterStart: with till listening on
// every address, an address the machine gains after the guard was made
// (a DHCP lease, an IPv6 temporary address, an interface brought up)
// reaches till's listeners as much as those it had, and is refused on
// their ports, whatever allow_cidrs says.
func TestDialGuardRefusesAddressAddedAfterStart(t *testing.T) {
	local := []net.Addr{&net.IPNet{IP: net.ParseIP("10.0.0.5"), Mask: net.CIDRMask(24, 32)}}
	allow := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	for _, listen := range []string{"0.0.0.0:9090", "[::]:9090"} {
		g := newDialGuard(allow, []netip.AddrPort{netip.MustParseAddrPort(listen)})
		g.localAddrs = func() ([]net.Addr, error) { return local, nil }
		gained := append(local,
			&net.IPNet{IP: net.ParseIP("10.1.2.3"), Mask: net.CIDRMask(8, 32)},
			&net.IPNet{IP: net.ParseIP("2001:db9::7"), Mask: net.CIDRMask(64, 128)})
		g.localAddrs = func() ([]net.Addr, error) { return gained, nil }
		for _, ap := range []string{"10.0.0.5:9090", "10.1.2.3:9090", "[::ffff:10.1.2.3]:9090", "[2001:db9::7]:9090"} {
			if !g.isOwn(netip.MustParseAddrPort(ap)) {
				t.Errorf("listening on %s, isOwn(%s): got false, want true", listen, ap)
			}
		}
		if g.isOwn(netip.MustParseAddrPort("10.1.2.4:9090")) || g.isOwn(netip.MustParseAddrPort("10.1.2.3:9091")) {
			t.Errorf("listening on %s: another host, or another port, counts as till's own", listen)
		}
		g.localAddrs = func() ([]net.Addr, error) { return nil, errors.New("netlink: permission denied") }
		if !g.isOwn(netip.MustParseAddrPort("10.1.2.4:9090")) {
			t.Errorf("listening on %s, with the machine's addresses unknown: a tunnel to till's port is let through", listen)
		}
	}
}

// TestDialGuardRefusesSelfConnection: an address that is local without
// being an interface's (an AnyIP route, "ip route add local
// 10.201.0.0/24 dev lo") reaches a listener on every address too. The
// kernel dials such an address from itself: on till's ports a
// connection whose two ends have one address is refused once made.
func TestDialGuardRefusesSelfConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	var local netip.Addr
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && !p.Addr().IsLoopback() && !p.Addr().IsLinkLocalUnicast() {
			local = p.Addr()
			break
		}
	}
	if !local.IsValid() {
		t.Skip("no address but loopback and link-local to dial")
	}
	own := netip.MustParseAddrPort(ln.Addr().String())
	everything := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	g := newDialGuard(everything, []netip.AddrPort{own})
	g.localAddrs = func() ([]net.Addr, error) { return nil, nil } // as an AnyIP address is: none of them
	if c, err := g.dial(context.Background(), local.String(), own.Port()); !errors.Is(err, errHostNotAllowed) {
		if c != nil {
			c.Close()
		}
		t.Errorf("%s on till's port, not among the interfaces' addresses: got %v, want errHostNotAllowed", local, err)
	}
	other, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	c, err := g.dial(context.Background(), local.String(), netip.MustParseAddrPort(other.Addr().String()).Port())
	if err != nil {
		t.Fatalf("%s on another port: %v", local, err)
	}
	c.Close()
}
