// Package authcheck verifies Matrix events with mautrix-go's auth rules, content hashes and
// signatures, in a separate process (cmd/medic-authcheck).
//
// Why a process: mautrix-go's federation/pdu and federation/eventauth build only with
// GOEXPERIMENT=jsonv2, and that experiment breaks mautrix-go v0.30.0's end-to-end encryption
// (one-time keys are signed over the wrong JSON; see the Makefile). So medic itself is built
// without it, and the checker is a small second binary built with it. As a bonus, events from
// other servers are parsed outside the bot's process.
//
// The protocol is JSON lines. medic writes a Header, then Inputs in the order to check them
// (auth events first, then the events to check by depth); the checker answers one Verdict per
// Input with Check set, in the same order, as soon as it has it, so memory stays flat.
package authcheck

import "encoding/json"

// Header opens a check session for one room.
type Header struct {
	RoomVersion string `json:"room_version"`
	// Keys are the servers' signing keys: server name → key ID → key.
	Keys map[string]map[string]Key `json:"keys"`
}

// Key is a server's public signing key.
type Key struct {
	Key          string `json:"key"` // unpadded base64
	ValidUntilTS int64  `json:"valid_until_ts"`
}

// Input is one event, as Synapse stores it in event_json.json.
type Input struct {
	EventID string          `json:"event_id"`
	Event   json.RawMessage `json:"event"`
	// Rejected is the event's rejection status as known so far (for events not checked).
	Rejected bool `json:"rejected,omitempty"`
	// Check asks for a verdict; an event that passes (or is forced) counts as accepted for the
	// events after it, one that fails counts as rejected.
	Check bool `json:"check,omitempty"`
	// Force accepts the event for later checks even if it fails (an admin's --force).
	Force bool `json:"force,omitempty"`
}

// Verdict is the checker's answer for one checked event.
type Verdict struct {
	EventID string `json:"event_id"`
	OK      bool   `json:"ok"`
	// Rule is the failing check: an auth rule's number in the spec ("8", "10.x"), or "auth"
	// (an auth failure without a number), "signature", "event id", "parse".
	Rule  string `json:"rule,omitempty"`
	Error string `json:"error,omitempty"`
	// Note is worth knowing even when OK (e.g. the content hash failed, so the event counts
	// as redacted, as Synapse would treat it).
	Note string `json:"note,omitempty"`
}
