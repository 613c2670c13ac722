//go:build goexperiment.jsonv2

package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/synapse-medic/medic/authcheck"
)

// FuzzCheck feeds the checker arbitrary events (the JSON comes from Synapse's database, i.e.
// from other servers): it must answer with a verdict or an error, never panic.
func FuzzCheck(f *testing.F) {
	f.Add(`{"type":"m.room.power_levels","state_key":"","sender":"@a:x","room_id":"!r:x","content":{"users":{"@a:x":100}},"auth_events":["$c"],"prev_events":["$c"],"depth":3,"origin_server_ts":1}`, "10")
	f.Add(`{"type":"m.room.create","state_key":"","sender":"@a:x","content":{"room_version":"12"},"auth_events":[],"prev_events":[],"depth":1}`, "12")
	f.Add(`{"type":"m.room.member","state_key":"@b:y","sender":"@b:y","room_id":"!r:x","content":{"membership":"join"},"auth_events":["$c","$c"],"depth":"x"}`, "11")
	f.Add(`not json`, "10")
	f.Fuzz(func(t *testing.T, event, version string) {
		var in bytes.Buffer
		enc := json.NewEncoder(&in)
		_ = enc.Encode(authcheck.Header{RoomVersion: version, Keys: map[string]map[string]authcheck.Key{"x": {"ed25519:a": {Key: "AAAA"}}}})
		raw := json.RawMessage(event)
		if !json.Valid(raw) {
			raw, _ = json.Marshal(event)
		}
		// Once as context (an auth event), once to check, citing itself.
		_ = enc.Encode(authcheck.Input{EventID: "$c", Event: raw})
		_ = enc.Encode(authcheck.Input{EventID: "$e", Event: raw, Check: true, Rejected: true})
		var out strings.Builder
		_ = run(&in, &out)
	})
}
