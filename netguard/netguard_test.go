package netguard_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.mau.fi/util/exhttp"

	"github.com/synapse-medic/medic/netguard"
	"github.com/synapse-medic/medic/netguard/netguardtest"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		ip   string
		want string // a piece of the reason; "" means public
	}{
		// Public: allowed.
		{"8.8.8.8", ""},
		{"1.1.1.1", ""},
		{"172.32.0.1", ""},
		{"100.128.0.1", ""},
		{"2606:4700:4700::1111", ""},
		{"2a01:4f8:c17:1::1", ""},
		{"64:ff9b::808:808", ""},       // NAT64 of 8.8.8.8
		{"2002:808:808::1", ""},        // 6to4 of 8.8.8.8
		{"::ffff:8.8.8.8", ""},         // IPv4-mapped public
		{"fe80::1%eth0", "link-local"}, // zones are dropped
		// Loopback.
		{"127.0.0.1", "loopback"},
		{"127.77.1.2", "loopback"},
		{"::1", "loopback"},
		{"::ffff:127.0.0.1", "loopback"},
		// Private, unique-local, CGNAT.
		{"10.0.0.1", "private"},
		{"172.16.0.1", "private"},
		{"172.31.255.255", "private"},
		{"192.168.1.1", "private"},
		{"::ffff:10.1.2.3", "private"},
		{"::ffff:192.168.0.1", "private"},
		{"fc00::1", "unique-local"},
		{"fd12:3456::1", "unique-local"},
		{"100.64.0.1", "carrier-grade NAT"},
		{"100.127.255.255", "carrier-grade NAT"},
		// Link-local and cloud metadata.
		{"169.254.1.1", "link-local"},
		{"169.254.169.254", "cloud metadata"},
		{"::ffff:169.254.169.254", "cloud metadata"},
		{"169.254.170.2", "cloud metadata"},
		{"fd00:ec2::254", "cloud metadata"},
		{"100.100.100.200", "cloud metadata"},
		{"168.63.129.16", "cloud metadata"},
		{"fe80::1", "link-local"},
		// Multicast, broadcast, unspecified, reserved, documentation.
		{"224.0.0.1", "multicast"},
		{"239.255.255.250", "multicast"},
		{"ff02::1", "multicast"},
		{"ff0e::1", "multicast"},
		{"255.255.255.255", "broadcast"},
		{"240.0.0.1", "reserved"},
		{"0.0.0.0", "this network"},
		{"0.1.2.3", "this network"},
		{"::", "unspecified"},
		{"192.0.2.1", "documentation"},
		{"2001:db8::1", "documentation"},
		{"198.18.0.1", "benchmarking"},
		{"fec0::1", "site-local"},
		// IPv4 inside IPv6.
		{"::127.0.0.1", "IPv4-compatible"},
		{"::a9fe:a9fe", "IPv4-compatible"},
		{"64:ff9b::a9fe:a9fe", "cloud metadata endpoint (AWS, GCP, Azure, OpenStack, Oracle…) inside a NAT64"},
		{"64:ff9b::7f00:1", "loopback address inside a NAT64"},
		{"64:ff9b::a00:1", "private address (10.0.0.0/8) inside a NAT64"},
		{"64:ff9b:1::a00:1", "local-use NAT64"},
		{"2002:a9fe:a9fe::", "cloud metadata endpoint (AWS, GCP, Azure, OpenStack, Oracle…) inside a 6to4"},
		{"2002:7f00:1::", "loopback address inside a 6to4"},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"},
	} {
		got := netguard.Classify(netip.MustParseAddr(tc.ip))
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("Classify(%s) = %q, want %q", tc.ip, got, tc.want)
		}
	}
}

// The testing switch allows loopback, and nothing else.
func TestCheckTestingSwitch(t *testing.T) {
	for _, tc := range []struct {
		ip             string
		prod, testing_ bool // allowed?
	}{
		{"8.8.8.8", true, true},
		{"127.0.0.1", false, true},
		{"127.77.1.2", false, true},
		{"::1", false, true},
		{"::ffff:127.0.0.1", false, true},
		{"64:ff9b::7f00:1", false, false}, // loopback only by translation: not the testbed's
		{"169.254.169.254", false, false},
		{"fd00:ec2::254", false, false},
		{"10.0.0.1", false, false},
		{"100.64.0.1", false, false},
		{"0.0.0.0", false, false},
	} {
		ip := netip.MustParseAddr(tc.ip)
		if got := (netguard.Policy{}).Check(ip) == nil; got != tc.prod {
			t.Errorf("production: Check(%s) allowed = %v, want %v", ip, got, tc.prod)
		}
		if got := (netguard.Policy{Testing: true}).Check(ip) == nil; got != tc.testing_ {
			t.Errorf("testing: Check(%s) allowed = %v, want %v", ip, got, tc.testing_)
		}
	}
}

