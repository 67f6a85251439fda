package proxy

import (
	"net/netip"
	"testing"
)

// TestClientFromLinkLocal: a client allowed from a link-local range is
// admitted from it, whatever interface (zone) its connection came
// through, and still refused outside it.
func TestClientFromLinkLocal(t *testing.T) {
	c := &client{name: "web", cidrs: []netip.Prefix{netip.MustParsePrefix("fe80::/10"), netip.MustParsePrefix("10.0.0.0/8")}}
	for _, tt := range []struct {
		addr string
		want bool
	}{
		{"[fe80::1]:1000", true},
		{"[fe80::1%eth0]:1000", true},
		{"[fe80::1%2]:1000", true},
		{"[::ffff:10.1.2.3]:1000", true},
		{"[fd00::1%eth0]:1000", false},
		{"[2001:db8::1]:1000", false},
		{"192.168.1.1:1000", false},
	} {
		if got := c.from(tt.addr); got != tt.want {
			t.Errorf("from(%q): got %v, want %v", tt.addr, got, tt.want)
		}
	}
}
