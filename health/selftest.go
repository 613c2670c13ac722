package health

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.mau.fi/util/exhttp"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/netguard"
	"github.com/synapse-medic/medic/synapse"
)

// checkFederation tests the server the way a remote server reaches it: it resolves the
// server name (.well-known, SRV, port 8448), opens TLS to the address found (or to
// health.federation_address), fetches the key server's keys and checks they are the
// server's own, and sends a request signed with the server's own key whose path holds an
// escaped room ID. A reverse proxy that normalises request URIs (decoding %21 to !) makes
// Synapse see another URI than the one signed: 401 "Invalid signature" for every remote
// server, while clients work fine. A second signed request without escapes in its path
// tells that failure apart from a wrong key.
func checkFederation(ctx context.Context, rn *Runner, _ *Report, res *Result) error {
	cfg := rn.Config
	if cfg.Synapse.SigningKeyPath == "" {
		res.Status, res.Summary = Skipped, "needs synapse.signing_key_path to sign a request as the server"
		return nil
	}
	key, err := synapse.LoadSigningKey(cfg.Synapse.SigningKeyPath)
	if err != nil {
		return err
	}
	testing := cfg.Federation.DangerouslyAllowLoopbackAndSelfSignedTestingOnly
	server := cfg.Homeserver.ServerName
	res.Columns = []string{"step", "result"}
	fail := func(step, why, hint string) {
		res.add(step, true, step, "❌ "+why)
		res.level(step, Critical)
		if res.Summary == "" {
			res.Summary = step + ": " + why
			res.Hint = hint
		}
	}

	// 1. Server-name resolution, as the spec's algorithm does it, through the guard every
	// connection to a server goes through (public addresses only).
	guard := netguard.Policy{Testing: testing}
	resolved, err := guard.ResolveServerName(ctx, server)
	if err != nil {
		fail("resolve", err.Error(), "publish /.well-known/matrix/server or an SRV record, or serve federation on port 8448")
		return nil
	}
	res.add("resolve", false, "resolve", fmt.Sprintf("%s → %s (Host: %s)", server, strings.Join(resolved.IPPort, ", "), resolved.HostHeader))
	// Where resolution leads is dialed through the guard; health.federation_address was
	// chosen by the admin (like homeserver.url) and is dialed whatever it is.
	target, configured := resolved.IPPort[0], cfg.Health.FederationAddress != ""
	dialer := guard.Dialer(10 * time.Second)
	if configured {
		target = cfg.Health.FederationAddress
		dialer = &net.Dialer{Timeout: 10 * time.Second}
		res.add("target", false, "target", target+" (health.federation_address)")
	}
	host := resolved.HostHeader
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}

	// 2. TLS: the certificate must be valid for the host remote servers ask for.
	conn, err := tls.DialWithDialer(dialer, "tcp", target, &tls.Config{ServerName: host, InsecureSkipVerify: true})
	if err != nil {
		hint := "check that the federation listener (or the proxy in front of it) speaks TLS on that address"
		if errors.Is(err, netguard.ErrRefused) {
			hint = "remote servers cannot reach a non-public address; if medic reaches the server through another address than the world does, set health.federation_address to it"
		}
		fail("tls", fmt.Sprintf("%s: %v", target, err), hint)
		return nil
	}
	certs := conn.ConnectionState().PeerCertificates
	_ = conn.Close()
	leaf := certs[0]
	left := time.Until(leaf.NotAfter)
	tlsNote := fmt.Sprintf("certificate for %s, expires %s (in %s)", strings.Join(leaf.DNSNames, ", "), leaf.NotAfter.UTC().Format(time.DateOnly), ago(left))
	pool := x509.NewCertPool()
	for _, c := range certs[1:] {
		pool.AddCert(c)
	}
	_, verr := leaf.Verify(x509.VerifyOptions{DNSName: host, Intermediates: pool})
	switch {
	case left <= 0:
		fail("tls", "certificate expired "+leaf.NotAfter.UTC().Format(time.DateTime), "renew the certificate")
	case verr != nil && !testing:
		fail("tls", "certificate not trusted for "+host+": "+verr.Error(), "serve a certificate from a public CA for the server name (remote servers verify it)")
	case left < 14*24*time.Hour:
		res.worst(Warn)
		res.add("tls", true, "tls", "⚠️ "+tlsNote)
		if res.Summary == "" {
			res.Summary, res.Hint = "the federation certificate expires in "+ago(left), "renew the certificate"
		}
	case verr != nil:
		res.add("tls", false, "tls", tlsNote+"; not verified (testing-only switch on)")
	default:
		res.add("tls", false, "tls", tlsNote)
	}
	res.Metrics["cert_days_left"] = left.Hours() / 24

	// A federation client whose resolution of our own name is pinned to the target.
	settings := exhttp.SensibleClientSettings
	settings.GlobalTimeout = 30 * time.Second
	cache := federation.NewInMemoryCache()
	cache.StoreResolution(&federation.ResolvedServerName{ServerName: server, HostHeader: resolved.HostHeader, IPPort: []string{target}, Expires: time.Now().Add(time.Hour)})
	fc := guard.FederationClient(server, key, cache, settings)
	if configured {
		fc.Dialer.ControlContext = nil // health.federation_address, whatever it is
	}

	// 3. Key server: the keys served must include the one we sign with, self-signed, valid.
	keys, err := fc.ServerKeys(ctx, server)
	switch {
	case err != nil:
		fail("keys", "GET /_matrix/key/v2/server: "+err.Error(), "remote servers cannot fetch the server's keys: check the proxy passes /_matrix/key/ to Synapse")
	case keys.ServerName != server:
		fail("keys", fmt.Sprintf("key server answers for %q, not %q", keys.ServerName, server), "the address serves another homeserver: check DNS/.well-known and the proxy")
	case keys.VerifySelfSignature() != nil:
		fail("keys", "key response's self-signature does not verify", "check the proxy does not alter responses")
	case !keys.HasKey(key.ID) || keys.VerifyKeys[key.ID].Key != key.Pub:
		fail("keys", fmt.Sprintf("the key server does not publish our signing key %s", key.ID), "synapse.signing_key_path must be the key Synapse uses (signing_key_path in homeserver.yaml)")
	case time.Until(keys.ValidUntilTS.Time) < 0:
		fail("keys", "keys expired "+keys.ValidUntilTS.Time.UTC().Format(time.DateTime), "restart Synapse so it republishes its keys")
	default:
		res.add("keys", false, "keys", fmt.Sprintf("%s published, valid until %s", key.ID, keys.ValidUntilTS.Time.UTC().Format(time.DateTime)))
	}

	// 4. Signed requests: one whose path holds an escaped room ID, one without escapes.
	probe := id.RoomID("!medic-selftest-" + strings.ToLower(random.String(8)) + ":" + server)
	escaped := signedProbe(ctx, fc, server, federation.URLPath{"v1", "state_ids", probe}, url.Values{"event_id": {"$medic-selftest"}})
	plain := signedProbe(ctx, fc, server, federation.URLPath{"v1", "query", "directory"}, url.Values{"room_alias": {"#medic-selftest:" + server}})
	switch {
	case plain.unauthorized && escaped.unauthorized:
		fail("signed request", "Synapse rejects our signature on every request: "+plain.detail,
			"the key file is not the key Synapse publishes, or a proxy rewrites requests: compare synapse.signing_key_path with signing_key_path in homeserver.yaml")
	case escaped.unauthorized:
		fail("signed request", fmt.Sprintf("escaped path: %s; plain path accepted (%s)", escaped.detail, plain.detail),
			"a reverse proxy normalises request URIs (e.g. nginx `proxy_pass` with a URI part decodes %21 to !), so signatures fail for every remote server: pass the URI unchanged (nginx: `proxy_pass https://backend;` without a path)")
	case escaped.err != nil:
		fail("signed request", escaped.detail, "remote servers cannot reach Synapse's federation API through this address")
	default:
		res.add("signed request", false, "signed request", fmt.Sprintf("escaped path accepted (%s); plain path accepted (%s)", escaped.detail, plain.detail))
	}
	if res.Status == OK {
		res.Summary = fmt.Sprintf("reachable as remote servers see it (%s), TLS, keys and signed requests fine", target)
	}
	return nil
}

type probeResult struct {
	unauthorized bool
	err          error
	detail       string
}

// signedProbe sends a signed GET. Any answer but 401 means Synapse accepted the signature
// (403/404 are expected: the room does not exist).
func signedProbe(ctx context.Context, fc *federation.Client, server string, path federation.URLPath, q url.Values) probeResult {
	_, resp, err := fc.MakeFullRequest(ctx, federation.RequestParams{
		ServerName: server, Method: http.MethodGet, Path: path, Query: q, Authenticate: true,
	})
	if resp == nil {
		return probeResult{err: err, detail: fmt.Sprint(err)}
	}
	detail := fmt.Sprintf("HTTP %d", resp.StatusCode)
	var herr mautrix.HTTPError
	if errors.As(err, &herr) && herr.RespError != nil {
		detail += " " + herr.RespError.ErrCode + " " + herr.RespError.Err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return probeResult{unauthorized: true, err: err, detail: detail}
	}
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusBadGateway {
		return probeResult{err: err, detail: detail}
	}
	return probeResult{detail: detail}
}
