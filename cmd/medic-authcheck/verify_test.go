//go:build goexperiment.jsonv2

package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/authcheck"
)

// TestFastPathMatchesMautrix: the checker's own precheck (one marshal for event ID and
// signature, expanded keys) gives exactly the verdict mautrix-go's pdu package gives, for
// good events and for each way an event or its key can be wrong.
func TestFastPathMatchesMautrix(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, otherPriv, _ := ed25519.GenerateKey(nil)
	now := time.Now()
	keys := map[string]map[string]authcheck.Key{
		"hs1.test": {
			"ed25519:a":     {Key: base64.RawStdEncoding.EncodeToString(pub), ValidUntilTS: now.Add(time.Hour).UnixMilli()},
			"ed25519:old":   {Key: base64.RawStdEncoding.EncodeToString(pub), ValidUntilTS: now.Add(-time.Hour).UnixMilli()},
			"ed25519:bad":   {Key: "not*base64"},
			"ed25519:short": {Key: "AAAA"},
		},
	}
	type event struct {
		name     string
		rv       id.RoomVersion
		mutate   func(p *pdu.PDU) // before signing
		sign     func(rv id.RoomVersion, p *pdu.PDU)
		tamper   func(p *pdu.PDU) // after signing
		wrongID  bool
		wantRule string
		wantNote bool
	}
	signWith := func(keyID id.KeyID, k ed25519.PrivateKey) func(id.RoomVersion, *pdu.PDU) {
		return func(rv id.RoomVersion, p *pdu.PDU) {
			if err := p.Sign(rv, "hs1.test", keyID, k); err != nil {
				t.Fatal(err)
			}
		}
	}
	good := signWith("ed25519:a", priv)
	cases := []event{
		{name: "good v10", rv: id.RoomV10, sign: good},
		{name: "good v11", rv: id.RoomV11, sign: good},
		{name: "good v12", rv: id.RoomV12, sign: good},
		{name: "good v3 (standard base64 IDs)", rv: id.RoomV3, sign: good},
		{name: "signature by another key", rv: id.RoomV10, sign: signWith("ed25519:a", otherPriv), wantRule: "signature"},
		{name: "unknown key ID", rv: id.RoomV10, sign: signWith("ed25519:zzz", priv), wantRule: "signature"},
		{name: "expired key", rv: id.RoomV10, sign: signWith("ed25519:old", priv), wantRule: "signature"},
		{name: "expired key, v4 does not enforce validity", rv: id.RoomV4, sign: signWith("ed25519:old", priv)},
		{name: "key that does not decode", rv: id.RoomV10, sign: signWith("ed25519:bad", priv), wantRule: "signature"},
		{name: "no signature of the sender's server", rv: id.RoomV10, sign: func(id.RoomVersion, *pdu.PDU) {}, wantRule: "signature"},
		{name: "signature not base64", rv: id.RoomV10, sign: good, tamper: func(p *pdu.PDU) { p.Signatures["hs1.test"]["ed25519:a"] = "@@" }, wantRule: "signature"},
		{name: "signature flipped", rv: id.RoomV10, sign: good, tamper: func(p *pdu.PDU) {
			s := []byte(p.Signatures["hs1.test"]["ed25519:a"])
			s[3] ^= 1
			p.Signatures["hs1.test"]["ed25519:a"] = string(s)
		}, wantRule: "signature"},
		{name: "content changed after signing", rv: id.RoomV10, sign: good, tamper: func(p *pdu.PDU) {
			p.Content = []byte(`{"body":"changed","msgtype":"m.text"}`)
		}, wantNote: true},
		{name: "signed field changed after signing", rv: id.RoomV10, sign: good, tamper: func(p *pdu.PDU) { p.Depth++ }, wantRule: "event id"},
		{name: "wrong event ID", rv: id.RoomV10, sign: good, wrongID: true, wantRule: "event id"},
		{name: "no content hash", rv: id.RoomV10, mutate: func(p *pdu.PDU) {}, sign: func(rv id.RoomVersion, p *pdu.PDU) {
			p.Hashes = nil
			good(rv, p)
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := &pdu.PDU{
				Type: "m.room.message", Sender: "@alice:hs1.test", RoomID: "!room:hs1.test", Depth: 4,
				OriginServerTS: now.UnixMilli(), AuthEvents: []id.EventID{"$create", "$pl", "$member"},
				PrevEvents: []id.EventID{"$prev"}, Content: []byte(fmt.Sprintf(`{"body":"hello %d","msgtype":"m.text"}`, i)),
			}
			if tc.mutate != nil {
				tc.mutate(p)
			}
			if p.Hashes == nil && tc.name != "no content hash" {
				if err := p.FillContentHash(); err != nil {
					t.Fatal(err)
				}
			}
			tc.sign(tc.rv, p)
			evID, err := p.GetEventID(tc.rv)
			if err != nil {
				t.Fatal(err)
			}
			if tc.tamper != nil {
				tc.tamper(p)
			}
			if tc.wrongID {
				evID = id.EventID("$" + strings.Repeat("A", 43))
			}
			raw, err := json.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			in := authcheck.Input{EventID: string(evID), Event: raw, Check: true, Rejected: true}
			c := &checker{rv: tc.rv, keys: keys, expanded: expandKeys(keys)}
			fast := &item{in: in}
			c.precheck(fast)
			ref := &item{in: in}
			if ref.p, ref.err = parse(in); ref.err != nil {
				t.Fatal(ref.err)
			}
			ref.v.EventID = in.EventID
			c.precheckMautrix(ref)
			if fast.v != ref.v {
				t.Fatalf("verdicts differ:\nfast:     %+v\nmautrix:  %+v", fast.v, ref.v)
			}
			if fast.v.Rule != tc.wantRule || (fast.v.Note != "") != tc.wantNote {
				t.Fatalf("verdict %+v, want rule %q (note: %v)", fast.v, tc.wantRule, tc.wantNote)
			}
		})
	}
}
