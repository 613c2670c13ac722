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
	"runtime"
	"strings"
	"sync"
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
	// expanded holds the same keys, decoded and expanded once for fast verification.
	expanded map[string]map[id.KeyID]*verifyKey
	// known holds state events (the only kind auth_events can cite) with their status.
	known map[id.EventID]*pdu.PDU
}

// item is one input on its way through the pipeline: workers parse it and check what does
// not depend on other events (event ID, content hash, signature) in parallel; one loop then
// authorizes the items in input order, because an event's verdict decides its successors'.
type item struct {
	in   authcheck.Input
	p    *pdu.PDU
	v    authcheck.Verdict
	err  error // parse error
	done chan struct{}
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
	c := &checker{rv: id.RoomVersion(hdr.RoomVersion), keys: hdr.Keys, expanded: expandKeys(hdr.Keys), known: map[id.EventID]*pdu.PDU{}}
	if c.rv == id.RoomV1 || c.rv == id.RoomV2 {
		return fmt.Errorf("room version %s is not supported by mautrix-go's auth rules", c.rv)
	}
	work := make(chan *item, 1024)
	ordered := make(chan *item, 4096)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range work {
				c.precheck(it)
				close(it.done)
			}
		}()
	}
	readErr := make(chan error, 1)
	go func() {
		defer close(ordered)
		defer close(work)
		for {
			it := &item{done: make(chan struct{})}
			if err := dec.Decode(&it.in); errors.Is(err, io.EOF) {
				readErr <- nil
				return
			} else if err != nil {
				readErr <- fmt.Errorf("read event: %w", err)
				return
			}
			work <- it
			ordered <- it
		}
	}()
	var writeErr error
	for it := range ordered {
		<-it.done
		if !it.in.Check {
			if it.err == nil {
				c.remember(it.p, it.in.Rejected)
			}
			continue
		}
		v := c.authorize(it)
		// Buffered: medic writes all inputs before it needs the last verdict, and reads
		// verdicts concurrently, so they need not be flushed one by one.
		if writeErr == nil {
			writeErr = enc.Encode(v)
		}
	}
	wg.Wait()
	if err := <-readErr; err != nil {
		return err
	}
	return writeErr
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

// precheck parses an input and, for one to check, verifies what needs no other event: the
// event ID (reference hash), the content hash and the sender server's signature.
func (c *checker) precheck(it *item) {
	in := it.in
	it.v.EventID = in.EventID
	it.p, it.err = parse(in)
	if it.err != nil || !in.Check {
		return
	}
	p := it.p
	if p.Hashes == nil || p.Hashes.SHA256 == nil {
		// No content hash: mautrix-go fills one in before hashing; take its path as it is.
		c.precheckMautrix(it)
		return
	}
	// Redacting an event whose content hash fails (below) does not change these bytes:
	// redaction is idempotent and keeps the hashes.
	signed, err := signedBytes(c.rv, p)
	var got id.EventID
	if err == nil {
		got, err = eventIDOf(c.rv, signed)
	}
	if err != nil || got != id.EventID(in.EventID) {
		it.v.Rule = "event id"
		it.v.Error = fmt.Sprintf("the event's reference hash gives %s, not %s (%v)", got, in.EventID, err)
		return
	}
	c.checkContentHash(it)
	if err := c.verifySignature(it.p, signed); err != nil {
		it.v.Rule, it.v.Error = "signature", err.Error()
	}
}

// precheckMautrix is precheck done wholly by mautrix-go's pdu package: the reference for
// the fast path (TestFastPathMatchesMautrix) and the path for events without content hash.
func (c *checker) precheckMautrix(it *item) {
	in := it.in
	p := it.p
	if got, err := p.GetEventID(c.rv); err != nil || got != id.EventID(in.EventID) {
		it.v.Rule = "event id"
		it.v.Error = fmt.Sprintf("the event's reference hash gives %s, not %s (%v)", got, in.EventID, err)
		return
	}
	c.checkContentHash(it)
	if err := it.p.VerifySignature(c.rv, it.p.Sender.Homeserver(), c.getKey); err != nil {
		it.v.Rule, it.v.Error = "signature", err.Error()
	}
}

// checkContentHash redacts an event whose content hash fails: as the spec says, such an
// event is redacted, not rejected.
func (c *checker) checkContentHash(it *item) {
	if it.p.VerifyContentHash() {
		return
	}
	p := it.p.Redact(c.rv)
	p.InternalMeta.EventID = id.EventID(it.in.EventID)
	it.p = p
	it.v.Note = "content hash mismatch: checked as redacted"
}

// authorize applies the auth rules to a prechecked input, in input order, and records the
// outcome for the events after it.
func (c *checker) authorize(it *item) authcheck.Verdict {
	v := it.v
	if it.err != nil {
		return authcheck.Verdict{EventID: it.in.EventID, Rule: "parse", Error: it.err.Error()}
	}
	p := it.p
	accepted := false
	defer func() { c.remember(p, !(accepted || it.in.Force)) }()
	if v.Rule != "" {
		return v
	}
	if err := eventauth.Authorize(c.rv, p, nil, c.getEvents, c.getKey); err != nil {
		var afe eventauth.AuthFailError
		v.Rule, v.Error = "auth", err.Error()
		if errors.As(err, &afe) {
			// "fail 8: sender does not have … (100 > 0)" → rule "8", the rest as the detail.
			v.Rule = afe.Index
			v.Error = strings.TrimPrefix(err.Error(), "fail "+afe.Index+": ")
		}
		return v
	}
	accepted = true
	v.OK = true
	return v
}
