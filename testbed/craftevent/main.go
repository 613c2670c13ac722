//go:build goexperiment.jsonv2

// Command craftevent signs an event template as a server, for tests that must deliver events
// a real homeserver would refuse to create (e.g. a power-levels change by a user without the
// power). It fills the content hash, signs with the server's Synapse key file and prints
// {"event_id": …, "pdu": …} per template (a stream of templates gives a stream of lines). Test-only; built by testbed.CraftEvent with GOEXPERIMENT=jsonv2.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	dec := json.NewDecoder(bufio.NewReaderSize(os.Stdin, 1<<20))
	w := bufio.NewWriterSize(os.Stdout, 1<<20)
	defer w.Flush()
	for {
		var p pdu.PDU
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			return
		} else {
			check(err)
		}
		check(p.FillContentHash())
		check(p.Sign(rv, server, key.ID, key.Priv))
		eventID, err := p.GetEventID(rv)
		check(err)
		out, err := json.Marshal(map[string]any{"event_id": eventID, "pdu": &p})
		check(err)
		_, _ = w.Write(append(out, '\n'))
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "craftevent:", err)
		os.Exit(1)
	}
}
