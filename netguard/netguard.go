// Package netguard is the one way medic connects to other Matrix servers: server discovery
// (.well-known, SRV), federation requests and key fetches. Server names come from data remote
// servers control (log lines, memberships, events), and they decide where a name leads
// (.well-known, its redirects, DNS), so every connection is checked against the address that
// is actually dialed, after DNS resolution, in the dialer's Control hook: before connect(2),
// for every address a name resolves to and for every redirect (a redirect dials again). That
// also defeats DNS rebinding: there is no check-then-resolve-again gap.
//
// Refused: loopback, private (RFC 1918), unique-local (fc00::/7), link-local, CGNAT
// (100.64.0.0/10), multicast, broadcast, unspecified, reserved and documentation ranges, cloud
// metadata endpoints, and those addresses inside IPv4-mapped, IPv4-compatible, NAT64 and 6to4
// IPv6 addresses. The testing switch (Policy.Testing, federation.dangerously_allow_loopback_
// and_self_signed_testing_only) allows loopback and self-signed certificates, nothing else.
//
// Not for the configured homeserver.url, health.federation_address or databases: an admin
// chose those.
package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/exhttp"
	"maunium.net/go/mautrix/federation"
)

// MaxRedirects is how many redirects a .well-known lookup (or another request allowed to
// redirect) follows.
const MaxRedirects = 5

// ErrRefused is what every refusal wraps.
var ErrRefused = errors.New("refused to connect")

// RefusedError says which address was refused and why.
type RefusedError struct {
	Addr   netip.AddrPort
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s to %s: %s, not a public address (only a server's public addresses are dialed)", ErrRefused, e.Addr, e.Reason)
}

func (e *RefusedError) Unwrap() error { return ErrRefused }

// Policy is the guard. The zero value is production: public addresses only, certificates
// verified.
type Policy struct {
	// Testing allows loopback addresses and accepts self-signed certificates (the local
	// testbed); every other refusal stays.
	Testing bool
}

// Check says why ip may not be dialed (nil: it may).
func (p Policy) Check(ip netip.Addr) error {
	reason := Classify(ip)
	if reason == "" || (p.Testing && reason == reasonLoopback) {
		return nil
	}
	return &RefusedError{Addr: netip.AddrPortFrom(ip, 0), Reason: reason}
}

// Control is a net.Dialer ControlContext hook: it runs for every address the dialer is about
// to connect to, after DNS resolution and before the connection is made.
func (p Policy) Control(ctx context.Context, network, address string, _ syscall.RawConn) error {
	switch network {
	case "tcp4", "tcp6":
	default:
		return fmt.Errorf("%w: network %s is not allowed", ErrRefused, network)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse %q: %v", ErrRefused, address, err)
	}
	err = p.Check(ap.Addr())
	var refused *RefusedError
	if errors.As(err, &refused) {
		refused.Addr = netip.AddrPortFrom(ap.Addr().WithZone(""), ap.Port())
		n := noteFrom(ctx)
		zerolog.Ctx(ctx).Warn().Str("address", refused.Addr.String()).Str("reason", refused.Reason).
			Str("server", n.server).Str("host", n.host).Str("redirected_from", n.redirectedFrom).
			Msg("Refused to connect to a non-public address")
	}
	return err
}

// Dialer returns a dialer that connects only where the policy allows.
func (p Policy) Dialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, ControlContext: p.Control}
}

// settings are the HTTP settings every guarded client uses: the guarded dialer, no proxy
// (a proxy would be the address checked, not the server), TLS verified unless testing.
func (p Policy) settings(s exhttp.ClientSettings) exhttp.ClientSettings {
	s.TransportOverride = nil
	s.InsecureTLS = p.Testing
	s.DialTimeout = max(s.DialTimeout, time.Second)
	s = s.WithDial(p.Dialer(s.DialTimeout).DialContext)
	s, _ = s.WithProxy("")
	return s
}

// checkRedirect allows MaxRedirects redirects to https URLs; the dial of each is checked.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > MaxRedirects {
		return fmt.Errorf("stopped after %d redirects", MaxRedirects)
	}
	if req.URL.Scheme != "https" {
		return fmt.Errorf("refused to follow a redirect to a non-https URL %s", req.URL.Redacted())
	}
	return nil
}

// HTTPClient returns an HTTP client for requests to other servers (.well-known): guarded
// dials, at most MaxRedirects redirects, https only.
func (p Policy) HTTPClient(s exhttp.ClientSettings) *http.Client {
	c := p.settings(s).Compile()
	c.Transport = noting{c.Transport}
	c.CheckRedirect = checkRedirect
	return c
}

// ResolveOpts are the options of federation.ResolveServerName with the guarded client for
// .well-known (DNS itself, SRV included, goes to the system's resolvers).
func (p Policy) ResolveOpts() *federation.ResolveServerNameOpts {
	return &federation.ResolveServerNameOpts{HTTPClient: p.HTTPClient(exhttp.SensibleClientSettings)}
}

// ResolveServerName runs the spec's server discovery (.well-known, SRV, port 8448) with the
// guarded client.
func (p Policy) ResolveServerName(ctx context.Context, serverName string) (*federation.ResolvedServerName, error) {
	return federation.ResolveServerName(ctx, serverName, p.ResolveOpts())
}

// FederationClient is federation.NewClient with every connection guarded: the federation
// transport's dialer, server discovery's .well-known client (which mautrix-go otherwise
// leaves to http.DefaultClient: no filter, redirects followed) and the external client.
func (p Policy) FederationClient(serverName string, key *federation.SigningKey, cache federation.ResolutionCache, s exhttp.ClientSettings) *federation.Client {
	if cache == nil {
		cache = federation.NewInMemoryCache()
	}
	s = p.settings(s)
	fc := federation.NewClient(serverName, key, cache, s)
	fc.AllowIP = func(ip net.IP) bool {
		a, ok := netip.AddrFromSlice(ip)
		return ok && p.Check(a) == nil
	}
	fc.Dialer.ControlContext = p.Control
	srt := federation.NewServerResolvingTransport(cache, fc.Dialer.DialContext, s)
	srt.ResolveOpts = p.ResolveOpts()
	fc.HTTP.Transport = noting{srt}
	fc.ExtHTTP.Transport = noting{fc.ExtHTTP.Transport}
	fc.ExtHTTP.CheckRedirect = checkRedirect
	return fc
}

type noteKey struct{}

// note is what a refusal's log line says led to the dial: the server medic was talking to,
// the host of this request, and the URL that redirected to it.
type note struct{ server, host, redirectedFrom string }

// noting puts a note in each request's context (the dialer's Control hook gets it).
type noting struct{ http.RoundTripper }

func (t noting) RoundTrip(r *http.Request) (*http.Response, error) {
	n := note{server: noteFrom(r.Context()).server, host: r.URL.Host, redirectedFrom: r.Header.Get("Referer")}
	if n.server == "" {
		n.server = n.host
	}
	return t.RoundTripper.RoundTrip(r.WithContext(context.WithValue(r.Context(), noteKey{}, n)))
}

func noteFrom(ctx context.Context) note {
	n, _ := ctx.Value(noteKey{}).(note)
	return n
}
