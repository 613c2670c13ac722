//go:build goexperiment.jsonv2

// Command medic-authcheck checks Matrix events against the auth rules, their content hashes
// and signatures with mautrix-go (federation/eventauth, federation/pdu), for medic's !unreject.
// It reads the authcheck protocol on stdin and writes verdicts on stdout; see package authcheck.
//
// Build: GOEXPERIMENT=jsonv2 go build ./cmd/medic-authcheck (the Makefile does).
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"maunium.net/go/mautrix/federation/eventauth"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/authcheck"
)

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "medic-authcheck:", err)
		os.Exit(1)
	}
}

type checker struct {
	rv   id.RoomVersion
	keys map[string]map[string]authcheck.Key
	// known holds state events (the only kind auth_events can cite) with their status.
	known map[id.EventID]*pdu.PDU
}

func run(in io.Reader, out io.Writer) error {
	dec := json.NewDecoder(bufio.NewReaderSize(in, 1<<20))
	w := bufio.NewWriter(out)
	defer w.Flush()
	enc := json.NewEncoder(w)
	var hdr authcheck.Header
	if err := dec.Decode(&hdr); err != nil {
		return fmt.Errorf("read header: %w", err)
	}
	c := &checker{rv: id.RoomVersion(hdr.RoomVersion), keys: hdr.Keys, known: map[id.EventID]*pdu.PDU{}}
	if c.rv == id.RoomV1 || c.rv == id.RoomV2 {
		return fmt.Errorf("room version %s is not supported by mautrix-go's auth rules", c.rv)
	}
	for {
		var in authcheck.Input
		if err := dec.Decode(&in); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("read event: %w", err)
		}
		if !in.Check {
			if p, err := parse(in); err == nil {
				c.remember(p, in.Rejected)
			}
			continue
		}
		v := c.check(in)
		// Buffered: medic writes all inputs before it needs the last verdict, and reads
		// verdicts concurrently, so they need not be flushed one by one.
		if err := enc.Encode(v); err != nil {
			return err
		}
	}
}

func parse(in authcheck.Input) (*pdu.PDU, error) {
	var p pdu.PDU
	if err := json.Unmarshal(in.Event, &p); err != nil {
		return nil, err
	}
	p.InternalMeta.EventID = id.EventID(in.EventID)
	return &p, nil
}

func (c *checker) remember(p *pdu.PDU, rejected bool) {
	if p.StateKey == nil {
		return
	}
	p.InternalMeta.Rejected = rejected
	c.known[p.InternalMeta.EventID] = p
}

func (c *checker) getEvents(ids []id.EventID) ([]*pdu.PDU, error) {
	out := make([]*pdu.PDU, len(ids))
	for i, evtID := range ids {
		out[i] = c.known[evtID] // nil: eventauth reports the auth event as missing
	}
	return out, nil
}

func (c *checker) getKey(server string, keyID id.KeyID, _ time.Time) (id.SigningKey, time.Time, error) {
	k, ok := c.keys[server][string(keyID)]
	if !ok {
		return "", time.Time{}, nil // eventauth/pdu report "key not found"
	}
	return id.SigningKey(k.Key), time.UnixMilli(k.ValidUntilTS), nil
}

func (c *checker) check(in authcheck.Input) (v authcheck.Verdict) {
	v.EventID = in.EventID
	p, err := parse(in)
	if err != nil {
		v.Rule, v.Error = "parse", err.Error()
		return v
	}
	accepted := false
	defer func() {
		c.remember(p, !(accepted || in.Force))
	}()
	if got, err := p.GetEventID(c.rv); err != nil || got != id.EventID(in.EventID) {
		v.Rule = "event id"
		v.Error = fmt.Sprintf("the event's reference hash gives %s, not %s (%v)", got, in.EventID, err)
		return v
	}
	if !p.VerifyContentHash() {
		// As the spec says: an event whose content hash fails is redacted, not rejected.
		p = p.Redact(c.rv)
		p.InternalMeta.EventID = id.EventID(in.EventID)
		v.Note = "content hash mismatch: checked as redacted"
	}
	if err = p.VerifySignature(c.rv, p.Sender.Homeserver(), c.getKey); err != nil {
		v.Rule, v.Error = "signature", err.Error()
		return v
	}
	if err = eventauth.Authorize(c.rv, p, nil, c.getEvents, c.getKey); err != nil {
		var afe eventauth.AuthFailError
		if errors.As(err, &afe) {
			v.Rule = afe.Index + " " + afe.Message
		} else {
			v.Rule = "auth"
		}
		v.Error = err.Error()
		return v
	}
	accepted = true
	v.OK = true
	return v
}
