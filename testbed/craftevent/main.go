//go:build goexperiment.jsonv2

// Command craftevent signs an event template as a server, for tests that must deliver events
// a real homeserver would refuse to create (e.g. a power-levels change by a user without the
// power). It fills the content hash, signs with the server's Synapse key file and prints
// {"event_id": …, "pdu": …}. Test-only; built by testbed.CraftEvent with GOEXPERIMENT=jsonv2.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: craftevent <server name> <synapse signing key file> <room version> < template.json")
		os.Exit(2)
	}
	server, keyFile, rv := os.Args[1], os.Args[2], id.RoomVersion(os.Args[3])
	raw, err := os.ReadFile(keyFile)
	check(err)
	key, err := federation.ParseSynapseKey(strings.TrimSpace(string(raw)))
	check(err)
	var p pdu.PDU
	check(json.NewDecoder(os.Stdin).Decode(&p))
	check(p.FillContentHash())
	check(p.Sign(rv, server, key.ID, key.Priv))
	eventID, err := p.GetEventID(rv)
	check(err)
	out, err := json.Marshal(map[string]any{"event_id": eventID, "pdu": &p})
	check(err)
	fmt.Println(string(out))
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "craftevent:", err)
		os.Exit(1)
	}
}
