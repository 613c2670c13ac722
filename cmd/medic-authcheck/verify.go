//go:build goexperiment.jsonv2

package main

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/federation/signutil"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/authcheck"
)

// A chain of 100k rejected events is nearly all signed by one or two keys, and verifying
// their signatures was two thirds of the checker's CPU time (BenchmarkUnrejectChain). Two
// savings, with the same verdicts as mautrix-go's pdu.GetEventID and pdu.VerifySignature
// (TestFastPathMatchesMautrix compares them):
//   - the reference hash (the event ID) and the signature cover the same bytes, the event
//     redacted for signing in canonical JSON, so they are marshalled once, not twice;
//   - each key is expanded once (curve25519-voi's precomputed form, about twice as fast per
//     verification) and verified with the standard library's rules (VerifyOptionsStdLib:
//     cofactorless, canonical S), as mautrix-go and libsodium-based Synapse verify.

// verifyKey is one server key, expanded once for all the events it signed.
type verifyKey struct {
	expanded   *voi.ExpandedPublicKey
	err        error // the key does not decode: every signature by it fails with this
	validUntil time.Time
}

var stdlibRules = &voi.Options{Verify: voi.VerifyOptionsStdLib}

func expandKeys(keys map[string]map[string]authcheck.Key) map[string]map[id.KeyID]*verifyKey {
	out := make(map[string]map[id.KeyID]*verifyKey, len(keys))
	for server, byID := range keys {
		out[server] = make(map[id.KeyID]*verifyKey, len(byID))
		for keyID, k := range byID {
			vk := &verifyKey{validUntil: time.UnixMilli(k.ValidUntilTS)}
			raw, err := base64.RawStdEncoding.DecodeString(k.Key)
			if err == nil && len(raw) != voi.PublicKeySize {
				err = fmt.Errorf("key is %d bytes, not %d", len(raw), voi.PublicKeySize)
			}
			if err == nil {
				vk.expanded, err = voi.NewExpandedPublicKey(voi.PublicKey(raw))
			}
			if err != nil {
				vk.err = fmt.Errorf("failed to decode key: %w", err)
			}
			out[server][id.KeyID(keyID)] = vk
		}
	}
	return out
}

// signedBytes is what both the event ID and the signatures are computed over.
func signedBytes(rv id.RoomVersion, p *pdu.PDU) ([]byte, error) {
	return canonicaljson.Marshal(p.Clone().RedactForSignature(rv))
}

// eventIDOf is the event ID of signed bytes (room versions 3 and later).
func eventIDOf(rv id.RoomVersion, signed []byte) (id.EventID, error) {
	sum := sha256.Sum256(signed)
	switch rv.EventIDFormat() {
	case id.EventIDFormatBase64:
		return id.EventID("$" + base64.RawStdEncoding.EncodeToString(sum[:])), nil
	case id.EventIDFormatURLSafeBase64:
		return id.EventID("$" + base64.RawURLEncoding.EncodeToString(sum[:])), nil
	default:
		return "", fmt.Errorf("room version %s has no hash-based event IDs", rv)
	}
}

// verifySignature is pdu.VerifySignature over already marshalled signed bytes: every
// signature of the server by a known, valid key must verify, and at least one must exist.
func (c *checker) verifySignature(p *pdu.PDU, signed []byte) error {
	server := p.Sender.Homeserver()
	sigs := p.Signatures[server]
	if len(sigs) == 0 {
		return fmt.Errorf("no signatures found for server %s", server)
	}
	verified := false
	var errs []error
	ts := time.UnixMilli(p.OriginServerTS)
	for keyID, sig := range sigs {
		k := c.expanded[server][keyID]
		switch {
		case k == nil:
			errs = append(errs, fmt.Errorf("key %s not found for %s", keyID, server))
		case k.validUntil.Before(ts) && c.rv.EnforceSigningKeyValidity():
			errs = append(errs, fmt.Errorf("key %s for %s is only valid until %s, but event is from %s", keyID, server, k.validUntil, ts))
		case k.err != nil:
			return fmt.Errorf("failed to verify signature from key %s: %w", keyID, k.err)
		default:
			raw, err := base64.RawStdEncoding.DecodeString(sig)
			if err != nil {
				return fmt.Errorf("failed to verify signature from key %s: failed to decode signature: %w", keyID, err)
			}
			if !voi.VerifyExpandedWithOptions(k.expanded, signed, raw, stdlibRules) {
				return fmt.Errorf("failed to verify signature from key %s: %w", keyID, signutil.ErrInvalidSignature)
			}
			verified = true
		}
	}
	if !verified {
		return fmt.Errorf("no verifiable signatures found for server %s: %w", server, errors.Join(errs...))
	}
	return nil
}
