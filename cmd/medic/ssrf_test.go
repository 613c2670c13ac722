package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/netguard/netguardtest"
	"github.com/synapse-medic/medic/testbed"
)

// TestRecoverScanRefusesForbiddenAddresses: the server names `!recover scan` asks about come
// from Synapse's logs, so a remote server chooses them, and with them where medic connects
// (.well-known, its redirects, its delegation, DNS). Through the real command, none of that
// may reach a loopback, private or cloud-metadata address: with the testing switch off not
// even loopback; with it on (the testbed) loopback only, while hs2 still answers.
//
// Every name resolves in memory (netguardtest.Hosts); "evil" names lead to a loopback HTTPS
// server on port 443 that counts its connections; forbidden non-loopback addresses are only
// ever refused before connecting (the guard's dial hook, and for Go's default HTTP client a
// watching dialer that refuses and records them), so no packet leaves the machine.
func TestRecoverScanRefusesForbiddenAddresses(t *testing.T) {
	tb := testbed.Get(t)
	ctx := context.Background()
	defaultClient := netguardtest.WatchDefaultTransport(t)

	var mu sync.Mutex
	wellKnownHits := map[string]int{}
	evil := netguardtest.LoopbackTLS(t, 443, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := strings.Split(r.Host, ".")[0]
		mu.Lock()
		wellKnownHits[host]++
		mu.Unlock()
		switch host {
		case "redirect":
			http.Redirect(w, r, "https://meta.ssrf.test/latest/meta-data/iam/security-credentials/", http.StatusFound)
		case "loop":
			http.Redirect(w, r, "https://loop.ssrf.test/.well-known/matrix/server", http.StatusFound)
		case "delegate":
			_ = json.NewEncoder(w).Encode(map[string]string{"m.server": "meta.ssrf.test:443"})
		default:
			http.NotFound(w, r)
		}
	}))
	metadata4, metadata6 := netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("fd00:ec2::254")
	netguardtest.Hosts(t, map[string][]netip.Addr{
		"evil.ssrf.test":     {evil.Addr},
		"redirect.ssrf.test": {evil.Addr},
		"loop.ssrf.test":     {evil.Addr},
		"delegate.ssrf.test": {evil.Addr},
		"meta.ssrf.test":     {metadata4},
		"meta6.ssrf.test":    {metadata6},
	})

	// An event on hs2 that hs1 may read: the scan must still resolve it with the switch on.
	remote := tb.Admin(t, tb.HS2)
	room, err := remote.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "ssrf-control",
		InitialState: []*event.Event{{Type: event.StateHistoryVisibility, Content: event.Content{Parsed: &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityWorldReadable}}}}})
	if err != nil {
		t.Fatal(err)
	}
	sent, err := remote.SendMessageEvent(ctx, room.RoomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "hello"})
	if err != nil {
		t.Fatal(err)
	}

	// scan writes a Synapse log in which each server sent one event for a room hs1 is not in,
	// and runs `medic exec '!recover scan'` on it. It returns the answer and medic's log.
	scan := func(t *testing.T, testingSwitch bool, events map[string]id.EventID) (answer, log string) {
		t.Helper()
		dir := t.TempDir()
		var lines strings.Builder
		now := time.Now().UTC().Format("2006-01-02 15:04:05")
		for server, eventID := range events {
			fmt.Fprintf(&lines, "%s,000 - synapse.handlers.federation_event - 195 - INFO - _process_incoming_pdus_in_room_inner-3-%s - Ignoring PDU from %s as we're not in the room\n", now, eventID, server)
		}
		logPath := filepath.Join(dir, "homeserver.log")
		if err := os.WriteFile(logPath, []byte(lines.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := testbed.WriteConfig(t, dir, fmt.Sprintf(`
homeserver: {url: %q, server_name: %q}
bot: {user_id: %q, password: %q}
admins: [%q]
data_dir: %s
synapse:
  signing_key_path: %q
  logs: [{type: file, path: %q}]
federation: {dangerously_allow_loopback_and_self_signed_testing_only: %t}
`, tb.HS1.URL, tb.HS1.Name, tb.HS1.UserID("medic"), tb.MedicPassword, tb.HS1.UserID("admin"), filepath.Join(dir, "data"),
			tb.HS1.SigningKeyPath(), logPath, testingSwitch))
		var stdout, stderr bytes.Buffer
		if code := run([]string{"exec", "-c", cfg, "!recover scan --since 1h"}, nil, &stdout, &stderr); code != 0 {
			t.Fatalf("exit %d:\n%s\n%s", code, stdout.String(), stderr.String())
		}
		return stdout.String(), stderr.String()
	}
	noDefaultClient := func(t *testing.T) {
		t.Helper()
		if d := defaultClient.List(); len(d) > 0 {
			t.Errorf("Go's default HTTP client (no address filter) was asked to connect to %v", d)
		}
	}

	t.Run("switch off: no loopback", func(t *testing.T) {
		before := evil.Accepted()
		answer, log := scan(t, false, map[string]id.EventID{"evil.ssrf.test": "$ssrf-off-evil"})
		if n := evil.Accepted() - before; n > 0 {
			t.Errorf("medic connected %d time(s) to %s:443, where the logs' server name evil.ssrf.test resolves (loopback), with the testing switch off", n, evil.Addr)
		}
		if l := lineWith(answer, "$ssrf-off-evil"); !strings.Contains(l, "refused") || !strings.Contains(l, "loopback") {
			t.Errorf("the answer does not say the address was refused as loopback: %q\n%s\n%s", l, answer, log)
		}
		noDefaultClient(t)
	})

	t.Run("switch on: metadata, redirects, delegation", func(t *testing.T) {
		answer, log := scan(t, true, map[string]id.EventID{
			"meta.ssrf.test":     "$ssrf-on-meta",
			"meta6.ssrf.test":    "$ssrf-on-meta6",
			"redirect.ssrf.test": "$ssrf-on-redirect",
			"delegate.ssrf.test": "$ssrf-on-delegate",
			"loop.ssrf.test":     "$ssrf-on-loop",
			tb.HS2.Name:          sent.EventID,
		})
		noDefaultClient(t)
		// A name resolving to the metadata service: refused at the dial, with the reason.
		if l := lineWith(answer, "`$ssrf-on-meta`"); !strings.Contains(l, "169.254.169.254") || !strings.Contains(l, "cloud metadata") {
			t.Errorf("meta.ssrf.test: the answer does not say 169.254.169.254 was refused as cloud metadata: %q\n%s\n%s", l, answer, log)
		}
		if l := lineWith(answer, "$ssrf-on-meta6"); !strings.Contains(l, "fd00:ec2::254") || !strings.Contains(l, "cloud metadata") {
			t.Errorf("meta6.ssrf.test: the answer does not say fd00:ec2::254 was refused as cloud metadata: %q\n%s\n%s", l, answer, log)
		}
		// .well-known on loopback (allowed by the switch) delegating to the metadata service.
		if l := lineWith(answer, "$ssrf-on-delegate"); !strings.Contains(l, "169.254.169.254") || !strings.Contains(l, "refused") {
			t.Errorf("delegate.ssrf.test: the answer does not say the delegated address was refused: %q\n%s\n%s", l, answer, log)
		}
		// .well-known redirecting to the metadata service: the redirect re-dials, the dial is
		// refused and medic says so in its log.
		if !strings.Contains(log, "169.254.169.254") || !strings.Contains(log, "redirect.ssrf.test") {
			t.Errorf("no warning in medic's log about the .well-known redirect to 169.254.169.254:\n%s", log)
		}
		mu.Lock()
		redirects, loops := wellKnownHits["redirect"], wellKnownHits["loop"]
		mu.Unlock()
		if redirects == 0 {
			t.Errorf("redirect.ssrf.test's .well-known was never fetched (the testing switch allows loopback)")
		}
		// A redirect loop is cut short.
		if loops == 0 || loops > 6 {
			t.Errorf("loop.ssrf.test's .well-known was fetched %d times; want 1 to 6 (redirects capped at 5)", loops)
		}
		// And the testbed keeps working: hs2 (loopback) is reached and answers. (Synapse 1.160
		// answers a server that is not in the room with 403 "Host not in room", even for a
		// world-readable room: an answer is what shows the connection was allowed.)
		if l := lineWith(answer, sent.EventID.String()); strings.Contains(l, "refused") ||
			!(strings.Contains(l, room.RoomID.String()) || strings.Contains(l, "(HTTP ")) {
			t.Errorf("hs2 was not reached with the testing switch on: %q\n%s\n%s", l, answer, log)
		}
	})
}
