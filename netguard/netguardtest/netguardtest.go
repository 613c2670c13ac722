// Package netguardtest lets tests point names at the addresses they choose and watch what is
// dialed, without a packet leaving the machine: Hosts answers DNS from a map (in memory, no
// name server), LoopbackTLS serves HTTPS on a random loopback address and counts the
// connections it accepts, and WatchDefaultTransport records (and refuses) every non-loopback
// dial made through Go's default HTTP client.
package netguardtest

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Hosts replaces net.DefaultResolver for the rest of the test with Go's own resolver whose
// queries are answered in memory: A and AAAA records from names (without the trailing dot),
// NXDOMAIN for every other name and type (SRV included). /etc/hosts is still read first.
func Hosts(t testing.TB, names map[string][]netip.Addr) {
	t.Helper()
	old := net.DefaultResolver
	net.DefaultResolver = &net.Resolver{
		PreferGo: true,
		Dial: func(context.Context, string, string) (net.Conn, error) {
			client, server := net.Pipe()
			go serveDNS(server, names)
			return client, nil
		},
	}
	t.Cleanup(func() { net.DefaultResolver = old })
}

// serveDNS answers length-prefixed queries (the resolver speaks TCP framing over a conn that is
// not a PacketConn) until the resolver hangs up.
func serveDNS(c net.Conn, names map[string][]netip.Addr) {
	defer c.Close()
	for {
		var n uint16
		if err := binary.Read(c, binary.BigEndian, &n); err != nil {
			return
		}
		query := make([]byte, n)
		if _, err := io.ReadFull(c, query); err != nil {
			return
		}
		resp, err := answer(query, names)
		if err != nil {
			return
		}
		out := binary.BigEndian.AppendUint16(nil, uint16(len(resp)))
		if _, err = c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}

func answer(query []byte, names map[string][]netip.Addr) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	addrs, known := names[strings.TrimSuffix(strings.ToLower(q.Name.String()), ".")]
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if err = b.StartQuestions(); err != nil {
		return nil, err
	}
	if err = b.Question(q); err != nil {
		return nil, err
	}
	if err = b.StartAnswers(); err != nil {
		return nil, err
	}
	for _, a := range addrs {
		rr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}
		switch {
		case q.Type == dnsmessage.TypeA && a.Is4():
			err = b.AResource(rr, dnsmessage.AResource{A: a.As4()})
		case q.Type == dnsmessage.TypeAAAA && a.Is6():
			err = b.AAAAResource(rr, dnsmessage.AAAAResource{AAAA: a.As16()})
		}
		if err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// Server is an HTTPS server (self-signed certificate) on a random loopback address.
type Server struct {
	*httptest.Server
	// Addr is the loopback address it listens on.
	Addr     netip.Addr
	accepted atomic.Int64
}

// Accepted is how many TCP connections the server accepted so far.
func (s *Server) Accepted() int64 { return s.accepted.Load() }

// LoopbackTLS starts an HTTPS server on port (0: any) of a random address in 127.0.0.0/8
// (Linux answers on all of it), so a fixed port such as 443, which .well-known lookups use,
// does not collide with other listeners. Port 443 needs root.
func LoopbackTLS(t testing.TB, port int, h http.Handler) *Server {
	t.Helper()
	s := &Server{Server: httptest.NewUnstartedServer(h)}
	var err error
	for range 20 {
		s.Addr = netip.AddrFrom4([4]byte{127, byte(1 + rand.IntN(250)), byte(rand.IntN(256)), byte(1 + rand.IntN(250))})
		var l net.Listener
		if l, err = net.Listen("tcp", netip.AddrPortFrom(s.Addr, uint16(port)).String()); err == nil {
			s.Listener = &countingListener{Listener: l, n: &s.accepted}
			break
		}
	}
	if err != nil {
		t.Fatalf("listen on a loopback address, port %d: %v", port, err)
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// Dials lists addresses a watched dialer was asked to connect to and refused.
type Dials struct {
	mu    sync.Mutex
	addrs []string
}

// List returns the refused addresses so far.
func (d *Dials) List() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.addrs...)
}

// WatchDefaultTransport makes Go's default HTTP transport (http.DefaultClient, and every
// http.Client without a Transport) refuse, before connecting, any address that is not
// loopback, and records each such attempt; loopback (the testbed) still works. It is the
// safety net of tests that point names at forbidden addresses: code that still uses the
// default client is caught without a packet leaving the machine.
func WatchDefaultTransport(t testing.TB) *Dials {
	t.Helper()
	tr, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		t.Fatalf("http.DefaultTransport is a %T", http.DefaultTransport)
	}
	d := &Dials{}
	dialer := &net.Dialer{Timeout: 10 * time.Second, ControlContext: func(_ context.Context, network, address string, _ syscall.RawConn) error {
		if ap, err := netip.ParseAddrPort(address); err == nil && ap.Addr().Unmap().IsLoopback() {
			return nil
		}
		d.mu.Lock()
		d.addrs = append(d.addrs, address)
		d.mu.Unlock()
		return fmt.Errorf("netguardtest: the default HTTP client tried to reach %s (%s)", address, network)
	}}
	old := tr.DialContext
	tr.CloseIdleConnections()
	tr.DialContext = dialer.DialContext
	t.Cleanup(func() {
		tr.DialContext = old
		tr.CloseIdleConnections()
	})
	return d
}