// Control refuses in the dial hook, before connect(2): the forbidden addresses here are never
// contacted. Names resolve in memory; every address a name resolves to is checked (DNS
// rebinding: a name with a public-looking first answer cannot slip a second one through).
func TestDialerRefusesAfterResolution(t *testing.T) {
	var accepted atomic.Int64
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
			accepted.Add(1)
			c.Close()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	netguardtest.Hosts(t, map[string][]netip.Addr{
		"metadata.guard.test":  {netip.MustParseAddr("169.254.169.254")},
		"metadata6.guard.test": {netip.MustParseAddr("fd00:ec2::254")},
		"mapped.guard.test":    {netip.MustParseAddr("::ffff:169.254.169.254")},
		"rebind.guard.test":    {netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("127.0.0.1")},
		"local.guard.test":     {netip.MustParseAddr("127.0.0.1")},
	})
	ctx := context.Background()
	dial := func(p netguard.Policy, addr string) error {
		c, err := p.Dialer(5*time.Second).DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}
	for _, tc := range []struct {
		testing bool
		addr    string
		refused string // "" means it connects
	}{
		{false, "metadata.guard.test:80", "169.254.169.254:80: cloud metadata"},
		{true, "metadata.guard.test:80", "169.254.169.254:80: cloud metadata"},
		{true, "metadata6.guard.test:80", "[fd00:ec2::254]:80: cloud metadata"},
		{true, "mapped.guard.test:80", "cloud metadata"},
		{true, "169.254.169.254:80", "cloud metadata"},
		{true, "[fe80::1%lo]:80", "link-local"},
		{true, "10.1.2.3:443", "private"},
		{false, fmt.Sprintf("local.guard.test:%d", port), "loopback"},
		{false, fmt.Sprintf("127.0.0.1:%d", port), "loopback"},
		{false, fmt.Sprintf("rebind.guard.test:%d", port), "refused to connect"}, // both refused
		{true, fmt.Sprintf("local.guard.test:%d", port), ""},
		{true, fmt.Sprintf("rebind.guard.test:%d", port), ""}, // 10.0.0.1 refused, then 127.0.0.1
	} {
		before := accepted.Load()
		err := dial(netguard.Policy{Testing: tc.testing}, tc.addr)
		switch {
		case tc.refused == "" && err != nil:
			t.Errorf("testing=%v %s: %v", tc.testing, tc.addr, err)
		case tc.refused != "" && (!errors.Is(err, netguard.ErrRefused) || !strings.Contains(err.Error(), tc.refused)):
			t.Errorf("testing=%v %s: got %v, want a refusal containing %q", tc.testing, tc.addr, err, tc.refused)
		case tc.refused != "" && accepted.Load() != before:
			t.Errorf("testing=%v %s: refused, yet the listener accepted a connection", tc.testing, tc.addr)
		}
	}
}

