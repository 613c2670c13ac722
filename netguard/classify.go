package netguard

import "net/netip"

const reasonLoopback = "loopback address"

// metadata are cloud metadata endpoints by address. Most sit in ranges refused anyway
// (link-local, unique-local, CGNAT); naming them gives the refusal its real reason, and
// Azure's is a public address that would otherwise pass.
var metadata = map[netip.Addr]string{
	netip.MustParseAddr("169.254.169.254"): "AWS, GCP, Azure, OpenStack, Oracle…",
	netip.MustParseAddr("169.254.170.2"):   "AWS ECS task",
	netip.MustParseAddr("fd00:ec2::254"):   "AWS IPv6",
	netip.MustParseAddr("fd00:ec2::23"):    "AWS IPv6 DNS",
	netip.MustParseAddr("100.100.100.200"): "Alibaba Cloud",
	netip.MustParseAddr("168.63.129.16"):   "Azure wireserver",
	netip.MustParseAddr("192.0.0.192"):     "Oracle Cloud",
}

// ranges are the non-public blocks, most specific first where they nest.
var ranges = []struct {
	prefix netip.Prefix
	reason string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "\"this network\" address (0.0.0.0/8)"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private address (10.0.0.0/8)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT address (100.64.0.0/10)"},
	{netip.MustParsePrefix("127.0.0.0/8"), reasonLoopback},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local address (169.254.0.0/16)"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private address (172.16.0.0/12)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignment (192.0.0.0/24)"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation address (192.0.2.0/24)"},
	{netip.MustParsePrefix("192.88.99.0/24"), "6to4 relay anycast (192.88.99.0/24)"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private address (192.168.0.0/16)"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking address (198.18.0.0/15)"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation address (198.51.100.0/24)"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation address (203.0.113.0/24)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast address (224.0.0.0/4)"},
	{netip.MustParsePrefix("255.255.255.255/32"), "broadcast address"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved address (240.0.0.0/4)"},
	{netip.MustParsePrefix("::/128"), "unspecified address (::)"},
	{netip.MustParsePrefix("::1/128"), reasonLoopback},
	{netip.MustParsePrefix("::/96"), "IPv4-compatible address (::/96, deprecated)"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local-use NAT64 address (64:ff9b:1::/48)"},
	{netip.MustParsePrefix("100::/64"), "discard-only address (100::/64)"},
	{netip.MustParsePrefix("2001::/32"), "Teredo address (2001::/32)"},
	{netip.MustParsePrefix("2001:2::/48"), "benchmarking address (2001:2::/48)"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation address (2001:db8::/32)"},
	{netip.MustParsePrefix("fc00::/7"), "unique-local address (fc00::/7)"},
	{netip.MustParsePrefix("fe80::/10"), "link-local address (fe80::/10)"},
	{netip.MustParsePrefix("fec0::/10"), "site-local address (fec0::/10)"},
	{netip.MustParsePrefix("ff00::/8"), "multicast address (ff00::/8)"},
}

var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// Classify returns why ip is not a public unicast address medic may connect to, or "" when
// it is. IPv6 addresses that carry an IPv4 address (IPv4-mapped ::ffff:a.b.c.d, NAT64
// 64:ff9b::a.b.c.d, 6to4 2002:aabb:ccdd::) are judged by that IPv4 address too, since the
// stack or a translator delivers them there.
func Classify(ip netip.Addr) string {
	if !ip.IsValid() {
		return "invalid address"
	}
	ip = ip.WithZone("").Unmap()
	if why, ok := metadata[ip]; ok {
		return "cloud metadata endpoint (" + why + ")"
	}
	for _, r := range ranges {
		if r.prefix.Contains(ip) {
			return r.reason
		}
	}
	if ip.Is6() {
		if v4, how := embeddedIPv4(ip); how != "" {
			if why := Classify(v4); why != "" {
				return why + " inside a " + how + " IPv6 address"
			}
		}
	}
	return ""
}

// embeddedIPv4 returns the IPv4 address an IPv6 address carries, and the kind of embedding.
func embeddedIPv4(ip netip.Addr) (netip.Addr, string) {
	b := ip.As16()
	switch {
	case nat64.Contains(ip):
		return netip.AddrFrom4([4]byte(b[12:16])), "NAT64"
	case sixToFour.Contains(ip):
		return netip.AddrFrom4([4]byte(b[2:6])), "6to4"
	}
	return netip.Addr{}, ""
}