// The .well-known client: redirects re-dial through the guard, stop after MaxRedirects, and
// may not leave https.
func TestHTTPClientRedirects(t *testing.T) {
	var hits atomic.Int64
	srv := netguardtest.LoopbackTLS(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.URL.Path {
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		case "/metadata":
			http.Redirect(w, r, "https://169.254.169.254/latest/meta-data/", http.StatusFound)
		case "/plain":
			http.Redirect(w, r, "http://"+r.Host+"/ok", http.StatusFound)
		default:
			_, _ = io.WriteString(w, "ok")
		}
	}))
	c := netguard.Policy{Testing: true}.HTTPClient(exhttp.SensibleClientSettings)
	get := func(path string) error {
		resp, err := c.Get(srv.URL + path)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get("/ok"); err != nil {
		t.Fatalf("testing switch on, loopback: %v", err)
	}
	hits.Store(0)
	if err := get("/loop"); err == nil || !strings.Contains(err.Error(), "stopped after 5 redirects") {
		t.Errorf("redirect loop: %v", err)
	}
	if n := hits.Load(); n != 1+netguard.MaxRedirects {
		t.Errorf("redirect loop: %d requests, want %d", n, 1+netguard.MaxRedirects)
	}
	if err := get("/metadata"); !errors.Is(err, netguard.ErrRefused) || !strings.Contains(err.Error(), "169.254.169.254:443: cloud metadata") {
		t.Errorf("redirect to the metadata service: %v", err)
	}
	if err := get("/plain"); err == nil || !strings.Contains(err.Error(), "non-https") {
		t.Errorf("redirect to http: %v", err)
	}
	// Switch off: the loopback server itself is refused, before connecting.
	hits.Store(0)
	before := srv.Accepted()
	_, err := netguard.Policy{}.HTTPClient(exhttp.SensibleClientSettings).Get(srv.URL + "/ok")
	if !errors.Is(err, netguard.ErrRefused) || !strings.Contains(err.Error(), "loopback") || srv.Accepted() != before {
		t.Errorf("switch off, loopback: err %v, %d connections", err, srv.Accepted()-before)
	}
}

// The federation client mautrix-go builds is guarded everywhere: the request's dial, the
// .well-known lookup of server discovery, and where .well-known delegates to.
func TestFederationClient(t *testing.T) {
	var wellKnown atomic.Int64
	srv := netguardtest.LoopbackTLS(t, 443, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wellKnown.Add(1)
		_, _ = io.WriteString(w, `{"m.server": "metadata.guard.test:443"}`)
	}))
	netguardtest.Hosts(t, map[string][]netip.Addr{
		"delegate.guard.test": {srv.Addr},
		"metadata.guard.test": {netip.MustParseAddr("169.254.169.254")},
		"private.guard.test":  {netip.MustParseAddr("192.168.1.1")},
	})
	ctx := context.Background()
	for _, tc := range []struct {
		testing    bool
		serverName string
		refused    string
		wellKnown  int64 // .well-known requests the loopback server should see
	}{
		{true, "metadata.guard.test", "169.254.169.254:8448: cloud metadata", 0},
		{true, "private.guard.test:8448", "192.168.1.1:8448: private", 0},
		{true, "169.254.169.254", "169.254.169.254:8448: cloud metadata", 0},
		{true, "[fd00:ec2::254]:443", "[fd00:ec2::254]:443: cloud metadata", 0},
		{true, "delegate.guard.test", "169.254.169.254:443: cloud metadata", 1},
		{false, "delegate.guard.test", ":8448: loopback", 0},
	} {
		before, accepted := wellKnown.Load(), srv.Accepted()
		fc := netguard.Policy{Testing: tc.testing}.FederationClient("medic.test", nil, nil, exhttp.SensibleClientSettings)
		_, err := fc.Version(ctx, tc.serverName)
		if !errors.Is(err, netguard.ErrRefused) || !strings.Contains(err.Error(), tc.refused) {
			t.Errorf("testing=%v %s: %v; want a refusal containing %q", tc.testing, tc.serverName, err, tc.refused)
		}
		if n := wellKnown.Load() - before; n != tc.wellKnown {
			t.Errorf("testing=%v %s: %d .well-known requests, want %d", tc.testing, tc.serverName, n, tc.wellKnown)
		}
		if !tc.testing && srv.Accepted() != accepted {
			t.Errorf("switch off %s: the loopback server accepted %d connections", tc.serverName, srv.Accepted()-accepted)
		}
	}
	// Server discovery on its own (the health self-test's) uses the same guarded client.
	before := srv.Accepted()
	res, err := netguard.Policy{}.ResolveServerName(ctx, "delegate.guard.test")
	if err != nil || res.HostHeader != "delegate.guard.test" || srv.Accepted() != before {
		t.Errorf("switch off: resolution %+v, %v, %d connections to the loopback .well-known", res, err, srv.Accepted()-before)
	}
	if res, err = (netguard.Policy{Testing: true}).ResolveServerName(ctx, "delegate.guard.test"); err != nil || res.HostHeader != "metadata.guard.test:443" {
		t.Errorf("switch on: resolution %+v, %v", res, err)
	}
}
